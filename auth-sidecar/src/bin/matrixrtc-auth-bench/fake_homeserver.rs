//! `fake-homeserver`: a TLS server that answers only `GET /_matrix/federation/v1/openid/userinfo`, as
//! fast as it can, so that it is not what a cold `/get_token` run measures.
//!
//! `access_token=tok<N>` answers `200 {"sub":"@utok<N>:<server name>"}`, any other token 401, any other
//! path 404. The server name is the `127.0.0.1:<port>` it listens on, printed as `server_name=<name>` on
//! stdout once it accepts: an explicit port means the service skips `.well-known` and SRV discovery.
//! HTTP/1.1 with keep-alive over TLS 1.3 with a fresh self-signed certificate (the service under test
//! runs with `LIVEKIT_INSECURE_SKIP_VERIFY_TLS`). hyper is driven directly, without a router, and on one
//! thread by default so that it leaves the other core to the service.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::body;

const USERINFO_PATH: &str = "/_matrix/federation/v1/openid/userinfo";
const UNKNOWN_TOKEN: &str =
    r#"{"errcode":"M_UNKNOWN_TOKEN","error":"Access token unknown or expired"}"#;

#[derive(clap::Args)]
pub struct Args {
    /// Listen address; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Runtime worker threads (1: a current-thread runtime; 0: one per core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Exit after this many seconds even if nobody stops it.
    #[arg(long, default_value = "3600", value_parser = crate::seconds)]
    lifetime: Duration,
}

/// Why the fake homeserver could not start.
#[derive(Debug, thiserror::Error)]
pub enum FakeHomeserverError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("self-signed certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

pub fn run(args: &Args) -> Result<(), FakeHomeserverError> {
    crate::runtime(args.threads)?.block_on(serve(args))
}

async fn serve(args: &Args) -> Result<(), FakeHomeserverError> {
    let listener = TcpListener::bind(args.bind).await?;
    let server_name: Arc<str> = listener.local_addr()?.to_string().into();
    let acceptor = TlsAcceptor::from(Arc::new(tls_config()?));
    let mut http = http1::Builder::new();
    http.keep_alive(true);
    println!("server_name={server_name}");

    let mut lifetime = std::pin::pin!(crate::lifetime_over(args.lifetime));
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    eprintln!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut lifetime => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let http = http.clone();
        let server_name = Arc::clone(&server_name);
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = service_fn(move |request: Request<Incoming>| {
                let response = respond(&request, &server_name);
                async move { Ok::<_, Infallible>(response) }
            });
            // A client closing its connection is the normal end; nothing to report.
            let _ = http.serve_connection(TokioIo::new(tls), service).await;
        });
    }
}

/// A rustls server configuration around a fresh self-signed certificate for `127.0.0.1`.
fn tls_config() -> Result<rustls::ServerConfig, FakeHomeserverError> {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()])?;
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    // What a federation listener offers; the service asks for nothing else.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The answer to one request.
fn respond<B>(request: &Request<B>, server_name: &str) -> Response<Full<Bytes>> {
    if request.method() != Method::GET || request.uri().path() != USERINFO_PATH {
        return json(
            StatusCode::NOT_FOUND,
            r#"{"errcode":"M_UNRECOGNIZED"}"#.into(),
        );
    }
    match request.uri().query().and_then(known_user) {
        Some(user) => json(
            StatusCode::OK,
            format!(r#"{{"sub":"{}"}}"#, body::user_id(user, server_name)),
        ),
        None => json(StatusCode::UNAUTHORIZED, UNKNOWN_TOKEN.into()),
    }
}

/// The user whose token the query carries: `access_token=tok<N>` with `N` a decimal number. Such a
/// token needs no percent-decoding, and anything else is unknown.
fn known_user(query: &str) -> Option<u64> {
    let token = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("access_token="))?;
    let digits = token.strip_prefix("tok")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(uri: &str) -> Request<()> {
        Request::get(uri).body(()).unwrap()
    }

    async fn text(response: Response<Full<Bytes>>) -> String {
        use http_body_util::BodyExt;
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn known_tokens_get_their_user() {
        let response = respond(
            &get("/_matrix/federation/v1/openid/userinfo?access_token=tok17"),
            "127.0.0.1:9",
        );
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(text(response).await, r#"{"sub":"@utok17:127.0.0.1:9"}"#);
    }

    #[test]
    fn other_tokens_and_paths_are_refused() {
        for (uri, status) in [
            (
                "/_matrix/federation/v1/openid/userinfo?access_token=bad",
                401,
            ),
            (
                "/_matrix/federation/v1/openid/userinfo?access_token=tok",
                401,
            ),
            (
                "/_matrix/federation/v1/openid/userinfo?access_token=tok1x",
                401,
            ),
            (
                "/_matrix/federation/v1/openid/userinfo?access_token=tok-1",
                401,
            ),
            ("/_matrix/federation/v1/openid/userinfo", 401),
            ("/_matrix/federation/v1/openid/other?access_token=tok1", 404),
        ] {
            assert_eq!(respond(&get(uri), "hs").status().as_u16(), status, "{uri}");
        }
        let post = Request::post("/_matrix/federation/v1/openid/userinfo?access_token=tok1")
            .body(())
            .unwrap();
        assert_eq!(respond(&post, "hs").status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn token_is_found_among_other_parameters() {
        assert_eq!(known_user("a=b&access_token=tok5&c=d"), Some(5));
        assert_eq!(known_user("xaccess_token=tok5"), None);
    }
}
