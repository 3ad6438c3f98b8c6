//! The consumer: who is calling, for quota buckets. It comes from a request header the
//! operator names (set by something that authenticated the client, such as an API-key
//! filter), or from a claim of the JWT that Envoy's `jwt_authn` filter verified and put
//! in dynamic metadata (`payload_in_metadata`).

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::google::protobuf::value::Kind;

/// The metadata namespace of Envoy's `jwt_authn` filter.
pub const JWT_AUTHN_NAMESPACE: &str = "envoy.filters.http.jwt_authn";
/// The header QuotaPolicy client selectors name to select on a claim's consumer when
/// no `--consumer-header` is given.
pub const DEFAULT_CONSUMER_HEADER: &str = "x-ai-eg-consumer";

#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// The header client selectors see the consumer in (lower case); None: no identity.
    pub header: Option<String>,
    /// `payload_in_metadata` key and claim name: the consumer is that claim, and the
    /// header above shows it (whatever the client sent in it).
    pub claim: Option<(String, String)>,
    /// The consumer labels the gen_ai metrics (`user_id`): off by default, since every
    /// consumer makes series of its own (capped, see `metrics::MAX_CONSUMERS`).
    pub metric_attribute: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("--consumer-claim `{0}` must be <payload_in_metadata key>.<claim>, e.g. jwt_payload.sub")]
pub struct BadClaim(String);

impl Identity {
    pub fn new(header: Option<&str>, claim: Option<&str>) -> Result<Identity, BadClaim> {
        let claim = match claim {
            None => None,
            Some(text) => match text.split_once('.') {
                Some((key, name)) if !key.is_empty() && !name.is_empty() => {
                    Some((key.to_string(), name.to_string()))
                }
                _ => return Err(BadClaim(text.to_string())),
            },
        };
        let header = match (header, &claim) {
            (Some(h), _) => Some(h.to_ascii_lowercase()),
            (None, Some(_)) => Some(DEFAULT_CONSUMER_HEADER.to_string()),
            (None, None) => None,
        };
        Ok(Identity {
            header,
            claim,
            metric_attribute: false,
        })
    }

    /// What `serve` says at start: where the consumer comes from and what Envoy must do
    /// for it (no request can tell a missing forwarding from a missing token: jwt_authn
    /// removes the token it verified).
    pub fn describe(&self) -> Option<String> {
        let header = self.header.as_deref()?;
        Some(match &self.claim {
            Some((key, claim)) => format!(
                "the consumer is the JWT claim `{claim}` of jwt_authn's `{key}` metadata, seen by client selectors as `{header}`; Envoy must run jwt_authn (payload_in_metadata: {key}) before ext_proc, and ext_proc must forward `{JWT_AUTHN_NAMESPACE}` (metadata_options.forwarding_namespaces.untyped), or no request has a consumer"
            ),
            None => format!("the consumer is the request header `{header}`"),
        })
    }

    /// The consumer of a request: the claim when one is configured (absent when the
    /// request carried no verified JWT), else the header's value.
    pub fn consumer<'a>(
        &self,
        header: impl Fn(&str) -> Option<&'a str>,
        metadata: Option<&'a Metadata>,
    ) -> Option<&'a str> {
        if let Some((key, claim)) = &self.claim {
            let payload = metadata?.filter_metadata.get(JWT_AUTHN_NAMESPACE)?;
            let Some(Kind::StructValue(claims)) = payload.fields.get(key)?.kind.as_ref() else {
                return None;
            };
            return match claims.fields.get(claim)?.kind.as_ref()? {
                Kind::StringValue(v) => Some(v.as_str()),
                _ => None,
            };
        }
        header(self.header.as_deref()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{Struct, Value};

    fn jwt_metadata(claims: &[(&str, &str)]) -> Metadata {
        let claims = Struct {
            fields: claims
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        Value {
                            kind: Some(Kind::StringValue(v.to_string())),
                        },
                    )
                })
                .collect(),
        };
        let payload = Struct {
            fields: [(
                "jwt_payload".to_string(),
                Value {
                    kind: Some(Kind::StructValue(claims)),
                },
            )]
            .into_iter()
            .collect(),
        };
        Metadata {
            filter_metadata: [(JWT_AUTHN_NAMESPACE.to_string(), payload)]
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_claim_wins_over_what_the_client_sent() {
        let identity = Identity::new(None, Some("jwt_payload.sub")).unwrap();
        assert_eq!(identity.header.as_deref(), Some(DEFAULT_CONSUMER_HEADER));
        let sent = |_: &str| Some("mallory");
        let meta = jwt_metadata(&[("sub", "alice")]);
        assert_eq!(identity.consumer(sent, Some(&meta)), Some("alice"));
        // No verified token: no consumer, never the client's header.
        assert_eq!(identity.consumer(sent, None), None);
        assert_eq!(identity.consumer(sent, Some(&jwt_metadata(&[]))), None);
    }

    #[test]
    fn a_header_consumer() {
        let identity = Identity::new(Some("X-User"), None).unwrap();
        let headers = |name: &str| (name == "x-user").then_some("bob");
        assert_eq!(identity.consumer(headers, None), Some("bob"));
        assert!(Identity::new(None, Some("sub")).is_err());
        assert!(Identity::default().consumer(headers, None).is_none());
    }
}
