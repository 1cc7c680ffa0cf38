//! End-to-end tests of the operator against a real Kubernetes cluster (1.28 or newer).
//!
//! The tests live in `tests/e2e/` (one test binary). They run only when `KUBECONFIG` is set and print
//! `SKIPPED: ...` otherwise. They start the operator binary (`target/debug/matrixrtc-operator`, or
//! `MATRIXRTC_OPERATOR_BIN`), so build it first: `cargo build -p matrixrtc-operator`.
