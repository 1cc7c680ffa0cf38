//! HTTPS GET requests to a homeserver's federation API, over pooled keep-alive connections.
//!
//! reqwest cannot be used here: a federation connection goes to an address discovery chose (an SRV
//! target, a delegated host) while the certificate must match another name and the `Host` header yet
//! another. So connections are made by hand: TCP to the target, rustls with the route's TLS name (ALPN
//! `http/1.1`), then a hyper HTTP/1.1 connection. Idle connections are kept on their [`Route`], so a
//! repeated request to the same homeserver reuses one without any discovery, DNS or handshake.
//!
//! For non-full-access homeservers every address is checked by the [`Guard`] before connecting. When a
//! connection cannot be made, the cached route is dropped and resolved once more (a `.well-known` may
//! have moved), as the reference does.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HOST, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::discovery::{Discovery, DiscoveryError, Route, Target, TargetHost};
use super::guard::{Guard, Refusal};
use super::server_name::ServerName;
use super::{error_chain, lock};
use crate::outbound::dns::Dns;
use crate::outbound::{self, Outbound};
use crate::telemetry::Metrics;

/// Largest response body read from a homeserver.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

type Sender = http1::SendRequest<Empty<Bytes>>;

/// Idle keep-alive connections to one route, most recently used last.
#[derive(Debug, Default)]
pub(crate) struct IdlePool {
    idle: Mutex<Vec<(Sender, Instant)>>,
}

impl IdlePool {
    /// The most recently used connection that is neither closed nor idle for too long.
    fn take(&self) -> Option<Sender> {
        let mut idle = lock(&self.idle);
        while let Some((sender, since)) = idle.pop() {
            if !sender.is_closed() && since.elapsed() < outbound::POOL_IDLE_TIMEOUT {
                return Some(sender);
            }
        }
        None
    }

    fn put(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < outbound::POOL_MAX_IDLE_PER_HOST {
            idle.push((sender, Instant::now()));
        }
    }
}

/// Why a federation request failed.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("cannot resolve the server name: {0}")]
    Discovery(#[from] DiscoveryError),
    #[error("refused by the SSRF guard: {0}")]
    Refused(#[from] Refusal),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Request(String),
    #[error("response body larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
}

/// Makes GET requests to homeservers' federation APIs.
pub struct FederationClient {
    discovery: Discovery,
    dns: Arc<dyn Dns>,
    guard: Arc<Guard>,
    metrics: Arc<Metrics>,
    tls: TlsConnector,
    connect_timeout: Duration,
}

impl FederationClient {
    /// A client over the shared outbound setup.
    pub fn new(
        outbound: &Outbound,
        guard: Arc<Guard>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            discovery: Discovery::new(outbound, Arc::clone(&guard), Arc::clone(&metrics))?,
            dns: Arc::clone(outbound.dns()),
            guard,
            metrics,
            tls: TlsConnector::from(Arc::clone(outbound.tls_config())),
            connect_timeout: outbound.settings().connect_timeout,
        })
    }

    /// The server name resolver, for tests to point `.well-known` fetches at a test port.
    #[cfg(test)]
    pub(crate) fn discovery_mut(&mut self) -> &mut Discovery {
        &mut self.discovery
    }

    /// `GET path_and_query` on `name`'s federation API: the status and the body. `trusted` (full-access)
    /// lifts the guard. Not bounded in time by itself: the caller puts a deadline around it.
    pub async fn get(
        &self,
        name: &ServerName<'_>,
        trusted: bool,
        path_and_query: &Uri,
    ) -> Result<(StatusCode, Bytes), FederationError> {
        let route = self.discovery.resolve(name, trusted).await?;
        match self.get_on(&route, trusted, path_and_query).await {
            Err(FederationError::Connect(detail)) => {
                tracing::debug!(server_name = %name, %detail, "cannot connect; resolving the server name again");
                self.discovery.invalidate(name.as_str(), trusted, &route);
                let route = self.discovery.resolve(name, trusted).await?;
                self.get_on(&route, trusted, path_and_query).await
            }
            other => other,
        }
    }

    async fn get_on(
        &self,
        route: &Route,
        trusted: bool,
        path_and_query: &Uri,
    ) -> Result<(StatusCode, Bytes), FederationError> {
        while let Some(mut sender) = route.idle.take() {
            if sender.ready().await.is_err() {
                continue;
            }
            match send(&mut sender, route, path_and_query).await {
                Ok(answer) => {
                    route.idle.put(sender);
                    return Ok(answer);
                }
                // The server may have closed an idle connection just as it was reused; a GET is safe to
                // repeat on a fresh one.
                Err(FederationError::Request(detail)) => {
                    tracing::debug!(%detail, "pooled connection failed; opening a new one");
                    break;
                }
                Err(other) => return Err(other),
            }
        }
        let mut sender = self.connect(route, trusted).await?;
        let answer = send(&mut sender, route, path_and_query).await?;
        route.idle.put(sender);
        Ok(answer)
    }

    /// A new connection to the first target address that accepts one.
    async fn connect(&self, route: &Route, trusted: bool) -> Result<Sender, FederationError> {
        let targets = self
            .discovery
            .targets(route.destination())
            .await
            .map_err(|e| FederationError::Connect(e.to_string()))?;
        let mut last_error = None;
        let mut refusal = None;
        for Target { host, port } in &targets {
            let ips = match host {
                TargetHost::Ip(ip) => vec![*ip],
                TargetHost::Name(name) => match self.dns.lookup_ip(name).await {
                    Ok(ips) => ips,
                    Err(error) => {
                        last_error = Some(error.to_string());
                        continue;
                    }
                },
            };
            let ips = if trusted {
                ips
            } else {
                match self.guard.filter(ips, &self.metrics) {
                    Ok(kept) => kept,
                    Err(refused) => {
                        refusal.get_or_insert(refused);
                        continue;
                    }
                }
            };
            for ip in ips {
                let addr = SocketAddr::new(ip.to_canonical(), *port);
                match tokio::time::timeout(self.connect_timeout, self.open(addr, route)).await {
                    Ok(Ok(sender)) => return Ok(sender),
                    Ok(Err(error)) => last_error = Some(format!("{addr}: {error}")),
                    Err(_) => {
                        last_error = Some(format!(
                            "{addr}: no connection within {:?}",
                            self.connect_timeout
                        ));
                    }
                }
            }
        }
        Err(match (last_error, refusal) {
            (None, Some(refused)) => FederationError::Refused(refused),
            (Some(error), _) => FederationError::Connect(error),
            (None, None) => FederationError::Connect("no addresses".into()),
        })
    }

    async fn open(&self, addr: SocketAddr, route: &Route) -> Result<Sender, String> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("TCP: {e}"))?;
        // Requests are one small write each; waiting for Nagle would only add latency.
        tcp.set_nodelay(true).map_err(|e| format!("TCP: {e}"))?;
        let tls = self
            .tls
            .connect(route.tls_name().clone(), tcp)
            .await
            .map_err(|e| format!("TLS: {}", error_chain(&e)))?;
        let (sender, connection) = http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "federation connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// Sends one GET and reads the whole (bounded) response.
async fn send(
    sender: &mut Sender,
    route: &Route,
    path_and_query: &Uri,
) -> Result<(StatusCode, Bytes), FederationError> {
    let request = Request::get(path_and_query.clone())
        .header(HOST, route.host_header().clone())
        .header(USER_AGENT, outbound::USER_AGENT)
        .body(Empty::new())
        .map_err(|e| FederationError::Request(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| FederationError::Request(error_chain(&e)))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|error| {
            if error.is::<LengthLimitError>() {
                FederationError::TooLarge
            } else {
                FederationError::Request(error_chain(&*error))
            }
        })?
        .to_bytes();
    Ok((status, body))
}
