//! The log subscriber: human-readable text by default, or one JSON object per line for a
//! log pipeline (`--log-format json`).

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object a line: `timestamp`, `level`, `target` and the event's `fields`.
    Json,
}

/// Held while the process runs; dropped, it writes out what is queued.
pub type LogWriter = WorkerGuard;

/// Log lines queued for the writer thread at most.
const LOG_QUEUE_LINES: usize = 1024;

/// Installs the subscriber for the process, writing to stderr from a thread of its own:
/// `run` logs a line per request at `info`, and the request path (one thread, see
/// `main`) then only queues it. Lines are never dropped: a full queue waits. Keep the
/// guard until the process ends; dropped, it writes out what is queued.
pub fn init(format: LogFormat) -> LogWriter {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        // The queue is allocated whole (tracing-appender's default of 128,000 lines took
        // 5 MiB of RSS); a burst beyond this waits, as a direct write would.
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("llm-extproc-log")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        // Spans are not listed per event: the request id is a field of each event.
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    guard
}

/// `RUST_LOG`, or `info`. The file watcher (`notify`) logs every raw inotify event at
/// trace level, before any filter: with the log written into a watched configuration
/// directory each line would be an event logged again, without end (it grew a log by
/// 30 MB a second). Its trace lines stay off unless `RUST_LOG` names it.
fn filter() -> EnvFilter {
    let from_env = std::env::var("RUST_LOG").ok();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match "notify=info".parse() {
        Ok(directive) if !from_env.is_some_and(|v| v.contains("notify")) => {
            filter.add_directive(directive)
        }
        _ => filter,
    }
}
