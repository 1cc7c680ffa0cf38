//! Logs and metrics.
//!
//! Logging goes through `tracing` to stderr, as text or JSON lines. The service never logs tokens,
//! secrets or access tokens; it logs user IDs, room aliases and outcomes. A successful token is logged at
//! debug only: an info line per token costs the reference 15–25 % CPU under load.
//!
//! [`Metrics`] owns a Prometheus registry served as text on `GET /metrics`. Counters whose label values are
//! known up front are resolved once at construction so that the hot path only does an atomic increment.

pub mod membership;
mod plain_fields;

use std::fmt;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use strum::VariantArray;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written (`LIVEKIT_LOG_FORMAT`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Which events are written: ours at `level`; the libraries' (hyper, reqwest, DNS, ...) at most at
/// warn, since their debug output is noise to an operator and may echo request details.
pub fn log_filter(level: LevelFilter) -> Targets {
    Targets::new()
        .with_target(env!("CARGO_CRATE_NAME"), level)
        .with_default(level.min(LevelFilter::WARN))
}

/// Installs the global `tracing` subscriber. Called once, before anything logs.
pub fn init_logging(level: LevelFilter, format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false);
    // A second initialisation (only possible in tests) keeps the first subscriber; that is harmless.
    let _ = match format {
        LogFormat::Text => builder
            .fmt_fields(plain_fields::PlainFields)
            .with_ansi(false)
            .finish()
            .with(log_filter(level))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .finish()
            .with(log_filter(level))
            .try_init(),
    };
}

/// Labels of the per-request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The path, e.g. `/get_token`.
    endpoint: &'static str,
    /// `2xx`/`4xx`/`5xx` for responses without a Matrix error, else the errcode (`M_BAD_JSON`, ...).
    outcome: &'static str,
}

/// Labels that only say whether something succeeded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Labels of the rate-limit counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

/// Labels of the delegation job metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// Labels of the delayed-event call counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    /// `restart` or `send`.
    action: &'static str,
    /// `success`, `not_found`, `rate_limited`, `transient` or `no_client_api`.
    outcome: &'static str,
}

/// Labels of the webhook counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// What became of a LiveKit webhook. Its label is derived: the variant's name in snake case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum WebhookOutcome {
    /// A verified participant event, handed to the delegation engine.
    Delivered,
    /// A verified event of a kind the service ignores.
    Ignored,
    /// Verification failed: no or an unknown key, a bad signature or time, a body not matching its hash.
    Rejected,
    /// Verified, but not a usable event (unparseable, or without room or participant).
    Malformed,
}

/// Which rate limit refused a request. Its label is declared with the variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
pub enum RateLimitKind {
    /// `LIVEKIT_RATE_LIMIT_PER_IP`.
    #[strum(serialize = "ip")]
    PerIp,
    /// `LIVEKIT_RATE_LIMIT_PER_HOMESERVER`.
    #[strum(serialize = "homeserver")]
    PerHomeserver,
    /// The same rate, over a client's failed OpenID verifications.
    #[strum(serialize = "failed_verification")]
    FailedVerifications,
}

/// A hit/miss pair of counters resolved once.
struct HitMiss {
    hit: Counter,
    miss: Counter,
}

impl HitMiss {
    fn register(registry: &mut Registry, name: &str, help: &str) -> Self {
        let family = Family::<ResultLabel, Counter>::default();
        registry.register(name, help, family.clone());
        Self {
            hit: family.get_or_create_owned(&ResultLabel { result: "hit" }),
            miss: family.get_or_create_owned(&ResultLabel { result: "miss" }),
        }
    }

    fn record(&self, hit: bool) {
        if hit { &self.hit } else { &self.miss }.inc();
    }
}

/// The service's Prometheus metrics. Shared as `Arc<Metrics>`.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    openid_lookup_ok: Histogram,
    openid_lookup_error: Histogram,
    discovery_cache: HitMiss,
    openid_cache: HitMiss,
    outbound_refused: Counter,
    create_room_failures: Counter,
    rate_limited: Family<LimitLabel, Counter>,
    delegation_jobs: Family<StateLabel, Gauge>,
    delegation_jobs_ended: Family<StateLabel, Counter>,
    delayed_event_calls: Family<CallLabels, Counter>,
    webhooks: Family<OutcomeLabel, Counter>,
    pub membership: crate::telemetry::membership::MonitorMetrics,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates the registry with every metric registered under the `matrixrtc_auth_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("matrixrtc_auth");

        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by endpoint and outcome (status class or Matrix errcode)",
            requests.clone(),
        );

        // 5 ms .. ~41 s: a cached-DNS federation lookup is tens of ms; the top bucket lies above the
        // default 30 s outbound timeout (LIVEKIT_OUTBOUND_TIMEOUT_SECONDS), so a lookup that ran into it is
        // still told apart from one that took 10 s.
        let lookup = Family::<ResultLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        registry.register(
            "openid_lookup_duration_seconds",
            "Duration of OpenID userinfo lookups against homeservers, by result",
            lookup.clone(),
        );

        let discovery_cache = HitMiss::register(
            &mut registry,
            "discovery_cache",
            "Server discovery cache lookups, by result",
        );
        let openid_cache = HitMiss::register(
            &mut registry,
            "openid_cache",
            "OpenID token cache lookups, by result",
        );

        let outbound_refused = Counter::default();
        registry.register(
            "outbound_refused",
            "Outbound connections refused by the SSRF guard",
            outbound_refused.clone(),
        );
        let create_room_failures = Counter::default();
        registry.register(
            "create_room_failures",
            "LiveKit CreateRoom calls that failed",
            create_room_failures.clone(),
        );
        let rate_limited = Family::<LimitLabel, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit, by limit",
            rate_limited.clone(),
        );

        let delegation_jobs = Family::<StateLabel, Gauge>::default();
        registry.register(
            "delegation_jobs",
            "Delegated leave jobs this replica drives, by state (waiting, connected)",
            delegation_jobs.clone(),
        );
        // Both states are shown from the start, at zero.
        for state in ["waiting", "connected"] {
            let _ = delegation_jobs.get_or_create(&StateLabel { state });
        }
        let delegation_jobs_ended = Family::<StateLabel, Counter>::default();
        registry.register(
            "delegation_jobs_ended",
            "Delegated leave jobs this replica stopped driving, by how (disconnected, aborted, \
             replaced, shutdown)",
            delegation_jobs_ended.clone(),
        );
        let delayed_event_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "delayed_event_calls",
            "Delayed-event calls to homeservers, by action and outcome",
            delayed_event_calls.clone(),
        );
        let webhooks = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "webhooks",
            "LiveKit webhooks received, by outcome (rejected = failed verification)",
            webhooks.clone(),
        );
        for &outcome in WebhookOutcome::VARIANTS {
            let _ = webhooks.get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            });
        }
        // Every limit is shown from the start, at zero.
        for &kind in RateLimitKind::VARIANTS {
            let _ = rate_limited.get_or_create(&LimitLabel { limit: kind.into() });
        }

        let membership = crate::telemetry::membership::MonitorMetrics::register(&mut registry);
        Self {
            membership,
            delegation_jobs,
            delegation_jobs_ended,
            delayed_event_calls,
            webhooks,
            requests,
            openid_lookup_ok: lookup.get_or_create_owned(&ResultLabel { result: "ok" }),
            openid_lookup_error: lookup.get_or_create_owned(&ResultLabel { result: "error" }),
            discovery_cache,
            openid_cache,
            outbound_refused,
            create_room_failures,
            rate_limited,
            registry,
        }
    }

    /// Counts one answered request. `outcome` is a status class (`2xx`) or a Matrix errcode.
    pub fn request(&self, endpoint: &'static str, outcome: &'static str) {
        self.requests
            .get_or_create(&RequestLabels { endpoint, outcome })
            .inc();
    }

    /// Records how long an OpenID userinfo lookup took and whether it succeeded.
    pub fn observe_openid_lookup(&self, seconds: f64, ok: bool) {
        if ok {
            &self.openid_lookup_ok
        } else {
            &self.openid_lookup_error
        }
        .observe(seconds);
    }

    /// Counts a server discovery cache lookup.
    pub fn discovery_cache(&self, hit: bool) {
        self.discovery_cache.record(hit);
    }

    /// Counts an OpenID token cache lookup.
    pub fn openid_cache(&self, hit: bool) {
        self.openid_cache.record(hit);
    }

    /// Counts an outbound connection the SSRF guard refused.
    pub fn outbound_refused(&self) {
        self.outbound_refused.inc();
    }

    /// Counts a failed LiveKit CreateRoom call.
    pub fn create_room_failed(&self) {
        self.create_room_failures.inc();
    }

    /// Counts a request refused by a rate limit.
    pub fn rate_limited(&self, kind: RateLimitKind) {
        self.rate_limited
            .get_or_create(&LimitLabel { limit: kind.into() })
            .inc();
    }

    /// A delegation job entered `state` (`waiting` or `connected`).
    pub fn delegation_job_entered(&self, state: &'static str) {
        self.delegation_jobs
            .get_or_create(&StateLabel { state })
            .inc();
    }

    /// A delegation job left `state` (`waiting` or `connected`).
    pub fn delegation_job_left(&self, state: &'static str) {
        self.delegation_jobs
            .get_or_create(&StateLabel { state })
            .dec();
    }

    /// This replica stopped driving a job: `disconnected`, `aborted`, `replaced` or `shutdown`.
    pub fn delegation_job_ended(&self, state: &'static str) {
        self.delegation_jobs_ended
            .get_or_create(&StateLabel { state })
            .inc();
    }

    /// Counts a delayed-event call attempt and its outcome.
    pub fn delayed_event_call(&self, action: &'static str, outcome: &'static str) {
        self.delayed_event_calls
            .get_or_create(&CallLabels { action, outcome })
            .inc();
    }

    /// Counts a webhook.
    pub fn webhook(&self, outcome: WebhookOutcome) {
        self.webhooks
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The registry in the Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail; an error here could only come from a broken metric type.
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(%error, "could not encode metrics");
        }
        out
    }
}

/// Collects what a test's subscriber writes, for [`CapturedLogs`] and for tests that build their own
/// subscriber.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl LogBuffer {
    /// Everything written so far.
    pub(crate) fn text(&self) -> String {
        let buffer = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

#[cfg(test)]
impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Test support: the log lines (JSON, as `LIVEKIT_LOG_FORMAT=json` writes them, at debug) of everything
/// this thread logs while the value lives; tests on a current-thread runtime see their tasks' lines too.
#[cfg(test)]
pub(crate) struct CapturedLogs {
    buffer: LogBuffer,
    _default: tracing::subscriber::DefaultGuard,
}

#[cfg(test)]
impl CapturedLogs {
    /// Everything written so far.
    pub(crate) fn text(&self) -> String {
        self.buffer.text()
    }
}

/// Starts capturing this thread's log lines (see [`CapturedLogs`]).
#[cfg(test)]
pub(crate) fn capture_logs() -> CapturedLogs {
    // Reliable beside other tests in the same process (`cargo test`).
    matrixrtc_test_support::tracing_anchor::anchor_call_site_interest();
    let buffer = LogBuffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::DEBUG)
        .with_writer(move || writer.clone())
        .json()
        .flatten_event(true)
        .finish();
    CapturedLogs {
        buffer,
        _default: tracing::subscriber::set_default(subscriber),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn libraries_log_at_most_warnings() {
        let filter = log_filter(LevelFilter::DEBUG);
        assert!(filter.would_enable("matrixrtc_auth::http::issue", &Level::DEBUG));
        assert!(!filter.would_enable("hyper::proto", &Level::DEBUG));
        assert!(!filter.would_enable("reqwest::connect", &Level::INFO));
        assert!(filter.would_enable("reqwest::connect", &Level::WARN));
        let quiet = log_filter(LevelFilter::ERROR);
        assert!(!quiet.would_enable("matrixrtc_auth::server", &Level::WARN));
        assert!(!quiet.would_enable("hyper", &Level::WARN));
        assert!(quiet.would_enable("hyper", &Level::ERROR));
    }

    #[test]
    fn every_metric_appears_in_the_text_output() {
        let metrics = Metrics::new();
        metrics.request("/get_token", "2xx");
        metrics.request("/get_token", "M_BAD_JSON");
        metrics.observe_openid_lookup(0.02, true);
        metrics.observe_openid_lookup(0.5, false);
        metrics.discovery_cache(true);
        metrics.openid_cache(false);
        metrics.outbound_refused();
        metrics.create_room_failed();
        metrics.rate_limited(RateLimitKind::PerHomeserver);
        metrics.delegation_job_entered("waiting");
        metrics.delegation_job_left("waiting");
        metrics.delegation_job_entered("connected");
        metrics.delegation_job_ended("aborted");
        metrics.delayed_event_call("restart", "success");
        metrics.webhook(WebhookOutcome::Rejected);
        let text = metrics.encode();
        for line in [
            r#"matrixrtc_auth_requests_total{endpoint="/get_token",outcome="2xx"} 1"#,
            r#"matrixrtc_auth_requests_total{endpoint="/get_token",outcome="M_BAD_JSON"} 1"#,
            r#"matrixrtc_auth_openid_lookup_duration_seconds_count{result="ok"} 1"#,
            r#"matrixrtc_auth_openid_lookup_duration_seconds_count{result="error"} 1"#,
            r#"matrixrtc_auth_discovery_cache_total{result="hit"} 1"#,
            r#"matrixrtc_auth_discovery_cache_total{result="miss"} 0"#,
            r#"matrixrtc_auth_openid_cache_total{result="miss"} 1"#,
            "matrixrtc_auth_outbound_refused_total 1",
            "matrixrtc_auth_create_room_failures_total 1",
            r#"matrixrtc_auth_rate_limited_total{limit="homeserver"} 1"#,
            r#"matrixrtc_auth_rate_limited_total{limit="ip"} 0"#,
            r#"matrixrtc_auth_rate_limited_total{limit="failed_verification"} 0"#,
            r#"matrixrtc_auth_delegation_jobs{state="waiting"} 0"#,
            r#"matrixrtc_auth_delegation_jobs{state="connected"} 1"#,
            r#"matrixrtc_auth_delegation_jobs_ended_total{state="aborted"} 1"#,
            r#"matrixrtc_auth_delayed_event_calls_total{action="restart",outcome="success"} 1"#,
            r#"matrixrtc_auth_webhooks_total{outcome="rejected"} 1"#,
            r#"matrixrtc_auth_webhooks_total{outcome="delivered"} 0"#,
            r#"matrixrtc_auth_webhooks_total{outcome="ignored"} 0"#,
            r#"matrixrtc_auth_webhooks_total{outcome="malformed"} 0"#,
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
