//! OpenAI embeddings on Amazon Titan text embeddings (`InvokeModel`), one input per call.

use crate::schema::UnreadableAnswer;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{ApiError, ClientRequest};
use crate::schema::embeddings;
use crate::schema::{ResponseHead, ResponseTranslator};
use crate::usage::Usage;

use super::{errors, PROVIDER};

/// Titan v1 embeds into a fixed 1536 dimensions and takes no `dimensions` field.
const TITAN_V1_DIMENSIONS: u64 = 1536;

#[derive(Deserialize)]
struct EmbeddingsRequest {
    input: Value,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u64>,
}

fn parse(request: &ClientRequest) -> Result<EmbeddingsRequest, ApiError> {
    serde_json::from_slice(&request.body)
        .map_err(|e| ApiError::BadRequest(format!("invalid embeddings request: {e}")))
}

/// The Titan `InvokeModel` body for the client's embeddings request.
pub fn titan_body(
    request: &ClientRequest,
    model_override: Option<&str>,
) -> Result<Value, ApiError> {
    let parsed = parse(request)?;
    encoding(&parsed)?;
    let mut body = json!({ "inputText": single_input(&parsed.input)? });
    if let Some(dimensions) = parsed.dimensions {
        let model = model_override.unwrap_or(&request.model);
        if is_titan_v1(model) {
            if dimensions != TITAN_V1_DIMENSIONS {
                return Err(ApiError::Unprocessable(format!(
                    "`dimensions` = {dimensions} is not supported by {model} on {PROVIDER}: it always returns {TITAN_V1_DIMENSIONS}"
                )));
            }
        } else {
            body["dimensions"] = dimensions.into();
            // OpenAI's embeddings are unit length; say so explicitly.
            body["normalize"] = true.into();
        }
    }
    Ok(body)
}

fn is_titan_v1(model: &str) -> bool {
    model.contains("titan-embed-text-v1") || model.contains("titan-embed-g1-text")
}

/// The one text Titan embeds per call.
fn single_input(input: &Value) -> Result<&str, ApiError> {
    match input {
        Value::String(text) => Ok(text),
        Value::Array(items) => match items.as_slice() {
            [Value::String(text)] => Ok(text),
            [] => Err(ApiError::BadRequest("`input` is empty".into())),
            [Value::String(_), ..] => Err(ApiError::Unprocessable(format!(
                "`input` with {} entries is not supported by {PROVIDER}: Titan embeds one text per request; send one request per input",
                items.len()
            ))),
            _ => Err(ApiError::Unprocessable(format!(
                "token arrays in `input` are not supported by {PROVIDER}; send text"
            ))),
        },
        _ => Err(ApiError::BadRequest(
            "`input` must be a string or an array of strings".into(),
        )),
    }
}

/// Whether the client asked for base64 embeddings.
fn encoding(parsed: &EmbeddingsRequest) -> Result<bool, ApiError> {
    embeddings::wants_base64(parsed.encoding_format.as_deref())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TitanOutput {
    embedding: Vec<f64>,
    #[serde(default)]
    input_text_token_count: u64,
}

/// Translates a Titan embedding into an OpenAI embeddings list.
pub struct TitanResponse {
    model: String,
    base64: bool,
    usage: Usage,
}

impl TitanResponse {
    pub fn new(request: &ClientRequest) -> Self {
        // The request was validated when it was sent; a failure here means float.
        let base64 = parse(request)
            .ok()
            .and_then(|p| encoding(&p).ok())
            .unwrap_or(false);
        TitanResponse {
            model: request.model.clone(),
            base64,
            usage: Usage::default(),
        }
    }

    fn embedding_json(&self, embedding: &[f64]) -> Value {
        embeddings::vector_json(embedding, self.base64)
    }
}

impl ResponseTranslator for TitanResponse {
    fn error(&mut self, head: &ResponseHead, body: &[u8]) -> Option<Vec<u8>> {
        errors::openai_error(head, body)
    }

    fn rewrites_body(&self) -> bool {
        true
    }

    fn unary(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, UnreadableAnswer> {
        let output: TitanOutput = serde_json::from_slice(body)
            .map_err(|e| UnreadableAnswer::new("a Titan embedding", e))?;
        let tokens = output.input_text_token_count;
        self.usage = Usage {
            input: tokens,
            total: tokens,
            ..Usage::default()
        };
        let answer = json!({
            "object": "list",
            "data": [{
                "object": "embedding",
                "index": 0,
                "embedding": self.embedding_json(&output.embedding),
            }],
            "model": self.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        });
        Ok(Some(answer.to_string().into_bytes()))
    }

    fn stream_chunk(&mut self, _chunk: &[u8], _end_of_stream: bool) -> Option<Vec<u8>> {
        // Embeddings are never streamed.
        None
    }

    fn usage(&self) -> Usage {
        self.usage
    }

    fn response_model(&self) -> Option<&str> {
        None
    }

    fn saw_output(&self) -> bool {
        self.usage.total > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiKind;
    use crate::schema::fixtures::load;
    use base64::Engine;
    use bytes::Bytes;

    fn request(body: &str) -> ClientRequest {
        ClientRequest::parse(ApiKind::Embeddings, Bytes::copy_from_slice(body.as_bytes())).unwrap()
    }

    #[test]
    fn recorded_titan_answer_becomes_an_openai_list() {
        let recorded = load("bedrock/invoke-titan-embed-text-v1.json");
        let titan = &recorded["response"]["body"];
        let r = request(r#"{"model":"amazon.titan-embed-text-v1","input":["Hello World!"]}"#);
        assert_eq!(titan_body(&r, None).unwrap(), recorded["request"]["body"]);
        let mut t = TitanResponse::new(&r);
        let v: Value =
            serde_json::from_slice(&t.unary(titan.to_string().as_bytes()).unwrap().unwrap())
                .unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["model"], "amazon.titan-embed-text-v1");
        assert_eq!(v["data"][0]["object"], "embedding");
        assert_eq!(v["data"][0]["index"], 0);
        assert_eq!(v["data"][0]["embedding"], titan["embedding"]);
        let tokens = titan["inputTextTokenCount"].as_u64().unwrap();
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": tokens, "total_tokens": tokens})
        );
        assert_eq!(t.usage().input, tokens);
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let recorded = load("bedrock/invoke-titan-embed-text-v1.json");
        let titan = &recorded["response"]["body"];
        let r = request(
            r#"{"model":"amazon.titan-embed-text-v1","input":"Hello World!","encoding_format":"base64"}"#,
        );
        let mut t = TitanResponse::new(&r);
        let v: Value =
            serde_json::from_slice(&t.unary(titan.to_string().as_bytes()).unwrap().unwrap())
                .unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v["data"][0]["embedding"].as_str().unwrap())
            .unwrap();
        let floats: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let expected: Vec<f32> = titan["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(floats, expected);
    }

    #[test]
    fn dimensions_for_v2_and_v1() {
        let r = request(r#"{"model":"amazon.titan-embed-text-v2:0","input":"a","dimensions":256}"#);
        assert_eq!(
            titan_body(&r, None).unwrap(),
            json!({"inputText": "a", "dimensions": 256, "normalize": true})
        );
        let r = request(r#"{"model":"amazon.titan-embed-text-v1","input":"a","dimensions":256}"#);
        assert_eq!(titan_body(&r, None).unwrap_err().status(), 422);
        let r = request(r#"{"model":"e","input":"a","dimensions":1536}"#);
        assert_eq!(
            titan_body(&r, Some("amazon.titan-embed-text-v1")).unwrap(),
            json!({"inputText": "a"})
        );
    }

    #[test]
    fn several_inputs_or_tokens_are_422() {
        let r = request(r#"{"model":"m","input":["a","b"]}"#);
        let e = titan_body(&r, None).unwrap_err();
        assert_eq!(e.status(), 422);
        assert!(e.to_string().contains("`input` with 2 entries"));
        let r = request(r#"{"model":"m","input":[1,2,3]}"#);
        assert_eq!(titan_body(&r, None).unwrap_err().status(), 422);
        let r = request(r#"{"model":"m","input":"a","encoding_format":"int8"}"#);
        assert_eq!(titan_body(&r, None).unwrap_err().status(), 400);
    }
}
