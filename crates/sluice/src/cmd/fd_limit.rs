//! The open-file limit: each tunnel holds two sockets (and, while bytes
//! flow, two pipes), so the soft `RLIMIT_NOFILE` of a login shell (often
//! 1024) would cap sluice at a few hundred tunnels. Like most servers,
//! sluice raises its soft limit to the hard limit at start-up.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors kept free for listeners, the audit log, /proc reads and DNS.
const RESERVE: u64 = 64;

/// Descriptors a connection needs: its client and upstream sockets. (A raw
/// tunnel moving bytes also holds splice pipes; without spare descriptors it
/// falls back to a buffered copy.)
const PER_CONNECTION: u64 = 2;

/// Raises the soft limit to the hard limit and says when even that cannot
/// hold `max_connections` (connections beyond it are refused, not lost:
/// the accept loop backs off on EMFILE): a warning when the operator chose
/// `max_connections` (`chosen`), at debug level for the default.
pub(crate) fn raise(max_connections: usize, chosen: bool) {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let mut effective = soft;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                effective = hard;
                tracing::debug!(from = soft, to = hard, "Raised the open-file limit");
            }
            Err(e) => tracing::warn!(soft, hard, error = %e, "Could not raise the open-file limit"),
        }
    }
    let wanted = (max_connections as u64)
        .saturating_mul(PER_CONNECTION)
        .saturating_add(RESERVE);
    if effective < wanted && !chosen {
        tracing::debug!(
            limit = effective,
            max_connections,
            wanted,
            "Open-file limit is below what the default --max-connections may need"
        );
    } else if effective < wanted {
        tracing::warn!(
            limit = effective,
            max_connections,
            wanted,
            "Open-file limit is below what --max-connections may need; \
             raise it (ulimit -Hn / LimitNOFILE=) or lower --max-connections"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_limit_ends_at_the_hard_limit() {
        raise(1, true);
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        assert_eq!(soft, hard);
    }
}
