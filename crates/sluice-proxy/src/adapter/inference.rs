//! `CONNECT inference.local:443` (design §6.4): answered by sluice itself,
//! before authorization. The name is never resolved and never reaches the
//! destination validator; the tunnel's TLS is terminated with a leaf for
//! `inference.local` from the sandbox CA and the requests inside go to the
//! inference relay, which routes them by the policy's `inference` section.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::Shared;
use crate::egress::{Host, Target};
use crate::refusal::json_error;
use crate::relay::http::answer_and_close;
use crate::relay::inference::{self, InferenceLimits};

/// The name and port intercepted.
pub(crate) const INFERENCE_HOST: &str = "inference.local";
const INFERENCE_PORT: u16 = 443;
/// TLS handshake with the caller.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Whether a CONNECT target is `inference.local:443`.
pub(super) fn intercepts(target: &Target) -> bool {
    target.port == INFERENCE_PORT && matches!(&target.host, Host::Name(n) if &**n == INFERENCE_HOST)
}

/// Serves an intercepted CONNECT: `200`, TLS, then the inference relay.
pub(super) async fn handle(
    shared: &Arc<Shared>,
    mut client: TcpStream,
    early: bool,
    peer: SocketAddr,
) {
    if early {
        let response = crate::refusal::early_tunnel_data();
        return answer_and_close(&mut client, &response.http1()).await;
    }
    let host = Host::Name(Arc::from(INFERENCE_HOST));
    let Ok(config) = shared.leaf_cache.server_config(&host) else {
        shared
            .relay
            .audit
            .inference_denied(peer, "TLS termination unavailable (no leaf certificate)");
        let response = json_error(
            503,
            "inference_tls_unavailable",
            "inference.local needs TLS termination, which is not available",
            None,
            None,
        );
        return answer_and_close(&mut client, &response.http1()).await;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let accept = tokio_rustls::TlsAcceptor::from(config).accept(client);
    let mut tls = match tokio::time::timeout(HANDSHAKE, accept).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            return shared
                .relay
                .audit
                .inference_denied(peer, &format!("TLS handshake failed: {e}"))
        }
        Err(_) => {
            return shared
                .relay
                .audit
                .inference_denied(peer, "TLS handshake timed out")
        }
    };
    let limits = InferenceLimits {
        request_head: shared.limits.request_head,
        body_idle: shared.limits.body_idle,
    };
    inference::serve(&shared.relay, &mut tls, peer, limits).await;
    let _ = tls.shutdown().await;
}
