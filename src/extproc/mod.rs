//! The ext_proc gRPC service. One service serves both placements on one socket; the
//! upstream-level filter marks its streams with gRPC initial metadata.

pub mod attempt;
pub mod budget;
pub mod decode;
pub mod messages;
pub mod router;
pub mod store;
pub mod upstream;

use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessor;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    processing_request::Request as Msg, processing_response::Response as Reply, ProcessingRequest,
    ProcessingResponse,
};
use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::config::watch::SharedConfig;
use crate::metrics::Metrics;
use store::RequestStore;

/// Bodies above this are parsed on the blocking pool: the runtime has one thread, and a
/// large JSON body (tens of MiB of images) must not hold up every other request.
const OFFLOAD_BYTES: usize = 1 << 20;

/// What the router stream answers to one message: nothing while it waits for the rest of
/// a body, else one answer (see [`router`] for why a phase is answered once it has been
/// read whole).
pub type Answers = Vec<ProcessingResponse>;

/// One message's handling on the router stream.
type Work = Box<dyn FnOnce(&mut router::RouterStream) -> Answers + Send>;

/// Runs `work` on the router stream, inline for a small body and on the blocking pool for
/// one over [`OFFLOAD_BYTES`], and hands the stream back. None when the work panicked.
async fn run(
    mut router: router::RouterStream,
    body_size: usize,
    work: Work,
) -> Option<(router::RouterStream, Answers)> {
    if body_size <= OFFLOAD_BYTES {
        let answer = work(&mut router);
        return Some((router, answer));
    }
    tokio::task::spawn_blocking(move || {
        let answer = work(&mut router);
        (router, answer)
    })
    .await
    .ok()
}

/// The stream's answer when offloaded work failed: an error status, so that Envoy fails
/// the request closed (a clean end of stream would let it continue unprocessed).
fn offload_failed() -> Status {
    tracing::error!("processing a large body failed");
    Status::internal("processing a large body failed")
}

/// gRPC initial metadata key that tells the two placements apart.
pub const PLACEMENT_METADATA: &str = "x-llm-extproc-placement";

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: u64,
    /// Bound on the large request bodies held at once (see [`budget`]).
    pub max_body_bytes_in_flight: u64,
}

/// What every stream shares.
pub struct Shared {
    pub config: SharedConfig,
    pub store: Arc<RequestStore>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub body_budget: budget::BodyBudget,
    /// Who the consumer is, for quota buckets.
    pub identity: crate::quota::identity::Identity,
}

#[derive(Clone)]
pub struct Service {
    shared: Arc<Shared>,
}

impl Service {
    pub fn new(shared: Arc<Shared>) -> Self {
        Service { shared }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for Service {
    type ProcessStream = ResponseStream;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let upstream = request
            .metadata()
            .get(PLACEMENT_METADATA)
            .is_some_and(|v| v.as_bytes() == b"upstream");
        let inbound = request.into_inner();
        let shared = self.shared.clone();
        // Each message is answered inline: no task hop per message (large bodies excepted).
        // The handler (and with it the request-state guard) lives in the stream, so it is
        // dropped when the stream ends for any reason: Envoy half-closing, resetting, or
        // the sidecar failing.
        let stream: ResponseStream = if upstream {
            Box::pin(inbound.map(move |m| {
                let m = m?;
                match m.request {
                    Some(Msg::RequestHeaders(_)) => Ok(upstream::request_headers(
                        &shared,
                        &m.attributes,
                        m.metadata_context.as_ref(),
                    )),
                    _ => Err(Status::invalid_argument(
                        "the upstream placement only processes request headers",
                    )),
                }
            }))
        } else {
            let answers = futures_util::stream::unfold(
                (inbound, Some(router::RouterStream::new(shared))),
                |(mut inbound, router)| async move {
                    let router = router?;
                    let m = match inbound.next().await? {
                        Ok(m) => m,
                        Err(status) => return Some((vec![Err(status)], (inbound, None))),
                    };
                    // What to do with the message, and how large a body it completes.
                    let (size, work): (usize, Work) = match m.request {
                        Some(Msg::RequestHeaders(h)) => {
                            let forwarded = m.metadata_context;
                            (
                                0,
                                Box::new(move |r| {
                                    r.forwarded_metadata(forwarded);
                                    r.request_headers(h)
                                }),
                            )
                        }
                        Some(Msg::RequestBody(b)) => {
                            let size = match (b.end_of_stream, router.decodes_request()) {
                                (false, _) => 0,
                                (true, true) => usize::MAX,
                                (true, false) => router.held_body_len() + b.body.len(),
                            };
                            (size, Box::new(move |r| r.request_body(b)))
                        }
                        Some(Msg::RequestTrailers(_)) => {
                            let size = router.held_body_len();
                            (size, Box::new(move |r| r.request_trailers()))
                        }
                        Some(Msg::ResponseHeaders(h)) => {
                            (0, Box::new(move |r| r.response_headers(h)))
                        }
                        Some(Msg::ResponseBody(b)) => {
                            let size = router.response_work_size(b.body.len(), b.end_of_stream);
                            (size, Box::new(move |r| r.response_body(b)))
                        }
                        Some(Msg::ResponseTrailers(_)) | None => {
                            let status = Status::invalid_argument(
                                "unexpected ext_proc message; check the filter's processing_mode",
                            );
                            return Some((vec![Err(status)], (inbound, None)));
                        }
                    };
                    let Some((router, answers)) = run(router, size, work).await else {
                        return Some((vec![Err(offload_failed())], (inbound, None)));
                    };
                    // After an immediate response Envoy is done with the stream, but the
                    // pieces of body it sent before reading it may still arrive: they end
                    // here, unread.
                    let done = answers
                        .iter()
                        .any(|a| matches!(a.response, Some(Reply::ImmediateResponse(_))));
                    let router = (!done).then_some(router);
                    Some((answers.into_iter().map(Ok).collect(), (inbound, router)))
                },
            );
            Box::pin(answers.flat_map(futures_util::stream::iter))
        };
        Ok(Response::new(stream))
    }
}
