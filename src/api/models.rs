//! `GET /v1/models` and `GET /anthropic/v1/models`, answered by the gateway from the
//! configured model names.

use serde_json::json;

use crate::config::GatewayConfig;

/// The OpenAI list-models body for every model a request to `authority` can reach
/// (the models of routes whose `hostnames` name it, and of routes without any).
pub fn list_body(config: &GatewayConfig, authority: &str) -> Vec<u8> {
    let data: Vec<_> = config
        .models_at(authority)
        .map(|(id, info)| json!({"id": id, "object": "model", "created": info.created, "owned_by": info.owned_by}))
        .collect();
    json!({"object": "list", "data": data})
        .to_string()
        .into_bytes()
}
/// The Anthropic list-models body (`GET /v1/models` in Anthropic's API reference): every
/// model a request to `authority` can reach, with its `modelsCreatedAt` as an RFC 3339
/// time; one page holds them all.
pub fn anthropic_list_body(config: &GatewayConfig, authority: &str) -> Vec<u8> {
    let data: Vec<_> = config
        .models_at(authority)
        .map(|(id, info)| {
            let created_at = time::OffsetDateTime::from_unix_timestamp(info.created)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_else(|| "1970-01-01T00:00:00Z".into());
            json!({"type": "model", "id": id, "display_name": id, "created_at": created_at})
        })
        .collect();
    let (first, last) = (
        data.first().map(|m| m["id"].clone()),
        data.last().map(|m| m["id"].clone()),
    );
    json!({"data": data, "has_more": false, "first_id": first, "last_id": last})
        .to_string()
        .into_bytes()
}
