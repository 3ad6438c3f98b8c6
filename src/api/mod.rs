//! Client-facing APIs: which one a request speaks, and its parsed body.

pub mod error;
pub mod models;
pub mod multipart;
pub mod request;

pub use error::ApiError;
pub use request::ClientRequest;

/// The OpenAI-compatible APIs the gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    ChatCompletions,
    Completions,
    Embeddings,
    /// Anthropic's Messages API (`/v1/messages`, `/anthropic/v1/messages`), for clients
    /// built on the Anthropic SDKs. Its errors are Anthropic-shaped.
    Messages,
    /// OpenAI's Responses API (`/v1/responses`): passed to OpenAI and Azure OpenAI,
    /// translated (stateless) for the other schemas.
    Responses,
    /// OpenAI's `/v1/images/generations`.
    ImageGenerations,
    /// OpenAI's `/v1/audio/speech`: JSON in, audio (or SSE) out.
    Speech,
    /// OpenAI's `/v1/audio/transcriptions`: a multipart form with the audio file.
    Transcriptions,
    /// OpenAI's `/v1/audio/translations`: a multipart form with the audio file.
    Translations,
    /// Cohere's rerank (`/cohere/v2/rerank`, `/v1/rerank`).
    Rerank,
    /// Anthropic's `/v1/messages/count_tokens` (also under `/anthropic`). Anthropic-shaped.
    CountTokens,
    /// `GET /v1/models`, answered by the gateway itself.
    Models,
    /// `GET /anthropic/v1/models`: the same list in Anthropic's shape, for Anthropic SDK
    /// clients whose base URL ends in `/anthropic`.
    AnthropicModels,
}

impl ApiKind {
    /// The OpenTelemetry `gen_ai.operation.name`.
    pub fn operation(self) -> &'static str {
        match self {
            ApiKind::ChatCompletions | ApiKind::Messages => "chat",
            ApiKind::Completions => "text_completion",
            ApiKind::Embeddings => "embeddings",
            ApiKind::Responses => "responses",
            ApiKind::CountTokens => "count_tokens",
            ApiKind::Rerank => "rerank",
            ApiKind::ImageGenerations => "image_generation",
            ApiKind::Speech => "speech",
            ApiKind::Transcriptions => "transcription",
            ApiKind::Translations => "translation",
            ApiKind::Models | ApiKind::AnthropicModels => "models",
        }
    }

    /// Whether the body is a `multipart/form-data` form rather than JSON.
    pub fn is_form(self) -> bool {
        matches!(self, ApiKind::Transcriptions | ApiKind::Translations)
    }

    /// Whether the client speaks Anthropic's API, and so reads Anthropic-shaped errors.
    pub fn anthropic_shaped(self) -> bool {
        matches!(
            self,
            ApiKind::Messages | ApiKind::CountTokens | ApiKind::AnthropicModels
        )
    }

    /// The path suffix after the OpenAI `/v1` prefix.
    pub fn openai_suffix(self) -> &'static str {
        match self {
            ApiKind::ChatCompletions => "chat/completions",
            ApiKind::Completions => "completions",
            ApiKind::Embeddings => "embeddings",
            ApiKind::Messages => "messages",
            ApiKind::Responses => "responses",
            ApiKind::CountTokens => "messages/count_tokens",
            ApiKind::Rerank => "rerank",
            ApiKind::ImageGenerations => "images/generations",
            ApiKind::Speech => "audio/speech",
            ApiKind::Transcriptions => "audio/transcriptions",
            ApiKind::Translations => "audio/translations",
            ApiKind::Models | ApiKind::AnthropicModels => "models",
        }
    }

    fn method(self) -> &'static str {
        match self {
            ApiKind::Models | ApiKind::AnthropicModels => "GET",
            _ => "POST",
        }
    }
}

/// Picks the API from the method and path (query string ignored).
/// The path without its query or fragment.
fn bare_path(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or("")
}

pub fn route(method: &str, path: &str) -> Result<ApiKind, ApiError> {
    let bare = bare_path(path);
    let bare = if bare.len() > 1 {
        bare.trim_end_matches('/')
    } else {
        bare
    };
    let api = match bare {
        "/v1/chat/completions" => ApiKind::ChatCompletions,
        "/v1/completions" => ApiKind::Completions,
        "/v1/embeddings" => ApiKind::Embeddings,
        "/v1/models" => ApiKind::Models,
        "/v1/responses" => ApiKind::Responses,
        "/cohere/v2/rerank" | "/v1/rerank" => ApiKind::Rerank,
        "/v1/images/generations" => ApiKind::ImageGenerations,
        "/v1/audio/speech" => ApiKind::Speech,
        "/v1/audio/transcriptions" => ApiKind::Transcriptions,
        "/v1/audio/translations" => ApiKind::Translations,
        "/v1/messages" | "/anthropic/v1/messages" => ApiKind::Messages,
        "/v1/messages/count_tokens" | "/anthropic/v1/messages/count_tokens" => ApiKind::CountTokens,
        "/anthropic/v1/models" => ApiKind::AnthropicModels,
        _ => {
            return Err(ApiError::UnsupportedPath {
                method: method.to_string(),
                path: printable(bare),
            })
        }
    };
    if method != api.method() {
        return Err(ApiError::MethodNotAllowed {
            method: printable(method),
            path: bare.to_string(),
            allowed: api.method(),
        });
    }
    Ok(api)
}

/// The API whose error shape a request to `path` expects, even when no API serves the
/// path or the method is wrong: Anthropic's for anything under the Messages API's paths
/// (`/v1/messages/count_tokens`, a GET on `/v1/messages`), else OpenAI's.
pub fn error_shape(path: &str) -> ApiKind {
    let bare = bare_path(path);
    if bare.starts_with("/v1/messages") || bare.starts_with("/anthropic/") {
        ApiKind::Messages
    } else {
        ApiKind::ChatCompletions
    }
}

/// Caps and sanitizes a client-supplied string before it is echoed in an error.
pub fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_method_and_path() {
        assert_eq!(
            route("POST", "/v1/chat/completions"),
            Ok(ApiKind::ChatCompletions)
        );
        assert_eq!(
            route("POST", "/v1/chat/completions?x=1"),
            Ok(ApiKind::ChatCompletions)
        );
        assert_eq!(route("GET", "/v1/models"), Ok(ApiKind::Models));
        assert_eq!(route("POST", "/v1/messages"), Ok(ApiKind::Messages));
        assert_eq!(route("POST", "/v1/responses"), Ok(ApiKind::Responses));
        assert_eq!(
            route("POST", "/anthropic/v1/messages/count_tokens"),
            Ok(ApiKind::CountTokens)
        );
        assert_eq!(
            route("GET", "/anthropic/v1/models"),
            Ok(ApiKind::AnthropicModels)
        );
        assert!(route("GET", "/anthropic/v1/models")
            .unwrap()
            .anthropic_shaped());
        assert_eq!(
            route("POST", "/anthropic/v1/messages?beta=true"),
            Ok(ApiKind::Messages)
        );
        assert_eq!(
            route("GET", "/v1/chat/completions").unwrap_err().status(),
            405
        );
        assert_eq!(route("POST", "/v2/chat").unwrap_err().status(), 404);
    }
}
