//! The span of one client request, named and attributed after the OpenTelemetry GenAI
//! semantic conventions (`gen_ai.*`), continuing the client's W3C `traceparent`. It holds
//! prompt and completion content only when content capture is on (see [`super::content`]).

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _};
use opentelemetry::{Array, KeyValue, StringValue, Value};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::Span;

use super::answer::AnswerReader;
use super::content::{self, Prompt};
use crate::api::ApiKind;
use crate::metrics::Completed;

pub struct RequestSpan {
    span: Span,
    api: ApiKind,
    capture: bool,
    prompt: Option<Prompt>,
    answer: AnswerReader,
    /// The exact model names (the metrics' labels are bounded by the configuration).
    request_model: Option<String>,
    response_model: Option<String>,
}

/// Longest model name a span keeps, in bytes.
const MAX_MODEL_NAME: usize = 256;

fn capped(name: &str) -> String {
    let mut end = name.len().min(MAX_MODEL_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

/// The client's trace headers, as the propagator reads them.
struct ClientTrace<'a> {
    traceparent: Option<&'a str>,
    tracestate: Option<&'a str>,
}

impl Extractor for ClientTrace<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent,
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

impl RequestSpan {
    /// A span for a request that arrived now, the child of the client's span when its
    /// `traceparent` is valid (else the root of a new trace). None when traces are off.
    pub fn start(
        api: ApiKind,
        traceparent: Option<&str>,
        tracestate: Option<&str>,
    ) -> Option<RequestSpan> {
        let tracer = super::tracer()?;
        let parent = TraceContextPropagator::new().extract(&ClientTrace {
            traceparent,
            tracestate,
        });
        // Renamed `{operation} {model}` once the body has named them.
        let span = tracer
            .span_builder("request")
            .with_kind(SpanKind::Client)
            .start_with_context(tracer, &parent);
        let capture = content::capture_enabled();
        Some(RequestSpan {
            span,
            api,
            capture,
            prompt: None,
            answer: AnswerReader::new(api, capture),
            request_model: None,
            response_model: None,
        })
    }

    /// The client's request body: its prompt is kept when content is captured.
    pub fn read_request(&mut self, body: &[u8]) {
        if self.capture {
            self.prompt = content::prompt(self.api, body);
        }
    }

    /// A whole success answer, as the client receives it.
    pub fn read_answer(&mut self, body: &[u8]) {
        self.answer.unary(body);
    }

    /// A piece of a streamed success answer, as the client receives it.
    pub fn read_answer_piece(&mut self, piece: &[u8], end_of_stream: bool) {
        self.answer.stream(piece, end_of_stream);
    }

    /// The `traceparent` the provider gets: this span as its parent, in the same trace.
    pub fn traceparent(&self) -> String {
        let context = self.span.span_context();
        format!(
            "00-{}-{}-{:02x}",
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8()
        )
    }

    /// The models as asked (after any `modelNameOverride`) and as answered, exactly: a
    /// trace is not bounded by label cardinality as metrics are.
    pub fn name_models(&mut self, request: &str, response: Option<&str>) {
        self.request_model = Some(capped(request));
        self.response_model = response.map(capped);
    }

    /// OpenTelemetry's `user.id`: the consumer the identity configuration found.
    pub fn set_consumer(&mut self, consumer: &str) {
        self.span
            .set_attribute(KeyValue::new("user.id", consumer.to_string()));
    }

    /// Ends the span with what the answer said.
    pub fn end(mut self, c: &Completed, status: u16) {
        let request_model = self.request_model.as_deref().unwrap_or(&c.request_model);
        let response_model = self.response_model.as_deref().unwrap_or(&c.response_model);
        let span = &mut self.span;
        span.update_name(match request_model.is_empty() {
            true => c.operation.to_string(),
            false => format!("{} {request_model}", c.operation),
        });
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", c.operation),
            KeyValue::new("http.response.status_code", i64::from(status)),
        ];
        let mut text = |key: &'static str, value: &str| {
            if !value.is_empty() {
                attributes.push(KeyValue::new(key, value.to_string()));
            }
        };
        text("gen_ai.provider.name", &c.provider);
        text("gen_ai.request.model", request_model);
        text("error.type", &c.error_type);
        if c.error_type.is_empty() {
            text("gen_ai.response.model", response_model);
            let u = &c.usage;
            attributes.push(KeyValue::new("gen_ai.usage.input_tokens", u.input as i64));
            attributes.push(KeyValue::new("gen_ai.usage.output_tokens", u.output as i64));
            if u.cached_input > 0 {
                attributes.push(KeyValue::new(
                    "gen_ai.usage.cache_read.input_tokens",
                    u.cached_input as i64,
                ));
            }
            if u.cache_creation_input > 0 {
                attributes.push(KeyValue::new(
                    "gen_ai.usage.cache_creation.input_tokens",
                    u.cache_creation_input as i64,
                ));
            }
        } else {
            span.set_status(Status::error(c.error_type.clone()));
        }
        let reasons = self.answer.finish_reasons();
        if !reasons.is_empty() {
            let reasons: Vec<StringValue> = reasons.into_iter().map(StringValue::from).collect();
            attributes.push(KeyValue::new(
                "gen_ai.response.finish_reasons",
                Value::Array(Array::String(reasons)),
            ));
        }
        // Content, when captured, as the conventions' JSON strings.
        if let Some(prompt) = self.prompt.take() {
            if let Some(system) = prompt.system_instructions {
                attributes.push(KeyValue::new(
                    "gen_ai.system_instructions",
                    system.to_string(),
                ));
            }
            attributes.push(KeyValue::new(
                "gen_ai.input.messages",
                prompt.messages.to_string(),
            ));
        }
        if let Some(output) = self.answer.output_messages() {
            attributes.push(KeyValue::new("gen_ai.output.messages", output.to_string()));
        }
        span.set_attributes(attributes);
        span.end();
    }
}
