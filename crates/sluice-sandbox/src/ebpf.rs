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
//! Beside it, the kernel counts process events (a process forked, a program
//! executed, a task exited) from three raw tracepoints, and a
//! `cgroup/sock_create` program records who created each socket and the fork
//! count at that moment. A socket created and connected by one process while
//! no process was forked anywhere is held by that process alone (a descriptor
//! reaches another process by fork inheritance, or by passing it, which no
//! path follows): its owner is known without reading `/proc`, and the
//! identity computed for that process stays valid until the next process
//! event ([`ProcessEvents`]).
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

/// `enum bpf_map_type`: `BPF_MAP_TYPE_ARRAY`, `BPF_MAP_TYPE_LRU_HASH`.
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
/// `enum bpf_prog_type`: `BPF_PROG_TYPE_CGROUP_SOCK`,
/// `BPF_PROG_TYPE_RAW_TRACEPOINT`, `BPF_PROG_TYPE_CGROUP_SOCK_ADDR`.
const BPF_PROG_TYPE_CGROUP_SOCK: u32 = 9;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
/// `enum bpf_attach_type`: `BPF_CGROUP_INET_SOCK_CREATE`,
/// `BPF_CGROUP_INET4_CONNECT`, `BPF_CGROUP_INET6_CONNECT`.
const BPF_CGROUP_INET_SOCK_CREATE: u32 = 2;
const BPF_CGROUP_INET4_CONNECT: u32 = 10;
const BPF_CGROUP_INET6_CONNECT: u32 = 11;
/// `CLONE_THREAD`: a new thread of the same process (shares its descriptors).
const CLONE_THREAD: i32 = 0x0001_0000;
/// Helper ids (`enum bpf_func_id`).
pub(crate) const FN_MAP_LOOKUP_ELEM: i32 = 1;
const FN_MAP_UPDATE_ELEM: i32 = 2;
const FN_GET_CURRENT_PID_TGID: i32 = 14;
pub(crate) const FN_GET_SOCKET_COOKIE: i32 = 46;
/// `BPF_PSEUDO_MAP_FD`: the 64-bit immediate is a map descriptor.
const BPF_PSEUDO_MAP_FD: u8 = 1;
pub(crate) const LICENSE: &CStr = c"GPL";

/// The loaded map and programs, linked to the root cgroup for as long as
/// this value lives.
#[derive(Debug)]
pub struct ConnectMap {
    map: OwnedFd,
    /// Dropping the links detaches the programs.
    _links: Vec<OwnedFd>,
    /// Process events and socket creators, when the kernel allowed them.
    tracking: Option<ProcessTracking>,
}

/// The process-event counters and the socket-creation map with the
/// programs feeding them.
#[derive(Debug)]
struct ProcessTracking {
    /// One entry: [`ProcessEvents`] as three u64 counters.
    events: OwnedFd,
    /// Socket cookie -> (creator's pid_tgid, fork count at creation).
    created: OwnedFd,
    _links: Vec<OwnedFd>,
}

/// Host-wide counts of process events since the programs were loaded. Any
/// change between two readings means a process was forked, a program
/// executed or a task exited in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessEvents {
    /// New processes (`clone` without `CLONE_THREAD`, `fork`, `vfork`).
    pub forks: u64,
    /// `execve` calls that succeeded.
    pub execs: u64,
    /// Tasks (threads included) that exited.
    pub exits: u64,
}

/// Who created a socket, as recorded when it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOrigin {
    /// Thread-group id of the creating process.
    pub creator: u32,
    /// [`ProcessEvents::forks`] at that moment.
    pub forks_at_creation: u64,
}

/// Offsets of the three counters in the events map's value.
const FORKS_OFF: i16 = 0;
const EXECS_OFF: i16 = 8;
const EXITS_OFF: i16 = 16;

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
        let tracking = match ProcessTracking::load(&cgroup) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::info!(error = %e, "process-event tracking unavailable; every lookup reads /proc");
                None
            }
        };
        Ok(Self {
            map,
            _links: links,
            tracking,
        })
    }

    /// The host's process-event counters now; `None` without tracking.
    ///
    /// # Errors
    /// The `bpf(2)` error of the lookup.
    pub fn process_events(&self) -> io::Result<Option<ProcessEvents>> {
        let Some(t) = &self.tracking else {
            return Ok(None);
        };
        Ok(
            sys::bpf_map_lookup_u32_key::<3>(&t.events, 0)?.map(|[forks, execs, exits]| {
                ProcessEvents {
                    forks,
                    execs,
                    exits,
                }
            }),
        )
    }

    /// Who created the socket with this cookie, if recorded.
    ///
    /// # Errors
    /// The `bpf(2)` error of the lookup.
    pub fn origin(&self, cookie: u64) -> io::Result<Option<SocketOrigin>> {
        let Some(t) = &self.tracking else {
            return Ok(None);
        };
        Ok(
            sys::bpf_map_lookup_u64_pair(&t.created, cookie)?.map(|[pid_tgid, forks]| {
                SocketOrigin {
                    creator: (pid_tgid >> 32) as u32,
                    forks_at_creation: forks,
                }
            }),
        )
    }

    /// Checks that the map names processes as this `/proc` does: connects a
    /// loopback socket and expects this process's pid for its cookie (as its
    /// connector and, with process tracking, its creator). The
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
            Some(pid) if pid == std::process::id() => {}
            Some(pid) => {
                return Err(io::Error::other(format!(
                    "the kernel records pid {pid} for this process ({}): another PID namespace",
                    std::process::id()
                )))
            }
            None => return Err(io::Error::other("a loopback connect was not recorded")),
        }
        // Process tracking, when loaded, must have recorded the same socket's
        // creator as this process, and count.
        if self.tracking.is_some() {
            let origin = self.origin(cookie)?;
            if origin.map(|o| o.creator) != Some(std::process::id()) {
                return Err(io::Error::other(format!(
                    "the socket's creator was recorded as {origin:?}, not this process"
                )));
            }
            if self.process_events()?.is_none() {
                return Err(io::Error::other(
                    "the process-event counters are unreadable",
                ));
            }
        }
        Ok(())
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

impl ProcessTracking {
    /// The counters, the three tracepoint programs and the socket-creation
    /// program linked to the cgroup v2 root (`cgroup`).
    fn load(cgroup: &std::fs::File) -> io::Result<Self> {
        let events = sys::bpf_map_create(BPF_MAP_TYPE_ARRAY, 4, 24, 1, name(b"sluice_events"))?;
        let created = sys::bpf_map_create(
            BPF_MAP_TYPE_LRU_HASH,
            8,
            16,
            MAP_ENTRIES,
            name(b"sluice_created"),
        )?;
        let mut links = Vec::with_capacity(4);
        for (tracepoint, offset, skip_threads, prog_name) in [
            (c"task_newtask", FORKS_OFF, true, b"sluice_forks".as_slice()),
            (
                c"sched_process_exec",
                EXECS_OFF,
                false,
                b"sluice_execs".as_slice(),
            ),
            (
                c"sched_process_exit",
                EXITS_OFF,
                false,
                b"sluice_exits".as_slice(),
            ),
        ] {
            let prog = sys::bpf_prog_load(
                BPF_PROG_TYPE_RAW_TRACEPOINT,
                0,
                &counter_program(&events, offset, skip_threads),
                LICENSE,
                name(prog_name),
            )?;
            links.push(sys::bpf_raw_tracepoint_open(&prog, tracepoint)?);
        }
        let prog = sys::bpf_prog_load(
            BPF_PROG_TYPE_CGROUP_SOCK,
            BPF_CGROUP_INET_SOCK_CREATE,
            &creation_program(&events, &created),
            LICENSE,
            name(b"sluice_sock"),
        )?;
        links.push(sys::bpf_link_create(
            &prog,
            cgroup,
            BPF_CGROUP_INET_SOCK_CREATE,
        )?);
        Ok(Self {
            events,
            created,
            _links: links,
        })
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
pub(crate) fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = (dst & 0x0f) | ((src & 0x0f) << 4);
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    b
}

// Opcodes (`BPF_CLASS | BPF_OP/SIZE | BPF_SRC/MODE`).
pub(crate) const MOV64_REG: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
pub(crate) const MOV64_IMM: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
pub(crate) const ADD64_IMM: u8 = 0x07; // BPF_ALU64 | BPF_ADD | BPF_K
pub(crate) const STX_DW: u8 = 0x7b; // BPF_STX | BPF_MEM | BPF_DW
const LD_IMM64: u8 = 0x18; // BPF_LD | BPF_IMM | BPF_DW (two slots)
const ST_W: u8 = 0x62; // BPF_ST | BPF_MEM | BPF_W
pub(crate) const LDX_DW: u8 = 0x79; // BPF_LDX | BPF_MEM | BPF_DW
const AND64_IMM: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
pub(crate) const JEQ_IMM: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JNE_IMM: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
pub(crate) const ATOMIC_ADD_DW: u8 = 0xdb; // BPF_STX | BPF_ATOMIC | BPF_DW, imm BPF_ADD
pub(crate) const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
pub(crate) const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

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

/// `r{dst} = map` (two slots).
pub(crate) fn ld_map(dst: u8, map: &OwnedFd) -> [[u8; 8]; 2] {
    let fd = std::os::fd::AsRawFd::as_raw_fd(map);
    [
        insn(LD_IMM64, dst, BPF_PSEUDO_MAP_FD, 0, fd),
        insn(0, 0, 0, 0, 0),
    ]
}

/// A raw tracepoint program adding 1 to the counter at `offset` of the
/// events map; with `skip_threads` (for `task_newtask`, whose second
/// argument is the clone flags) new threads are not counted.
///
/// ```text
/// [r2 = *(u64 *)(r1 + 8) ; r2 &= CLONE_THREAD ; if r2 != 0 goto out]
/// *(u32 *)(r10 - 4) = 0
/// r1 = events ; r2 = r10 - 4
/// r0 = bpf_map_lookup_elem(r1, r2)
/// if r0 == 0 goto out
/// r1 = 1 ; lock *(u64 *)(r0 + offset) += r1
/// out: r0 = 0 ; exit
/// ```
fn counter_program(events: &OwnedFd, offset: i16, skip_threads: bool) -> Vec<[u8; 8]> {
    let mut p = Vec::with_capacity(16);
    if skip_threads {
        p.push(insn(LDX_DW, 2, 1, 8, 0));
        p.push(insn(AND64_IMM, 2, 0, 0, CLONE_THREAD));
        // Over the 9 instructions below to `out`.
        p.push(insn(JNE_IMM, 2, 0, 9, 0));
    }
    p.push(insn(ST_W, 10, 0, -4, 0));
    p.extend(ld_map(1, events));
    p.push(insn(MOV64_REG, 2, 10, 0, 0));
    p.push(insn(ADD64_IMM, 2, 0, 0, -4));
    p.push(insn(CALL, 0, 0, 0, FN_MAP_LOOKUP_ELEM));
    p.push(insn(JEQ_IMM, 0, 0, 2, 0));
    p.push(insn(MOV64_IMM, 1, 0, 0, 1));
    p.push(insn(ATOMIC_ADD_DW, 0, 1, offset, 0));
    // out:
    p.push(insn(MOV64_IMM, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

/// The `cgroup/sock_create` program: records `cookie -> (pid_tgid, forks)`
/// and allows the socket.
///
/// ```text
/// r6 = r1                               ; ctx (struct bpf_sock *)
/// *(u32 *)(r10 - 4) = 0
/// r1 = events ; r2 = r10 - 4
/// r0 = bpf_map_lookup_elem(r1, r2)
/// r7 = -1                               ; no counter: never equal
/// if r0 == 0 goto +1
/// r7 = *(u64 *)(r0 + FORKS_OFF)
/// *(u64 *)(r10 - 16) = r7               ; value.forks
/// r0 = bpf_get_current_pid_tgid()
/// *(u64 *)(r10 - 24) = r0               ; value.pid_tgid
/// r1 = r6 ; r0 = bpf_get_socket_cookie(ctx)
/// *(u64 *)(r10 - 32) = r0               ; key
/// r1 = created ; r2 = r10 - 32 ; r3 = r10 - 24 ; r4 = BPF_ANY
/// bpf_map_update_elem(r1, r2, r3, r4)
/// r0 = 1 ; exit
/// ```
fn creation_program(events: &OwnedFd, created: &OwnedFd) -> Vec<[u8; 8]> {
    let mut p = Vec::with_capacity(28);
    p.push(insn(MOV64_REG, 6, 1, 0, 0));
    p.push(insn(ST_W, 10, 0, -4, 0));
    p.extend(ld_map(1, events));
    p.push(insn(MOV64_REG, 2, 10, 0, 0));
    p.push(insn(ADD64_IMM, 2, 0, 0, -4));
    p.push(insn(CALL, 0, 0, 0, FN_MAP_LOOKUP_ELEM));
    p.push(insn(MOV64_IMM, 7, 0, 0, -1));
    p.push(insn(JEQ_IMM, 0, 0, 1, 0));
    p.push(insn(LDX_DW, 7, 0, FORKS_OFF, 0));
    p.push(insn(STX_DW, 10, 7, -16, 0));
    p.push(insn(CALL, 0, 0, 0, FN_GET_CURRENT_PID_TGID));
    p.push(insn(STX_DW, 10, 0, -24, 0));
    p.push(insn(MOV64_REG, 1, 6, 0, 0));
    p.push(insn(CALL, 0, 0, 0, FN_GET_SOCKET_COOKIE));
    p.push(insn(STX_DW, 10, 0, -32, 0));
    p.extend(ld_map(1, created));
    p.push(insn(MOV64_REG, 2, 10, 0, 0));
    p.push(insn(ADD64_IMM, 2, 0, 0, -32));
    p.push(insn(MOV64_REG, 3, 10, 0, 0));
    p.push(insn(ADD64_IMM, 3, 0, 0, -24));
    p.push(insn(MOV64_IMM, 4, 0, 0, 0));
    p.push(insn(CALL, 0, 0, 0, FN_MAP_UPDATE_ELEM));
    p.push(insn(MOV64_IMM, 0, 0, 0, 1));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Held by tests that fork this process and by those whose sockets a
    /// forked child would hold for a moment (until its exec closes them).
    static FORKS: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
    fn counts_process_events_and_records_socket_creators() {
        let map = match ConnectMap::load() {
            Ok(map) => map,
            Err(e) => {
                return sluice_test_support::skip_or_fail(&format!(
                    "cannot load the connect-time map (needs root, cgroup2): {e}"
                ))
            }
        };
        let events = |m: &ConnectMap| {
            m.process_events()
                .expect("events lookup")
                .expect("process-event tracking loaded")
        };
        // A thread is not a new process: some attempt sees no fork while
        // threads come and go (other processes of the host fork at any time;
        // counting threads would move the count on every attempt).
        let threads_uncounted = (0..200).any(|_| {
            let before = events(&map);
            for _ in 0..4 {
                std::thread::spawn(|| ()).join().expect("thread");
            }
            let after = events(&map);
            after.forks == before.forks && after.exits > before.exits
        });
        assert!(threads_uncounted, "thread creations move the fork count");
        let before = events(&map);
        let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let cookie = sys::socket_cookie(std::os::fd::AsFd::as_fd(&socket)).expect("cookie");
        let origin = map
            .origin(cookie)
            .expect("origin lookup")
            .expect("recorded");
        assert_eq!(origin.creator, std::process::id());
        // Other tests of this binary may fork meanwhile: the count at
        // creation lies between the two readings.
        let mid = events(&map);
        assert!((before.forks..=mid.forks).contains(&origin.forks_at_creation));
        // A fork and an exec (`true`), then its exit.
        let _forking = FORKS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let status = std::process::Command::new("true")
            .status()
            .expect("spawn true");
        assert!(status.success());
        let after = events(&map);
        assert!(after.forks > mid.forks, "{mid:?} -> {after:?}");
        assert!(after.execs > mid.execs, "{mid:?} -> {after:?}");
        assert!(after.exits > mid.exits, "{mid:?} -> {after:?}");
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // test: dials its own local listener
    fn identity_resolves_through_the_map_and_scans_without_it() {
        use std::net::{TcpListener, TcpStream};
        let _no_fork = FORKS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
        // A fork anywhere on the host since the socket was created means a
        // search from the connector; none means the sole-holder proof.
        assert!(["connect-map", "sole-holder"].contains(&via_a), "{via_a}");
        assert_eq!(via_b, "scan");
        // Same answer either way.
        assert_eq!(a, b);
        assert_eq!(a.pid, std::process::id());
        drop(client);
    }

    /// The sole-holder proof and the identity cache give the scan's answer;
    /// a fork after the socket was created (the child inherits it) rules the
    /// proof out. Other processes of the host fork at any time, so each
    /// attempt uses a fresh socket until one goes through without a fork
    /// anywhere (bounded).
    #[test]
    #[allow(clippy::disallowed_methods)] // test: dials its own local listener
    fn sole_holder_and_cached_identities_match_the_scan() {
        use std::net::{TcpListener, TcpStream};
        let map = match ConnectMap::load() {
            Ok(map) => Arc::new(map),
            Err(e) => {
                return sluice_test_support::skip_or_fail(&format!(
                    "cannot load the connect-time map (needs root, cgroup2): {e}"
                ))
            }
        };
        let _no_fork = FORKS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let with = crate::ProcfsIdentity::new("/proc", None)
            .with_socket_diag()
            .with_connect_map(Some(map));
        let scan = crate::ProcfsIdentity::new("/proc", None).with_socket_diag();
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let client = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
            let (server, _) = l.accept().expect("accept");
            let (peer, local) = (
                server.peer_addr().expect("peer"),
                server.local_addr().expect("local"),
            );
            // Another test of this binary may fork meanwhile: its child holds
            // this socket until its exec closes it, and a lookup in that
            // moment is rightly ambiguous. Such an attempt proves nothing.
            let ambiguous = |r: &Result<_, crate::IdentityError>| {
                matches!(r, Err(crate::IdentityError::Ambiguous { .. }))
            };
            let with_answer = with.resolve_via(peer, local);
            let cached = with.resolve_cached(peer, local);
            let scan_answer = scan.resolve_via(peer, local);
            if ambiguous(&with_answer) || ambiguous(&scan_answer) {
                continue;
            }
            let (a, via) = with_answer.expect("identified");
            let (b, _) = scan_answer.expect("scanned");
            assert_eq!(a, b, "via {via}");
            if let Some(c) = &cached {
                assert_eq!(c, &b, "cached");
            }
            seen.insert(via);
            if cached.is_some() {
                seen.insert("cached");
            }
            drop(client);
            if seen.contains("sole-holder") && seen.contains("cached") {
                break;
            }
        }
        assert!(
            seen.contains("sole-holder") && seen.contains("cached"),
            "no attempt went without a fork on the host: {seen:?}"
        );

        // A socket shared with a child forked after it was created.
        let client = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (server, _) = l.accept().expect("accept");
        let (peer, local) = (
            server.peer_addr().expect("peer"),
            server.local_addr().expect("local"),
        );
        // Kept across the child's exec.
        nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&client),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .expect("clear FD_CLOEXEC");
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        // Until sleep runs: before its exec it is this test binary.
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(with.resolve_cached(peer, local).is_none());
        let err = with
            .resolve_via(peer, local)
            .expect_err("shared with sleep: ambiguous");
        assert!(err.to_string().contains("ambiguous"), "{err}");
        let _ = child.kill();
        let _ = child.wait();
    }
}
