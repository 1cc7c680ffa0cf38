//! A fake Matrix homeserver: HTTPS on `127.0.0.1:<port>` serving only the federation OpenID userinfo API.
//!
//! Its server name is `127.0.0.1:<port>` (an IP literal with a port, so the service connects to it
//! directly with no discovery). Tests say what each access token resolves to and read back every
//! lookup it received. It also serves `/.well-known/matrix/client` when a test sets one (the delegation
//! tests point it at a fake client-server API). Any other path gets a Matrix 404 and is recorded
//! separately.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::tls::TestPki;

/// The path the service must call (spec §2).
pub const USERINFO_PATH: &str = "/_matrix/federation/v1/openid/userinfo";
/// Client-server API discovery (spec §5.4).
pub const CLIENT_WELL_KNOWN_PATH: &str = "/.well-known/matrix/client";

/// What the fake answers for one access token.
#[derive(Clone, Debug)]
pub enum Answer {
    /// 200 `{"sub": <user>}`.
    Sub(String),
    /// The given status and JSON body.
    Json(u16, serde_json::Value),
    /// The given status and a raw body (for "not JSON" cases).
    Raw(u16, &'static str),
    /// Waits, then answers.
    Delayed(Duration, Box<Answer>),
}

/// One userinfo request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Lookup {
    pub method: String,
    pub path: String,
    /// The `access_token` query parameter, decoded.
    pub access_token: Option<String>,
    pub host: Option<String>,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct State {
    answers: HashMap<String, Answer>,
    /// The `.well-known/matrix/client` document; 404 when unset.
    client_well_known: Option<serde_json::Value>,
    lookups: Vec<Lookup>,
    other_paths: Vec<String>,
}

/// The running fake; stops when dropped.
pub struct FakeHomeserver {
    port: u16,
    state: Arc<Mutex<State>>,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for FakeHomeserver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeHomeserver {
    /// Starts serving the PKI's leaf certificate on a free loopback port.
    pub async fn start(pki: &TestPki) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake homeserver");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let connections = Arc::new(AtomicUsize::new(0));
        let acceptor = TlsAcceptor::from(pki.server_config());
        let task = tokio::spawn(accept_loop(
            listener,
            acceptor,
            state.clone(),
            connections.clone(),
        ));
        Self {
            port,
            state,
            connections,
            task,
        }
    }

    /// `127.0.0.1:<port>`: the `matrix_server_name` clients send.
    pub fn server_name(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The full user ID of a local user of this server.
    pub fn user(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name())
    }

    /// Makes `token` resolve as `answer`.
    pub fn answer(&self, token: &str, answer: Answer) {
        self.lock().answers.insert(token.to_owned(), answer);
    }

    /// Makes `token` belong to `@<localpart>:<server name>` and returns that user ID.
    pub fn add_user(&self, token: &str, localpart: &str) -> String {
        let user = self.user(localpart);
        self.answer(token, Answer::Sub(user.clone()));
        user
    }

    /// Serves `document` at `/.well-known/matrix/client` (None: 404).
    pub fn set_client_well_known(&self, document: Option<serde_json::Value>) {
        self.lock().client_well_known = document;
    }

    /// Userinfo requests received so far.
    pub fn lookups(&self) -> Vec<Lookup> {
        self.lock().lookups.clone()
    }

    /// Number of userinfo requests received so far.
    pub fn lookup_count(&self) -> usize {
        self.lock().lookups.len()
    }

    /// Paths of requests other than userinfo (e.g. `.well-known` lookups).
    pub fn other_paths(&self) -> Vec<String> {
        self.lock().other_paths.clone()
    }

    /// TCP connections accepted so far, whether or not TLS succeeded.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake homeserver state")
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<Mutex<State>>,
    connections: Arc<AtomicUsize>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        connections.fetch_add(1, Ordering::SeqCst);
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            // A failed handshake is expected whenever the service (rightly) rejects our certificate.
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = service_fn(move |request| handle(request, state.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    if path == CLIENT_WELL_KNOWN_PATH {
        let mut state = state.lock().expect("fake homeserver state");
        let document = state.client_well_known.clone();
        state.other_paths.push(path);
        return Ok(match document {
            Some(document) => json_response(200, &document),
            None => json_response(
                404,
                &serde_json::json!({"errcode": "M_NOT_FOUND", "error": "Not found"}),
            ),
        });
    }
    if path != USERINFO_PATH {
        state
            .lock()
            .expect("fake homeserver state")
            .other_paths
            .push(path);
        return Ok(json_response(
            404,
            &serde_json::json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}),
        ));
    }
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let access_token = request.uri().query().and_then(|query| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "access_token")
            .map(|(_, value)| value.into_owned())
    });
    let lookup = Lookup {
        method: request.method().to_string(),
        path,
        access_token: access_token.clone(),
        host: header("host"),
        authorization: header("authorization"),
    };
    let answer = {
        let mut state = state.lock().expect("fake homeserver state");
        state.lookups.push(lookup);
        access_token.and_then(|token| state.answers.get(&token).cloned())
    };
    let mut answer = answer.unwrap_or_else(|| {
        Answer::Json(
            401,
            serde_json::json!({"errcode": "M_UNKNOWN_TOKEN", "error": "Access token unknown or expired"}),
        )
    });
    loop {
        return Ok(match answer {
            Answer::Sub(user) => json_response(200, &serde_json::json!({ "sub": user })),
            Answer::Json(status, body) => json_response(status, &body),
            Answer::Raw(status, body) => response(status, "text/plain", Bytes::from(body)),
            Answer::Delayed(delay, then) => {
                tokio::time::sleep(delay).await;
                answer = *then;
                continue;
            }
        });
    }
}

fn json_response(status: u16, body: &serde_json::Value) -> Response<Full<Bytes>> {
    response(
        status,
        "application/json",
        Bytes::from(serde_json::to_vec(body).expect("serialise JSON")),
    )
}

fn response(status: u16, content_type: &str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = StatusCode::from_u16(status).expect("status code");
    response.headers_mut().insert(
        "content-type",
        content_type.parse().expect("content type header"),
    );
    response
}
