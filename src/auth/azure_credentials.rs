//! `AzureCredentials`: Entra ID client credentials. The policy is validated (its client
//! secret is read) but not served yet: its backends answer 503 saying so.

use std::sync::Arc;

use super::{Credential, NotYetSupported, PolicySource};

pub fn build(source: &mut dyn PolicySource) -> Option<Arc<dyn Credential>> {
    let Some(azure) = source.spec().azure_credentials.clone() else {
        source.problem(
            "spec.azureCredentials",
            "missing".into(),
            "type AzureCredentials needs `azureCredentials` with clientID and tenantID".into(),
        );
        return None;
    };
    match &azure.client_secret_ref {
        Some(secret) => {
            source.header_secret(
                "spec.azureCredentials.clientSecretRef",
                secret,
                "client-secret",
            )?;
        }
        None if azure.oidc_exchange_token.is_none() => {
            source.problem(
                "spec.azureCredentials.clientSecretRef",
                "missing".into(),
                "set `clientSecretRef` (or `oidcExchangeToken`)".into(),
            );
            return None;
        }
        None => {}
    }
    Some(Arc::new(NotYetSupported {
        policy_type: "AzureCredentials".into(),
    }))
}
