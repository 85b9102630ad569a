//! The one gRPC channel to a registered service: plaintext HTTP/2 for
//! `http://`, TLS (rustls, ALPN `h2`) for `https://`, trusting the
//! `--middleware-ca` PEM only when given (it replaces the platform roots, as
//! OpenShell's `tls_ca_cert_path` does) and the webpki roots otherwise; the
//! host name is verified either way.
//!
//! These are operator-configured control-plane connections, not egress:
//! they do not go through `destination::UpstreamConnector` (which refuses
//! loopback, where such services usually run). tonic's connector dials.

use std::sync::Arc;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::ServiceExt as _;

use super::registration::Registration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connects to `reg`'s service (bounded by its timeout per attempt).
///
/// # Errors
/// An unusable CA PEM, or a connection that fails (with its causes).
pub(super) async fn connect(reg: &Registration, ca_pem: Option<&[u8]>) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(reg.url().to_owned())
        .map_err(|e| error_chain(&e))?
        .connect_timeout(reg.timeout())
        .tcp_nodelay(true);
    let connected = if reg.tls() {
        let tls = TlsConnector::from(Arc::new(client_config(ca_pem)?));
        endpoint.connect_with_connector(tls_connector(tls)).await
    } else {
        endpoint.connect().await
    };
    connected.map_err(|e| error_chain(&e))
}

/// The TLS client config: the `ca_pem` roots alone, or the webpki roots.
fn client_config(ca_pem: Option<&[u8]>) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for item in CertificateDer::pem_slice_iter(pem) {
                let cert = item.map_err(|e| format!("--middleware-ca: invalid PEM: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("--middleware-ca: unusable certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err("--middleware-ca: no certificate found".into());
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A connector for `Endpoint::connect_with_connector`: TCP through
/// hyper-util's connector, then the TLS handshake for the URI's host.
fn tls_connector(
    tls: TlsConnector,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    Error = BoxError,
    Future = impl Send,
> + Send
       + 'static {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    tower::service_fn(move |uri: Uri| {
        let (http, tls) = (http.clone(), tls.clone());
        async move {
            let host = uri.host().ok_or("URI without a host")?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(host.to_owned())?;
            let tcp = http.oneshot(uri).await?.into_inner();
            let stream = tls.connect(name, tcp).await?;
            Ok::<_, BoxError>(TokioIo::new(stream))
        }
    })
}

/// An error and its causes on one line (`a: b: c`), repeated texts once.
pub(super) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
