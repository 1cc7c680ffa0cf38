//! `matrixrtc-auth`: runs the authorisation service. `matrixrtc-auth healthcheck` probes a running one
//! (for Docker's `HEALTHCHECK` in an image without a shell).
//!
//! Startup errors print one line to stderr and exit 1.

use std::process::ExitCode;

use matrixrtc_auth::config::{self, Config, WorkerThreads};
use matrixrtc_auth::{healthcheck, server, telemetry};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => serve(),
        ["healthcheck"] => probe(),
        _ => fail(format!(
            "unexpected arguments {args:?}; usage: matrixrtc-auth [healthcheck]"
        )),
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("{message}");
    ExitCode::FAILURE
}

/// One thread (the default, and the health probe): the runtime's I/O driver, timers and every task share
/// it, so a request wakes exactly one thread. With more, each request also wakes an idle worker to look
/// for work (about two futex calls per request at 1,000 requests/s, docs/benchmark-auth.md).
fn runtime(threads: WorkerThreads) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match threads.get() {
        1 => tokio::runtime::Builder::new_current_thread(),
        workers => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        }
    };
    builder.enable_all().build()
}

fn serve() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => return fail(error),
    };
    // Every outbound client is built with an explicit ring provider; installing it as the process default
    // too means nothing can fall back to a provider we did not choose. It fails only if one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    telemetry::init_logging(config.log_level, config.log_format);
    let runtime = match runtime(config.worker_threads) {
        Ok(runtime) => runtime,
        Err(error) => return fail(format!("could not start the async runtime: {error}")),
    };
    match runtime.block_on(server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(error),
    }
}

fn probe() -> ExitCode {
    let bind = match config::listen_address(|name| std::env::var(name).ok()) {
        Ok(bind) => bind,
        Err(error) => return fail(error),
    };
    let runtime = match runtime(WorkerThreads::default()) {
        Ok(runtime) => runtime,
        Err(error) => return fail(format!("could not start the async runtime: {error}")),
    };
    match runtime.block_on(healthcheck::probe(&bind, healthcheck::TIMEOUT)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(format!("unhealthy: {error}")),
    }
}
