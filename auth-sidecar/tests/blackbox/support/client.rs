//! A minimal HTTP/1.1 client: one connection per request, any method, raw bytes in and out.
//!
//! A real client library would normalise what these tests want to see exactly (body bytes, header
//! presence), so the tests speak HTTP through hyper's connection API directly.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Every request must finish within this time; a hang is a test failure, not a stuck run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The body as UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).expect("response body is UTF-8")
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {:?}", self.text()))
    }

    /// The single value of a header, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        let mut values = self.headers.get_all(name).iter();
        let first = values.next()?;
        assert!(values.next().is_none(), "header {name} is repeated");
        Some(first.to_str().expect("header is ASCII").to_owned())
    }
}

/// A request under construction.
pub struct RequestBuilder {
    addr: SocketAddr,
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl RequestBuilder {
    pub fn new(addr: SocketAddr, method: Method, path: &str) -> Self {
        Self {
            addr,
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// A JSON body with `Content-Type: application/json`, as browsers send it.
    pub fn json(self, value: &serde_json::Value) -> Self {
        self.header("content-type", "application/json")
            .body(serde_json::to_vec(value).expect("serialise JSON"))
    }

    /// Sends the request and reads the whole response; panics on a transport error or a timeout.
    pub async fn send(self) -> Response {
        let what = format!("{} {}", self.method, self.path);
        match self.try_send().await {
            Ok(response) => response,
            Err(error) => panic!("{what}: {error}"),
        }
    }

    /// Sends the request; a transport error or a timeout is returned as text.
    pub async fn try_send(self) -> Result<Response, String> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.exchange())
            .await
            .map_err(|_| format!("no response within {REQUEST_TIMEOUT:?}"))?
    }

    async fn exchange(self) -> Result<Response, String> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let driver = tokio::spawn(connection);

        let mut request = Request::builder()
            .method(self.method)
            .uri(&self.path)
            .header("host", self.addr.to_string());
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(Full::new(self.body))
            .map_err(|e| format!("request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        driver.abort();
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}
