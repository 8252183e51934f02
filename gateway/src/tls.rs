//! The public listener's certificate: loaded from PEM files, and swapped in place on reload so
//! that new handshakes use the new pair while open connections keep theirs.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate or key file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct TlsError {
    /// The path as configured.
    pub file: String,
    /// The parser's or rustls's reason.
    pub message: String,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The certificate chain and key in these PEM files, checked to belong together.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let error = |file: &Path, e: &dyn std::fmt::Display| TlsError {
        file: file.display().to_string(),
        message: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| error(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(cert, &e))?;
    if certs.is_empty() {
        return Err(error(cert, &"no certificate in the file"));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| error(key, &e))?;
    let certified =
        CertifiedKey::from_der(certs, private, &provider()).map_err(|e| error(key, &e))?;
    Ok(Arc::new(certified))
}

/// The certificate new handshakes get; [`Certificate::store`] replaces it.
#[derive(Debug)]
pub struct Certificate(ArcSwap<CertifiedKey>);

impl Certificate {
    /// Shared by the acceptor and the reloader, hence the `Arc`.
    pub fn new(key: Arc<CertifiedKey>) -> Arc<Self> {
        Arc::new(Certificate(ArcSwap::new(key)))
    }

    /// Replaces the certificate; says whether it differs from the one in use.
    pub fn store(&self, key: Arc<CertifiedKey>) -> bool {
        let changed = self.0.load().cert != key.cert;
        self.0.store(key);
        changed
    }

    /// A TLS acceptor that offers h2 and http/1.1 by ALPN and serves this certificate.
    pub fn acceptor(self: &Arc<Self>) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError {
                file: String::new(),
                message: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}
