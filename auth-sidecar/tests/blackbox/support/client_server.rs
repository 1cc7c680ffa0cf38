//! A fake homeserver client-server API (plain HTTP on `127.0.0.1:<port>`) with only the MSC4140
//! delayed-event actions: `POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{id}/{action}`.
//! It records every call (when, which delay ID, which action, headers and body) and answers 200 `{}`
//! unless a test scripted otherwise for that delay ID and action.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The path prefix of the delayed-event actions.
pub const DELAYED_EVENTS_PREFIX: &str =
    "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/";

/// `restart` or `send`, as they appear in the path.
pub const RESTART: &str = "restart";
pub const SEND: &str = "send";

/// One delayed-event call as the fake saw it.
#[derive(Clone, Debug)]
pub struct DelayedEventCall {
    pub at: Instant,
    /// The delay ID, percent-decoded.
    pub delay_id: String,
    /// `restart` or `send`.
    pub action: String,
    pub method: String,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    pub body: String,
}

/// A scripted answer.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Answer {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: if status == 404 {
                r#"{"errcode":"M_NOT_FOUND","error":"Delayed event not found"}"#.to_owned()
            } else {
                "{}".to_owned()
            },
        }
    }
}

#[derive(Default)]
struct State {
    calls: Vec<DelayedEventCall>,
    /// Answers by (delay ID, action); the last one repeats.
    scripts: HashMap<(String, String), VecDeque<Answer>>,
    other_paths: Vec<String>,
}

/// The running fake; stops when dropped.
pub struct FakeClientServerApi {
    port: u16,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for FakeClientServerApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeClientServerApi {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake client-server API");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        Self { port, state, task }
    }

    /// `http://127.0.0.1:<port>`, the base URL to advertise or override.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Answers `action` on `delay_id` with `answers` in turn, repeating the last one.
    pub fn script(&self, delay_id: &str, action: &str, answers: Vec<Answer>) {
        self.lock()
            .scripts
            .insert((delay_id.to_owned(), action.to_owned()), answers.into());
    }

    pub fn calls(&self) -> Vec<DelayedEventCall> {
        self.lock().calls.clone()
    }

    /// The (delay ID, action) pairs received so far, in order.
    pub fn actions(&self) -> Vec<(String, String)> {
        self.calls()
            .into_iter()
            .map(|call| (call.delay_id, call.action))
            .collect()
    }

    /// How many times `action` was called on `delay_id`.
    pub fn count(&self, delay_id: &str, action: &str) -> usize {
        self.calls()
            .iter()
            .filter(|call| call.delay_id == delay_id && call.action == action)
            .count()
    }

    /// Requests to other paths.
    pub fn other_paths(&self) -> Vec<String> {
        self.lock().other_paths.clone()
    }

    /// Waits until `action` on `delay_id` was called at least `times` times; panics after `timeout`.
    pub async fn wait_for(&self, delay_id: &str, action: &str, times: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.count(delay_id, action) < times {
            assert!(
                Instant::now() < deadline,
                "expected {times} {action} call(s) on {delay_id} within {timeout:?}; got {:?}",
                self.actions()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake client-server API state")
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(request, state.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let at = Instant::now();
    let path = request.uri().path().to_owned();
    let Some((delay_id, action)) = path
        .strip_prefix(DELAYED_EVENTS_PREFIX)
        .and_then(|rest| rest.rsplit_once('/'))
        .filter(|(id, _)| !id.contains('/'))
    else {
        state.lock().expect("state").other_paths.push(path);
        return Ok(response(&Answer {
            status: 404,
            headers: Vec::new(),
            body: r#"{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}"#.to_owned(),
        }));
    };
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let delay_id = percent_decode(delay_id);
    let mut call = DelayedEventCall {
        at,
        delay_id,
        action: action.to_owned(),
        method: request.method().to_string(),
        content_type: header("content-type"),
        authorization: header("authorization"),
        body: String::new(),
    };
    call.body = match request.into_body().collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    let answer = {
        let mut state = state.lock().expect("state");
        let key = (call.delay_id.clone(), call.action.clone());
        state.calls.push(call);
        match state.scripts.get_mut(&key) {
            Some(queue) if queue.len() > 1 => queue.pop_front(),
            Some(queue) => queue.front().cloned(),
            None => None,
        }
    };
    Ok(response(&answer.unwrap_or_else(|| Answer::status(200))))
}

fn response(answer: &Answer) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(answer.body.clone())));
    *response.status_mut() = StatusCode::from_u16(answer.status).expect("status code");
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    for (name, value) in &answer.headers {
        headers.insert(
            *name,
            http::HeaderValue::from_str(value).expect("header value"),
        );
    }
    response
}

/// `%XX` escapes decoded (and nothing else: a `+` stays a `+` in a path).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
