//! Token costs written in CEL: a QuotaPolicy's `costExpression` and an `llmRequestCosts`
//! entry of type `CEL`, over the usage of one answer.

use std::sync::Arc;

use cel::{Context, Env, Program, Value};

use crate::usage::Usage;

/// The variables a cost expression may read (as Envoy AI Gateway names them).
pub const VARIABLES: &[&str] = &[
    "input_tokens",
    "cached_input_tokens",
    "cache_creation_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
    "model",
    "backend",
];

/// A compiled cost: `total_tokens` when no expression is given.
pub struct Cost {
    source: Option<String>,
    program: Option<Program>,
    env: Arc<Env>,
}

impl std::fmt::Debug for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Cost").field(&self.source).finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CostError {
    #[error("the cost expression `{expression}` failed: {message}")]
    Failed { expression: String, message: String },
    #[error("the cost expression `{expression}` gave {value}, not a whole number of tokens ≥ 0")]
    NotACount { expression: String, value: String },
}

impl Cost {
    /// `total_tokens`, the default of a QuotaPolicy without `costExpression`.
    pub fn total_tokens() -> Cost {
        Cost {
            source: None,
            program: None,
            env: Arc::new(Env::stdlib()),
        }
    }

    /// Compiles `source`, checking that it reads only the known variables and that it
    /// gives a count for an answer with no tokens (a type error shows at load, not on
    /// the first answer).
    pub fn compile(source: &str) -> Result<Cost, String> {
        let env = Arc::new(Env::stdlib());
        let program = env.compile(source).map_err(|e| e.to_string())?;
        let references = program.references();
        if let Some(unknown) = references
            .variables()
            .into_iter()
            .find(|v| !VARIABLES.contains(v))
        {
            return Err(format!(
                "reads `{unknown}`, which is not one of {}",
                VARIABLES.join(", ")
            ));
        }
        let cost = Cost {
            source: Some(source.to_string()),
            program: Some(program),
            env,
        };
        // Numbers only; a negative one is judged per answer (`output_tokens - 100`).
        match cost.raw(&Usage::default(), "model", "backend") {
            Ok(Value::Int(_) | Value::UInt(_) | Value::Float(_)) => Ok(cost),
            Ok(other) => Err(format!("gives {other:?}, not a number of tokens")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The cost of an answer with `usage`, from `backend` (`name.namespace`) for `model`
    /// (the model the provider was asked for).
    pub fn evaluate(&self, usage: &Usage, model: &str, backend: &str) -> Result<u64, CostError> {
        let Some(source) = &self.source else {
            return Ok(usage.total);
        };
        let value = self.raw(usage, model, backend)?;
        let not_a_count = |value: &Value| CostError::NotACount {
            expression: source.clone(),
            value: format!("{value:?}"),
        };
        match value {
            Value::Int(n) => u64::try_from(n).map_err(|_| not_a_count(&value)),
            Value::UInt(n) => Ok(n),
            // Fractional prices round up: a cost never rounds to free.
            Value::Float(f) if f.is_finite() && f >= 0.0 => Ok(f.ceil() as u64),
            other => Err(not_a_count(&other)),
        }
    }

    fn raw(&self, usage: &Usage, model: &str, backend: &str) -> Result<Value, CostError> {
        let (Some(program), Some(source)) = (&self.program, &self.source) else {
            return Ok(Value::UInt(usage.total));
        };
        let mut context = Context::with_env(self.env.clone());
        let counts = [
            ("input_tokens", usage.input),
            ("cached_input_tokens", usage.cached_input),
            ("cache_creation_input_tokens", usage.cache_creation_input),
            ("output_tokens", usage.output),
            ("reasoning_tokens", usage.reasoning),
            ("total_tokens", usage.total),
        ];
        for (name, value) in counts {
            // Int, not uint: `input_tokens * 2` must not need `2u`.
            context.add_variable_from_value(
                name,
                Value::Int(i64::try_from(value).unwrap_or(i64::MAX)),
            );
        }
        context.add_variable_from_value("model", Value::String(Arc::new(model.to_string())));
        context.add_variable_from_value("backend", Value::String(Arc::new(backend.to_string())));
        program.execute(&context).map_err(|e| CostError::Failed {
            expression: source.clone(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage() -> Usage {
        Usage {
            input: 10,
            cached_input: 4,
            cache_creation_input: 2,
            output: 7,
            reasoning: 3,
            total: 17,
        }
    }

    #[test]
    fn every_variable_is_bound() {
        let cost = Cost::compile(
            "input_tokens + cached_input_tokens + cache_creation_input_tokens + output_tokens * 2 + reasoning_tokens + total_tokens",
        )
        .unwrap();
        assert_eq!(
            cost.evaluate(&usage(), "m", "b.default"),
            Ok(10 + 4 + 2 + 14 + 3 + 17)
        );
        let by_model = Cost::compile(
            "model == 'gpt-4o' && backend == 'openai.default' ? output_tokens * 10 : output_tokens",
        )
        .unwrap();
        assert_eq!(
            by_model.evaluate(&usage(), "gpt-4o", "openai.default"),
            Ok(70)
        );
        assert_eq!(
            by_model.evaluate(&usage(), "gpt-4o-mini", "openai.default"),
            Ok(7)
        );
    }

    #[test]
    fn no_expression_is_total_tokens() {
        assert_eq!(Cost::total_tokens().evaluate(&usage(), "m", "b"), Ok(17));
    }

    #[test]
    fn fractions_round_up_and_bad_results_are_errors() {
        let cost = Cost::compile("double(output_tokens) * 0.5").unwrap();
        assert_eq!(cost.evaluate(&usage(), "m", "b"), Ok(4));
        let negative = Cost::compile("output_tokens - 100").unwrap();
        assert!(matches!(
            negative.evaluate(&usage(), "m", "b"),
            Err(CostError::NotACount { .. })
        ));
    }

    #[test]
    fn load_time_errors_name_the_problem() {
        assert!(Cost::compile("input_tokens +").is_err());
        let unknown = Cost::compile("prompt_tokens * 2").unwrap_err();
        assert!(unknown.contains("`prompt_tokens`"), "{unknown}");
        let typed = Cost::compile("model + 1").unwrap_err();
        assert!(typed.contains("failed"), "{typed}");
        assert!(Cost::compile("'a'").unwrap_err().contains("not a number"));
    }
}
