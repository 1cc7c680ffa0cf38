//! `matrixrtc-auth-bench`: the hand-run load benchmark of `POST /get_token` (see
//! `docs/benchmark-auth.md` and `scripts/bench-get-token.sh`, which drives it).
//!
//! One binary holds the four tools a run needs, so a single build gives the whole kit:
//! - `fake-homeserver`: a fast TLS homeserver that only answers federation OpenID `userinfo`;
//! - `ceiling`: a bare axum `POST /get_token` that parses the body and signs the JWT, nothing else;
//! - `load`: an open-loop (fixed rate) or closed-loop (saturation) load generator that prints one
//!   machine-readable `RESULT` line;
//! - `relay`: the floor under a cold request: one userinfo round trip per request, no HTTP library, JSON
//!   or JWT.
//!
//! Built only with the non-default `bench` feature, so CI never compiles it. It is a measuring tool,
//! not a test: nothing here asserts anything about speed.

mod body;
mod ceiling;
mod fake_homeserver;
mod load;
mod relay;
mod stats;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "matrixrtc-auth-bench",
    about = "Load benchmark kit for the MatrixRTC authorisation service's POST /get_token"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// TLS fake homeserver: `access_token=tok<N>` is `@utok<N>:<server name>`, anything else 401.
    FakeHomeserver(fake_homeserver::Args),
    /// Bare axum `POST /get_token` that only parses the body and signs an HS256 JWT (the ceiling).
    Ceiling(ceiling::Args),
    /// Load generator: fixed rate (open loop) or saturation (closed loop); prints a RESULT line.
    Load(load::Args),
    /// Bare relay: per request one userinfo round trip over pooled TLS, no HTTP library, JSON or JWT.
    Relay(relay::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::FakeHomeserver(args) => fake_homeserver::run(&args).map_err(|e| e.to_string()),
        Command::Ceiling(args) => ceiling::run(&args).map_err(|e| e.to_string()),
        Command::Load(args) => load::run(&args).map_err(|e| e.to_string()),
        Command::Relay(args) => relay::run(&args).map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A tokio runtime with `threads` workers: 1 is a current-thread runtime (no cross-thread wake-ups),
/// 0 is one worker per core, like the service.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    builder.enable_all().build()
}

/// Parses a positive, finite number of seconds (`2`, `0.5`).
fn seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    // NaN compares false with everything, so it fails here too.
    if value.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return Err(format!("{text:?} must be more than 0 seconds"));
    }
    Duration::try_from_secs_f64(value).map_err(|e| format!("{text:?}: {e}"))
}

/// Resolves when the servers' `--lifetime` is over: a server left behind by a broken script still exits.
async fn lifetime_over(lifetime: Duration) {
    tokio::time::sleep(lifetime).await;
    eprintln!("lifetime of {lifetime:?} over; exiting");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_accepts_positive_numbers_only() {
        assert_eq!(seconds("2"), Ok(Duration::from_secs(2)));
        assert_eq!(seconds("0.25"), Ok(Duration::from_millis(250)));
        for bad in ["0", "-1", "NaN", "inf", "ten", ""] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
