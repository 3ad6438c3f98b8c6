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

    /// OpenTelemetry's `user.id`: the consumer the identity configuration found.
    pub fn set_consumer(&mut self, consumer: &str) {
        self.span
            .set_attribute(KeyValue::new("user.id", consumer.to_string()));
    }

    /// Ends the span with what the answer said.
    pub fn end(mut self, c: &Completed, status: u16) {
        let span = &mut self.span;
        span.update_name(match c.request_model.is_empty() {
            true => c.operation.to_string(),
            false => format!("{} {}", c.operation, c.request_model),
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
        text("gen_ai.request.model", &c.request_model);
        text("error.type", &c.error_type);
        if c.error_type.is_empty() {
            text("gen_ai.response.model", &c.response_model);
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
