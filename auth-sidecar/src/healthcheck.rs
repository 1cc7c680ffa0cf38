//! `matrixrtc-auth healthcheck`: the Docker `HEALTHCHECK` of an image without a shell. Sends
//! `GET /healthz` to the local service and exits 0 on a 200, 1 otherwise, within two seconds.
//!
//! The port comes from `LIVEKIT_JWT_BIND` / `LIVEKIT_JWT_PORT` / 8080, read as the service reads them
//! (the reference's probe pastes `LIVEKIT_JWT_BIND` in place of a port, so `:8080` breaks it). A
//! specific bind host is probed at that host; `:port` and unspecified hosts at loopback, IPv4 first.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::BindAddress;
use crate::contract::path;

/// The whole probe's time limit (Docker's own timeout is 3 s).
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Why the service is not healthy.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("could not connect to {0}")]
    Connect(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("reading the answer failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("unexpected answer: {0:?}")]
    Status(String),
}

/// The addresses to try for a service bound at `bind`.
pub async fn targets(bind: &BindAddress) -> Vec<SocketAddr> {
    let loopback = |port| {
        vec![
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        ]
    };
    match bind {
        BindAddress::AllInterfaces(port) => loopback(*port),
        BindAddress::Host(host, port) => match host.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() => loopback(*port),
            Ok(ip) => vec![SocketAddr::new(ip, *port)],
            Err(_) => tokio::net::lookup_host((host.as_str(), *port))
                .await
                .map(Iterator::collect)
                .unwrap_or_default(),
        },
    }
}

/// Probes the service bound at `bind`.
pub async fn probe(bind: &BindAddress, timeout: Duration) -> Result<(), ProbeError> {
    tokio::time::timeout(timeout, probe_unbounded(bind))
        .await
        .map_err(|_| ProbeError::Timeout(timeout))?
}

async fn probe_unbounded(bind: &BindAddress) -> Result<(), ProbeError> {
    let mut stream = None;
    for target in targets(bind).await {
        if let Ok(connected) = TcpStream::connect(target).await {
            stream = Some((connected, target));
            break;
        }
    }
    let (mut stream, target) = stream.ok_or_else(|| ProbeError::Connect(bind.to_string()))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: matrixrtc-auth-healthcheck\r\nConnection: close\r\n\r\n",
        path::HEALTHZ
    );
    stream.write_all(request.as_bytes()).await?;
    // The status line is all we need; a healthy answer is a few dozen bytes.
    let mut buffer = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buffer.windows(2).any(|w| w == b"\r\n") && buffer.len() < 1024 {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    let text = String::from_utf8_lossy(&buffer);
    let status_line = text.lines().next().unwrap_or_default();
    let mut fields = status_line.split(' ');
    match (fields.next(), fields.next()) {
        (Some("HTTP/1.1" | "HTTP/1.0"), Some("200")) => Ok(()),
        _ => Err(ProbeError::Status(status_line.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A one-shot server answering `response` to the first connection.
    async fn serve_once(response: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).await;
            let _ = stream.write_all(response.as_bytes()).await;
        });
        port
    }

    #[tokio::test]
    async fn healthy_on_200_only() {
        let port = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        probe(&BindAddress::AllInterfaces(port), TIMEOUT)
            .await
            .unwrap();

        let port = serve_once("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").await;
        let error = probe(&BindAddress::Host("127.0.0.1".into(), port), TIMEOUT)
            .await
            .unwrap_err();
        assert!(matches!(error, ProbeError::Status(line) if line.contains("404")));

        let port = serve_once("HTTP/1.1 2000 nonsense\r\n\r\n").await;
        assert!(
            probe(&BindAddress::AllInterfaces(port), TIMEOUT)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_unhealthy() {
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The listener is dropped: nothing listens on that port now.
        assert!(matches!(
            probe(&BindAddress::Host("127.0.0.1".into(), port), TIMEOUT).await,
            Err(ProbeError::Connect(_))
        ));
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let error = probe(
            &BindAddress::AllInterfaces(port),
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
        assert!(matches!(error, ProbeError::Timeout(_)));
        drop(listener);
    }

    #[tokio::test]
    async fn targets_follow_the_bind_address() {
        let v4 = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        assert_eq!(
            targets(&BindAddress::AllInterfaces(8080)).await[0],
            v4(8080)
        );
        assert_eq!(
            targets(&BindAddress::Host("0.0.0.0".into(), 9000)).await[0],
            v4(9000)
        );
        assert_eq!(
            targets(&BindAddress::Host("::1".into(), 9000)).await,
            vec![SocketAddr::from((Ipv6Addr::LOCALHOST, 9000))]
        );
        assert_eq!(
            targets(&BindAddress::Host("10.1.2.3".into(), 1)).await,
            vec!["10.1.2.3:1".parse().unwrap()]
        );
        assert!(
            !targets(&BindAddress::Host("localhost".into(), 1))
                .await
                .is_empty()
        );
    }
}
