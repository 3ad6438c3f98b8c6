//! Backend schemas: how a client request becomes a provider request, and how the
//! provider's answer comes back.
//!
//! Adding a provider is one module implementing [`BackendSchema`] plus one line in
//! [`REGISTRY`]; the ext_proc state machine never changes for it.

pub mod anthropic;
pub mod bedrock;
pub mod chat;
pub mod cohere;
pub mod completion;
pub mod embeddings;
pub mod messages_request;
pub mod openai;
pub mod responses;
pub mod vertex;

#[cfg(test)]
pub mod fixtures;
#[cfg(test)]
mod golden;

use std::fmt;
use std::sync::Arc;

use crate::api::{ApiError, ClientRequest};
use crate::config::resources::SchemaSpec;
use crate::usage::Usage;
// What translators build and read; neutral, so that credentials need no schema.
pub use crate::wire::{ResponseHead, UpstreamRequest};

/// A success answer that is not what the provider's API sends, so it cannot be
/// translated; the reason is logged, the client gets a 502.
#[derive(Debug, thiserror::Error)]
#[error("the provider's answer could not be read as {expected}: {reason}")]
pub struct UnreadableAnswer {
    pub expected: &'static str,
    pub reason: String,
}

impl UnreadableAnswer {
    pub fn new(expected: &'static str, reason: impl fmt::Display) -> Self {
        UnreadableAnswer {
            expected,
            reason: reason.to_string(),
        }
    }
}

/// Translates one attempt's response back to the client's API and reads its usage.
pub trait ResponseTranslator: Send + Sync {
    /// The content type of the provider's stream; a success response with it is handled
    /// chunk by chunk. When the body is rewritten the client gets `text/event-stream`.
    fn stream_content_type(&self) -> &'static str {
        "text/event-stream"
    }
    /// A provider error (a non-2xx answer, decoded) as the client's API error body. None
    /// keeps the generic handling: an OpenAI error passes, anything else is wrapped.
    fn error(&mut self, _head: &ResponseHead, _body: &[u8]) -> Option<Vec<u8>> {
        None
    }
    /// True when the body bytes will be rewritten (so a compressed body must be decoded).
    fn rewrites_body(&self) -> bool;
    /// A whole unary success body (already decoded); returns a replacement, if any, or
    /// that the body is not what the provider's API answers (the client gets a 502).
    fn unary(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, UnreadableAnswer>;
    /// A piece of a streamed success body (decoded); returns replacement bytes when
    /// `rewrites_body`, else None (the piece passes as it is).
    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>>;
    /// Token usage seen so far.
    fn usage(&self) -> Usage;
    /// The `model` the provider reported.
    fn response_model(&self) -> Option<&str>;
    /// Whether the first output token has been seen (for time-to-first-token).
    fn saw_output(&self) -> bool;
    /// For a stream passed as it came (`rewrites_body` false): whether what arrived so
    /// far ends the way the provider's API ends a complete stream. At the end of a
    /// stream that did not, the router level appends an error event, so that the client
    /// does not take a cut answer for a whole one. Translators end their own streams.
    fn stream_complete(&self) -> bool {
        true
    }
    /// Whether a stream this translator wrote ended with an error event (the provider
    /// failed, cut it, or sent what could not be read): it is metered as an error.
    fn stream_failed(&self) -> bool {
        false
    }
    /// The `sequence_number` the next event of a Responses API stream carries (the one
    /// an error event appended by the router level takes); 0 for other APIs.
    fn stream_sequence(&self) -> u64 {
        0
    }
}

/// A backend's wire format.
pub trait BackendSchema: Send + Sync + fmt::Debug {
    /// The provider as OpenTelemetry's `gen_ai.provider.name` names it.
    fn provider_name(&self) -> &'static str;
    /// Builds the provider request for this attempt.
    fn upstream_request(
        &self,
        request: &ClientRequest,
        model_override: Option<&str>,
    ) -> Result<UpstreamRequest, ApiError>;
    /// A translator for the response of an attempt built by `upstream_request`.
    fn response_translator(
        &self,
        request: &ClientRequest,
        usage_injected: bool,
    ) -> Box<dyn ResponseTranslator>;

    /// The schema's name when this build reads it but does not serve it yet.
    fn not_served(&self) -> Option<&'static str> {
        None
    }
}

type Constructor = fn(&SchemaSpec) -> Result<Arc<dyn BackendSchema>, String>;

/// Every schema name of the `AIServiceBackend` CRD, with the constructor of its schema.
pub const REGISTRY: &[(&str, Constructor)] = &[
    ("OpenAI", openai::OpenAi::build),
    ("AzureOpenAI", openai::azure::AzureOpenAi::build),
    ("AWSBedrock", bedrock::Bedrock::build),
    ("AWSAnthropic", bedrock::AwsAnthropic::build),
    ("GCPVertexAI", vertex::GcpVertexAi::build),
    ("GCPAnthropic", anthropic::GcpAnthropic::build),
    ("Anthropic", anthropic::Anthropic::build),
    ("Cohere", cohere::Cohere::build),
];

/// The schema for `spec`, or why it cannot be built. Unknown names are reported by
/// the config resolver, with a suggestion, before this is called.
pub fn build(spec: &SchemaSpec) -> Result<Arc<dyn BackendSchema>, String> {
    match REGISTRY.iter().find(|(name, _)| *name == spec.name) {
        Some((_, constructor)) => constructor(spec),
        None => Err(format!("unknown schema `{}`", spec.name)),
    }
}

/// What a client reads at the end of a stream the provider cut, whoever ends it.
pub const STREAM_CUT_MESSAGE: &str = "the provider's stream ended before the answer was finished";

/// Joins a path prefix (with or without slashes) and a suffix into an absolute path.
pub fn join_path(prefix: &str, suffix: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        format!("/{suffix}")
    } else {
        format!("/{prefix}/{suffix}")
    }
}

/// Percent-encodes a value (a model id) as one path segment: everything but unreserved
/// characters and `@` (Vertex model versions, `claude-x@20250514`) is encoded, so `/`,
/// `:` and `?` cannot change the path's meaning. The dot-segments `.` and `..` (refused as
/// model names, but a segment must never depend on that) are encoded as `%2E`.
pub fn path_segment(value: &str) -> String {
    if value == "." || value == ".." {
        return "%2E".repeat(value.len());
    }
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    const SEGMENT: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b'@');
    utf8_percent_encode(value, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::path_segment;

    #[test]
    fn a_model_id_stays_one_path_segment() {
        assert_eq!(path_segment("claude-x@20250514"), "claude-x@20250514");
        assert_eq!(path_segment("a/../b?c"), "a%2F..%2Fb%3Fc");
        assert_eq!(path_segment(".."), "%2E%2E");
        assert_eq!(path_segment("."), "%2E");
        assert_eq!(path_segment("..."), "...");
    }
}
