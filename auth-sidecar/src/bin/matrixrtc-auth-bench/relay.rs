//! `relay`: the least a cold `/get_token` can cost on this machine, as the floor under the service's cold
//! figures (the ceiling is the bound from above for the warm path).
//!
//! For each `POST` it reads the request (head and `Content-Length` body), finds the OpenID token and the
//! homeserver (`matrix_server_name`, which must be an `IP:port`: there is no discovery) by byte search,
//! asks the homeserver's `userinfo` over a pooled keep-alive TLS connection (the service's own TLS
//! configuration: rustls with ring, certificate checks off as the bench runs the service), and answers
//! `200` with a fixed body the size of the service's answer, or `401`. `GET /healthz` answers `200`, so
//! the shared kit (`../shared/perf`) can drive it like the service (`--bind "$LIVEKIT_JWT_BIND"`).
//!
//! It makes the same four loopback TCP segments and four socket calls as a cold request to the service,
//! and the same TLS records; no HTTP library, no JSON, no JWT, no validation, no metrics, no logging.
//! Whatever it spends per request, the service cannot spend less on this machine with this exchange.
//!
//! It is a measuring tool, not a server: HTTP/1.1 with `Content-Length` only (what the load generator,
//! `wrk` and the fake homeserver send), no chunked bodies, messages up to 64 KiB, and the token goes into
//! the query as found (the bench's `tok<N>` needs no escaping).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use matrixrtc_auth::outbound::{Outbound, OutboundError, OutboundSettings};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The largest request or response the relay reads.
const MAX_MESSAGE: usize = 64 * 1024;

/// The service's whole answer to the shared kit's body is 725 bytes (its head has the CORS headers); the
/// relay's shorter head and a body this long come to the same, so the same bytes cross the socket.
const ANSWER_BODY_LEN: usize = 653;

#[derive(clap::Args)]
pub struct Args {
    /// Listen address; port 0 picks a free one (printed as `listening=<address>`).
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Exit after this many seconds even if nobody stops it.
    #[arg(long, default_value = "3600", value_parser = crate::seconds)]
    lifetime: Duration,
}

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Outbound(#[from] OutboundError),
}

/// The idle connections to each homeserver.
struct Upstream {
    connector: TlsConnector,
    idle: Mutex<HashMap<SocketAddr, Vec<Connection>>>,
}

/// A keep-alive TLS connection with its read buffer.
struct Connection {
    stream: TlsStream<TcpStream>,
    buffer: Vec<u8>,
}

pub fn run(args: &Args) -> Result<(), RelayError> {
    let settings = OutboundSettings {
        skip_tls_verify: true,
        ..OutboundSettings::default()
    };
    let tls = Arc::clone(Outbound::new(&settings)?.tls_config());
    let upstream = Arc::new(Upstream {
        connector: TlsConnector::from(tls),
        idle: Mutex::new(HashMap::new()),
    });
    // One thread, as the service runs by default.
    crate::runtime(1)?.block_on(async {
        let listener = TcpListener::bind(args.bind).await?;
        println!("listening={}", listener.local_addr()?);
        let accept = async {
            loop {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                let upstream = Arc::clone(&upstream);
                tokio::spawn(async move {
                    if let Err(error) = serve(stream, &upstream).await {
                        eprintln!("connection: {error}");
                    }
                });
            }
        };
        tokio::select! {
            accepted = accept => accepted,
            () = crate::lifetime_over(args.lifetime) => Ok::<(), RelayError>(()),
        }
    })
}

/// Answers one client connection's requests until it closes.
async fn serve(mut stream: TcpStream, upstream: &Upstream) -> io::Result<()> {
    let ok = answer(
        "200 OK",
        &format!("{{\"jwt\":\"{}\"}}", "x".repeat(ANSWER_BODY_LEN - 10)),
    );
    let unauthorised = answer(
        "401 Unauthorized",
        r#"{"errcode":"M_UNAUTHORIZED","error":"The request could not be authorised"}"#,
    );
    let healthy = answer("200 OK", "");
    let mut buffer = Vec::with_capacity(4096);
    while let Some(length) = read_message(&mut stream, &mut buffer).await? {
        let message = &buffer[..length];
        let reply = if message.starts_with(b"GET /healthz ") {
            &healthy
        } else {
            let asked = match (
                json_string(message, br#""access_token":""#),
                json_string(message, br#""matrix_server_name":""#),
            ) {
                (Some(token), Some(name)) => match socket_address(name) {
                    Some(homeserver) => upstream.userinfo(homeserver, name, token).await?,
                    None => false,
                },
                _ => false,
            };
            if asked { &ok } else { &unauthorised }
        };
        stream.write_all(reply).await?;
        buffer.drain(..length);
    }
    Ok(())
}

/// A whole HTTP/1.1 answer with `body`.
fn answer(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl Upstream {
    /// Whether `homeserver` (named `name`) vouches for `token` (answers 200).
    async fn userinfo(
        &self,
        homeserver: SocketAddr,
        name: &[u8],
        token: &[u8],
    ) -> io::Result<bool> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&homeserver)
            .and_then(Vec::pop);
        let mut connection = match idle {
            Some(connection) => connection,
            None => Self::connect(&self.connector, homeserver).await?,
        };
        let mut request = Vec::with_capacity(160);
        request.extend_from_slice(b"GET /_matrix/federation/v1/openid/userinfo?access_token=");
        request.extend_from_slice(token);
        request.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        request.extend_from_slice(name);
        request.extend_from_slice(b"\r\n\r\n");
        connection.stream.write_all(&request).await?;
        connection.stream.flush().await?;
        let Some(length) = read_message(&mut connection.stream, &mut connection.buffer).await?
        else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        let vouched = connection.buffer.starts_with(b"HTTP/1.1 200 ");
        connection.buffer.drain(..length);
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(homeserver)
            .or_default()
            .push(connection);
        Ok(vouched)
    }

    async fn connect(connector: &TlsConnector, homeserver: SocketAddr) -> io::Result<Connection> {
        let tcp = TcpStream::connect(homeserver).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(homeserver.ip().into());
        let stream = connector.connect(name, tcp).await?;
        Ok(Connection {
            stream,
            buffer: Vec::with_capacity(4096),
        })
    }
}

/// Reads until `buffer` starts with one whole message and returns its length; `None` if the peer closed
/// between messages.
async fn read_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut Vec<u8>,
) -> io::Result<Option<usize>> {
    loop {
        if let Some(length) = message_length(buffer)? {
            return Ok(Some(length));
        }
        if buffer.len() >= MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message over 64 KiB",
            ));
        }
        if stream.read_buf(buffer).await? == 0 {
            return if buffer.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
    }
}

/// The length of the whole message at the start of `buffer` (head and `Content-Length` body), or `None`
/// if it has not all arrived.
fn message_length(buffer: &[u8]) -> io::Result<Option<usize>> {
    let Some(head_end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = &buffer[..head_end];
    let mut body = 0;
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if line[..colon].eq_ignore_ascii_case(b"content-length") {
            body = std::str::from_utf8(&line[colon + 1..])
                .ok()
                .and_then(|value| value.trim().parse().ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length"))?;
        }
    }
    let length = head_end + 4 + body;
    Ok((buffer.len() >= length).then_some(length))
}

/// The string after the first `pattern` (`"key":"`) in `message`, found without parsing the JSON (no
/// escapes).
fn json_string<'m>(message: &'m [u8], pattern: &[u8]) -> Option<&'m [u8]> {
    let start = message.windows(pattern.len()).position(|w| w == pattern)? + pattern.len();
    let length = message[start..].iter().position(|&b| b == b'"')?;
    Some(&message[start..start + length])
}

/// A server name that is an `IP:port` literal, as the fake homeserver's.
fn socket_address(name: &[u8]) -> Option<SocketAddr> {
    std::str::from_utf8(name).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_length_waits_for_the_whole_body() {
        let request = b"POST /get_token HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(message_length(&request[..request.len() - 1]).unwrap(), None);
        assert_eq!(message_length(request).unwrap(), Some(request.len()));
        let mut pipelined = request.to_vec();
        pipelined.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(message_length(&pipelined).unwrap(), Some(request.len()));
        assert_eq!(message_length(b"GET / HTTP/1.1\r\n\r\n").unwrap(), Some(18));
        assert!(message_length(b"POST / HTTP/1.1\r\ncontent-length: x\r\n\r\n").is_err());
    }

    #[test]
    fn finds_the_token_and_homeserver_of_the_bench_body() {
        let mut text = String::new();
        crate::body::write_get_token(&mut text, 42, 7, "127.0.0.1:9");
        let body = text.as_bytes();
        assert_eq!(
            json_string(body, br#""access_token":""#),
            Some(&b"tok42"[..])
        );
        assert_eq!(
            json_string(body, br#""matrix_server_name":""#).and_then(socket_address),
            Some(SocketAddr::from(([127, 0, 0, 1], 9)))
        );
        assert_eq!(json_string(b"{}", br#""access_token":""#), None);
        assert_eq!(socket_address(b"example.org"), None);
    }
}
