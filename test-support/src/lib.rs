//! Test support shared by the operator's tests and the end-to-end tests (`publish = false`, a
//! dev-dependency only):
//!
//! - [`fake_api`]: an in-memory Kubernetes API server behind a real `kube::Client` (reconcile, leader and
//!   apply unit tests) or on a loopback port (the operator binary's black-box tests);
//! - [`operator_process`]: the operator binary as a child process (start, readiness, log, metrics, SIGTERM);
//! - [`cel_cases`]: the CRD's CEL rule cases, evaluated client-side by the unit tests and by a real API
//!   server in the end-to-end tests;
//! - [`layering`]: the import cycles of a crate, read from its sources (each crate's `layering` test);
//! - [`tracing_anchor`]: reliable log capture in tests that run as threads of one process.
//!
//! It depends on no crate of this workspace: the fake stores every kind as JSON and the CEL cases are JSON,
//! so the operator can use it as a dev-dependency without a second copy of its own types.

pub mod cel_cases;
pub mod fake_api;
pub mod layering;
pub mod operator_process;
pub mod tracing_anchor;
