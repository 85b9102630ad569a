//! The per-run network namespace: `sluice-<id>` joined to the host by a veth pair on a
//! private /30 (host side `.1`, sandbox side `.2`), loopback up, default route via the
//! host side (and, for transparent capture, a local route for the synthetic IPv6 pool:
//! [`SandboxNetns::route_local_v6`]). Created with `ip` (iproute2, trusted absolute
//! path); removed by [`SandboxNetns::teardown`] or on drop: every process left in the
//! namespace is killed, the veth pair and the namespace are deleted, and the
//! `/etc/netns/<name>` directory (the child's `/etc/resolv.conf` view) is removed.

use std::ffi::OsString;
use std::io::Read as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ipnet::Ipv6Net;

use crate::tools::{SandboxError, Tools};

/// Where addresses for the sandbox /30 come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetPool {
    /// Network address.
    pub base: Ipv4Addr,
    /// Prefix length, 8..=30 (30 means exactly that /30).
    pub prefix: u8,
}

impl Default for SubnetPool {
    /// `10.200.0.0/16` (16384 candidate /30s).
    fn default() -> Self {
        Self {
            base: Ipv4Addr::new(10, 200, 0, 0),
            prefix: 16,
        }
    }
}

impl std::str::FromStr for SubnetPool {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, len) = s.split_once('/').ok_or("expected A.B.C.D/N")?;
        let base: Ipv4Addr = ip.parse().map_err(|e| format!("{ip}: {e}"))?;
        let prefix: u8 = len.parse().map_err(|e| format!("/{len}: {e}"))?;
        if !(8..=30).contains(&prefix) {
            return Err("prefix must be between /8 and /30".into());
        }
        if !base.is_private() {
            return Err(format!("{base} is not a private (RFC 1918) address"));
        }
        Ok(Self {
            base: Ipv4Addr::from(u32::from(base) & mask(prefix)),
            prefix,
        })
    }
}

impl std::fmt::Display for SubnetPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// `(network, prefix)` pairs overlap when either contains the other's network address.
fn overlaps(a: (u32, u8), b: (u32, u8)) -> bool {
    let m = mask(a.1.min(b.1));
    a.0 & m == b.0 & m
}

/// IPv4 networks mentioned in `ip -4 -o addr` and `ip -4 route show table all` output.
fn used_networks(text: &str) -> Vec<(u32, u8)> {
    let mut out = Vec::new();
    for word in text.split_whitespace() {
        let (ip, prefix) = match word.split_once('/') {
            Some((ip, p)) => (ip, p.parse::<u8>().ok()),
            None => (word, Some(32)),
        };
        if let (Ok(ip), Some(prefix)) = (ip.parse::<Ipv4Addr>(), prefix) {
            if prefix <= 32 && !ip.is_unspecified() {
                out.push((u32::from(ip) & mask(prefix), prefix));
            }
        }
    }
    out
}

/// Picks a /30 in `pool` that overlaps none of `used`, starting at slot `start`.
fn pick_slot(pool: SubnetPool, used: &[(u32, u8)], start: u32) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let slots = 1u32 << (30 - u32::from(pool.prefix));
    let base = u32::from(pool.base);
    (0..slots)
        .map(|i| base + ((start.wrapping_add(i)) % slots) * 4)
        .find(|net| !used.iter().any(|u| overlaps((*net, 30), *u)))
        .map(|net| (Ipv4Addr::from(net + 1), Ipv4Addr::from(net + 2)))
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return t ^ (u64::from(std::process::id()) << 32);
    }
    u64::from_ne_bytes(b)
}

/// Runs a command, mapping failure to [`SandboxError::Command`] with its stderr.
pub(crate) fn run_cmd(
    program: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, SandboxError> {
    let line = format!("{} {}", program.display(), args.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| SandboxError::Command {
        command: line.clone(),
        detail: e.to_string(),
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write as _;
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| SandboxError::Command {
            command: line.clone(),
            detail: e.to_string(),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(SandboxError::Command {
            command: line,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// A live sandbox namespace. Dropping it tears everything down.
#[derive(Debug)]
pub struct SandboxNetns {
    /// Short random id (8 hex digits) shared by every name of this run.
    pub id: String,
    /// Namespace name (`sluice-<id>`), as `ip netns` knows it.
    pub name: String,
    /// Host-side veth (`slh-<id>`).
    pub host_if: String,
    /// Sandbox-side veth (`sls-<id>`).
    pub ns_if: String,
    /// Host-side address: where the proxy listens and the sandbox's default gateway.
    pub host_ip: Ipv4Addr,
    /// Sandbox-side address.
    pub ns_ip: Ipv4Addr,
    ip: PathBuf,
    etc_dir: PathBuf,
    torn_down: bool,
}

impl SandboxNetns {
    /// Creates the namespace, veth pair, addresses and routes, and the `/etc/netns`
    /// view whose `resolv.conf` names `nameserver` (a resolver the sandbox cannot
    /// reach, so DNS fails fast). On any error, whatever was created is removed.
    ///
    /// # Errors
    /// The failing `ip` command and its stderr, or no free /30.
    pub fn create(tools: &Tools, pool: SubnetPool) -> Result<Self, SandboxError> {
        let id = format!("{:08x}", random_u64() as u32);
        let ip = tools.ip.clone();
        let mut used_text = run_cmd(&ip, &["-4", "-o", "addr", "show"], None)?;
        used_text.push('\n');
        used_text.push_str(&run_cmd(
            &ip,
            &["-4", "route", "show", "table", "all"],
            None,
        )?);
        let used = used_networks(&used_text);
        let (host_ip, ns_ip) = pick_slot(pool, &used, (random_u64() >> 32) as u32)
            .ok_or_else(|| SandboxError::NoFreeSubnet(pool.to_string()))?;
        let name = format!("sluice-{id}");
        let mut this = Self {
            host_if: format!("slh-{id}"),
            ns_if: format!("sls-{id}"),
            etc_dir: PathBuf::from("/etc/netns").join(&name),
            id,
            name,
            host_ip,
            ns_ip,
            ip,
            torn_down: false,
        };
        if let Err(e) = this.build() {
            let _ = this.teardown();
            return Err(e);
        }
        Ok(this)
    }

    fn build(&self) -> Result<(), SandboxError> {
        let ip = &self.ip;
        let (name, h, s) = (
            self.name.as_str(),
            self.host_if.as_str(),
            self.ns_if.as_str(),
        );
        let host_cidr = format!("{}/30", self.host_ip);
        let ns_cidr = format!("{}/30", self.ns_ip);
        let gw = self.host_ip.to_string();
        run_cmd(ip, &["netns", "add", name], None)?;
        run_cmd(
            ip,
            &[
                "link", "add", h, "type", "veth", "peer", "name", s, "netns", name,
            ],
            None,
        )?;
        run_cmd(ip, &["addr", "add", &host_cidr, "dev", h], None)?;
        run_cmd(ip, &["link", "set", h, "up"], None)?;
        run_cmd(ip, &["-n", name, "link", "set", "lo", "up"], None)?;
        run_cmd(ip, &["-n", name, "addr", "add", &ns_cidr, "dev", s], None)?;
        run_cmd(ip, &["-n", name, "link", "set", s, "up"], None)?;
        run_cmd(
            ip,
            &["-n", name, "route", "add", "default", "via", &gw],
            None,
        )?;
        std::fs::create_dir_all(&self.etc_dir)
            .and_then(|()| {
                std::fs::write(
                    self.etc_dir.join("resolv.conf"),
                    format!(
                        "# sluice run: policy DNS (names in policy get synthetic addresses; others REFUSED).\n\
                         nameserver {gw}\noptions timeout:1 attempts:1\n"
                    ),
                )
            })
            .map_err(|e| SandboxError::Other(format!("writing {}: {e}", self.etc_dir.display())))?;
        Ok(())
    }

    /// Routes the IPv6 network `net` to `lo` as local (`ip -6 route add local <net> dev
    /// lo`, AnyIP style) inside the namespace, so that `connect()` to a synthetic IPv6
    /// address gets past the route lookup (the namespace has no IPv6 route otherwise:
    /// `ENETUNREACH`) and reaches the nat output hook, where capture redirects it to
    /// the transparent listener on `[::1]`. IPv4 pools need no such route: the default
    /// route via the veth serves them.
    ///
    /// # Errors
    /// IPv6 is disabled in the namespace (no `::1` on `lo`: `ipv6.disable=1` on the
    /// kernel command line or `net.ipv6.conf.default.disable_ipv6=1`), or the failing
    /// `ip` command.
    pub fn route_local_v6(&self, net: Ipv6Net) -> Result<(), SandboxError> {
        let (ip, name) = (&self.ip, self.name.as_str());
        run_cmd(ip, &["-n", name, "link", "set", "lo", "up"], None)?;
        let lo =
            run_cmd(ip, &["-n", name, "-6", "addr", "show", "dev", "lo"], None).unwrap_or_default();
        if !lo.split_whitespace().any(|w| w == "::1/128") {
            return Err(SandboxError::Other(format!(
                "IPv6 is disabled in the sandbox namespace {name} (no ::1 on lo; \
                 see ipv6.disable and net.ipv6.conf.default.disable_ipv6): \
                 cannot route the synthetic IPv6 pool {net}"
            )));
        }
        let net = net.trunc().to_string();
        run_cmd(
            ip,
            &["-n", name, "-6", "route", "add", "local", &net, "dev", "lo"],
            None,
        )
        .map(drop)
    }

    /// The namespace file (`/run/netns/<name>`), for `setns`.
    #[must_use]
    pub fn ns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// The sandbox's `resolv.conf` (`/etc/netns/<name>/resolv.conf`).
    #[must_use]
    pub fn resolv_conf(&self) -> PathBuf {
        self.etc_dir.join("resolv.conf")
    }

    /// The `ip` binary used.
    #[must_use]
    pub fn ip_path(&self) -> &Path {
        &self.ip
    }

    /// `ip netns exec <name>`: prefix a command with this to run it inside the
    /// namespace (with `/etc/netns/<name>/resolv.conf` bind-mounted over
    /// `/etc/resolv.conf` in a private mount namespace).
    #[must_use]
    pub fn exec_prefix(&self) -> Vec<OsString> {
        vec![
            self.ip.clone().into_os_string(),
            "netns".into(),
            "exec".into(),
            self.name.clone().into(),
        ]
    }

    /// Pids of every process in the namespace.
    #[must_use]
    pub fn pids(&self) -> Vec<u32> {
        run_cmd(&self.ip, &["netns", "pids", &self.name], None)
            .map(|out| {
                out.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sends `signal` to every process in the namespace.
    pub fn signal_all(&self, signal: crate::Signal) {
        for pid in self.pids() {
            let _ = crate::send_signal(pid, signal);
        }
    }

    /// Kills what is left in the namespace, deletes the veth pair, the namespace and
    /// the `/etc/netns/<name>` directory. Idempotent; reports the first failure but
    /// always attempts every step.
    ///
    /// # Errors
    /// The first step that failed.
    pub fn teardown(&mut self) -> Result<(), SandboxError> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let mut first_err = None;
        if self.ns_path().exists() {
            for _ in 0..20 {
                let pids = self.pids();
                if pids.is_empty() {
                    break;
                }
                for pid in pids {
                    let _ = crate::send_signal(pid, crate::Signal::Kill);
                }
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
        }
        let link_exists = run_cmd(&self.ip, &["link", "show", "dev", &self.host_if], None).is_ok();
        if link_exists {
            if let Err(e) = run_cmd(&self.ip, &["link", "del", &self.host_if], None) {
                first_err.get_or_insert(e);
            }
        }
        if self.ns_path().exists() {
            if let Err(e) = run_cmd(&self.ip, &["netns", "del", &self.name], None) {
                first_err.get_or_insert(e);
            }
        }
        if self.etc_dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.etc_dir) {
                first_err.get_or_insert(SandboxError::Other(format!(
                    "removing {}: {e}",
                    self.etc_dir.display()
                )));
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for SandboxNetns {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!(error = %e, netns = %self.name, "Sandbox teardown incomplete");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_parsing() {
        let p: SubnetPool = "10.200.7.9/16".parse().unwrap();
        assert_eq!(p.to_string(), "10.200.0.0/16");
        assert!("8.8.8.0/24".parse::<SubnetPool>().is_err());
        assert!("10.0.0.0/31".parse::<SubnetPool>().is_err());
        assert!("10.0.0.0".parse::<SubnetPool>().is_err());
    }

    #[test]
    fn picks_a_slot_that_avoids_used_routes() {
        let used = used_networks(
            "1: lo    inet 127.0.0.1/8 scope host lo\n\
             default via 172.17.0.1 dev eth0\n\
             10.200.0.0/30 dev x\nlocal 10.200.0.5 dev y table local\n10.200.0.8/29 dev z\n",
        );
        let pool: SubnetPool = "10.200.0.0/26".parse().unwrap();
        let (h, n) = pick_slot(pool, &used, 0).unwrap();
        assert_eq!(
            (h, n),
            (Ipv4Addr::new(10, 200, 0, 17), Ipv4Addr::new(10, 200, 0, 18))
        );
        let whole: SubnetPool = "10.200.0.0/30".parse().unwrap();
        assert!(pick_slot(whole, &used, 0).is_none());
        let covered = used_networks("10.0.0.0/8 dev big");
        assert!(pick_slot(SubnetPool::default(), &covered, 5).is_none());
    }
}
