//! `matrixrtc-operator run`: connect, check the CRD, serve health and metrics, and run the controllers
//! (as the elected leader when leader election is on) until SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;

use kube::Client;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::events::Reporter;

use crate::api::MatrixRTCTransport;
use crate::controller::{self, Context, WatchScope};
use crate::defaults::DefaultsArgs;
use crate::leader::{self, LeaseSettings};
use crate::shutdown;
use crate::telemetry::{self, LogFormat, Telemetry};

/// Flags of `run`. The namespace of the Lease comes from `POD_NAMESPACE` unless given; the holder identity
/// from `POD_NAME` (plus a random suffix).
#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_address: SocketAddr,
    /// Namespace to watch; repeat for several. Default: all namespaces.
    #[arg(long = "watch-namespace", value_name = "NAMESPACE")]
    pub watch_namespaces: Vec<String>,
    /// Elect a leader through a Lease so several replicas can run; only the leader reconciles.
    #[arg(long)]
    pub leader_election: bool,
    /// Name of the Lease used for leader election.
    #[arg(long, value_name = "NAME", default_value = "matrixrtc-operator")]
    pub lease_name: String,
    /// Namespace of the Lease (default: $POD_NAMESPACE).
    #[arg(long, value_name = "NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Log filter, e.g. `info` or `matrixrtc_operator=debug,kube=info` (default: $RUST_LOG, else `info`).
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub defaults: DefaultsArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no Kubernetes configuration found (in-cluster service account or KUBECONFIG): {0}")]
    Client(#[source] kube::Error),
    #[error(
        "the MatrixRTCTransport CRD is not installed (the API server has no {group}/{version} \
         matrixrtctransports); install it with `matrixrtc-operator crd | kubectl apply --server-side -f -` \
         or from crds/ in the repository"
    )]
    CrdMissing {
        group: &'static str,
        version: &'static str,
    },
    #[error(
        "not allowed to list MatrixRTCTransports{scope}: grant the operator the RBAC in docs/rbac.md ({message})"
    )]
    Forbidden { scope: String, message: String },
    #[error("checking for the CRD failed: {0}")]
    Check(#[source] kube::Error),
    #[error("leader election needs the Lease namespace: set POD_NAMESPACE or --lease-namespace")]
    NoLeaseNamespace,
    #[error("could not install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("could not serve metrics on {address}: {source}")]
    Metrics {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Leader(#[from] leader::LeaderError),
}

/// Entry point of the subcommand: a Tokio runtime around [`run`], errors printed as one line.
pub fn main(args: RunArgs) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // Logging is set up first thing in `run`, so this reaches stderr in the chosen format.
            tracing::error!(%error, "exiting");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Run the operator until SIGTERM/SIGINT.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    telemetry::init_logging(args.log_format, args.log_level.as_deref());
    let stop = shutdown::on_signal().map_err(RunError::Signals)?;
    let client = Client::try_default().await.map_err(RunError::Client)?;
    let scope = if args.watch_namespaces.is_empty() {
        WatchScope::AllNamespaces
    } else {
        WatchScope::Namespaces(args.watch_namespaces.clone())
    };
    check_crd(&client, &scope).await?;
    let lease = if args.leader_election {
        Some(lease_settings(&args)?)
    } else {
        None
    };

    let telemetry = Arc::new(Telemetry::default());
    let (_, server) = telemetry::bind(args.metrics_address, telemetry.clone(), stop.wait())
        .await
        .map_err(|source| RunError::Metrics {
            address: args.metrics_address,
            source,
        })?;
    let server = tokio::spawn(server);
    telemetry.set_ready(true);
    {
        // Not ready from the first moment of shutdown, so no traffic or probe waits on a stopping pod.
        let telemetry = telemetry.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            stop.wait().await;
            telemetry.set_ready(false);
        });
    }

    let reporter = Reporter {
        controller: "matrixrtc-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let metrics = telemetry.metrics().clone();
    let ctx = Arc::new(Context::new(
        client.clone(),
        args.defaults.clone().into(),
        metrics.clone(),
        reporter,
    ));
    tracing::info!(scope = ?scope, leader_election = args.leader_election, "starting controllers");
    let result = match lease {
        Some(settings) => {
            leader::lead(
                client,
                &settings,
                stop.clone(),
                |leading| metrics.set_leader(leading),
                |term| {
                    let ctx = ctx.clone();
                    let scope = scope.clone();
                    async move { controller::run(ctx, &scope, term).await }
                },
            )
            .await
        }
        None => {
            metrics.set_leader(true);
            controller::run(ctx, &scope, stop.clone()).await;
            Ok(())
        }
    };
    // The server stops on the same signal; wait for it so in-flight scrapes finish.
    let _ = server.await;
    tracing::info!("stopped");
    result.map_err(RunError::from)
}

fn lease_settings(args: &RunArgs) -> Result<LeaseSettings, RunError> {
    let namespace = args
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .filter(|ns| !ns.is_empty())
        .ok_or(RunError::NoLeaseNamespace)?;
    let pod = std::env::var("POD_NAME").unwrap_or_else(|_| "matrixrtc-operator".to_owned());
    // A suffix keeps identities unique even if two processes share a pod name (e.g. a local run).
    let suffix: String = crate::controller::dereference::random_bytes::<4>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(LeaseSettings {
        name: args.lease_name.clone(),
        namespace,
        identity: format!("{pod}-{suffix}"),
        duration_seconds: 15,
        grace_seconds: 5,
    })
}

/// Fail fast, with an install hint, when the CRD is missing or the operator may not read it.
async fn check_crd(client: &Client, scope: &WatchScope) -> Result<(), RunError> {
    let apis: Vec<(String, Api<PartialObjectMeta<MatrixRTCTransport>>)> = match scope {
        WatchScope::AllNamespaces => vec![(String::new(), Api::all(client.clone()))],
        WatchScope::Namespaces(namespaces) => namespaces
            .iter()
            .map(|ns| {
                (
                    format!(" in namespace {ns}"),
                    Api::namespaced(client.clone(), ns),
                )
            })
            .collect(),
    };
    for (scope, api) in apis {
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => {}
            // A missing CRD answers a plain-text "404 page not found", which has no Status reason: use the code.
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Err(RunError::CrdMissing {
                    group: crate::api::GROUP,
                    version: crate::api::VERSION,
                });
            }
            Err(kube::Error::Api(status)) if status.code == 403 => {
                return Err(RunError::Forbidden {
                    scope,
                    message: status.message.clone(),
                });
            }
            Err(error) => return Err(RunError::Check(error)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use matrixrtc_test_support::fake_api::FakeApi;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn flags_parse_with_their_defaults() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.run.metrics_address, "0.0.0.0:8080".parse().unwrap());
        assert!(cli.run.watch_namespaces.is_empty());
        assert!(!cli.run.leader_election);
        assert_eq!(cli.run.lease_name, "matrixrtc-operator");
        let cli = Cli::try_parse_from([
            "x",
            "--watch-namespace=a",
            "--watch-namespace=b",
            "--leader-election",
            "--lease-namespace=ops",
            "--livekit-image=lk:1",
            "--auth-image=auth:1",
            "--log-format=json",
        ])
        .unwrap();
        assert_eq!(cli.run.watch_namespaces, vec!["a", "b"]);
        assert_eq!(cli.run.defaults.livekit_image, "lk:1");
        assert_eq!(cli.run.log_format, LogFormat::Json);
        let lease = lease_settings(&cli.run).unwrap();
        assert_eq!(lease.namespace, "ops");
        assert!(lease.grace_seconds < lease.duration_seconds);
    }

    #[tokio::test]
    async fn a_missing_crd_is_reported_with_an_install_hint() {
        // The fake answers lists for any path, so make the list fail as an API server without the CRD does.
        let fake = FakeApi::new();
        fake.fail_next(http::Method::GET, "/matrixrtctransports", 404);
        let error = check_crd(&fake.client(), &WatchScope::AllNamespaces)
            .await
            .unwrap_err();
        assert!(matches!(error, RunError::CrdMissing { .. }));
        assert!(
            error
                .to_string()
                .contains("matrixrtc-operator crd | kubectl apply --server-side -f -")
        );

        fake.fail_next(http::Method::GET, "/namespaces/b/matrixrtctransports", 403);
        let scope = WatchScope::Namespaces(vec!["a".into(), "b".into()]);
        let error = check_crd(&fake.client(), &scope).await.unwrap_err();
        assert!(error.to_string().contains("in namespace b"), "{error}");

        check_crd(&fake.client(), &scope).await.unwrap();
    }
}
