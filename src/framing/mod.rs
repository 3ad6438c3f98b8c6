//! Stream framing shared by the schemas: Server-Sent Events and the AWS event-stream.

pub mod aws_eventstream;
pub mod sse;
