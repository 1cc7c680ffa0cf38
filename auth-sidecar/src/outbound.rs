//! Outbound HTTP: the TLS configuration and the HTTP clients every outbound call uses.
//!
//! One rustls [`ClientConfig`] (ring provider; the system's CA roots, or no verification at all when
//! `LIVEKIT_INSECURE_SKIP_VERIFY_TLS` says so) is built once. reqwest takes the configuration by value, so
//! each client holds a clone; clones share the verifier, the roots and the TLS session cache.
//! `OutboundSettings` is the contract with `config.rs`, which builds it from the environment.
//!
//! [`Outbound::http`] is the pooled keep-alive client for operator-configured endpoints (LiveKit, a
//! full-access homeserver's client-server API). Calls whose destination a client chooses go through
//! [`crate::matrix`], which adds the SSRF guard.

pub mod dns;
pub mod host;

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use self::dns::{Dns, HickoryDns, PlainResolver};

/// How long an idle pooled connection is kept.
pub(crate) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per destination.
pub(crate) const POOL_MAX_IDLE_PER_HOST: usize = 64;
/// The `User-Agent` of every outbound request.
pub(crate) const USER_AGENT: &str = concat!("matrixrtc-auth/", env!("CARGO_PKG_VERSION"));

/// How the service talks to the outside world; built once from the environment by `config.rs`.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboundSettings {
    /// `LIVEKIT_INSECURE_SKIP_VERIFY_TLS=YES_I_KNOW_WHAT_I_AM_DOING`: no certificate verification anywhere.
    pub skip_tls_verify: bool,
    /// Connect timeout of every outbound call (default 5 s).
    pub connect_timeout: Duration,
    /// Total timeout of every outbound call, and of a whole OpenID lookup with its server discovery
    /// (default 30 s, the reference's federation client timeout, spec §2).
    pub request_timeout: Duration,
    /// Ranges that non-full-access homeservers may resolve to despite the SSRF guard.
    pub allowed_ranges: Vec<ipnet::IpNet>,
    /// How long a verified OpenID token is remembered; zero disables the cache (default 60 s).
    pub openid_cache_ttl: Duration,
}

impl Default for OutboundSettings {
    fn default() -> Self {
        Self {
            skip_tls_verify: false,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            allowed_ranges: Vec::new(),
            openid_cache_ttl: Duration::from_secs(60),
        }
    }
}

/// Which certificate authorities outbound TLS trusts (unless verification is skipped).
#[derive(Debug)]
pub enum Roots {
    /// The system's store, as rustls-native-certs finds it (`SSL_CERT_FILE`/`SSL_CERT_DIR` replace it).
    Native,
    /// Exactly these roots.
    Custom(RootCertStore),
}

/// Why the outbound clients could not be built. Each is a startup error.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error(
        "no CA certificates found in the system store ({0}); install them or point SSL_CERT_FILE at a bundle"
    )]
    NoRootCertificates(String),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("DNS resolver: {0}")]
    Dns(#[from] dns::DnsError),
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The shared TLS configuration, DNS resolver and plain HTTP client.
pub struct Outbound {
    settings: OutboundSettings,
    tls: Arc<ClientConfig>,
    dns: Arc<dyn Dns>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Outbound {
    /// Production setup: the system's CA roots and DNS configuration.
    pub fn new(settings: &OutboundSettings) -> Result<Self, OutboundError> {
        Self::with_parts(
            settings,
            Roots::Native,
            Arc::new(HickoryDns::from_system_conf()?),
        )
    }

    /// Setup with explicit trust roots and DNS (tests use a throwaway CA and fake answers).
    pub fn with_parts(
        settings: &OutboundSettings,
        roots: Roots,
        dns: Arc<dyn Dns>,
    ) -> Result<Self, OutboundError> {
        let tls = Arc::new(tls_config(settings.skip_tls_verify, roots)?);
        let http = base_client(settings, &tls)
            .dns_resolver(Arc::new(PlainResolver(Arc::clone(&dns))))
            .build()?;
        Ok(Self {
            settings: settings.clone(),
            tls,
            dns,
            http,
        })
    }

    /// The pooled keep-alive client for operator-configured endpoints (no SSRF guard).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The TLS configuration every outbound connection uses (ALPN `http/1.1`).
    pub fn tls_config(&self) -> &Arc<ClientConfig> {
        &self.tls
    }

    /// The DNS resolver every outbound connection uses.
    pub fn dns(&self) -> &Arc<dyn Dns> {
        &self.dns
    }

    /// The settings this was built from.
    pub fn settings(&self) -> &OutboundSettings {
        &self.settings
    }

    /// A reqwest builder with the shared TLS configuration, timeouts and pool settings, for clients that
    /// need their own resolver or redirect policy.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        base_client(&self.settings, &self.tls)
    }
}

fn base_client(settings: &OutboundSettings, tls: &ClientConfig) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls.clone())
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .tcp_nodelay(true)
        .user_agent(USER_AGENT)
}

/// Builds the one TLS client configuration.
fn tls_config(skip_verify: bool, roots: Roots) -> Result<ClientConfig, OutboundError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let mut config = if skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCertificateVerification {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth()
    } else {
        let roots = match roots {
            Roots::Custom(roots) => roots,
            Roots::Native => native_roots()?,
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    // Every client speaks HTTP/1.1 (reqwest is built without HTTP/2); offering only that keeps a server
    // from choosing a protocol the client cannot speak.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn native_roots() -> Result<RootCertStore, OutboundError> {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "could not load some system CA certificates");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 {
        tracing::warn!(ignored, "ignored unparsable system CA certificates");
    }
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(OutboundError::NoRootCertificates(why));
    }
    Ok(roots)
}

/// The verifier of `LIVEKIT_INSECURE_SKIP_VERIFY_TLS`: any certificate for any name is accepted. The
/// handshake signatures are still checked, so the peer at least holds the key of the certificate it sent.
#[derive(Debug)]
struct NoCertificateVerification {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoCertificateVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;
    use crate::matrix::test_support::{
        Answer, FakeDns, TestServer, bounded, pki, settings, unrelated_roots,
    };

    fn outbound(settings: &OutboundSettings, roots: RootCertStore) -> Outbound {
        let dns = FakeDns::default().ip("hs.test", "127.0.0.1");
        Outbound::with_parts(settings, Roots::Custom(roots), Arc::new(dns)).unwrap()
    }

    #[tokio::test]
    async fn the_plain_client_uses_the_shared_trust_roots_and_dns() {
        bounded(async {
            let server = TestServer::start(|_| Answer::json(StatusCode::OK, "{}")).await;
            let url = format!("https://hs.test:{}/x", server.port());

            let trusting = outbound(&settings(), pki().roots());
            let response = trusting.http().get(&url).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let seen = server.seen();
            assert_eq!(seen[0].path_and_query, "/x");

            let untrusting = outbound(&settings(), unrelated_roots());
            let error = untrusting.http().get(&url).send().await.unwrap_err();
            assert!(error.is_connect(), "{error:?}");
            assert_eq!(server.seen().len(), 1);

            let skipping = OutboundSettings {
                skip_tls_verify: true,
                ..settings()
            };
            let skipping = outbound(&skipping, unrelated_roots());
            let response = skipping.http().get(&url).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        })
        .await;
    }

    #[test]
    fn every_client_offers_http_1_1_only() {
        let outbound = outbound(&settings(), pki().roots());
        assert_eq!(outbound.tls_config().alpn_protocols, [b"http/1.1".to_vec()]);
    }
}
