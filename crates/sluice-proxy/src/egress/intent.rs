use std::net::{IpAddr, SocketAddr};

use super::identity::IdentityEvidence;
use super::target::Target;

/// Which adapter produced an intent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// `CONNECT host:port`.
    Connect,
    /// Absolute-form `http://` request on the forward proxy.
    ForwardHttp,
    /// A connection captured on its way to a synthetic address that policy
    /// DNS issued for the target's name (`sluice run`, design §6.1).
    Transparent {
        /// The synthetic address the client dialled.
        synthetic: IpAddr,
    },
}

impl Surface {
    /// The word used in messages and events (`CONNECT`, `FORWARD`,
    /// `TRANSPARENT`).
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Connect => "CONNECT",
            Self::ForwardHttp => "FORWARD",
            Self::Transparent { .. } => "TRANSPARENT",
        }
    }

    /// The `surface` label of its decisions in the metrics.
    #[must_use]
    pub fn metric(self) -> crate::metrics::DecisionSurface {
        use crate::metrics::DecisionSurface as M;
        match self {
            Self::Connect => M::Connect,
            Self::ForwardHttp => M::ForwardHttp,
            Self::Transparent { .. } => M::Transparent,
        }
    }

    /// Whether the client holds a byte stream to one authorized target (a
    /// CONNECT tunnel or a captured connection), rather than sending
    /// proxy-form requests.
    #[must_use]
    pub fn is_tunnel(self) -> bool {
        !matches!(self, Self::ForwardHttp)
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
