//! A throwaway certificate authority and a leaf for `127.0.0.1`, made fresh for each test.
//!
//! The fake homeserver serves the leaf. Without trust in the CA the service sees an unknown issuer (the
//! "self-signed" case that only `LIVEKIT_INSECURE_SKIP_VERIFY_TLS=YES_I_KNOW_WHAT_I_AM_DOING` accepts); with
//! `SSL_CERT_FILE` pointing at [`TestPki::ca_file`] the service verifies the chain, because it loads its
//! roots with rustls-native-certs, which honours that variable.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::TempDir;

/// A CA, a leaf it signed for IP `127.0.0.1`, and the CA written to a PEM file.
pub struct TestPki {
    leaf_der: CertificateDer<'static>,
    leaf_key_der: Vec<u8>,
    dir: TempDir,
}

impl TestPki {
    /// Generates the CA and the leaf (ECDSA P-256, fast).
    pub fn generate() -> Self {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "matrixrtc-auth black-box test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf_key = KeyPair::generate().expect("leaf key");
        let mut leaf_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("leaf params");
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "fake homeserver");
        let leaf = leaf_params
            .signed_by(&leaf_key, &issuer)
            .expect("leaf certificate");

        let dir = TempDir::new("pki");
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).expect("write CA file");
        // For servers that read PEM files (the TLS redis-server of the delegation tests).
        std::fs::write(dir.path().join("leaf.pem"), leaf.pem()).expect("write leaf file");
        std::fs::write(dir.path().join("leaf.key"), leaf_key.serialize_pem())
            .expect("write leaf key file");
        Self {
            leaf_der: leaf.der().clone(),
            leaf_key_der: leaf_key.serialize_der(),
            dir,
        }
    }

    /// PEM file holding only the CA certificate; the value for `SSL_CERT_FILE`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// PEM files of the leaf certificate and its key.
    pub fn leaf_files(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("leaf.pem"),
            self.dir.path().join("leaf.key"),
        )
    }

    /// A rustls server configuration serving the leaf, HTTP/1.1 only.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key_der.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.leaf_der.clone()], key)
            .expect("server certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}
