//! Certificates made in the test (rcgen), and a rustls client that speaks
//! HTTP/1.1 or h2 (by ALPN) to a TLS listener.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A test CA that issues server and client certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for `names` (DNS names or IPs), with `key` (e.g. ECDSA P-256 or Ed25519).
    pub fn issue_with(&self, names: &[&str], cn: &str, key: KeyPair) -> Leaf {
        let mut params = CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert: cert.pem(), key: key.serialize_pem() }
    }

    pub fn issue(&self, names: &[&str], cn: &str) -> Leaf {
        self.issue_with(names, cn, KeyPair::generate().unwrap())
    }
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A server config for a test upstream (HTTP/1.1).
pub fn server_config(leaf: &Leaf) -> Arc<rustls::ServerConfig> {
    let certs = CertificateDer::pem_slice_iter(leaf.cert.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
    let mut c = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

/// A client trusting `ca_pem`, offering `alpn`, with an optional client certificate.
pub fn client_config(ca_pem: &str, alpn: &[&[u8]], client: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut c = match client {
        None => b.with_no_client_auth(),
        Some(l) => {
            let certs = CertificateDer::pem_slice_iter(l.cert.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
            b.with_client_auth_cert(certs, PrivateKeyDer::from_pem_slice(l.key.as_bytes()).unwrap()).unwrap()
        }
    };
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

/// What an HTTPS exchange showed.
pub struct Exchange {
    pub status: u16,
    pub body: Bytes,
    /// The negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
    /// The server's leaf certificate.
    pub peer_cert: Vec<u8>,
    pub version: http::Version,
}

/// One request over a fresh TLS connection; `Err` names the failing step.
pub async fn request(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
    req: http::Request<Full<Bytes>>,
) -> Result<Exchange, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let tls =
        tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| format!("handshake: {e}"))?;
    let (_, conn) = tls.get_ref();
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    let peer_cert = conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
    let io = TokioIo::new(tls);
    let res = if alpn.as_deref() == Some(b"h2") {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.map_err(|e| format!("h2: {e}"))?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| format!("request: {e}"))?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("h1: {e}"))?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| format!("request: {e}"))?
    };
    let (parts, body) = res.into_parts();
    let body = body.collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
    Ok(Exchange { status: parts.status.as_u16(), body, alpn, peer_cert, version: parts.version })
}
