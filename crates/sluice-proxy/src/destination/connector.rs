use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::egress::Target;

/// An unopened upstream connection that can dial only the addresses the
/// validator pinned. Building one opens nothing; only [`Self::connect`] does,
/// and relays call it only for an allowed request.
#[derive(Clone, Debug)]
pub struct UpstreamConnector {
    target: Target,
    addrs: Arc<[SocketAddr]>,
}

impl UpstreamConnector {
    pub(crate) fn new(target: Target, addrs: Vec<SocketAddr>) -> Self {
        Self {
            target,
            addrs: addrs.into(),
        }
    }

    /// A connector for an operator-configured service (an OAuth2 token
    /// endpoint named in the policy), not for sandbox traffic: its addresses
    /// are trusted as configured and do not pass the SSRF rules, so only
    /// sluice's own clients may build one.
    pub(crate) fn operator_configured(target: Target, addrs: Vec<SocketAddr>) -> Self {
        Self::new(target, addrs)
    }

    /// The authorized target (for SNI, Host checks and logs).
    #[must_use]
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The pinned addresses, in dial order.
    #[must_use]
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Dial the pinned addresses in order; the first that answers wins.
    ///
    /// # Errors
    /// The last connect error (or a timeout) when none answers.
    pub async fn connect(&self, timeout: Duration) -> io::Result<TcpStream> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no pinned address");
        for addr in self.addrs.iter() {
            // The one sanctioned dial: `addr` was validated by `validate`.
            #[allow(clippy::disallowed_methods)]
            let attempt = tokio::time::timeout(timeout, TcpStream::connect(addr)).await;
            match attempt {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(e)) => last = e,
                Err(_) => {
                    last = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connect to {addr} timed out"),
                    );
                }
            }
        }
        Err(last)
    }
}
