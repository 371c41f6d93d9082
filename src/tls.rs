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

/// For an `https://` upstream: trust `ca` when given, else the system's roots
/// (read once per process).
pub fn upstream_client(ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    if let Some(ca) = ca {
        return client_config(roots(ca)?);
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
