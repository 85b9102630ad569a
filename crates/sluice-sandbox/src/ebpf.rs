//! The connect-time owner map: which process called `connect(2)` on a socket,
//! recorded by the kernel when it happens.
//!
//! Two tiny `BPF_PROG_TYPE_CGROUP_SOCK_ADDR` programs (IPv4 and IPv6
//! `connect`), linked to the root of the cgroup v2 hierarchy, store
//! `socket cookie -> bpf_get_current_pid_tgid()` in an LRU hash map and allow
//! the call. Identity then reads the cookie of a proxied connection's client
//! socket from sock_diag and the connecting process from the map, instead of
//! reading every host process's descriptor table
//! ([`ProcfsIdentity::with_connect_map`](crate::ProcfsIdentity::with_connect_map)).
//!
//! The instructions are assembled here (no BPF toolchain needed) and loaded
//! with the raw `bpf(2)` calls of the `sys` module. The programs are attached
//! through BPF links, which the kernel detaches when their last descriptor
//! closes: when sluice exits, however it exits, nothing is left behind.
//!
//! Loading needs root (CAP_BPF and CAP_SYS_ADMIN), a kernel with cgroup BPF
//! links (5.7+) and a mounted cgroup2; any failure means "no map" and identity
//! keeps its `/proc` lookup. `SLUICE_IDENTITY_BPF=off` forces that fallback.

use std::ffi::CStr;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::sys;

/// Environment switch: `off` (or `0`, `false`) never loads the programs.
pub const ENV_IDENTITY_BPF: &str = "SLUICE_IDENTITY_BPF";
/// Sockets remembered (least recently used ones are evicted first). Each
/// entry is 16 bytes of key and value.
pub const MAP_ENTRIES: u32 = 65_536;

/// `enum bpf_map_type`: `BPF_MAP_TYPE_LRU_HASH`.
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
/// `enum bpf_prog_type`: `BPF_PROG_TYPE_CGROUP_SOCK_ADDR`.
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
/// `enum bpf_attach_type`: `BPF_CGROUP_INET4_CONNECT`, `BPF_CGROUP_INET6_CONNECT`.
const BPF_CGROUP_INET4_CONNECT: u32 = 10;
const BPF_CGROUP_INET6_CONNECT: u32 = 11;
/// Helper ids (`enum bpf_func_id`).
const FN_MAP_UPDATE_ELEM: i32 = 2;
const FN_GET_CURRENT_PID_TGID: i32 = 14;
const FN_GET_SOCKET_COOKIE: i32 = 46;
/// `BPF_PSEUDO_MAP_FD`: the 64-bit immediate is a map descriptor.
const BPF_PSEUDO_MAP_FD: u8 = 1;
const LICENSE: &CStr = c"GPL";

/// The loaded map and programs, linked to the root cgroup for as long as
/// this value lives.
#[derive(Debug)]
pub struct ConnectMap {
    map: OwnedFd,
    /// Dropping the links detaches the programs.
    _links: Vec<OwnedFd>,
}

impl ConnectMap {
    /// The process-wide map, loaded on first use unless
    /// [`ENV_IDENTITY_BPF`] is `off` or loading fails (logged once at info);
    /// `None` then, and identity uses its `/proc` lookup. Lives until exit,
    /// when the kernel detaches the programs with the last descriptor.
    #[must_use]
    pub fn shared() -> Option<Arc<Self>> {
        static SHARED: OnceLock<Option<Arc<ConnectMap>>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                if disabled_by(std::env::var(ENV_IDENTITY_BPF).ok().as_deref()) {
                    tracing::info!(
                        env = ENV_IDENTITY_BPF,
                        "connect-time identity map off; identity scans /proc"
                    );
                    return None;
                }
                match Self::load().and_then(|map| map.self_test().map(|()| map)) {
                    Ok(map) => {
                        tracing::info!(
                            entries = MAP_ENTRIES,
                            "connect-time identity map loaded (eBPF on the root cgroup)"
                        );
                        Some(Arc::new(map))
                    }
                    Err(e) => {
                        tracing::info!(error = %e, "connect-time identity map unavailable; identity scans /proc");
                        None
                    }
                }
            })
            .clone()
    }

    /// Creates the map, loads both programs and links them to the cgroup v2
    /// root.
    ///
    /// # Errors
    /// No cgroup2 mount, no privilege, a kernel without these program types
    /// or links, or a verifier rejection (its log's last lines are in the
    /// message).
    pub fn load() -> io::Result<Self> {
        let root = cgroup2_root()?;
        let map = sys::bpf_map_create(
            BPF_MAP_TYPE_LRU_HASH,
            8,
            8,
            MAP_ENTRIES,
            name(b"sluice_connect"),
        )?;
        let cgroup = std::fs::File::open(&root)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", root.display())))?;
        let mut links = Vec::with_capacity(2);
        for (attach, prog_name) in [
            (BPF_CGROUP_INET4_CONNECT, b"sluice_conn4".as_slice()),
            (BPF_CGROUP_INET6_CONNECT, b"sluice_conn6".as_slice()),
        ] {
            let insns = program(&map);
            let prog = sys::bpf_prog_load(
                BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
                attach,
                &insns,
                LICENSE,
                name(prog_name),
            )?;
            // The link holds the program; its descriptor can go.
            links.push(sys::bpf_link_create(&prog, &cgroup, attach)?);
        }
        Ok(Self { map, _links: links })
    }

    /// Checks that the map names processes as this `/proc` does: connects a
    /// loopback socket and expects this process's pid for its cookie. The
    /// kernel records pids of the initial PID namespace; in another one (a
    /// container) they are not this `/proc`'s pids, and the map is not used.
    ///
    /// # Errors
    /// No loopback, or the map's answer is not this process.
    pub fn self_test(&self) -> io::Result<()> {
        use std::os::fd::AsFd as _;
        let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
        // A loopback connection to our own listener, never an upstream dial.
        #[allow(clippy::disallowed_methods)]
        let client = std::net::TcpStream::connect(listener.local_addr()?)?;
        let cookie = sys::socket_cookie(client.as_fd())?;
        match self.connector(cookie)? {
            Some(pid) if pid == std::process::id() => Ok(()),
            Some(pid) => Err(io::Error::other(format!(
                "the kernel records pid {pid} for this process ({}): another PID namespace",
                std::process::id()
            ))),
            None => Err(io::Error::other("a loopback connect was not recorded")),
        }
    }

    /// The thread-group id (pid) of the process that connected the socket
    /// with this cookie, if the map still remembers it.
    ///
    /// # Errors
    /// The `bpf(2)` error of the lookup.
    pub fn connector(&self, cookie: u64) -> io::Result<Option<u32>> {
        Ok(sys::bpf_map_lookup_u64(&self.map, cookie)?.map(|pid_tgid| (pid_tgid >> 32) as u32))
    }
}

/// Whether the environment value asks for the `/proc` fallback.
fn disabled_by(value: Option<&str>) -> bool {
    matches!(
        value.map(|v| v.trim().to_ascii_lowercase()).as_deref(),
        Some("off" | "0" | "false" | "no")
    )
}

/// A NUL-padded object name (at most 15 bytes; the kernel allows `[A-Za-z0-9_.]`).
fn name(text: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let n = text.len().min(15);
    out[..n].copy_from_slice(&text[..n]);
    out
}

/// The cgroup2 mount point from `/proc/self/mountinfo` (`/sys/fs/cgroup` on a
/// pure v2 host, `/sys/fs/cgroup/unified` in hybrid mode).
fn cgroup2_root() -> io::Result<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    cgroup2_mount(&text).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup2 mount"))
}

/// Parses mountinfo: `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - FSTYPE SRC SUPER`.
/// Only a mount of the hierarchy's root (`ROOT` = `/`) will do.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut fields = left.split_whitespace();
        let root = fields.nth(3)?;
        let mount = fields.next()?;
        // Mount points with spaces are octal-escaped (`\040`): not ours to guess.
        (root == "/" && !mount.contains('\\')).then(|| PathBuf::from(mount))
    })
}

// === the program ===

/// One `struct bpf_insn`: opcode, dst and src registers, offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = (dst & 0x0f) | ((src & 0x0f) << 4);
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    b
}

// Opcodes (`BPF_CLASS | BPF_OP/SIZE | BPF_SRC/MODE`).
const MOV64_REG: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const MOV64_IMM: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const ADD64_IMM: u8 = 0x07; // BPF_ALU64 | BPF_ADD | BPF_K
const STX_DW: u8 = 0x7b; // BPF_STX | BPF_MEM | BPF_DW
const LD_IMM64: u8 = 0x18; // BPF_LD | BPF_IMM | BPF_DW (two slots)
const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

/// ```text
/// r6 = r1                          ; ctx (struct bpf_sock_addr *)
/// r0 = bpf_get_current_pid_tgid()
/// *(u64 *)(r10 - 16) = r0          ; value
/// r1 = r6
/// r0 = bpf_get_socket_cookie(ctx)
/// *(u64 *)(r10 - 8) = r0           ; key
/// r1 = map (ld_imm64, BPF_PSEUDO_MAP_FD)
/// r2 = r10 - 8 ; r3 = r10 - 16 ; r4 = BPF_ANY
/// bpf_map_update_elem(r1, r2, r3, r4)
/// r0 = 1                           ; allow the connect
/// exit
/// ```
fn program(map: &OwnedFd) -> Vec<[u8; 8]> {
    let map_fd = std::os::fd::AsRawFd::as_raw_fd(map);
    vec![
        insn(MOV64_REG, 6, 1, 0, 0),
        insn(CALL, 0, 0, 0, FN_GET_CURRENT_PID_TGID),
        insn(STX_DW, 10, 0, -16, 0),
        insn(MOV64_REG, 1, 6, 0, 0),
        insn(CALL, 0, 0, 0, FN_GET_SOCKET_COOKIE),
        insn(STX_DW, 10, 0, -8, 0),
        insn(LD_IMM64, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        insn(MOV64_REG, 2, 10, 0, 0),
        insn(ADD64_IMM, 2, 0, 0, -8),
        insn(MOV64_REG, 3, 10, 0, 0),
        insn(ADD64_IMM, 3, 0, 0, -16),
        insn(MOV64_IMM, 4, 0, 0, 0),
        insn(CALL, 0, 0, 0, FN_MAP_UPDATE_ELEM),
        insn(MOV64_IMM, 0, 0, 0, 1),
        insn(EXIT, 0, 0, 0, 0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instruction_encoding() {
        // r2 += -8: BPF_ALU64|BPF_ADD|BPF_K, dst 2, imm -8 (little-endian).
        assert_eq!(
            insn(ADD64_IMM, 2, 0, 0, -8),
            [0x07, 0x02, 0, 0, 0xf8, 0xff, 0xff, 0xff]
        );
        // *(u64 *)(r10 - 16) = r0: dst 10, src 0, off -16.
        assert_eq!(
            insn(STX_DW, 10, 0, -16, 0),
            [0x7b, 0x0a, 0xf0, 0xff, 0, 0, 0, 0]
        );
        // ld_imm64 with a map fd: src = BPF_PSEUDO_MAP_FD.
        assert_eq!(insn(LD_IMM64, 1, 1, 0, 5)[1], 0x11);
    }

    #[test]
    fn cgroup2_mount_from_mountinfo() {
        let hybrid = "25 31 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure =
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(cgroup2_mount(pure), Some(PathBuf::from("/sys/fs/cgroup")));
        // A container's namespaced view of a sub-hierarchy is not the root.
        let sub = "30 23 0:26 /kubepods/x /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(sub), None);
        assert_eq!(cgroup2_mount(""), None);
    }

    #[test]
    fn env_switch() {
        for v in ["off", "OFF", "0", "false", " no "] {
            assert!(disabled_by(Some(v)), "{v}");
        }
        for v in [None, Some("on"), Some(""), Some("1")] {
            assert!(!disabled_by(v), "{v:?}");
        }
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // test: dials its own local listener
    fn records_the_connecting_process_by_socket_cookie() {
        use std::net::{TcpListener, TcpStream};
        let map = match ConnectMap::load() {
            Ok(map) => map,
            Err(e) => {
                return sluice_test_support::skip_or_fail(&format!(
                    "cannot load the connect-time map (needs root, cgroup2): {e}"
                ))
            }
        };
        map.self_test().expect("the map records this process");
        let diag = crate::identity::test_diag();
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(l) = TcpListener::bind(bind) else {
                assert!(bind.starts_with('['), "cannot bind {bind}");
                continue;
            };
            let client = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
            let (_server, _) = l.accept().expect("accept");
            let (src, dst) = (
                client.local_addr().expect("src"),
                client.peer_addr().expect("dst"),
            );
            let (_inode, cookie) = diag(src, dst).expect("sock_diag finds the client socket");
            assert_eq!(
                sys::socket_cookie(std::os::fd::AsFd::as_fd(&client)).expect("SO_COOKIE"),
                cookie,
                "sock_diag's cookie is the socket's"
            );
            assert_eq!(
                map.connector(cookie).expect("map lookup"),
                Some(std::process::id()),
                "{bind}"
            );
            // The server side was accepted, never connected: not in the map.
            let (_, server_cookie) = diag(dst, src).expect("server socket");
            assert_eq!(map.connector(server_cookie).expect("map lookup"), None);
        }
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // test: dials its own local listener
    fn identity_resolves_through_the_map_and_scans_without_it() {
        use std::net::{TcpListener, TcpStream};
        let map = match ConnectMap::load() {
            Ok(map) => Arc::new(map),
            Err(e) => {
                return sluice_test_support::skip_or_fail(&format!(
                    "cannot load the connect-time map (needs root, cgroup2): {e}"
                ))
            }
        };
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (server, _) = l.accept().expect("accept");
        let (peer, local) = (
            server.peer_addr().expect("peer"),
            server.local_addr().expect("local"),
        );
        let with = crate::ProcfsIdentity::new("/proc", None)
            .with_socket_diag()
            .with_connect_map(Some(map));
        let without = crate::ProcfsIdentity::new("/proc", None).with_socket_diag();
        let (a, via_a) = with
            .resolve_via(peer, local)
            .expect("identified via the map");
        let (b, via_b) = without
            .resolve_via(peer, local)
            .expect("identified by the scan");
        assert_eq!(via_a, "connect-map");
        assert_eq!(via_b, "scan");
        // Same answer either way.
        assert_eq!(a, b);
        assert_eq!(a.pid, std::process::id());
        drop(client);
    }
}
