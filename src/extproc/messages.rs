//! Building and reading ext_proc messages. Keeps the protobuf plumbing out of the
//! state machines.

use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderMap, HeaderValue, HeaderValueOption,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    body_mutation::Mutation, common_response::ResponseStatus, processing_response::Response,
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, ImmediateResponse,
    ProcessingResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};

use crate::api::{ApiError, ApiKind};

/// The dynamic metadata namespace Envoy AI Gateway uses for what the filter emits.
pub const METADATA_NAMESPACE: &str = "io.envoy.ai_gateway";

/// A header's value, whichever of `raw_value` / `value` Envoy filled.
pub fn header<'a>(map: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    map?.headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))
        .and_then(|h| {
            if h.raw_value.is_empty() {
                Some(h.value.as_str())
            } else {
                std::str::from_utf8(&h.raw_value).ok()
            }
        })
}

/// Header edits accumulated for one response message.
#[derive(Debug, Default)]
pub struct Mutations {
    set: Vec<HeaderValueOption>,
    remove: Vec<String>,
}

impl Mutations {
    pub fn set(&mut self, name: &str, value: impl Into<Vec<u8>>) -> &mut Self {
        self.set.push(HeaderValueOption {
            header: Some(HeaderValue {
                key: name.to_string(),
                raw_value: value.into(),
                ..Default::default()
            }),
            append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            ..Default::default()
        });
        self
    }

    pub fn remove(&mut self, name: &str) -> &mut Self {
        self.remove.push(name.to_string());
        self
    }

    /// Adds `other`'s edits after these.
    pub fn append(&mut self, other: Mutations) {
        self.set.extend(other.set);
        self.remove.extend(other.remove);
    }

    fn into_proto(self) -> Option<HeaderMutation> {
        if self.set.is_empty() && self.remove.is_empty() {
            None
        } else {
            Some(HeaderMutation {
                set_headers: self.set,
                remove_headers: self.remove,
            })
        }
    }
}

/// What to do with a phase: its header edits and optional body replacement.
#[derive(Debug, Default)]
pub struct Reply {
    pub headers: Mutations,
    pub body: Option<Vec<u8>>,
    pub clear_route_cache: bool,
    /// Replace the body already in the header phase (`CONTINUE_AND_REPLACE`).
    pub replace_in_header_phase: bool,
    pub metadata: Option<Struct>,
}

impl Reply {
    fn common(self) -> (CommonResponse, Option<Struct>) {
        let status = if self.replace_in_header_phase {
            ResponseStatus::ContinueAndReplace
        } else {
            ResponseStatus::Continue
        };
        let common = CommonResponse {
            status: status as i32,
            header_mutation: self.headers.into_proto(),
            body_mutation: self.body.map(|b| BodyMutation {
                mutation: Some(Mutation::Body(b)),
            }),
            clear_route_cache: self.clear_route_cache,
            ..Default::default()
        };
        (common, self.metadata)
    }

    pub fn request_headers(self) -> ProcessingResponse {
        let (c, m) = self.common();
        wrap(
            Response::RequestHeaders(HeadersResponse { response: Some(c) }),
            m,
        )
    }

    pub fn response_headers(self) -> ProcessingResponse {
        let (c, m) = self.common();
        wrap(
            Response::ResponseHeaders(HeadersResponse { response: Some(c) }),
            m,
        )
    }

    pub fn response_body(self) -> ProcessingResponse {
        let (c, m) = self.common();
        wrap(
            Response::ResponseBody(BodyResponse { response: Some(c) }),
            m,
        )
    }
}

fn wrap(response: Response, metadata: Option<Struct>) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(response),
        dynamic_metadata: metadata,
        ..Default::default()
    }
}

/// Prefix of the response code details of every reply the sidecar makes; Envoy's local
/// reply mappers use it to leave these replies alone.
pub const DETAILS_PREFIX: &str = "llm_extproc_";

/// An immediate JSON answer to the client.
pub fn immediate(status: u16, body: Vec<u8>, details: &str) -> ProcessingResponse {
    immediate_with(status, body, details, Mutations::default())
}

/// [`immediate`] with more response headers.
fn immediate_with(
    status: u16,
    body: Vec<u8>,
    details: &str,
    mut headers: Mutations,
) -> ProcessingResponse {
    headers.set("content-type", "application/json");
    ProcessingResponse {
        response: Some(Response::ImmediateResponse(ImmediateResponse {
            status: Some(HttpStatus {
                code: i32::from(status),
            }),
            headers: headers.into_proto(),
            body,
            details: format!("{DETAILS_PREFIX}{details}"),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// An immediate OpenAI-style error.
pub fn immediate_error(error: &ApiError) -> ProcessingResponse {
    immediate_with(
        error.status(),
        error.body(),
        error.code(),
        error_headers(error),
    )
}

/// [`immediate_error`] in the shape of the client's API.
pub fn immediate_error_for(error: &ApiError, api: Option<ApiKind>) -> ProcessingResponse {
    immediate_with(
        error.status(),
        error.body_for(api),
        error.code(),
        error_headers(error),
    )
}

fn error_headers(error: &ApiError) -> Mutations {
    let mut headers = Mutations::default();
    if let Some(seconds) = error.retry_after() {
        headers.set("retry-after", seconds.to_string());
    }
    headers
}

/// Dynamic metadata under [`METADATA_NAMESPACE`] from (key, value) pairs.
pub fn metadata(entries: impl IntoIterator<Item = (String, Kind)>) -> Option<Struct> {
    let fields: std::collections::HashMap<String, Value> = entries
        .into_iter()
        .map(|(k, v)| (k, Value { kind: Some(v) }))
        .collect();
    if fields.is_empty() {
        return None;
    }
    let inner = Value {
        kind: Some(Kind::StructValue(Struct { fields })),
    };
    Some(Struct {
        fields: [(METADATA_NAMESPACE.to_string(), inner)]
            .into_iter()
            .collect(),
    })
}

/// A string attribute from the `attributes` Envoy sent (`request_attributes`), searching
/// every filter's attribute struct.
pub fn attribute<'a>(
    attributes: &'a std::collections::HashMap<String, Struct>,
    name: &str,
) -> Option<&'a str> {
    attributes
        .values()
        .find_map(|s| match s.fields.get(name)?.kind.as_ref()? {
            Kind::StringValue(v) if !v.is_empty() => Some(v.as_str()),
            _ => None,
        })
}

/// A string value under [`METADATA_NAMESPACE`] in forwarded dynamic metadata.
pub fn metadata_string<'a>(
    metadata: &'a envoy_types::pb::envoy::config::core::v3::Metadata,
    key: &str,
) -> Option<&'a str> {
    match metadata
        .filter_metadata
        .get(METADATA_NAMESPACE)?
        .fields
        .get(key)?
        .kind
        .as_ref()?
    {
        Kind::StringValue(v) => Some(v.as_str()),
        _ => None,
    }
}
