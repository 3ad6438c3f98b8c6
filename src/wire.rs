//! A provider request for one upstream attempt and the head of the provider's answer:
//! what the schemas build and read, and what the credentials sign. Neutral ground, so
//! that `auth` depends on neither `schema` nor `config`.

use std::fmt;

/// A provider request for one upstream attempt.
#[derive(Default, Clone)]
pub struct UpstreamRequest {
    /// The `:path` to send.
    pub path: String,
    /// The body to send, when it differs from the client's.
    pub body: Option<Vec<u8>>,
    /// Headers to set (credentials are added later by the backend's credential).
    pub headers: Vec<(String, String)>,
    /// Whether a usage chunk was asked for on the client's behalf (to be hidden again).
    pub usage_injected: bool,
}

/// What a translator needs of the provider's response headers.
#[derive(Debug, Clone, Default)]
pub struct ResponseHead {
    pub status: u16,
    /// Lower-cased, parameters included.
    pub content_type: String,
    /// AWS's `x-amzn-errortype` header (the error code of a Bedrock error).
    pub aws_error_type: Option<String>,
}

impl UpstreamRequest {
    /// A request with a JSON body the schema wrote.
    pub fn json(path: String, body: Vec<u8>) -> Self {
        UpstreamRequest {
            path,
            body: Some(body),
            headers: vec![("content-type".into(), "application/json".into())],
            usage_injected: false,
        }
    }
}

impl fmt::Debug for UpstreamRequest {
    /// Header names only: once a credential is applied, values hold keys and signatures.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("UpstreamRequest")
            .field("path", &self.path)
            .field("body_len", &self.body.as_ref().map(Vec::len))
            .field("headers", &names)
            .field("usage_injected", &self.usage_injected)
            .finish()
    }
}
