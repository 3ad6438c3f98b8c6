//! Token usage, as the gateway meters it.

use serde_json::Value;

/// Token counts of one request. `input` follows OpenAI's meaning: it includes cached input.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub cached_input: u64,
    pub cache_creation_input: u64,
    pub output: u64,
    pub reasoning: u64,
    pub total: u64,
}

impl Usage {
    /// Reads an OpenAI `usage` object (chat, completions or embeddings).
    pub fn from_openai(usage: &Value) -> Option<Usage> {
        let obj = usage.as_object()?;
        let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
        let input = n(obj.get("prompt_tokens"));
        let output = n(obj.get("completion_tokens"));
        let total = obj
            .get("total_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(input.saturating_add(output));
        Some(Usage {
            input,
            output,
            total,
            cached_input: n(usage.pointer("/prompt_tokens_details/cached_tokens")),
            cache_creation_input: n(usage.pointer("/prompt_tokens_details/cache_creation_tokens")),
            reasoning: n(usage.pointer("/completion_tokens_details/reasoning_tokens")),
        })
    }

    /// Reads a Responses API `usage` object (`input_tokens`, `output_tokens`, their
    /// details), which OpenAI sends on the response and on `response.completed`.
    pub fn from_responses(usage: &Value) -> Option<Usage> {
        let obj = usage.as_object()?;
        let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
        let input = n(obj.get("input_tokens"));
        let output = n(obj.get("output_tokens"));
        Some(Usage {
            input,
            output,
            total: obj
                .get("total_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(input.saturating_add(output)),
            cached_input: n(usage.pointer("/input_tokens_details/cached_tokens")),
            cache_creation_input: n(usage.pointer("/input_tokens_details/cache_creation_tokens")),
            reasoning: n(usage.pointer("/output_tokens_details/reasoning_tokens")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_openai_usage_with_details() {
        let u = Usage::from_openai(&json!({
            "prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30,
            "prompt_tokens_details": {"cached_tokens": 5},
            "completion_tokens_details": {"reasoning_tokens": 4}
        }))
        .unwrap();
        assert_eq!(
            u,
            Usage {
                input: 20,
                cached_input: 5,
                cache_creation_input: 0,
                output: 10,
                reasoning: 4,
                total: 30
            }
        );
    }

    #[test]
    fn reads_responses_usage_with_details() {
        let u = Usage::from_responses(&json!({
            "input_tokens": 36, "input_tokens_details": {"cached_tokens": 4},
            "output_tokens": 87, "output_tokens_details": {"reasoning_tokens": 64},
            "total_tokens": 123
        }))
        .unwrap();
        assert_eq!(
            (u.input, u.cached_input, u.output, u.reasoning, u.total),
            (36, 4, 87, 64, 123)
        );
    }

    #[test]
    fn embeddings_usage_has_no_completion() {
        let u = Usage::from_openai(&json!({"prompt_tokens": 8, "total_tokens": 8})).unwrap();
        assert_eq!((u.input, u.output, u.total), (8, 0, 8));
    }
}
