//! Preconditions of `sluice run` and `sluice sidecar-init`: trusted tool paths
//! and effective capabilities.

use std::path::PathBuf;

/// Errors of the sandbox substrate. Messages name what is missing and how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// A capability the command needs is not in the effective set.
    #[error("sluice {command} needs {cap} ({why}); run it as root or grant {cap}")]
    MissingCapability {
        /// The subcommand (`run`, `sidecar-init`).
        command: &'static str,
        /// The capability's name, e.g. `CAP_NET_ADMIN`.
        cap: &'static str,
        /// What it is needed for.
        why: &'static str,
    },
    /// A required tool is not installed in a trusted directory.
    #[error(
        "sluice {command} needs `{tool}` ({package}), not found in /usr/sbin, /sbin, /usr/bin or /bin"
    )]
    MissingTool {
        /// The subcommand (`run`, `sidecar-init`).
        command: &'static str,
        /// Tool name.
        tool: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// A command failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its stderr (or the spawn error).
        detail: String,
    },
    /// No free private /30 in the pool.
    #[error("no free /30 in {0} (set SLUICE_RUN_SUBNET to another private range)")]
    NoFreeSubnet(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Looks for `name` in the trusted system directories only (never `$PATH`).
#[must_use]
pub fn trusted_tool(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
}

/// `ip` (iproute2) and `nft` (nftables).
#[derive(Debug, Clone)]
pub struct Tools {
    /// Path of `ip`.
    pub ip: PathBuf,
    /// Path of `nft`.
    pub nft: PathBuf,
}

impl Tools {
    /// Finds both tools.
    ///
    /// # Errors
    /// [`SandboxError::MissingTool`] naming the tool and its package.
    pub fn find() -> Result<Self, SandboxError> {
        let ip = trusted_tool("ip").ok_or(SandboxError::MissingTool {
            command: "run",
            tool: "ip",
            package: "iproute2",
        })?;
        let nft = trusted_tool("nft").ok_or(SandboxError::MissingTool {
            command: "run",
            tool: "nft",
            package: "nftables",
        })?;
        Ok(Self { ip, nft })
    }
}

const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
const CAP_SETPCAP: u32 = 8;
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_ADMIN: u32 = 21;

/// Parses `CapEff:` from `/proc/self/status` text.
fn effective_caps(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Checks the effective capabilities `sluice run` needs: CAP_NET_ADMIN (veth,
/// addresses, routes, nftables, NFLOG) and CAP_SYS_ADMIN (network namespaces,
/// `setns`, the `/etc/resolv.conf` bind mount), CAP_NET_RAW (the bypass monitor
/// injects refusals through a raw socket) and CAP_SETUID, CAP_SETGID, CAP_SETPCAP
/// (CMD's init drops its identity and every capability).
///
/// # Errors
/// [`SandboxError::MissingCapability`] naming the first missing capability.
pub fn check_capabilities() -> Result<(), SandboxError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| SandboxError::Other(format!("reading /proc/self/status: {e}")))?;
    check_caps_in(&status)
}

/// Checks that `sluice sidecar-init` may install its nftables table in the
/// current network namespace: CAP_NET_ADMIN.
///
/// # Errors
/// [`SandboxError::MissingCapability`] for CAP_NET_ADMIN.
pub fn check_sidecar_capabilities() -> Result<(), SandboxError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| SandboxError::Other(format!("reading /proc/self/status: {e}")))?;
    check_sidecar_caps_in(&status)
}

fn check_sidecar_caps_in(status: &str) -> Result<(), SandboxError> {
    let caps = effective_caps(status).unwrap_or(0);
    if caps & (1 << CAP_NET_ADMIN) == 0 {
        return Err(SandboxError::MissingCapability {
            command: "sidecar-init",
            cap: "CAP_NET_ADMIN",
            why: "installing the pod's nftables table; in Kubernetes: securityContext.capabilities.add [NET_ADMIN]",
        });
    }
    Ok(())
}

fn check_caps_in(status: &str) -> Result<(), SandboxError> {
    let caps = effective_caps(status).unwrap_or(0);
    if caps & (1 << CAP_NET_ADMIN) == 0 {
        return Err(SandboxError::MissingCapability {
            command: "run",
            cap: "CAP_NET_ADMIN",
            why: "veth pair, routes, nftables and NFLOG in the sandbox namespace",
        });
    }
    if caps & (1 << CAP_SYS_ADMIN) == 0 {
        return Err(SandboxError::MissingCapability {
            command: "run",
            cap: "CAP_SYS_ADMIN",
            why: "creating and entering the network namespace and the resolv.conf bind mount",
        });
    }
    if caps & (1 << CAP_NET_RAW) == 0 {
        return Err(SandboxError::MissingCapability {
            command: "run",
            cap: "CAP_NET_RAW",
            why: "the bypass monitor's raw socket that makes refused connections fail fast",
        });
    }
    for (bit, cap) in [
        (CAP_SETUID, "CAP_SETUID"),
        (CAP_SETGID, "CAP_SETGID"),
        (CAP_SETPCAP, "CAP_SETPCAP"),
    ] {
        if caps & (1 << bit) == 0 {
            return Err(SandboxError::MissingCapability {
                command: "run",
                cap,
                why: "dropping CMD's user, groups and capabilities",
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_missing_capability() {
        let none = "Name:\tx\nCapEff:\t0000000000000000\n";
        let err = check_caps_in(none).unwrap_err().to_string();
        assert!(err.contains("CAP_NET_ADMIN"), "{err}");
        let net_only = "CapEff:\t0000000000001000\n";
        let err = check_caps_in(net_only).unwrap_err().to_string();
        assert!(err.contains("CAP_SYS_ADMIN"), "{err}");
        let no_raw = "CapEff:\t0000000000201000\n";
        let err = check_caps_in(no_raw).unwrap_err().to_string();
        assert!(err.contains("CAP_NET_RAW"), "{err}");
        let no_setpcap = "CapEff:\t00000000002030c0\n";
        let err = check_caps_in(no_setpcap).unwrap_err().to_string();
        assert!(err.contains("CAP_SETPCAP"), "{err}");
        assert!(check_caps_in("CapEff:\t000001ffffffffff\n").is_ok());
    }

    #[test]
    fn sidecar_init_needs_only_net_admin() {
        let err = check_sidecar_caps_in("CapEff:\t0000000000000000\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sluice sidecar-init needs CAP_NET_ADMIN"),
            "{err}"
        );
        assert!(check_sidecar_caps_in("CapEff:\t0000000000001000\n").is_ok());
    }
}
