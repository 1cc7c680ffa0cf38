//! Shared fakes for the matrix module's tests: a throwaway PKI, fake DNS answers, and a TLS HTTP server
//! on 127.0.0.1 that records what it is asked.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::outbound::dns::{Dns, DnsError, SrvRecord};
use crate::outbound::{Outbound, OutboundSettings, Roots};

/// Every test's time budget.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `test` and fails it if it does not finish within [`TEST_TIMEOUT`].
pub(crate) async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out")
}

/// Names the test server's certificate is valid for.
pub(crate) const CERT_NAMES: [&str; 6] = [
    "127.0.0.1",
    "::1",
    "hs.test",
    "delegated.test",
    "srv-target.test",
    "localhost",
];

/// A CA and a server certificate it signed.
pub(crate) struct Pki {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

impl Pki {
    fn generate() -> Self {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(CERT_NAMES.map(String::from).to_vec())
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        Self {
            ca: ca.der().clone(),
            chain: vec![leaf.der().clone()],
            key: leaf_key.serialize_der(),
        }
    }

    /// Roots that trust this CA only.
    pub(crate) fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        roots
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                self.chain.clone(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone())),
            )
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// The PKI the test servers use (generated once per test binary).
pub(crate) fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(Pki::generate)
}

/// Another CA, which signed nothing the test servers present.
pub(crate) fn unrelated_roots() -> RootCertStore {
    static OTHER: OnceLock<Pki> = OnceLock::new();
    OTHER.get_or_init(Pki::generate).roots()
}

/// Fake DNS: fixed answers, and a log of the questions.
#[derive(Default)]
pub(crate) struct FakeDns {
    srv: HashMap<String, Result<Vec<SrvRecord>, DnsError>>,
    ips: HashMap<String, Vec<IpAddr>>,
    queries: Mutex<Vec<String>>,
}

impl FakeDns {
    pub(crate) fn ip(mut self, host: &str, ip: &str) -> Self {
        self.ips
            .entry(host.to_owned())
            .or_default()
            .push(ip.parse().unwrap());
        self
    }

    /// SRV answers `(priority, weight, port, target)` for `name`.
    pub(crate) fn srv(mut self, name: &str, records: &[(u16, u16, u16, &str)]) -> Self {
        let records = records
            .iter()
            .map(|&(priority, weight, port, target)| SrvRecord {
                priority,
                weight,
                port,
                target: target.to_owned(),
            })
            .collect();
        self.srv.insert(name.to_owned(), Ok(records));
        self
    }

    pub(crate) fn srv_error(mut self, name: &str) -> Self {
        self.srv.insert(
            name.to_owned(),
            Err(DnsError::Failed {
                name: name.to_owned(),
                detail: "SERVFAIL".into(),
            }),
        );
        self
    }

    /// The questions asked so far, as `SRV name` or `IP host`.
    pub(crate) fn queries(&self) -> Vec<String> {
        self.queries.lock().unwrap().clone()
    }
}

impl Dns for FakeDns {
    fn lookup_srv<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<SrvRecord>, DnsError>> {
        self.queries.lock().unwrap().push(format!("SRV {name}"));
        let answer = self
            .srv
            .get(name)
            .cloned()
            .unwrap_or_else(|| Err(DnsError::NotFound(name.to_owned())));
        Box::pin(async move { answer })
    }

    fn lookup_ip<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        self.queries.lock().unwrap().push(format!("IP {host}"));
        let answer = match host.parse::<IpAddr>() {
            Ok(ip) => Ok(vec![ip]),
            Err(_) => self
                .ips
                .get(host)
                .cloned()
                .ok_or_else(|| DnsError::NotFound(host.to_owned())),
        };
        Box::pin(async move { answer })
    }
}

/// Outbound setup trusting the test CA, with fake DNS.
pub(crate) fn outbound(settings: &OutboundSettings, dns: Arc<FakeDns>) -> Outbound {
    Outbound::with_parts(settings, Roots::Custom(pki().roots()), dns).unwrap()
}

/// Settings with short timeouts, so failing tests fail fast.
pub(crate) fn settings() -> OutboundSettings {
    OutboundSettings {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        ..OutboundSettings::default()
    }
}

/// What a test server was asked.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) path_and_query: String,
    pub(crate) host: Option<String>,
    /// The port the server listens on, so that answers can name it.
    pub(crate) port: u16,
}

/// A canned answer.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn json(status: StatusCode, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

/// A TLS HTTP/1.1 server on 127.0.0.1 with the test PKI's certificate. Stops when dropped, closing its
/// connections too.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub(crate) async fn start(handler: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(pki().server_config());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let handler: Handler = Arc::new(handler);
        let task = tokio::spawn({
            let seen = Arc::clone(&seen);
            let connections = Arc::clone(&connections);
            let open = Arc::clone(&open);
            async move {
                // Owned by this task, so aborting the task also drops every connection.
                let mut tasks = JoinSet::new();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let (acceptor, seen, handler) =
                        (acceptor.clone(), Arc::clone(&seen), Arc::clone(&handler));
                    let open = OpenConnection::new(&open);
                    tasks.spawn(async move {
                        let _open = open;
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service =
                            hyper::service::service_fn(move |request: Request<Incoming>| {
                                let entry = Seen {
                                    path_and_query: request
                                        .uri()
                                        .path_and_query()
                                        .map(ToString::to_string)
                                        .unwrap_or_default(),
                                    host: request
                                        .headers()
                                        .get(http::header::HOST)
                                        .and_then(|h| h.to_str().ok())
                                        .map(str::to_owned),
                                    port: addr.port(),
                                };
                                let answer = handler(&entry);
                                seen.lock().unwrap().push(entry);
                                let mut response = Response::builder().status(answer.status);
                                for (name, value) in answer.headers {
                                    response = response.header(name, value);
                                }
                                let response = response.body(Full::new(Bytes::from(answer.body)));
                                async move { response }
                            });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            }
        });
        Self {
            addr,
            seen,
            connections,
            open,
            task,
        }
    }

    /// TCP connections open right now (accepted and not yet closed).
    pub(crate) fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests answered so far.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// TCP connections accepted so far.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Counts one open connection for as long as it lives.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(open))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
