//! HTTPS GET requests to a homeserver's federation API, over pooled keep-alive connections.
//!
//! reqwest cannot be used here: a federation connection goes to an address discovery chose (an SRV
//! target, a delegated host) while the certificate must match another name and the `Host` header yet
//! another. So connections are made by hand: TCP to the target, rustls with the route's TLS name (ALPN
//! `http/1.1`), then a hyper HTTP/1.1 connection. Idle connections are kept on their [`Route`], so a
//! repeated request to the same homeserver reuses one without any discovery, DNS or handshake.
//!
//! For non-full-access homeservers every socket address is checked by the [`Guard`] just before it is
//! dialled. When a
//! connection cannot be made, the cached route is dropped and resolved once more (a `.well-known` may
//! have moved), as the reference does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::discovery::{Discovery, DiscoveryError, Route, Target, TargetHost};
use super::error_chain;
use super::guard::{Guard, Refusal};
use super::idle_pool::Sender;
use super::server_name::ServerName;
use crate::outbound::dns::Dns;
use crate::outbound::{self, Outbound};
use crate::telemetry::Metrics;

/// Largest response body read from a homeserver.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

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
        while let Some(mut sender) = route.idle.take(self.discovery.idle_timeout()) {
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
        // Boxed: DNS, TCP and TLS handshakes are rare next to pooled requests, and inline they would make the
        // future of every lookup in flight KiB larger (with discovery's box: 3.5 KiB became 1.1 KiB).
        let mut sender = Box::pin(self.connect(route, trusted)).await?;
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
            for ip in ips {
                let addr = SocketAddr::new(ip.to_canonical(), *port);
                // The guard judges the very socket address about to be dialled, whether it came from a
                // literal, `.well-known`, SRV or DNS.
                if !trusted && let Err(refused) = self.guard.check(addr.ip()) {
                    self.metrics.outbound_refused();
                    tracing::debug!(refusal = %refused, "outbound address refused");
                    refusal.get_or_insert(refused);
                    continue;
                }
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use http::StatusCode;

    use super::*;
    use crate::matrix::test_support::{Answer, FakeDns, TestServer, bounded, outbound, settings};

    /// A client with the default guard and its own metrics, over fake DNS.
    fn client() -> FederationClient {
        let outbound = outbound(&settings(), Arc::new(FakeDns::default()));
        FederationClient::new(
            &outbound,
            Arc::new(Guard::default()),
            Arc::new(Metrics::new()),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn idle_connections_are_closed_on_a_timer_without_another_request() {
        bounded(async {
            let server = TestServer::start(|_| Answer::json(StatusCode::OK, "{}")).await;
            let metrics = Arc::new(Metrics::new());
            let outbound = outbound(&settings(), Arc::new(FakeDns::default()));
            let mut client =
                FederationClient::new(&outbound, Arc::new(Guard::default()), metrics).unwrap();
            let idle_timeout = Duration::from_millis(300);
            client.discovery_mut().set_idle_timeout(idle_timeout);
            let raw = format!("127.0.0.1:{}", server.port());
            let name = ServerName::parse(&raw).unwrap();
            let (status, _) = client
                .get(&name, true, &Uri::from_static("/x"))
                .await
                .unwrap();
            assert_eq!(status, StatusCode::OK);
            assert_eq!(server.open_connections(), 1, "kept alive for reuse");

            // Closed within the idle timeout and one reaper period (a third of it), with no request.
            let deadline = Instant::now() + idle_timeout * 2 + Duration::from_secs(2);
            while server.open_connections() > 0 {
                assert!(
                    Instant::now() < deadline,
                    "the idle connection is still open after {:?}",
                    idle_timeout * 2 + Duration::from_secs(2)
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // A later request simply opens a new connection.
            client
                .get(&name, true, &Uri::from_static("/y"))
                .await
                .unwrap();
            assert_eq!(server.connections(), 2);
        })
        .await;
    }

    #[tokio::test]
    async fn a_long_head_and_body_arrive_whole_on_a_reused_connection() {
        bounded(async {
            // A homeserver behind proxies may send a long head (cookies, policies): 24 KiB here, three
            // times hyper's first read buffer, which a fixed-size read buffer would refuse. The body is
            // just under the limit.
            let header = "h".repeat(24 * 1024);
            let body = format!("\"{}\"", "b".repeat(MAX_RESPONSE_BYTES - 2));
            let answer_body = body.clone();
            let server = TestServer::start(move |_| {
                Answer::json(StatusCode::OK, answer_body.clone()).header("x-long", header.clone())
            })
            .await;
            let client = client();
            let raw = format!("127.0.0.1:{}", server.port());
            let name = ServerName::parse(&raw).unwrap();
            for _ in 0..2 {
                let (status, got) = client
                    .get(&name, true, &Uri::from_static("/x"))
                    .await
                    .unwrap();
                assert_eq!(status, StatusCode::OK);
                assert_eq!(got, body.as_bytes(), "the whole body, byte for byte");
            }
            assert_eq!(server.connections(), 1, "the connection stays usable");
        })
        .await;
    }

    #[tokio::test]
    async fn a_pooled_connection_is_reused_within_the_idle_timeout() {
        bounded(async {
            let server = TestServer::start(|_| Answer::json(StatusCode::OK, "{}")).await;
            let client = client();
            let raw = format!("127.0.0.1:{}", server.port());
            let name = ServerName::parse(&raw).unwrap();
            for _ in 0..3 {
                client
                    .get(&name, true, &Uri::from_static("/x"))
                    .await
                    .unwrap();
            }
            assert_eq!(server.connections(), 1);
        })
        .await;
    }
}
