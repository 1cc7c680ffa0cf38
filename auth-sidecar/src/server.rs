//! Wiring and serving: builds the clients and the shared state from a [`Config`], binds, and serves
//! HTTP/1.1 until SIGTERM or SIGINT.
//!
//! We drive hyper ourselves rather than through `axum::serve` for two reasons the reference lacks:
//! a header read timeout (a client that trickles its headers is dropped after
//! [`HEADER_READ_TIMEOUT`]), and graceful shutdown (on a signal we stop accepting, let in-flight requests
//! finish for up to [`SHUTDOWN_GRACE`], close idle keep-alive connections, and exit 0).

use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::config::{BindAddress, Config, Notice};
use crate::delegation::{self, Delegation, StartError};
use crate::http::limits::RateLimits;
use crate::http::{AppState, OpenIdLookup, TokenResponse, router};
use crate::livekit::twirp::{BaseUrlError, RoomService};
use crate::livekit::webhook::WebhookVerifier;
use crate::matrix::client_api::{ClientApi, Reach};
use crate::matrix::full_access::FullAccess;
use crate::matrix::guard::Guard;
use crate::matrix::openid::OpenIdVerifier;
use crate::matrix::own_homeserver::{OwnHomeserver, OwnHomeserverError};
use crate::membership::homeserver::{AsHomeserver, CsApi};
use crate::membership::{self, Monitor};
use crate::outbound::{Outbound, OutboundError};
use crate::telemetry::Metrics;

/// How long a client may take to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests may take to finish after a shutdown signal (Kubernetes waits 30 s by
/// default before it kills the container).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// The serving loop's time limits.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub header_read: Duration,
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            header_read: HEADER_READ_TIMEOUT,
            shutdown_grace: SHUTDOWN_GRACE,
        }
    }
}
/// How often rate-limit state of clients that went quiet is dropped.
const RATE_LIMIT_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Why the service could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Outbound(#[from] OutboundError),
    #[error("{0}")]
    LiveKitUrl(#[from] BaseUrlError),
    #[error("{0}")]
    Delegation(#[from] StartError),
    #[error("could not listen on {address}: {source}")]
    Bind { address: String, source: io::Error },
    #[error("could not install the signal handlers: {0}")]
    Signals(io::Error),
    #[error("AS mode: {0}")]
    OwnHomeserver(#[from] OwnHomeserverError),
    #[error("membership monitor: {0}")]
    MonitorStore(#[from] crate::delegation::store::StoreError),
}

/// Runs the service until a shutdown signal.
pub async fn run(config: Config) -> Result<(), ServerError> {
    for notice in &config.notices {
        match notice {
            Notice::Info(message) => tracing::info!("{message}"),
            Notice::Warn(message) => tracing::warn!("{message}"),
        }
    }
    let appservice = crate::appservice::Setup::new(&config);
    let (state, listener) = prepare(config).await?;
    let appservice = match &state.membership {
        Some(monitor) => appservice.with_tracker(Arc::new(monitor.clone())),
        None => appservice,
    };
    let app = appservice.mount(router(Arc::clone(&state)), &state);
    let shutdown = shutdown_signal()?;
    let limits_state = Arc::clone(&state);
    let pruning = tokio::spawn(async move {
        let mut interval = tokio::time::interval(RATE_LIMIT_PRUNE_INTERVAL);
        loop {
            interval.tick().await;
            limits_state.limits.prune();
        }
    });
    let delegation = state.delegation.clone();
    serve(listener, app, shutdown, Timeouts::default()).await;
    pruning.abort();
    if let Some(monitor) = &state.membership {
        monitor.shutdown();
    }
    // After the last request: jobs stop without homeserver calls and stay stored for the next instance.
    delegation.shutdown().await;
    Ok(())
}

/// Builds the state and binds; everything that can fail at startup happens here.
async fn prepare(config: Config) -> Result<(Arc<AppState>, TcpListener), ServerError> {
    let ssrf_trusted = config.ssrf_trusted();
    let metrics = Arc::new(Metrics::new());
    let outbound = Arc::new(Outbound::new(&config.outbound)?);
    let openid = OpenIdVerifier::with_outbound(Arc::clone(&outbound), Arc::clone(&metrics))?;
    let keys = Arc::new(config.keys);
    // LiveKit's API may sit at another address than the one clients get (e.g. in-cluster).
    let api_url = config
        .livekit_api_url
        .as_deref()
        .unwrap_or(&config.livekit_url);
    let rooms = RoomService::new(api_url, Arc::clone(&keys), outbound.http().clone())?;
    let reach = Reach::new(
        &outbound,
        Arc::new(Guard::new(config.outbound.allowed_ranges.clone())),
        Arc::clone(&metrics),
        ssrf_trusted.clone(),
    )
    .map_err(OutboundError::from)?;
    let client_api = Arc::new(ClientApi::new(
        reach,
        config.cs_api_url_overrides.clone(),
        ClientApi::CACHE_TTL,
    ));
    // In AS mode, one client of the own homeserver for the token flows, the monitor and the AS jobs'
    // delayed-event calls, so that `/is_joined` is negotiated once.
    let own_homeserver = match &config.appservice.registration {
        Some(registration) => Some(Arc::new(OwnHomeserver::new(
            outbound.client_builder(),
            registration.as_token.expose(),
            &registration.server_name,
        )?)),
        None => None,
    };
    // A client of its own for the delegation engine's GetParticipant lookups.
    let lookups = RoomService::new(api_url, Arc::clone(&keys), outbound.http().clone())?;
    let delegation = Delegation::start(
        delegation::Settings {
            redis_url: config.redis_url.as_ref().map(|url| url.0.clone()),
            sanity_check_interval: Some(config.sanity_check_interval)
                .filter(|interval| !interval.is_zero()),
            timing: delegation::Timing::from_env(),
            replica_id: config.replica_id.clone(),
        },
        Arc::new(delegation::DelayedEvents::new(
            Arc::clone(&client_api),
            own_homeserver.clone(),
        )),
        Arc::new(lookups),
        Arc::clone(&metrics),
    )
    .await?;
    let membership = match &own_homeserver {
        Some(own) if config.membership.enabled() => Some(
            start_monitor(
                own,
                membership::Settings {
                    interval: config.membership.interval,
                    concurrency: config.membership.concurrency,
                    redis_url: config.redis_url.as_ref().map(|url| url.0.clone()),
                    replica_id: config.replica_id.clone(),
                    retry: Default::default(),
                },
                &client_api,
                RoomService::new(api_url, Arc::clone(&keys), outbound.http().clone())?,
                Arc::new(delegation.clone()),
                &metrics,
            )
            .await?,
        ),
        // Off outside AS mode and with a zero interval.
        _ => None,
    };
    let webhooks = WebhookVerifier::new(Arc::clone(&keys));
    let listener = bind(&config.bind).await?;

    tracing::info!(
        livekit_url = %config.livekit_url,
        livekit_api_url = %api_url,
        bind = %config.bind,
        listening = %listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
        full_access = %describe(&config.full_access),
        ssrf_trusted = %describe(&ssrf_trusted),
        skip_tls_verify = config.outbound.skip_tls_verify,
        sanity_check_interval_seconds = config.sanity_check_interval.as_secs(),
        "starting service"
    );

    let state = Arc::new(AppState {
        openid: Arc::new(openid) as Arc<dyn OpenIdLookup>,
        rooms,
        keys,
        full_access: config.full_access,
        ssrf_trusted,
        limits: RateLimits::new(
            config.rate_limit_per_ip,
            config.rate_limit_per_homeserver,
            config.trusted_proxies,
        ),
        metrics,
        token_response: TokenResponse::new(&config.livekit_url),
        webhooks,
        delegation,
        client_api,
        own_homeserver,
        membership,
    });
    Ok((state, listener))
}

/// The membership monitor (as-mode spec §8), asking our homeserver as the application service.
/// `sfu` is a LiveKit client of its own, so that sweeps do not queue behind token requests' calls; `jobs`
/// the delegation engine, whose jobs of removed participants it discards.
async fn start_monitor(
    own: &Arc<OwnHomeserver>,
    settings: membership::Settings,
    client_api: &Arc<ClientApi>,
    sfu: RoomService,
    jobs: Arc<dyn crate::membership::jobs::Jobs>,
    metrics: &Arc<Metrics>,
) -> Result<Monitor, ServerError> {
    let homeserver =
        AsHomeserver::with_own(Arc::clone(own), CsApi::Discovered(Arc::clone(client_api)));
    Ok(Monitor::start(
        settings,
        Arc::new(homeserver),
        Arc::new(sfu),
        jobs,
        Arc::clone(metrics),
    )
    .await?)
}

fn describe(full_access: &FullAccess) -> String {
    match full_access {
        FullAccess::Everyone => "*".to_owned(),
        FullAccess::Only(list) if list.is_empty() => "(nobody)".to_owned(),
        FullAccess::Only(list) => list.join(","),
    }
}

/// Binds the listen address. `:port` is every interface: IPv6 (which on Linux also accepts IPv4) if the
/// host has IPv6, else IPv4.
pub async fn bind(address: &BindAddress) -> Result<TcpListener, ServerError> {
    let error = |source| ServerError::Bind {
        address: address.to_string(),
        source,
    };
    match address {
        BindAddress::AllInterfaces(port) => {
            match TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, *port))).await {
                Ok(listener) => Ok(listener),
                Err(_) => TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, *port)))
                    .await
                    .map_err(error),
            }
        }
        BindAddress::Host(host, port) => TcpListener::bind((host.as_str(), *port))
            .await
            .map_err(error),
    }
}

/// Resolves when SIGTERM or SIGINT arrives.
fn shutdown_signal() -> Result<impl Future<Output = ()>, ServerError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(ServerError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServerError::Signals)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

/// Accepts and serves connections until `shutdown` resolves, then drains them.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()>,
    timeouts: Timeouts,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small request/response exchanges: do not wait to coalesce packets.
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let response = app.clone().oneshot(request.map(Body::new));
            async move { Ok::<_, Infallible>(response.await.unwrap_or_else(|never| match never {})) }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }

    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "shutting down: no new connections, waiting for in-flight requests"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(timeouts.shutdown_grace) => {
            tracing::warn!(grace = ?timeouts.shutdown_grace, "in-flight requests did not finish in time");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn app() -> Router {
        Router::new().route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
        )
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn in_flight_requests_finish_after_shutdown() {
        let listener = bind(&BindAddress::Host("127.0.0.1".into(), 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            app(),
            async {
                let _ = stopped.await;
            },
            Timeouts::default(),
        ));
        let request = tokio::spawn(get(addr, "/slow"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(()).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(5), request)
            .await
            .unwrap()
            .unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("done"));
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
        // No longer accepting.
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn slow_headers_are_cut_off() {
        let listener = bind(&BindAddress::Host("127.0.0.1".into(), 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let timeouts = Timeouts {
            header_read: Duration::from_millis(200),
            ..Timeouts::default()
        };
        let server = tokio::spawn(serve(listener, app(), std::future::pending(), timeouts));
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET /slow HTTP/1.1\r\n").await.unwrap();
        // The server closes the connection once the header timeout passes.
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(
            read.is_ok(),
            "connection still open after the header timeout"
        );
        server.abort();
    }

    #[tokio::test]
    async fn all_interfaces_bind() {
        let listener = bind(&BindAddress::AllInterfaces(0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_ne!(port, 0);
        // Reachable over IPv4 loopback whichever family was bound.
        let server = tokio::spawn(serve(
            listener,
            app(),
            std::future::pending(),
            Timeouts::default(),
        ));
        assert!(
            TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .await
                .is_ok()
        );
        server.abort();
    }

    #[tokio::test]
    async fn bind_errors_name_the_address() {
        let taken = bind(&BindAddress::Host("127.0.0.1".into(), 0))
            .await
            .unwrap();
        let port = taken.local_addr().unwrap().port();
        let error = bind(&BindAddress::Host("127.0.0.1".into(), port))
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with(&format!("could not listen on 127.0.0.1:{port}: ")),
            "{error}"
        );
    }
}
