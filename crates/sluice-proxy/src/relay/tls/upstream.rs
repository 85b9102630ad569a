//! The upstream half of TLS termination: a rustls client that re-encrypts to
//! the real server, verifying it against Mozilla's roots, the system bundle
//! and any operator-supplied CA files, with the CONNECT host as SNI and
//! verification name (facts §5).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, DnsName, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::ca::system_bundle_path;
use super::leaf::{ALPN_H2, ALPN_HTTP1};
use crate::egress::Host;

/// Why the upstream TLS client could not be configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// An extra CA file could not be read.
    #[error("cannot read ca file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An extra CA file holds no usable certificate.
    #[error("ca file {path}: {reason}")]
    BadCaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("tls client configuration failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// Why a TLS connection to the upstream failed. Messages name the host and
/// are suitable as a `502` detail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamTlsError {
    /// The upstream's certificate was refused (unknown issuer, name
    /// mismatch, expired, ...). The payload is `"<host>: <reason>"`.
    #[error("upstream certificate verification failed for {0}")]
    Verification(String),
    /// Any other handshake failure (protocol error, reset, EOF, alert,
    /// unusable server name). The payload is `"<host>: <reason>"`.
    #[error("upstream tls handshake failed for {0}")]
    Handshake(String),
    /// The handshake did not finish within the deadline.
    #[error("upstream tls handshake timed out")]
    Timeout,
}

/// Shared client-side TLS configuration for upstream connections.
#[derive(Clone)]
pub struct UpstreamTls {
    connector: TlsConnector,
    /// The same configuration offering `h2, http/1.1`.
    h2_connector: TlsConnector,
    /// The same configuration, for connectors that offer another ALPN protocol.
    config: Arc<ClientConfig>,
    roots: usize,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// Roots = `webpki-roots` + the first existing system bundle (unparsable
    /// entries skipped) + every certificate of each file in `extra_ca_files`.
    /// ALPN offers only `http/1.1`.
    ///
    /// # Errors
    /// [`TlsConfigError`] naming an extra CA file that is unreadable, holds
    /// no certificate or holds one rustls cannot use as a trust anchor.
    pub fn new(extra_ca_files: &[PathBuf]) -> Result<Self, TlsConfigError> {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = system_bundle_path() {
            add_system_bundle(&mut roots, &path);
        }
        for path in extra_ca_files {
            add_extra_ca_file(&mut roots, path)?;
        }
        let count = roots.len();
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        let mut h2 = config.clone();
        h2.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        let config = Arc::new(config);
        Ok(Self {
            h2_connector: TlsConnector::from(Arc::new(h2)),
            connector: TlsConnector::from(Arc::clone(&config)),
            config,
            roots: count,
        })
    }

    /// Number of trust anchors loaded.
    #[must_use]
    pub fn root_count(&self) -> usize {
        self.roots
    }

    /// Run the client handshake over `stream` with `host` as SNI and
    /// verification name, bounded by `timeout`.
    ///
    /// # Errors
    /// [`UpstreamTlsError::Verification`] for certificate problems,
    /// [`UpstreamTlsError::Timeout`] past the deadline and
    /// [`UpstreamTlsError::Handshake`] otherwise.
    pub async fn connect(
        &self,
        host: &Host,
        stream: TcpStream,
        timeout: Duration,
    ) -> Result<TlsStream<TcpStream>, UpstreamTlsError> {
        handshake(&self.connector, host, stream, timeout).await
    }

    /// [`Self::connect`] offering the ALPN protocol `alpn` instead of
    /// `http/1.1` (native protocols: PostgreSQL 17+ refuses a client that
    /// offers ALPN without `postgresql`).
    ///
    /// # Errors
    /// As [`Self::connect`].
    pub(crate) async fn connect_alpn(
        &self,
        host: &Host,
        stream: TcpStream,
        timeout: Duration,
        alpn: &[u8],
    ) -> Result<TlsStream<TcpStream>, UpstreamTlsError> {
        let mut config = (*self.config).clone();
        config.alpn_protocols = vec![alpn.to_vec()];
        handshake(&TlsConnector::from(Arc::new(config)), host, stream, timeout).await
    }

    /// [`Self::connect`] offering `h2` then `http/1.1` (HTTP/2 tunnels);
    /// the caller reads the upstream's choice from the session.
    ///
    /// # Errors
    /// As [`Self::connect`].
    pub(crate) async fn connect_h2(
        &self,
        host: &Host,
        stream: TcpStream,
        timeout: Duration,
    ) -> Result<TlsStream<TcpStream>, UpstreamTlsError> {
        handshake(&self.h2_connector, host, stream, timeout).await
    }
}

async fn handshake(
    connector: &TlsConnector,
    host: &Host,
    stream: TcpStream,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, UpstreamTlsError> {
    let name = server_name(host)?;
    match tokio::time::timeout(timeout, connector.connect(name, stream)).await {
        Err(_) => Err(UpstreamTlsError::Timeout),
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(classify_error(host, &e)),
    }
}

fn server_name(host: &Host) -> Result<ServerName<'static>, UpstreamTlsError> {
    match host {
        Host::Ip(ip) => Ok(ServerName::IpAddress((*ip).into())),
        Host::Name(name) => DnsName::try_from(name.to_string())
            .map(ServerName::DnsName)
            .map_err(|e| UpstreamTlsError::Handshake(format!("{host}: invalid server name: {e}"))),
    }
}

fn classify_error(host: &Host, e: &std::io::Error) -> UpstreamTlsError {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidCertificate(cert)) => {
            UpstreamTlsError::Verification(format!("{host}: {}", cert_reason(cert)))
        }
        Some(other) => UpstreamTlsError::Handshake(format!("{host}: {other}")),
        None => UpstreamTlsError::Handshake(format!("{host}: {e}")),
    }
}

/// Short, stable reasons for the common cases (`UnknownIssuer`,
/// `NotValidForName`, `Expired`), rustls' own wording otherwise.
fn cert_reason(e: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match e {
        C::UnknownIssuer => "UnknownIssuer".into(),
        C::NotValidForName => "NotValidForName".into(),
        C::NotValidForNameContext { .. } => format!("NotValidForName ({e})"),
        C::Expired => "Expired".into(),
        C::ExpiredContext { .. } => format!("Expired ({e})"),
        C::NotValidYet => "NotValidYet".into(),
        C::NotValidYetContext { .. } => format!("NotValidYet ({e})"),
        C::Revoked => "Revoked".into(),
        other => other.to_string(),
    }
}

fn add_system_bundle(roots: &mut RootCertStore, path: &Path) {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "system ca bundle unreadable");
            return;
        }
    };
    let mut skipped = 0usize;
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        match item {
            Ok(cert) => certs.push(cert),
            Err(e) => {
                skipped += 1;
                tracing::debug!(path = %path.display(), error = %e, "skipping unparsable pem");
            }
        }
    }
    let (added, ignored) = roots.add_parsable_certificates(certs);
    tracing::debug!(
        path = %path.display(),
        added,
        ignored = ignored + skipped,
        "loaded system ca bundle"
    );
}

fn add_extra_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<(), TlsConfigError> {
    let bytes = fs::read(path).map_err(|source| TlsConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| TlsConfigError::BadCaFile {
        path: path.to_path_buf(),
        reason,
    };
    let mut count = 0usize;
    for item in CertificateDer::pem_slice_iter(&bytes) {
        let cert = item.map_err(|e| bad(format!("invalid pem: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("unusable certificate: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(bad("no certificate found".into()));
    }
    tracing::debug!(path = %path.display(), count, "loaded extra ca file");
    Ok(())
}
