//! OpenAI embeddings ↔ Vertex AI text embeddings (`:predict`).
//!
//! Request: each input text becomes an instance `{"content": text}`; `dimensions` becomes
//! `parameters.outputDimensionality`. An input may also be an object, as Envoy AI Gateway
//! takes it for Vertex: `{"content": text or [texts], "task_type", "title"}`, each text an
//! instance with that `task_type` and `title` (Vertex takes a title only with
//! `RETRIEVAL_DOCUMENT`: a title with another or none is a 400). A top-level `task_type` applies to every
//! instance, over the items' own; `auto_truncate` becomes `parameters.autoTruncate`.
//! Token-array inputs are refused (422): Vertex embeds text only. `user` is dropped. Response: `predictions[].embeddings.values` in order,
//! as floats or, for `encoding_format: base64`, as little-endian f32 bytes in base64
//! (what OpenAI sends); usage is the sum of `statistics.token_count`.

use crate::schema::UnreadableAnswer;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::api::{ApiError, ClientRequest};
use crate::usage::Usage;

use crate::schema::vertex::error::translate_error;
use crate::schema::vertex::request::PROVIDER;
use crate::schema::{ResponseHead, ResponseTranslator};

#[derive(Deserialize)]
struct EmbeddingsRequest {
    input: Value,
    #[serde(default)]
    dimensions: Option<u64>,
    #[serde(default)]
    encoding_format: Option<String>,
    /// Vertex's task type for every input (over the items' own).
    #[serde(default)]
    task_type: Option<String>,
    #[serde(default)]
    auto_truncate: Option<bool>,
}

/// An object input (see the module documentation).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputItem {
    content: Value,
    #[serde(default)]
    task_type: Option<String>,
    #[serde(default)]
    title: Option<String>,
}

/// The only task type Vertex takes a title with.
const TITLED_TASK: &str = "RETRIEVAL_DOCUMENT";

impl EmbeddingsRequest {
    fn parse(request: &ClientRequest) -> Result<Self, ApiError> {
        serde_json::from_slice(&request.body)
            .map_err(|e| ApiError::BadRequest(format!("invalid embeddings request: {e}")))
    }

    /// One `:predict` instance per text.
    fn instances(&self) -> Result<Vec<Value>, ApiError> {
        let mut out = Vec::new();
        match &self.input {
            Value::Array(items) if items.is_empty() => {
                return Err(ApiError::BadRequest("`input` is empty".into()))
            }
            Value::Array(items) => {
                for item in items {
                    self.push_instances(item, &mut out)?;
                }
            }
            single => self.push_instances(single, &mut out)?,
        }
        Ok(out)
    }

    fn push_instances(&self, input: &Value, out: &mut Vec<Value>) -> Result<(), ApiError> {
        let item = match input {
            Value::String(text) => InputItem {
                content: Value::String(text.clone()),
                task_type: None,
                title: None,
            },
            Value::Object(_) => serde_json::from_value(input.clone()).map_err(|e| {
                ApiError::BadRequest(format!(
                    "an `input` object takes `content`, `task_type` and `title`: {e}"
                ))
            })?,
            _ => {
                return Err(ApiError::Unprocessable(format!(
                    "{PROVIDER} embeds text only; send `input` as a string or a list of strings"
                )))
            }
        };
        let task_type = self.task_type.as_ref().or(item.task_type.as_ref());
        if item.title.is_some() && task_type.map(String::as_str) != Some(TITLED_TASK) {
            return Err(ApiError::BadRequest(format!(
                "an `input` `title` needs task_type {TITLED_TASK}, not {}",
                task_type.map_or("none", String::as_str)
            )));
        }
        let texts: Vec<&str> = match &item.content {
            Value::String(text) => vec![text],
            Value::Array(texts) if !texts.is_empty() => texts
                .iter()
                .map(Value::as_str)
                .collect::<Option<_>>()
                .ok_or_else(|| ApiError::BadRequest(CONTENT_SHAPE.into()))?,
            _ => return Err(ApiError::BadRequest(CONTENT_SHAPE.into())),
        };
        for text in texts {
            let mut instance = json!({ "content": text });
            if let Some(task) = task_type {
                instance["task_type"] = json!(task);
            }
            if let Some(title) = &item.title {
                instance["title"] = json!(title);
            }
            out.push(instance);
        }
        Ok(())
    }

    fn base64(&self) -> Result<bool, ApiError> {
        crate::schema::embeddings::wants_base64(self.encoding_format.as_deref())
    }
}

const CONTENT_SHAPE: &str = "an `input` object's `content` must be a string or a list of strings";

/// The `:predict` body for an OpenAI embeddings request.
pub fn predict_request(request: &ClientRequest) -> Result<Value, ApiError> {
    let parsed = EmbeddingsRequest::parse(request)?;
    parsed.base64()?;
    let mut body = json!({ "instances": parsed.instances()? });
    let mut parameters = Map::new();
    if let Some(dimensions) = parsed.dimensions {
        parameters.insert("outputDimensionality".into(), json!(dimensions));
    }
    if let Some(truncate) = parsed.auto_truncate {
        parameters.insert("autoTruncate".into(), json!(truncate));
    }
    if !parameters.is_empty() {
        body["parameters"] = Value::Object(parameters);
    }
    Ok(body)
}

#[derive(Deserialize)]
struct PredictResponse {
    #[serde(default)]
    predictions: Vec<Prediction>,
}

#[derive(Deserialize)]
struct Prediction {
    embeddings: PredictionEmbeddings,
}

#[derive(Deserialize)]
struct PredictionEmbeddings {
    #[serde(default)]
    values: Vec<f64>,
    #[serde(default)]
    statistics: Option<Statistics>,
}

#[derive(Deserialize)]
struct Statistics {
    /// A count, sent as a JSON number that may carry a fraction (`6.0`).
    #[serde(default)]
    token_count: f64,
}

pub struct VertexEmbeddingsResponse {
    model: String,
    base64: bool,
    usage: Usage,
    answered: bool,
}

impl VertexEmbeddingsResponse {
    pub fn new(request: &ClientRequest) -> Self {
        let base64 = EmbeddingsRequest::parse(request)
            .and_then(|r| r.base64())
            .unwrap_or(false);
        VertexEmbeddingsResponse {
            model: request.model.clone(),
            base64,
            usage: Usage::default(),
            answered: false,
        }
    }

    fn embedding(&self, values: &[f64]) -> Value {
        crate::schema::embeddings::vector_json(values, self.base64)
    }

    fn translate(&mut self, response: &PredictResponse) -> Vec<u8> {
        let tokens: f64 = response
            .predictions
            .iter()
            .filter_map(|p| p.embeddings.statistics.as_ref())
            .map(|s| s.token_count.max(0.0))
            .sum();
        let tokens = tokens.round() as u64;
        self.usage = Usage {
            input: tokens,
            total: tokens,
            ..Usage::default()
        };
        let data: Vec<Value> = response
            .predictions
            .iter()
            .enumerate()
            .map(|(index, p)| {
                json!({
                    "object": "embedding",
                    "index": index,
                    "embedding": self.embedding(&p.embeddings.values),
                })
            })
            .collect();
        let mut usage = Map::new();
        usage.insert("prompt_tokens".into(), tokens.into());
        usage.insert("total_tokens".into(), tokens.into());
        json!({ "object": "list", "data": data, "model": self.model, "usage": usage })
            .to_string()
            .into_bytes()
    }
}

impl ResponseTranslator for VertexEmbeddingsResponse {
    fn error(&mut self, head: &ResponseHead, body: &[u8]) -> Option<Vec<u8>> {
        translate_error(head.status, body)
    }

    fn rewrites_body(&self) -> bool {
        true
    }

    fn unary(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, UnreadableAnswer> {
        let response = serde_json::from_slice::<PredictResponse>(body)
            .map_err(|e| UnreadableAnswer::new("a Vertex AI predict answer", e))?;
        self.answered = !response.predictions.is_empty();
        Ok(Some(self.translate(&response)))
    }

    fn stream_chunk(&mut self, _: &[u8], _: bool) -> Option<Vec<u8>> {
        // Embeddings are never streamed (the request parser refuses `stream`).
        None
    }

    fn usage(&self) -> Usage {
        self.usage
    }

    fn response_model(&self) -> Option<&str> {
        // `:predict` names no model version.
        None
    }

    fn saw_output(&self) -> bool {
        self.answered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiKind;
    use base64::Engine;
    use bytes::Bytes;

    fn request(body: &str) -> ClientRequest {
        ClientRequest::parse(ApiKind::Embeddings, Bytes::from(body.to_string())).unwrap()
    }

    const PREDICT: &[u8] = br#"{"predictions":[
        {"embeddings":{"statistics":{"truncated":false,"token_count":6},"values":[0.5,-1.0,0.25]}},
        {"embeddings":{"statistics":{"truncated":false,"token_count":4.0},"values":[1.0,2.0,3.0]}}],
        "metadata":{"billableCharacterCount":30}}"#;

    #[test]
    fn request_shape() {
        let r = request(
            r#"{"model":"text-embedding-005","input":["a","b"],"dimensions":3,"user":"u"}"#,
        );
        assert_eq!(
            predict_request(&r).unwrap(),
            json!({"instances":[{"content":"a"},{"content":"b"}],"parameters":{"outputDimensionality":3}})
        );
        let r = request(r#"{"model":"m","input":"one"}"#);
        assert_eq!(
            predict_request(&r).unwrap(),
            json!({"instances":[{"content":"one"}]})
        );
        let r = request(r#"{"model":"m","input":[[1,2,3]]}"#);
        assert_eq!(predict_request(&r).unwrap_err().status(), 422);
        let r = request(r#"{"model":"m","input":[1,2,3]}"#);
        assert_eq!(predict_request(&r).unwrap_err().status(), 422);
        let r = request(r#"{"model":"m","input":"x","encoding_format":"int8"}"#);
        assert_eq!(predict_request(&r).unwrap_err().status(), 400);
    }

    #[test]
    fn object_inputs_carry_task_type_and_title() {
        let r = request(
            r#"{"model":"m","input":[{"content":"q","task_type":"RETRIEVAL_QUERY"},
               {"content":["d1","d2"],"task_type":"RETRIEVAL_DOCUMENT","title":"T"},"plain"],
               "auto_truncate":false}"#,
        );
        assert_eq!(
            predict_request(&r).unwrap(),
            json!({"instances":[
                {"content":"q","task_type":"RETRIEVAL_QUERY"},
                {"content":"d1","task_type":"RETRIEVAL_DOCUMENT","title":"T"},
                {"content":"d2","task_type":"RETRIEVAL_DOCUMENT","title":"T"},
                {"content":"plain"}],
              "parameters":{"autoTruncate":false}})
        );
        // A top-level task type applies to every instance.
        let r = request(
            r#"{"model":"m","task_type":"CLUSTERING","input":[{"content":"a","task_type":"X"},"b"]}"#,
        );
        let body = predict_request(&r).unwrap();
        assert_eq!(body["instances"][0]["task_type"], "CLUSTERING");
        assert_eq!(body["instances"][1]["task_type"], "CLUSTERING");
        for bad in [
            r#"{"model":"m","input":{"content":"a","title":"T","task_type":"RETRIEVAL_QUERY"}}"#,
            r#"{"model":"m","input":{"content":"a","title":"T"}}"#,
            r#"{"model":"m","input":{"content":[]}}"#,
            r#"{"model":"m","input":{"content":[1]}}"#,
            r#"{"model":"m","input":{"text":"a"}}"#,
        ] {
            let e = predict_request(&request(bad)).unwrap_err();
            assert_eq!(e.status(), 400, "{bad}: {e}");
        }
    }

    #[test]
    fn floats_and_usage() {
        let mut t = VertexEmbeddingsResponse::new(&request(r#"{"model":"m","input":["a","b"]}"#));
        let out: Value = serde_json::from_slice(&t.unary(PREDICT).unwrap().unwrap()).unwrap();
        assert_eq!(out["data"][0]["embedding"], json!([0.5, -1.0, 0.25]));
        assert_eq!(out["data"][1]["index"], 1);
        assert_eq!(
            out["usage"],
            json!({"prompt_tokens": 10, "total_tokens": 10})
        );
        assert_eq!(out["model"], "m");
        assert_eq!((t.usage().input, t.usage().total), (10, 10));
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let mut t = VertexEmbeddingsResponse::new(&request(
            r#"{"model":"m","input":"a","encoding_format":"base64"}"#,
        ));
        let out: Value = serde_json::from_slice(&t.unary(PREDICT).unwrap().unwrap()).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(out["data"][0]["embedding"].as_str().unwrap())
            .unwrap();
        let floats: Vec<f32> = bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(floats, vec![0.5, -1.0, 0.25]);
    }
}
