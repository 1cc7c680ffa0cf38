//! Black-box tests of the `matrixrtc-operator run` binary against the in-memory API server, served over
//! loopback HTTP with a kubeconfig pointing at it: startup checks, health and metrics, reconciling through real
//! watches, SIGTERM, and two replicas with leader election. Plus the 100-transport benchmark (ignored).
//!
//! The fake and the process harness are the shared ones of `matrixrtc-test-support`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use matrixrtc_operator::api::MatrixRTCTransport;
use matrixrtc_operator::build::names;
use matrixrtc_test_support::fake_api::FakeApi;
use matrixrtc_test_support::operator_process::{Launch, OperatorProcess, operator_binary};
use serde_json::json;

const NS: &str = "calls";
const OPERATOR_NS: &str = "ops";

/// A fake API server reachable over HTTP, and a kubeconfig file for it.
struct Cluster {
    fake: FakeApi,
    kubeconfig: PathBuf,
    server: tokio::task::JoinHandle<()>,
}

impl Cluster {
    async fn start(name: &str) -> Self {
        let fake = FakeApi::new();
        let (address, server) = fake.listen().await.expect("listen on loopback");
        let kubeconfig =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.kubeconfig"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{address}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\n"
        );
        std::fs::write(&kubeconfig, text).expect("write kubeconfig");
        Self {
            fake,
            kubeconfig,
            server,
        }
    }

    fn add_transport(&self, name: &str) {
        let cr: MatrixRTCTransport = serde_json::from_value(json!({
            "apiVersion": "matrixrtc.dev/v1alpha1", "kind": "MatrixRTCTransport",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"serverName": "example.com", "host": format!("{name}.example.com")},
        }))
        .expect("valid CR");
        self.fake.insert(&cr);
    }

    fn has_status(&self, name: &str) -> bool {
        self.fake
            .get::<MatrixRTCTransport>(NS, name)
            .and_then(|t| t.status)
            .is_some_and(|s| s.observed_generation.is_some())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.server.abort();
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

/// How long an operator against the fake may take to answer `/readyz`.
const READY: Duration = Duration::from_secs(30);

/// Start one operator process named `name` (its pod name and log file) against `cluster`, watching [`NS`].
/// `MATRIXRTC_OPERATOR_BIN` lets the benchmark run a release build.
fn spawn(cluster: &Cluster, name: &str, extra: &[&str]) -> OperatorProcess {
    let binary =
        operator_binary(env!("CARGO_BIN_EXE_matrixrtc-operator")).unwrap_or_else(|e| panic!("{e}"));
    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.log"));
    Launch::run(binary, log)
        .arg(format!("--watch-namespace={NS}"))
        .args(extra.iter().copied())
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("POD_NAME", name)
        .env("POD_NAMESPACE", OPERATOR_NS)
        .env("RUST_LOG", "info,matrixrtc_operator=debug")
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Start one operator process and wait until it is ready.
async fn start(cluster: &Cluster, name: &str, extra: &[&str]) -> OperatorProcess {
    let mut operator = spawn(cluster, name, extra);
    operator
        .wait_ready(READY)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    operator
}

async fn leading(operator: &OperatorProcess) -> bool {
    operator.metric("matrixrtc_operator_leader").await == Some(1.0)
}

async fn stop(operator: OperatorProcess) {
    operator.terminate().await.unwrap_or_else(|e| panic!("{e}"));
}

/// Poll `condition` every 50 ms for at most `seconds`.
async fn wait_for(what: &str, seconds: u64, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {seconds} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_missing_crd_stops_the_operator_with_an_install_hint() {
    let cluster = Cluster::start("missing-crd").await;
    cluster
        .fake
        .fail_next(http::Method::GET, "/matrixrtctransports", 404);
    let mut operator = spawn(&cluster, "missing-crd", &[]);
    let status = operator
        .wait_exit(Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!status.success());
    let log = operator.log();
    assert!(log.contains("CRD is not installed"), "{log}");
    assert!(
        log.contains("matrixrtc-operator crd | kubectl apply --server-side -f -"),
        "{log}"
    );
}

#[tokio::test]
async fn the_binary_reconciles_serves_health_and_stops_cleanly_on_sigterm() {
    let cluster = Cluster::start("single").await;
    cluster.add_transport("demo");
    let operator = start(&cluster, "single", &[]).await;
    assert_eq!(operator.get("/healthz").await.map(|r| r.0), Ok(200));

    let fake = cluster.fake.clone();
    wait_for("the transport's children and status", 30, async || {
        fake.get::<Deployment>(NS, &names::livekit("demo"))
            .is_some()
            && cluster.has_status("demo")
    })
    .await;
    let config = names::livekit("demo");
    assert!(cluster.fake.remove::<ConfigMap>(NS, &config));
    wait_for("the ConfigMap to come back", 30, async || {
        fake.get::<ConfigMap>(NS, &config).is_some()
    })
    .await;

    let metrics = operator.metrics().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        metrics.contains("matrixrtc_operator_reconciles_total"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l == "matrixrtc_operator_leader 1"),
        "no election: always leading\n{metrics}"
    );

    stop(operator).await;
}

#[tokio::test]
async fn with_leader_election_one_replica_reconciles_and_the_other_takes_over() {
    let cluster = Cluster::start("election").await;
    cluster.add_transport("demo");
    let first = start(&cluster, "replica-a", &["--leader-election"]).await;
    let fake = cluster.fake.clone();
    let holder = || {
        fake.get::<Lease>(OPERATOR_NS, "matrixrtc-operator")
            .and_then(|l| l.spec?.holder_identity)
            .unwrap_or_default()
    };
    wait_for("replica-a to lead", 30, async || {
        holder().starts_with("replica-a-")
    })
    .await;
    wait_for("the transport reconciled", 30, async || {
        cluster.has_status("demo")
    })
    .await;

    // The standby starts once the lease is held: the fake does not model server-side apply conflicts, which
    // is what keeps two simultaneous first claims apart on a real API server.
    let second = start(&cluster, "replica-b", &["--leader-election"]).await;
    assert!(leading(&first).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!leading(&second).await, "the standby must not lead");
    assert!(holder().starts_with("replica-a-"));

    // Only the leader acts: a deleted child is recreated once, by it.
    stop(first).await;
    wait_for("replica-b to take over", 40, async || {
        holder().starts_with("replica-b-")
    })
    .await;
    wait_for("replica-b to report leading", 10, async || {
        leading(&second).await
    })
    .await;
    let config = names::livekit("demo");
    assert!(cluster.fake.remove::<ConfigMap>(NS, &config));
    wait_for("the new leader to repair", 30, async || {
        fake.get::<ConfigMap>(NS, &config).is_some()
    })
    .await;

    stop(second).await;
    assert!(
        holder().is_empty(),
        "the lease is released on shutdown, holder {:?}",
        holder()
    );
}

/// `VmRSS` and `VmHWM` of a process, MiB.
fn resident_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Benchmark, by hand (figures in docs/benchmark.md):
/// `cargo test -p matrixrtc-operator --test binary bench -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run by hand"]
async fn bench_100_transports_operator_process() {
    const COUNT: usize = 100;
    let cluster = Cluster::start("bench").await;
    let operator = start(&cluster, "bench", &["--log-level=warn"]).await;
    let pid = operator.pid().expect("running");
    let (idle_rss, _) = resident_mib(pid);

    let started = Instant::now();
    for i in 0..COUNT {
        cluster.add_transport(&format!("t{i:03}"));
    }
    wait_for("every transport reconciled", 300, async || {
        (0..COUNT).all(|i| cluster.has_status(&format!("t{i:03}")))
    })
    .await;
    let first = started.elapsed();
    let requests = cluster.fake.requests().len();
    let (rss, hwm) = resident_mib(pid);

    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.fake.clear_requests();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_writes = cluster.fake.writes().len();
    let (settled_rss, settled_hwm) = resident_mib(pid);

    eprintln!(
        "--- {COUNT} transports, operator binary against the fake API server over loopback HTTP ---"
    );
    eprintln!(
        "all reconciled (children applied, status written) after {first:?}; {requests} API requests"
    );
    eprintln!("writes during the next 5 s: {idle_writes}");
    eprintln!(
        "operator RSS (MiB): idle before {idle_rss:.1}; after the first pass {rss:.1} (peak {hwm:.1}); \
         settled {settled_rss:.1} (peak {settled_hwm:.1})"
    );
    assert_eq!(idle_writes, 0);
    stop(operator).await;
}
