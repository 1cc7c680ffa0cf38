//! The operator binary for these tests: one `matrixrtc-operator run` per test, watching its namespaces,
//! started through the shared harness ([`matrixrtc_test_support::operator_process`]).

use std::path::PathBuf;
use std::time::Duration;

use matrixrtc_test_support::operator_process::{Launch, OperatorProcess, operator_binary};

use crate::cluster::Failure;

/// How long the operator may take to answer `/readyz` (CRD check and first lists on a busy API server).
const READY: Duration = Duration::from_secs(60);

/// The workspace root (this crate is `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Start `matrixrtc-operator run` against the cluster of `KUBECONFIG`, watching `namespaces`, and wait until
/// it is ready; its log goes to `target/e2e-<first namespace>.log`. The binary is `MATRIXRTC_OPERATOR_BIN`,
/// else `target/debug/matrixrtc-operator` (cargo's per-crate `CARGO_BIN_EXE_*` does not reach across crates).
pub async fn start(namespaces: &[String]) -> Result<OperatorProcess, Failure> {
    let root = workspace_root();
    let binary = operator_binary(root.join("target/debug/matrixrtc-operator"))?;
    let first = namespaces.first().ok_or("no namespace to watch")?;
    Launch::run(binary, root.join(format!("target/e2e-{first}.log")))
        .arg("--log-level=info,matrixrtc_operator=debug")
        .args(
            namespaces
                .iter()
                .map(|namespace| format!("--watch-namespace={namespace}")),
        )
        .start(READY)
        .await
}
