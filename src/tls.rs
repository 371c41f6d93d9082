//! TLS (SPEC §7): the listener's server config from PEM files (chains; RSA,
//! ECDSA and Ed25519 keys in PKCS#8, PKCS#1 or SEC1), optional client
//! certificates (mTLS), TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`; and
//! the client configs of `https://` upstreams (the system's roots, or a
//! route's own `ca`).
//!
//! Everything is built while the config is validated, so `check` reports a
//! bad file with its key path, and a SIGHUP whose files do not load keeps the
//! old config (and certificates) in force. The crypto provider is ring.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Why a TLS file could not be used. The messages name the file, never its contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}: cannot read PEM certificates: {1}")]
    Certs(PathBuf, String),
    #[error("{0}: no certificate in the file")]
    NoCerts(PathBuf),
    #[error("{0}: cannot read a PEM private key (PKCS#8, RSA or SEC1): {1}")]
    Key(PathBuf, String),
    #[error("the certificate and key do not form a usable pair: {0}")]
    Pair(String),
    #[error("{0}: not a usable CA bundle: {1}")]
    Ca(PathBuf, String),
    #[error("no root certificates found on this system (install ca-certificates, or set the route's ca)")]
    NoSystemRoots,
}

/// `[server.tls.acme]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    pub domains: Vec<String>,
    /// `mailto:` URLs.
    pub contact: Vec<String>,
    pub directory: String,
    /// Trust this CA (instead of the system's roots) for the directory itself.
    pub directory_ca: Option<PathBuf>,
    /// Account and certificates, reused across restarts.
    pub cache: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// The ALPN protocol of TLS-ALPN-01 validation handshakes (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Starts ACME for `settings` (a task orders, caches and renews certificates)
/// and returns the listener's config, whose certificate comes from it. Until
/// the first certificate is there, handshakes fail (no certificate to offer).
pub fn acme_server_config(settings: &AcmeSettings) -> Result<Arc<ServerConfig>, TlsError> {
    use futures_util::StreamExt as _;
    let client = match &settings.directory_ca {
        Some(ca) => client_config(roots(ca)?)?,
        None => upstream_client(None)?,
    };
    // The ACME client speaks HTTP/1.1 to the directory; no ALPN needed.
    let mut client = (*client).clone();
    client.alpn_protocols.clear();
    let mut state = rustls_acme::AcmeConfig::new_with_client_config(&settings.domains, Arc::new(client))
        .contact(&settings.contact)
        .directory(&settings.directory)
        .cache(rustls_acme::caches::DirCache::new(settings.cache.clone()))
        .state();
    let resolver = state.resolver();
    tokio::spawn(async move {
        while let Some(event) = state.next().await {
            match event {
                Ok(ok) => tracing::info!(event = ?ok, "ACME"),
                Err(e) => tracing::warn!(error = %e, "ACME"),
            }
        }
    });
    let mut config = server_builder(settings.client_ca.as_deref())?.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// `[server.tls]` files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Require client certificates signed by this CA.
    pub client_ca: Option<PathBuf>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Certs(path.to_owned(), e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certs(path.to_owned(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCerts(path.to_owned()));
    }
    Ok(certs)
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(path).map_err(|e| TlsError::Ca(path.to_owned(), e.to_string()))? {
        store.add(c).map_err(|e| TlsError::Ca(path.to_owned(), e.to_string()))?;
    }
    Ok(store)
}

/// TLS 1.2/1.3 with ring, and client certificates from `client_ca` when set.
fn server_builder(
    client_ca: Option<&Path>,
) -> Result<rustls::ConfigBuilder<ServerConfig, rustls::server::WantsServerCert>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::Pair(e.to_string()))?;
    Ok(match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .build()
                    .map_err(|e| TlsError::Ca(ca.to_owned(), e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    })
}

/// The listener's config from `files`.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key(files.key.clone(), e.to_string()))?;
    // Parse it now, so a damaged key is reported as the key's fault.
    provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| TlsError::Key(files.key.clone(), e.to_string()))?;
    let mut config = server_builder(files.client_ca.as_deref())?
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Pair(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::Pair(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // The upstream pool speaks HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A route's `ca` file (SPEC §13): the usual chain check against its
/// certificates, and besides, a presented leaf identical to a certificate in
/// the file is trusted when it names the host (the app's own self-signed
/// certificate, as `openssl req -x509` makes it, with `CA:TRUE`, which webpki
/// refuses as an end entity: `CaUsedAsEndEntity`; curl accepts it).
#[derive(Debug)]
struct ChainOrPinned {
    chain: Arc<rustls::client::WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for ChainOrPinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self.chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(v) => Ok(v),
            Err(e) if self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) => {
                // The very certificate configured: no chain to check, the name still counts.
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity).map_err(|_| e.clone())?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// What to do about an upstream TLS failure, for the log line (SPEC §13).
pub fn upstream_advice(error: &str) -> Option<&'static str> {
    let e = error;
    Some(if e.contains("UnknownIssuer") {
        "the upstream's certificate is not signed by a CA this route trusts: set the route's `ca` to a PEM file with its CA (or with the certificate itself, if self-signed)"
    } else if e.contains("NotValidForName") {
        "the upstream's certificate does not name the host in the route's URL: use a host name the certificate has"
    } else if e.contains("Expired") || e.contains("NotValidYet") {
        "the upstream's certificate is outside its validity period: renew it (or check this machine's clock)"
    } else if e.contains("CaUsedAsEndEntity") {
        "the upstream presents a CA certificate as its own: put exactly that certificate in the route's `ca`"
    } else if e.contains("InvalidCertificate") || e.contains("certificate") {
        "the upstream's certificate was refused: check the route's `ca` and the certificate the app serves"
    } else if e.contains("HandshakeFailure") || e.contains("PeerIncompatible") || e.contains("protocol version") {
        "no common TLS version or cipher with the upstream: hookgate speaks TLS 1.2 and 1.3"
    } else {
        return None;
    })
}

/// The PEM text of a CA file, checked to hold at least one certificate that
/// can be a root (for clients such as the `rediss://` one that take PEM).
pub fn ca_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    roots(path)?;
    std::fs::read(path).map_err(|e| TlsError::Ca(path.to_owned(), e.to_string()))
}

/// For an `https://` upstream: trust `ca` when given, else the system's roots
/// (read once per process).
pub fn upstream_client(ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    if let Some(ca) = ca {
        let pinned = certs(ca).map_err(|e| TlsError::Ca(ca.to_owned(), e.to_string()))?;
        let chain = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
            .build()
            .map_err(|e| TlsError::Ca(ca.to_owned(), e.to_string()))?;
        let algorithms = provider().signature_verification_algorithms;
        let verifier = Arc::new(ChainOrPinned { chain, pinned, algorithms });
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| TlsError::Pair(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        return Ok(Arc::new(config));
    }
    static SYSTEM: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    let system = SYSTEM.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut store = RootCertStore::empty();
        let (added, _) = store.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(TlsError::NoSystemRoots.to_string());
        }
        client_config(store).map_err(|e| e.to_string())
    });
    system.clone().map_err(|_| TlsError::NoSystemRoots)
}

#[cfg(test)]
mod advice_tests {
    use super::upstream_advice;

    /// Every upstream TLS failure rustls reports gets a line saying what to do.
    #[test]
    fn tls_failures_come_with_advice() {
        let cases = [
            ("invalid peer certificate: UnknownIssuer", "set the route's `ca`"),
            ("invalid peer certificate: NotValidForName", "host name the certificate has"),
            ("invalid peer certificate: Expired", "renew it"),
            ("invalid peer certificate: CaUsedAsEndEntity", "exactly that certificate"),
            ("received fatal alert: HandshakeFailure", "TLS 1.2 and 1.3"),
        ];
        for (error, want) in cases {
            assert!(upstream_advice(error).is_some_and(|a| a.contains(want)), "{error}");
        }
        assert_eq!(upstream_advice("connection refused"), None);
    }
}
