//! A private network namespace with upstream servers inside it.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;

use crate::python::{py_script, PYTHON3};
use crate::{is_root, next_id};

/// Runs `cmd args` and panics with its stderr unless it succeeds.
fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace joined to the host by a veth pair on a private /30.
/// Servers started in it are killed, and the namespace and veth removed,
/// on drop. Needs root (CI runs as root); a non-root run fails here.
pub struct Netns {
    /// The namespace name (`ip netns exec NAME ...`).
    pub name: String,
    host_if: String,
    /// The address inside the namespace (where upstreams listen).
    pub ns_ip: String,
    upstreams: Mutex<Vec<Child>>,
}

impl Netns {
    /// Creates the namespace, its veth pair and addresses.
    #[allow(clippy::new_without_default)] // creating a namespace is no default
    pub fn new() -> Self {
        assert!(
            is_root(),
            "network namespace tests must run as root (CI does): sudo scripts/test"
        );
        let n = next_id();
        let pid = std::process::id();
        let tag = format!("{:x}{n}", pid % 0xffff);
        let name = format!("slt-{tag}");
        let host_if = format!("slh{tag}");
        let ns_if = format!("sls{tag}");
        let used = String::from_utf8_lossy(&run("ip", &["-4", "addr"]).stdout).into_owned();
        // A /30 in 10.64.0.0/10 whose /24 is unused on this host; the seed
        // differs per process and per namespace, so parallel tests do not collide.
        let seed = pid.wrapping_mul(2_654_435_761).wrapping_add(n * 97);
        let (host_ip, ns_ip) = (0..4096u32)
            .map(|i| {
                let k = seed.wrapping_add(i * 64) % 65536;
                let (b, c, d) = (64 + (k >> 14), (k >> 6) & 255, (k & 63) * 4);
                (
                    format!("10.{b}.{c}.{}", d + 1),
                    format!("10.{b}.{c}.{}", d + 2),
                )
            })
            .find(|(h, _)| {
                let prefix = h.rsplit_once('.').map_or("", |(p, _)| p);
                !used.contains(&format!("{prefix}."))
            })
            .expect("a free private /30");
        run("ip", &["netns", "add", &name]);
        // From here on, drop cleans up whatever was made.
        let ns = Self {
            name,
            host_if,
            ns_ip,
            upstreams: Mutex::new(Vec::new()),
        };
        let name = ns.name.as_str();
        run(
            "ip",
            &[
                "link",
                "add",
                &ns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &ns_if,
            ],
        );
        run("ip", &["link", "set", &ns_if, "netns", name]);
        run(
            "ip",
            &["addr", "add", &format!("{host_ip}/30"), "dev", &ns.host_if],
        );
        run("ip", &["link", "set", &ns.host_if, "up"]);
        run(
            "ip",
            &[
                "-n",
                name,
                "addr",
                "add",
                &format!("{}/30", ns.ns_ip),
                "dev",
                &ns_if,
            ],
        );
        run("ip", &["-n", name, "link", "set", &ns_if, "up"]);
        run("ip", &["-n", name, "link", "set", "lo", "up"]);
        ns
    }

    /// The echo upstream (`py/upstream.py`) on `port`; every request is
    /// recorded in `record` (one JSON line each, see [`crate::recorded`]).
    pub fn start_upstream(&self, port: u16, record: &Path) {
        self.start_script("upstream.py", port, record, &[]);
    }

    /// The echo upstream over HTTPS with `cert`/`key` (PEM files).
    pub fn start_tls_upstream(&self, port: u16, record: &Path, cert: &Path, key: &Path) {
        self.start_script("upstream.py", port, record, &[cert, key]);
    }

    /// A raw TCP recorder (`py/recorder.py`): every byte read is appended to
    /// `record`.
    pub fn start_recorder(&self, port: u16, record: &Path) {
        self.start_script("recorder.py", port, record, &[]);
    }

    /// `redis-server` on `port` (no persistence, no protected mode), once it
    /// answers `PING`.
    pub fn start_redis(&self, port: u16) {
        self.redis(port, None);
    }

    /// [`Self::start_redis`] with `requirepass` set to `password` (the
    /// default user then needs `AUTH password`).
    pub fn start_redis_with_password(&self, port: u16, password: &str) {
        self.redis(port, Some(password));
    }

    fn redis(&self, port: u16, password: Option<&str>) {
        assert!(
            password.is_none_or(|p| p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')),
            "test passwords are [A-Za-z0-9-]"
        );
        let (pass, auth) = password.map_or((String::new(), String::new()), |p| {
            (
                format!(" --requirepass {p}"),
                format!(" --no-auth-warning -a {p}"),
            )
        });
        let script = format!(
            "redis-server --bind {ip} --port {port} --save '' --appendonly no \
             --protected-mode no --logfile /dev/null{pass} & \
             for i in $(seq 1 100); do \
               redis-cli -h {ip} -p {port}{auth} PING 2>/dev/null | grep -q PONG && break; sleep 0.05; \
             done; echo ready; wait",
            ip = self.ns_ip
        );
        self.start_process("redis-server", &["sh", "-c", &script]);
    }

    /// Any of the test servers in `py/` (`mcp_server.py`, `ws_server.py`, ...).
    pub fn start_server(&self, script: &str, port: u16, record: &Path) {
        self.start_script(script, port, record, &[]);
    }

    /// A test server from `py/` over HTTPS with `cert`/`key` (PEM files).
    pub fn start_tls_server(
        &self,
        script: &str,
        port: u16,
        record: &Path,
        cert: &Path,
        key: &Path,
    ) {
        self.start_script(script, port, record, &[cert, key]);
    }

    /// A test server from `py/`, called as `SCRIPT NS_IP PORT RECORD EXTRA...`
    /// (the convention of every server there).
    pub fn start_script(&self, script: &str, port: u16, record: &Path, extra: &[&Path]) {
        let path = py_script(script);
        let port = port.to_string();
        let mut args: Vec<&OsStr> = vec![
            OsStr::new(PYTHON3),
            path.as_os_str(),
            OsStr::new(&self.ns_ip),
            OsStr::new(&port),
            record.as_os_str(),
        ];
        args.extend(extra.iter().map(|p| p.as_os_str()));
        self.start_process(script, &args);
    }

    /// Any long-running `program args...` inside the namespace that prints
    /// `ready` on its first stdout line once it serves; waits for that line.
    /// Killed when the namespace is dropped.
    pub fn start_process<S: AsRef<OsStr>>(&self, what: &str, program_and_args: &[S]) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(program_and_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let mut line = String::new();
        let stdout = child.stdout.take().expect("server stdout");
        let read = BufReader::new(stdout).read_line(&mut line);
        let started = read.is_ok() && line.trim() == "ready";
        // Tracked before the check, so a failed start is killed too.
        self.upstreams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
        assert!(
            started,
            "{what} did not start (first line {line:?}, {read:?})"
        );
    }
}

/// A second namespace whose only way out is a [`Netns`] (a Kubernetes pod
/// behind its node, in the sidecar tests): its own veth pair to that
/// namespace, its default route through it, loopback up. What still runs in it
/// is killed, and it is deleted, on drop.
pub struct PodNetns {
    /// The namespace name (`ip netns exec NAME ...`).
    pub name: String,
    /// The pod's address.
    pub ip: String,
    /// The outer namespace's address on the pod's link (its default gateway).
    pub gateway: String,
}

impl Netns {
    /// A [`PodNetns`] behind this namespace. Its link is a /30 in another /24
    /// than this namespace's, so the two never overlap in here.
    pub fn attach_pod(&self) -> PodNetns {
        let tag = self.name.trim_start_matches("slt-");
        let octets: Vec<u8> = self
            .ns_ip
            .split('.')
            .map(|o| o.parse().expect("an IPv4 address"))
            .collect();
        let (b, c, d) = (octets[1], octets[2] ^ 1, octets[3] & !3);
        let (gateway, ip) = (
            format!("10.{b}.{c}.{}", d + 1),
            format!("10.{b}.{c}.{}", d + 2),
        );
        let pod = PodNetns {
            name: format!("slp-{tag}"),
            ip,
            gateway,
        };
        let (outer_if, pod_if) = (format!("slo{tag}"), format!("slq{tag}"));
        run("ip", &["netns", "add", &pod.name]);
        run(
            "ip",
            &[
                "-n", &self.name, "link", "add", &outer_if, "type", "veth", "peer", "name",
                &pod_if, "netns", &pod.name,
            ],
        );
        let (outer, inner) = (format!("{}/30", pod.gateway), format!("{}/30", pod.ip));
        run(
            "ip",
            &["-n", &self.name, "addr", "add", &outer, "dev", &outer_if],
        );
        run("ip", &["-n", &self.name, "link", "set", &outer_if, "up"]);
        run(
            "ip",
            &["-n", &pod.name, "addr", "add", &inner, "dev", &pod_if],
        );
        run("ip", &["-n", &pod.name, "link", "set", &pod_if, "up"]);
        run("ip", &["-n", &pod.name, "link", "set", "lo", "up"]);
        run(
            "ip",
            &[
                "-n",
                &pod.name,
                "route",
                "add",
                "default",
                "via",
                &pod.gateway,
            ],
        );
        pod
    }
}

impl PodNetns {
    /// Names `resolver` in the pod's `resolv.conf` (`ip netns exec` mounts
    /// `/etc/netns/NAME/resolv.conf` over `/etc/resolv.conf`).
    pub fn set_resolver(&self, resolver: &str) {
        let dir = Path::new("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).expect("create /etc/netns/NAME");
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {resolver}\noptions timeout:2 attempts:1\n"),
        )
        .expect("write the pod's resolv.conf");
    }
}

/// Kills whatever still runs in namespace `name`, then deletes it.
fn kill_all_and_delete(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", name]).status();
}

impl Drop for PodNetns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&self.name));
        kill_all_and_delete(&self.name);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let upstreams = self.upstreams.get_mut().unwrap_or_else(|e| e.into_inner());
        for mut c in upstreams.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Daemons a server script started (e.g. redis-server behind a shell)
        // outlive their parent: whatever still runs in the namespace goes too.
        kill_all_and_delete(&self.name);
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
    }
}
