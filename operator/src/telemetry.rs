//! Logs, metrics and the health endpoints.
//!
//! One small HTTP server (address from `--metrics-address`) serves:
//! - `GET /metrics`: OpenMetrics text with reconcile count, duration and errors by reason, the API requests
//!   by source (`reconcile` or `watch`) and verb (divide the `reconcile` ones by the reconcile count for the
//!   requests per reconcile), plus whether this replica currently leads;
//! - `GET /healthz`: 200 while the process is up (liveness: a wedged runtime cannot answer);
//! - `GET /readyz`: 200 once startup checks passed (client built, CRD installed) and until shutdown begins, 503
//!   otherwise. A standby replica (not the leader) is ready too: it is healthy and waiting, and marking it unready
//!   would stall rolling updates of the operator's own Deployment.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use kube::Client;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::api_verb::Verb;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global `tracing` subscriber. The filter is `filter` if given, else `RUST_LOG`, else `info`;
/// an unparsable filter falls back to `info` (with a warning once logging works).
pub fn init_logging(format: LogFormat, filter: Option<&str>) {
    let requested = filter
        .map(str::to_owned)
        .or_else(|| std::env::var("RUST_LOG").ok());
    let parsed = requested
        .as_deref()
        .map(tracing_subscriber::EnvFilter::try_new);
    let (filter, bad) = match parsed {
        Some(Ok(filter)) => (filter, None),
        Some(Err(error)) => (tracing_subscriber::EnvFilter::new("info"), Some(error)),
        None => (tracing_subscriber::EnvFilter::new("info"), None),
    };
    // Only a second initialisation (tests) can fail; keeping the first subscriber is fine.
    let _ = subscriber(format, filter, std::io::stderr).try_init();
    if let Some(error) = bad {
        tracing::warn!(%error, "invalid log filter; using info");
    }
}

/// The subscriber [`init_logging`] installs, writing to `writer`. A line carries the fields of the spans it
/// was logged in, so a reconcile's lines name their transport without repeating it: in text after the
/// span's name (`reconcile{namespace=calls transport=demo}:dereference: ...`), in JSON under `span` (the
/// innermost) and `spans` (all of them, outermost first), beside the event's own fields at the top level.
pub fn subscriber<W>(
    format: LogFormat,
    filter: tracing_subscriber::EnvFilter,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(false).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(true)
                .finish(),
        ),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    source: &'static str,
    verb: &'static str,
}

/// Who made an API request: a reconcile, or the watches that feed the controller and its caches. The
/// metric label is the variant's name in snake case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum RequestSource {
    Reconcile,
    Watch,
}

/// The operator's metrics. Cloning shares the underlying counters.
#[derive(Clone)]
pub struct Metrics {
    reconciles: Counter,
    duration: Histogram,
    errors: Family<ReasonLabel, Counter>,
    requests: Family<RequestLabels, Counter>,
    leader: Gauge,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reconciles: Counter::default(),
            // 5 ms .. ~20 s: a reconcile is a handful of API round trips.
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 13)),
            errors: Family::default(),
            requests: Family::default(),
            leader: Gauge::default(),
        };
        registry.register(
            "reconciles",
            "Reconciliations run",
            metrics.reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            metrics.duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciliations by reason",
            metrics.errors.clone(),
        );
        registry.register(
            "api_requests",
            "Kubernetes API requests by source (reconcile, watch) and verb (get, list, watch, create, patch, delete, ...)",
            metrics.requests.clone(),
        );
        registry.register(
            "leader",
            "Whether this replica leads: 1 while it holds the leader lease or runs without leader election, else 0",
            metrics.leader.clone(),
        );
        metrics
    }

    /// Counts a reconciliation and measures it until the returned guard is dropped.
    pub fn reconcile_started(&self) -> ReconcileTimer {
        self.reconciles.inc();
        ReconcileTimer {
            started: Instant::now(),
            histogram: self.duration.clone(),
        }
    }

    pub fn reconcile_failed(&self, reason: &'static str) {
        self.errors.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    fn count_request(&self, source: RequestSource, verb: Verb) {
        self.requests
            .get_or_create(&RequestLabels {
                source: source.into(),
                verb: verb.as_str(),
            })
            .inc();
    }

    /// A client that sends through `client` and counts every request by `source` and verb.
    pub fn counted(&self, client: Client, source: RequestSource) -> Client {
        let namespace = client.default_namespace().to_owned();
        let metrics = self.clone();
        let service = tower::service_fn(move |request: axum::http::Request<kube::client::Body>| {
            let uri = request.uri();
            let verb = Verb::of(
                request.method(),
                uri.path(),
                uri.query().unwrap_or_default(),
            );
            metrics.count_request(source, verb);
            let client = client.clone();
            async move { client.send(request).await }
        });
        Client::new(service, namespace)
    }
}

/// Records the duration of one reconciliation when dropped.
pub struct ReconcileTimer {
    started: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

/// Metrics plus the readiness flag, shared by the controller and the HTTP server.
pub struct Telemetry {
    registry: Registry,
    metrics: Metrics,
    ready: AtomicBool,
}

impl Default for Telemetry {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("matrixrtc_operator");
        let metrics = Metrics::register(&mut registry);
        Self {
            registry,
            metrics,
            ready: AtomicBool::new(false),
        }
    }
}

impl Telemetry {
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The routes, separate from the listener so tests can call them directly.
pub fn router(telemetry: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(telemetry)
}

async fn metrics(State(telemetry): State<Arc<Telemetry>>) -> impl IntoResponse {
    match telemetry.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn readyz(State(telemetry): State<Arc<Telemetry>>) -> impl IntoResponse {
    if telemetry.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Binds `address` (so a bad address fails at startup) and returns the bound address and the server future,
/// which runs until `shutdown` resolves.
pub async fn bind(
    address: SocketAddr,
    telemetry: Arc<Telemetry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz");
    let server = async move {
        axum::serve(listener, router(telemetry))
            .with_graceful_shutdown(shutdown)
            .await
    };
    Ok((bound, server))
}

/// Log lines captured in memory, for tests that assert on what is logged.
#[cfg(test)]
pub mod captured {
    use std::sync::{Arc, Mutex};

    use super::{LogFormat, subscriber};

    /// What a subscriber of [`subscriber`] wrote.
    #[derive(Clone, Default)]
    pub struct CapturedLog(Arc<Mutex<Vec<u8>>>);

    impl CapturedLog {
        /// A subscriber writing here as `--log-format json` does, at `filter` (install it with e.g.
        /// `tracing::subscriber::set_default`).
        pub fn json_subscriber(&self, filter: &str) -> Box<dyn tracing::Subscriber + Send + Sync> {
            self.subscriber(LogFormat::Json, filter)
        }

        pub fn subscriber(
            &self,
            format: LogFormat,
            filter: &str,
        ) -> Box<dyn tracing::Subscriber + Send + Sync> {
            // Reliable beside other tests in the same process (`cargo test`).
            matrixrtc_test_support::tracing_anchor::anchor_call_site_interest();
            let log = self.clone();
            subscriber(
                format,
                tracing_subscriber::EnvFilter::new(filter),
                move || log.clone(),
            )
        }

        /// Everything written so far.
        pub fn text(&self) -> String {
            let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
            String::from_utf8(bytes).expect("log lines are UTF-8")
        }

        /// Every JSON line written so far, parsed.
        pub fn lines(&self) -> Vec<serde_json::Value> {
            self.text()
                .lines()
                .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
                .collect()
        }
    }

    impl std::io::Write for CapturedLog {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::captured::CapturedLog;
    use super::*;

    /// Logs one line the way a reconcile step does, to `log` in `format`.
    fn log_in_spans(log: &CapturedLog, format: LogFormat) {
        tracing::subscriber::with_default(log.subscriber(format, "info"), || {
            let outer = tracing::error_span!(
                "reconcile",
                namespace = Some("calls"),
                transport = Some("demo")
            );
            let _outer = outer.enter();
            tracing::info_span!("apply_children").in_scope(|| {
                tracing::info!(child = "ConfigMap/demo-livekit", "applied");
            });
        });
    }

    #[test]
    fn text_lines_carry_the_fields_of_their_spans() {
        let log = CapturedLog::default();
        log_in_spans(&log, LogFormat::Text);
        let text = log.text();
        assert!(
            text.contains(
                r#"reconcile{namespace="calls" transport="demo"}:apply_children: matrixrtc_operator::telemetry::tests: applied child="ConfigMap/demo-livekit""#
            ),
            "{text}"
        );
    }

    #[test]
    fn json_lines_carry_the_fields_of_their_spans() {
        let log = CapturedLog::default();
        log_in_spans(&log, LogFormat::Json);
        let lines = log.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["message"], "applied");
        assert_eq!(line["child"], "ConfigMap/demo-livekit");
        assert_eq!(line["span"]["name"], "apply_children");
        assert_eq!(line["spans"][0]["name"], "reconcile");
        assert_eq!(line["spans"][0]["namespace"], "calls");
        assert_eq!(line["spans"][0]["transport"], "demo");
    }
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(telemetry: &Arc<Telemetry>, path: &str) -> (StatusCode, String) {
        let request = axum::http::Request::get(path).body(Body::empty()).unwrap();
        let response = router(telemetry.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readiness_follows_the_flag_and_health_is_always_ok() {
        let telemetry = Arc::new(Telemetry::default());
        assert_eq!(
            get(&telemetry, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get(&telemetry, "/healthz").await.0, StatusCode::OK);
        telemetry.set_ready(true);
        assert_eq!(get(&telemetry, "/readyz").await.0, StatusCode::OK);
        telemetry.set_ready(false);
        assert_eq!(
            get(&telemetry, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn metrics_report_reconciles_errors_and_leadership() {
        let telemetry = Arc::new(Telemetry::default());
        drop(telemetry.metrics().reconcile_started());
        drop(telemetry.metrics().reconcile_started());
        telemetry.metrics().reconcile_failed("apply");
        telemetry.metrics().set_leader(true);
        let (status, text) = get(&telemetry, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            text.contains("matrixrtc_operator_reconciles_total 2"),
            "{text}"
        );
        assert!(
            text.contains("matrixrtc_operator_reconcile_duration_seconds_count 2"),
            "{text}"
        );
        assert!(
            text.contains("matrixrtc_operator_reconcile_errors_total{reason=\"apply\"} 1"),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l == "matrixrtc_operator_leader 1"),
            "{text}"
        );
        telemetry
            .metrics()
            .count_request(RequestSource::Reconcile, Verb::Get);
        telemetry
            .metrics()
            .count_request(RequestSource::Watch, Verb::Watch);
        telemetry.metrics().set_leader(false);
        let (_, text) = get(&telemetry, "/metrics").await;
        assert!(
            text.contains(
                "matrixrtc_operator_api_requests_total{source=\"reconcile\",verb=\"get\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l == "matrixrtc_operator_leader 0"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn the_server_answers_on_loopback_and_stops_on_shutdown() {
        let telemetry = Arc::new(Telemetry::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (address, server) = bind("127.0.0.1:0".parse().unwrap(), telemetry, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        let task = tokio::spawn(server);
        let exchange = async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        };
        let response = tokio::time::timeout(std::time::Duration::from_secs(5), exchange)
            .await
            .expect("answer within 5 s");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let _ = stop.send(());
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("server stops within 5 s")
            .unwrap()
            .unwrap();
    }
}
