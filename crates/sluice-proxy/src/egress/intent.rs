use std::net::SocketAddr;

use super::identity::IdentityEvidence;
use super::target::Target;

/// Which adapter produced an intent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// `CONNECT host:port`.
    Connect,
    /// Absolute-form `http://` request on the forward proxy.
    ForwardHttp,
}

impl Surface {
    /// The word used in messages and events (`CONNECT`, `FORWARD`).
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Connect => "CONNECT",
            Self::ForwardHttp => "FORWARD",
        }
    }
}

/// What userland asked for, as parsed by an adapter. Everything policy needs
/// to decide and nothing it does not.
#[derive(Clone, Debug)]
pub struct EgressIntent {
    pub surface: Surface,
    /// Normalized destination.
    pub target: Target,
    /// The client socket's peer address.
    pub client: SocketAddr,
    /// Who is asking (resolved once per client connection).
    pub identity: IdentityEvidence,
}
