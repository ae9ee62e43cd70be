//! Logging and tracing: `tracing-subscriber` logs as text or JSON lines carrying the trace id of
//! the request they belong to, an env-filter level, and OpenTelemetry spans exported over
//! OTLP/HTTP (protobuf) when an endpoint is configured.
//!
//! The rest of Echelon only uses `tracing`: the engine opens one `chat` span per request and one
//! `attempt` span per upstream attempt (with OpenTelemetry GenAI attributes), and
//! [`SpanEvents`] turns the domain's routing events (breaker transitions, cooldowns, skipped
//! candidates with their reason, fallbacks) into events on those spans. This module wires them
//! to the outside world.
//!
//! Exporting never slows a request: ended spans go through [`QueueSpanProcessor`], a bounded
//! queue with a non-blocking send and one export task; when the collector is slow or down, spans
//! are dropped and counted ([`ExportStats`], shown in the metrics), never waited for.
//!
//! The OpenTelemetry layer is installed even without an endpoint, so that every request has a
//! trace id for its log lines; spans then end in no exporter.

mod events;
mod export;

use core::time::Duration;
use std::fmt;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
use tracing::dispatcher::WeakDispatch;
use tracing::{Dispatch, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry};

pub use self::events::SpanEvents;
pub use self::export::{ExportOptions, ExportStats, Flusher, QueueSpanProcessor};
use crate::http_client::{HttpClientSettings, build_http_client};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Telemetry settings (`[telemetry]` in `gateway.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryOptions {
    /// Log line format.
    pub log_format: LogFormat,
    /// Log filter in env-filter syntax, e.g. `info` or `info,echelon=debug`.
    pub log_filter: String,
    /// OTLP/HTTP base endpoint (`http://collector:4318`); spans go to `<endpoint>/v1/traces`.
    /// `None`: no export.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of exported spans.
    pub service_name: String,
    /// The export queue.
    pub export: ExportOptions,
}

impl Default for TelemetryOptions {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_filter: "info".to_owned(),
            otlp_endpoint: None,
            service_name: "echelon".to_owned(),
            export: ExportOptions::default(),
        }
    }
}

/// Telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error("invalid log filter `{filter}`: {reason}")]
    Filter {
        /// The filter as given.
        filter: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The OTLP exporter could not be built.
    #[error("cannot set up trace export: {reason}")]
    Exporter {
        /// Why, without the endpoint (it may hold credentials).
        reason: String,
    },
    /// A global subscriber is already installed.
    #[error("a tracing subscriber is already installed")]
    AlreadyInstalled,
    /// Trace export needs a tokio runtime to run its export task.
    #[error("trace export must be set up inside the tokio runtime")]
    NoRuntime,
}

/// The installed telemetry: keeps the tracer provider alive; shut it down before exit so the
/// last spans are exported.
pub struct Telemetry {
    provider: SdkTracerProvider,
    stats: Arc<ExportStats>,
    flusher: Option<Flusher>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("exporting", &self.flusher.is_some())
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// The export queue's counters (all zero without an endpoint); hand them to
    /// [`crate::metrics::Metrics::observe_span_export`].
    pub fn export_stats(&self) -> Arc<ExportStats> {
        Arc::clone(&self.stats)
    }

    /// Exports what is queued (waiting at most `timeout`) and shuts the provider down.
    pub async fn shutdown(self, timeout: Duration) {
        if let Some(flusher) = &self.flusher {
            flusher.flush(timeout).await;
        }
        let _ = self.provider.shutdown_with_timeout(timeout);
    }
}

/// Builds a tracer provider whose spans go through a [`QueueSpanProcessor`] to `exporter`
/// (`None`: spans are created, with ids, and dropped at their end).
///
/// # Panics
/// With an exporter, outside a tokio runtime (the export task needs one).
pub fn tracer_provider<E: SpanExporter + 'static>(
    exporter: Option<E>,
    service_name: &str,
    export: ExportOptions,
) -> (SdkTracerProvider, Arc<ExportStats>, Option<Flusher>) {
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource.clone());
    let mut stats = Arc::new(ExportStats::default());
    let mut flusher = None;
    if let Some(mut exporter) = exporter {
        exporter.set_resource(&resource);
        let processor = QueueSpanProcessor::start(exporter, export);
        stats = processor.stats();
        flusher = Some(processor.flusher());
        builder = builder.with_span_processor(processor);
    }
    (builder.build(), stats, flusher)
}

/// The OTLP/HTTP protobuf exporter for `endpoint`, over Echelon's own HTTP client (no hidden
/// retries, no redirects, no proxies from the environment).
///
/// # Errors
/// When the endpoint or the client is refused.
pub fn otlp_exporter(
    endpoint: &str,
    timeout: Duration,
) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    let client = build_http_client(&HttpClientSettings {
        connect_timeout: timeout.min(Duration::from_secs(5)),
        request_timeout: timeout,
        pool_idle_timeout: Duration::from_secs(60),
        pool_max_idle_per_host: 4,
    })
    .map_err(|e| TelemetryError::Exporter {
        reason: e.to_string(),
    })?;
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(timeout)
        .build()
        .map_err(|e| TelemetryError::Exporter {
            reason: e.to_string(),
        })
}

/// Installs the global subscriber: logs to stderr in `options.log_format` filtered by
/// `options.log_filter`, with trace ids, and OpenTelemetry spans exported to
/// `options.otlp_endpoint` when set. Call once, inside the tokio runtime.
///
/// # Errors
/// A bad filter, an exporter that cannot be built, or a subscriber already installed.
pub fn init(options: &TelemetryOptions) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_new(&options.log_filter).map_err(|e| TelemetryError::Filter {
        filter: options.log_filter.clone(),
        reason: e.to_string(),
    })?;
    let exporter = match &options.otlp_endpoint {
        Some(endpoint) => {
            if tokio::runtime::Handle::try_current().is_err() {
                return Err(TelemetryError::NoRuntime);
            }
            Some(otlp_exporter(endpoint, options.export.timeout)?)
        }
        None => None,
    };
    let (provider, stats, flusher) =
        tracer_provider(exporter, &options.service_name, options.export);
    let tracer = provider.tracer("echelon");
    let otel = tracing_opentelemetry::layer().with_tracer(tracer);
    let source = TraceIdSource::default();
    let registry = Registry::default()
        .with(filter)
        .with(otel)
        .with(source.clone());
    let installed = match options.log_format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .map_event_format(|f| WithTraceId::new(f, source.clone())),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr)
                    .map_event_format(|f| WithTraceId::new(f, source.clone())),
            )
            .try_init(),
    };
    installed.map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(Telemetry {
        provider,
        stats,
        flusher,
    })
}

/// Where [`WithTraceId`] reads trace ids from: a layer that keeps a handle on the subscriber it
/// is part of. (Inside an event, `tracing`'s current dispatcher is not reachable, so the handle
/// is taken when the subscriber is built.)
#[derive(Debug, Clone, Default)]
pub struct TraceIdSource(Arc<OnceLock<WeakDispatch>>);

impl<S: Subscriber> tracing_subscriber::Layer<S> for TraceIdSource {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.0.set(subscriber.downgrade());
    }
}

impl TraceIdSource {
    /// The trace id of span `id`, as 32 hex digits, when the OpenTelemetry layer gave it one.
    pub fn trace_id(&self, id: &tracing::span::Id) -> Option<String> {
        let dispatch = self.0.get()?.upgrade()?;
        let context = tracing_opentelemetry::get_otel_context(id, &dispatch)?;
        let span = context.span();
        let span_context = span.span_context();
        span_context
            .is_valid()
            .then(|| span_context.trace_id().to_string())
    }
}

/// An event format that adds the trace id of the event's span: `trace_id=… ` before a text line,
/// a `"trace_id"` key in a JSON object.
#[derive(Debug, Clone)]
pub struct WithTraceId<F> {
    inner: F,
    source: TraceIdSource,
}

impl<F> WithTraceId<F> {
    /// Wraps `inner`, reading trace ids from `source` (a layer of the same subscriber).
    pub fn new(inner: F, source: TraceIdSource) -> Self {
        Self { inner, source }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithTraceId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let trace_id = ctx
            .lookup_current()
            .and_then(|span| self.source.trace_id(&span.id()));
        let Some(trace_id) = trace_id else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"trace_id\":\"{trace_id}\",{rest}"),
            None => write!(writer, "trace_id={trace_id} {line}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use opentelemetry_sdk::trace::InMemorySpanExporter;

    use super::*;

    /// The trace id of the current span, read through the OpenTelemetry span extension: the
    /// independent reading the log lines' ids are checked against.
    fn current_trace_id() -> Option<String> {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let context = tracing::Span::current().context();
        let span = context.span();
        let id = span.span_context();
        id.is_valid().then(|| id.trace_id().to_string())
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    fn is_trace_id(s: &str) -> bool {
        s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit()) && s != "0".repeat(32)
    }

    #[tokio::test]
    async fn log_lines_carry_the_trace_id_of_their_request_in_text_and_json() {
        let (provider, _, _) = tracer_provider(
            None::<InMemorySpanExporter>,
            "echelon-test",
            ExportOptions::default(),
        );
        let text = Buffer::default();
        let json = Buffer::default();
        let (t, j) = (text.clone(), json.clone());
        let tracer = provider.tracer("test");
        let (ts, js) = (TraceIdSource::default(), TraceIdSource::default());
        let text_logs = Registry::default()
            .with(tracing_opentelemetry::layer().with_tracer(tracer.clone()))
            .with(ts.clone())
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || t.clone())
                    .map_event_format(|f| WithTraceId::new(f, ts)),
            );
        let json_logs = Registry::default()
            .with(tracing_opentelemetry::layer().with_tracer(tracer))
            .with(js.clone())
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(move || j.clone())
                    .map_event_format(|f| WithTraceId::new(f, js)),
            );
        let mut ids = Vec::new();
        for subscriber in [
            tracing::Dispatch::new(text_logs),
            tracing::Dispatch::new(json_logs),
        ] {
            let _guard = tracing::dispatcher::set_default(&subscriber);
            tracing::info!("outside any request");
            let span = tracing::info_span!("chat", route = "pool:main");
            ids.push(span.in_scope(|| {
                tracing::info!("inside a request");
                current_trace_id()
            }));
        }
        let inside = ids[0].clone().expect("a request span has a trace id");
        assert!(is_trace_id(&inside));
        let in_json = ids[1].clone().expect("a request span has a trace id");

        let text = text.lines();
        assert!(!text[0].contains("trace_id="), "{}", text[0]);
        assert!(
            text[1].starts_with(&format!("trace_id={inside} ")),
            "{}",
            text[1]
        );
        assert!(text[1].ends_with("inside a request"));

        let json = json.lines();
        let outside: serde_json::Value = serde_json::from_str(&json[0]).unwrap();
        assert!(outside.get("trace_id").is_none());
        let line: serde_json::Value = serde_json::from_str(&json[1]).unwrap();
        assert_eq!(line["trace_id"], in_json.as_str());
        assert_eq!(line["span"]["route"], "pool:main");
        assert_eq!(line["fields"]["message"], "inside a request");
    }

    #[test]
    fn a_bad_filter_is_refused_with_its_text() {
        let options = TelemetryOptions {
            log_filter: "info,[[".to_owned(),
            ..TelemetryOptions::default()
        };
        let error = init(&options).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("invalid log filter `info,[[`"),
            "{error}"
        );
    }
}
