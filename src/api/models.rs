//! `GET /v1/models`, answered by the gateway from the configured model names.

use serde_json::json;

use crate::config::GatewayConfig;

/// The OpenAI list-models body for every model the configuration routes.
pub fn list_body(config: &GatewayConfig) -> Vec<u8> {
    let data: Vec<_> = config
        .models
        .iter()
        .map(|(id, info)| json!({"id": id, "object": "model", "created": info.created, "owned_by": info.owned_by}))
        .collect();
    json!({"object": "list", "data": data})
        .to_string()
        .into_bytes()
}
