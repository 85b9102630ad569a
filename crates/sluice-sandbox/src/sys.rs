//! The few raw system calls `sluice run` and identity need, each behind a safe wrapper:
//! netfilter and sock_diag netlink sockets, created inside a network namespace when
//! asked (`socket`, `bind`, `setns`), blocking send/receive with a timeout, a raw IPv4 socket to inject
//! refusals, the transparent listener's TCP socket (`socket`, `setsockopt`, `bind`,
//! `listen`) and its connections' original destination (`getsockname`, `getsockopt`
//! `SO_ORIGINAL_DST`), `kill`, and `bpf(2)` for identity's connect-time owner map
//! (create and read a map, load a program, link it to a cgroup) and for the measured
//! sockmap redirect (`crate::sockmap`: update a map, attach a program to it, and a
//! socket's sent-byte count from `TCP_INFO` and `SIOCOUTQ`).
//!
//! This is the only module in the workspace that contains `unsafe`. Every block is a
//! direct libc call whose pointer arguments point at live, correctly sized local
//! values; descriptors are wrapped in [`OwnedFd`] as soon as they exist.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

/// Signals `sluice run` forwards to its child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT.
    Int,
    /// SIGTERM.
    Term,
    /// SIGKILL.
    Kill,
    /// SIGHUP.
    Hup,
}

impl Signal {
    fn raw(self) -> libc::c_int {
        match self {
            Self::Int => libc::SIGINT,
            Self::Term => libc::SIGTERM,
            Self::Kill => libc::SIGKILL,
            Self::Hup => libc::SIGHUP,
        }
    }
}

/// Sends `signal` to process `pid`. `ESRCH` (already gone) is not an error.
///
/// # Errors
/// The `kill(2)` error, e.g. `EPERM`.
pub fn send_signal(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "invalid pid"))?;
    // SAFETY: kill(2) takes plain integers; a positive pid addresses exactly one process.
    let rc = unsafe { libc::kill(pid, signal.raw()) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}

/// Runs `f` on a fresh thread that first joins the network namespace at `ns_path`
/// (e.g. `/run/netns/NAME`). Sockets created by `f` belong to that namespace. The
/// thread exits afterwards, so no other code ever runs in the namespace by accident.
pub(crate) fn in_netns<T: Send + 'static>(
    ns_path: &Path,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let ns = std::fs::File::open(ns_path)?;
    std::thread::Builder::new()
        .name("sluice-setns".into())
        .spawn(move || {
            // SAFETY: setns(2) on a descriptor we own (kept open by `ns` for the call);
            // CLONE_NEWNET only changes this thread's network namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            f()
        })?
        .join()
        .map_err(|_| io::Error::other("setns thread panicked"))?
}

/// A `NETLINK_NETFILTER` socket bound to an automatic port id (in the calling thread's
/// network namespace).
pub(crate) fn netfilter_socket() -> io::Result<OwnedFd> {
    let fd = netlink_socket(libc::NETLINK_NETFILTER)?;
    // Best effort: a bigger receive buffer (root may exceed rmem_max) and no ENOBUFS
    // errors when the kernel had to drop messages.
    let _ = setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 1 << 20);
    let _ = setsockopt_int(&fd, libc::SOL_NETLINK, libc::NETLINK_NO_ENOBUFS, 1);
    Ok(fd)
}

/// A `NETLINK_SOCK_DIAG` socket (socket lookups by 4-tuple) bound to an automatic
/// port id, in the calling thread's network namespace.
pub(crate) fn sock_diag_socket() -> io::Result<OwnedFd> {
    netlink_socket(libc::NETLINK_SOCK_DIAG)
}

/// A raw netlink socket of `protocol`, bound to an automatic port id.
fn netlink_socket(protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_nl is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `addr` is a live sockaddr_nl and the length passed is its exact size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::from_ref(&addr).cast::<libc::sockaddr>(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn setsockopt_int(fd: &impl AsRawFd, level: i32, name: i32, value: libc::c_int) -> io::Result<()> {
    // SAFETY: the option value points at a live c_int and the length is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast::<libc::c_void>(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `SO_RCVTIMEO`: blocking receives return `WouldBlock`/`TimedOut` after `timeout`.
pub(crate) fn set_recv_timeout(fd: &OwnedFd, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: the option value points at a live timeval and the length is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::from_ref(&tv).cast::<libc::c_void>(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends one datagram to the kernel (netlink port id 0).
pub(crate) fn send(fd: &OwnedFd, buf: &[u8]) -> io::Result<()> {
    // SAFETY: sockaddr_nl is plain old data; all-zero (pid 0, groups 0) is the kernel.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `buf` is a live slice of `buf.len()` bytes; `addr` is a live sockaddr_nl
    // of the length passed.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            buf.as_ptr().cast::<libc::c_void>(),
            buf.len(),
            0,
            std::ptr::from_ref(&addr).cast::<libc::sockaddr>(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one datagram into `buf`; returns its length (truncated to `buf.len()`).
pub(crate) fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a live, writable slice of `buf.len()` bytes.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast::<libc::c_void>(),
            buf.len(),
            0,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// An `AF_INET`/`SOCK_RAW`/`IPPROTO_RAW` socket (header included; send only), in the
/// calling thread's network namespace.
pub(crate) fn raw_ipv4_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments.
    let raw = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Sends a complete IPv4 packet (header included) towards `dst`.
pub(crate) fn send_ipv4(fd: &OwnedFd, packet: &[u8], dst: Ipv4Addr) -> io::Result<()> {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    addr.sin_family = libc::AF_INET as libc::sa_family_t;
    addr.sin_addr.s_addr = u32::from_ne_bytes(dst.octets());
    // SAFETY: `packet` is a live slice of `packet.len()` bytes; `addr` is a live
    // sockaddr_in of the length passed.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            packet.as_ptr().cast::<libc::c_void>(),
            packet.len(),
            0,
            std::ptr::from_ref(&addr).cast::<libc::sockaddr>(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `SO_ORIGINAL_DST` (`linux/netfilter_ipv4.h`) at `SOL_IP`, and its IPv6 twin
/// `IP6T_SO_ORIGINAL_DST` (`linux/netfilter_ipv6/ip6_tables.h`) at `SOL_IPV6`: both 80.
const SO_ORIGINAL_DST: libc::c_int = 80;

/// A listening TCP socket in the calling thread's network namespace: `SO_REUSEADDR`,
/// `IPV6_V6ONLY` for IPv6, bound to `addr`, `listen(backlog)`, non-blocking and
/// close-on-exec.
pub(crate) fn tcp_listener(
    addr: SocketAddr,
    backlog: libc::c_int,
) -> io::Result<std::net::TcpListener> {
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket(2) with constant arguments.
    let raw = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::IPPROTO_TCP,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    let rc = match addr {
        SocketAddr::V4(a) => {
            let sa = sockaddr_in(a);
            // SAFETY: `sa` is a live sockaddr_in and the length passed is its exact size.
            unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    std::ptr::from_ref(&sa).cast::<libc::sockaddr>(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(a) => {
            setsockopt_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
            let sa = sockaddr_in6(a);
            // SAFETY: `sa` is a live sockaddr_in6 and the length passed is its exact size.
            unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    std::ptr::from_ref(&sa).cast::<libc::sockaddr>(),
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: listen(2) on a descriptor we own, with a plain integer backlog.
    if unsafe { libc::listen(fd.as_raw_fd(), backlog) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(std::net::TcpListener::from(fd))
}

fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = a.port().to_be();
    sa.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
    sa
}

fn sockaddr_in6(a: SocketAddrV6) -> libc::sockaddr_in6 {
    // SAFETY: sockaddr_in6 is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sa.sin6_port = a.port().to_be();
    sa.sin6_flowinfo = a.flowinfo();
    sa.sin6_addr.s6_addr = a.ip().octets();
    sa.sin6_scope_id = a.scope_id();
    sa
}

fn from_sockaddr_in(sa: &libc::sockaddr_in) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(sa.sin_addr.s_addr.to_ne_bytes()),
        u16::from_be(sa.sin_port),
    ))
}

fn from_sockaddr_in6(sa: &libc::sockaddr_in6) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::from(sa.sin6_addr.s6_addr),
        u16::from_be(sa.sin6_port),
        sa.sin6_flowinfo,
        sa.sin6_scope_id,
    ))
}

fn bad_address(what: &str, len: libc::socklen_t, family: libc::sa_family_t) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{what} returned {len} bytes of address family {family}"),
    )
}

/// The socket's local address (`getsockname(2)`), IPv4 or IPv6.
fn local_addr(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `ss` is a live, writable sockaddr_storage and `len` holds its size; the
    // kernel writes at most `len` bytes and stores the address's real length in `len`.
    let rc = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            std::ptr::from_mut(&mut ss).cast::<libc::sockaddr>(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, the kernel wrote
            // all of it (checked length), and sockaddr_storage is aligned for any sockaddr.
            let sa = unsafe { &*std::ptr::from_ref(&ss).cast::<libc::sockaddr_in>() };
            Ok(from_sockaddr_in(sa))
        }
        libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sa = unsafe { &*std::ptr::from_ref(&ss).cast::<libc::sockaddr_in6>() };
            Ok(from_sockaddr_in6(sa))
        }
        libc::AF_INET | libc::AF_INET6 => Err(bad_address("getsockname", len, ss.ss_family)),
        family => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not an IP socket (address family {family})"),
        )),
    }
}

/// The destination a NATed (redirected) TCP connection was originally sent to, from
/// the conntrack entry of the socket's network namespace: `getsockopt(SOL_IP,
/// SO_ORIGINAL_DST)` for IPv4 (including IPv4-mapped connections on an IPv6 socket),
/// `getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST)` for IPv6. The family comes from the
/// socket's own local address. For a connection that was not NATed this is the
/// socket's local address; without a conntrack entry it is `ENOENT`.
pub(crate) fn original_dst(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    let v4 = match local_addr(fd)? {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
    };
    if v4 {
        // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `sa` is a live, writable sockaddr_in and `len` holds its exact size;
        // the kernel writes at most `len` bytes and stores the length it wrote.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_IP,
                SO_ORIGINAL_DST,
                std::ptr::from_mut(&mut sa).cast::<libc::c_void>(),
                &raw mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        if len as usize != size_of::<libc::sockaddr_in>()
            || libc::c_int::from(sa.sin_family) != libc::AF_INET
        {
            return Err(bad_address("SO_ORIGINAL_DST", len, sa.sin_family));
        }
        Ok(from_sockaddr_in(&sa))
    } else {
        // SAFETY: sockaddr_in6 is plain old data; all-zero is a valid value.
        let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        // SAFETY: `sa` is a live, writable sockaddr_in6 and `len` holds its exact size;
        // the kernel writes at most `len` bytes and stores the length it wrote.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_IPV6,
                SO_ORIGINAL_DST,
                std::ptr::from_mut(&mut sa).cast::<libc::c_void>(),
                &raw mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        if len as usize != size_of::<libc::sockaddr_in6>()
            || libc::c_int::from(sa.sin6_family) != libc::AF_INET6
        {
            return Err(bad_address("IP6T_SO_ORIGINAL_DST", len, sa.sin6_family));
        }
        Ok(from_sockaddr_in6(&sa))
    }
}

// === bpf(2): the connect-time owner map (`crate::ebpf`) ===

/// `enum bpf_cmd` values (`linux/bpf.h`).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_LINK_CREATE: libc::c_long = 28;

/// `union bpf_attr` for `BPF_MAP_CREATE` (the leading fields; the kernel treats the
/// rest as zero).
#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// `union bpf_attr` for `BPF_MAP_*_ELEM`.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to `expected_attach_type`.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_LINK_CREATE` (no attach-type specific part).
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// `union bpf_attr` for `BPF_PROG_ATTACH` (without the later replace fd).
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

/// `union bpf_attr` for `BPF_RAW_TRACEPOINT_OPEN` (`struct raw_tracepoint`
/// without the later cookie).
#[repr(C)]
struct RawTracepointAttr {
    name: u64,
    prog_fd: u32,
    pad: u32,
}

/// The `#[repr(C)]` prefixes of `union bpf_attr` above: the only types
/// [`bpf`] accepts (sealed: nothing outside this module implements it).
trait BpfAttr {}
impl BpfAttr for MapCreateAttr {}
impl BpfAttr for MapElemAttr {}
impl BpfAttr for ProgLoadAttr {}
impl BpfAttr for LinkCreateAttr {}
impl BpfAttr for ProgAttachAttr {}
impl BpfAttr for RawTracepointAttr {}

/// `bpf(cmd, attr, size_of::<A>())`; a non-negative result is a new descriptor
/// for the commands that create one.
fn bpf<A: BpfAttr>(cmd: libc::c_long, attr: &mut A) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed `#[repr(C)]` prefix of
    // `union bpf_attr` and the size passed is its exact size (the kernel reads
    // at most that many bytes and zero-fills the rest of its union). Pointers
    // stored inside it were set by the callers below to live buffers of the
    // lengths stated next to them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            size_of::<A>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// Wraps a descriptor the kernel just returned from `bpf(2)`.
fn bpf_fd(rc: libc::c_long) -> io::Result<OwnedFd> {
    let raw = libc::c_int::try_from(rc).map_err(|_| io::Error::other("bpf: bad descriptor"))?;
    // SAFETY: `raw` is a fresh descriptor (close-on-exec, as every bpf(2)
    // descriptor is) that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn fd_u32(fd: &OwnedFd) -> u32 {
    // Descriptors are non-negative.
    fd.as_raw_fd().unsigned_abs()
}

/// `BPF_MAP_CREATE`.
pub(crate) fn bpf_map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    name: [u8; 16],
) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags: 0,
        inner_map_fd: 0,
        numa_node: 0,
        map_name: name,
    };
    bpf_fd(bpf(BPF_MAP_CREATE, &mut attr)?)
}

/// `BPF_MAP_LOOKUP_ELEM` of a `u32` or `u64` key (sealed: [`MapKey`]) in a
/// map whose values are `N` u64s; `None` when absent.
fn bpf_map_lookup<K: MapKey, const N: usize>(
    map: &OwnedFd,
    key: K,
) -> io::Result<Option<[u64; N]>> {
    let mut value = [0u64; N];
    let mut attr = MapElemAttr {
        map_fd: fd_u32(map),
        pad: 0,
        // A live key of the map's key size and a live value of N u64s: the
        // callers below use the sizes the map was created with (the kernel
        // copies exactly the map's sizes).
        key: std::ptr::from_ref(&key) as u64,
        value: value.as_mut_ptr() as u64,
        flags: 0,
    };
    match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
        Ok(_) => Ok(Some(value)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Plain integer map keys [`bpf_map_lookup`] and [`bpf_map_update`] accept.
trait MapKey: Copy {}
impl MapKey for u32 {}
impl MapKey for u64 {}

/// Map values [`bpf_map_update`] accepts: u64s (a sockhash takes a socket
/// descriptor as a u64).
pub(crate) trait MapValue: Copy {}
impl MapValue for u64 {}
impl MapValue for [u64; 2] {}

/// `BPF_MAP_UPDATE_ELEM` (`BPF_ANY`) of a `u64` key.
pub(crate) fn bpf_map_update<V: MapValue>(map: &OwnedFd, key: u64, value: V) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: fd_u32(map),
        pad: 0,
        // A live key and value of the sizes the callers created the map with
        // (the kernel copies exactly the map's sizes).
        key: std::ptr::from_ref(&key) as u64,
        value: std::ptr::from_ref(&value) as u64,
        flags: 0,
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// `BPF_PROG_ATTACH` of `prog` to a map (`target`), e.g. an `sk_skb` verdict
/// program to a sockhash. Attached until the map is destroyed.
pub(crate) fn bpf_prog_attach(
    prog: &OwnedFd,
    target: &OwnedFd,
    attach_type: u32,
) -> io::Result<()> {
    let mut attr = ProgAttachAttr {
        target_fd: fd_u32(target),
        attach_bpf_fd: fd_u32(prog),
        attach_type,
        attach_flags: 0,
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map(drop)
}

/// `setsockopt(SOL_SOCKET, SO_RCVLOWAT, value)`; on TCP this also re-runs
/// the socket's data-ready path when bytes are waiting.
pub(crate) fn set_rcvlowat(fd: BorrowedFd<'_>, value: libc::c_int) -> io::Result<()> {
    setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT, value)
}

/// Bytes ever queued on a TCP socket's sending side: `tcpi_bytes_acked`
/// (`TCP_INFO`) plus the bytes still unacknowledged (`SIOCOUTQ`), read in
/// that order so that an acknowledgement arriving in between can only make
/// the sum smaller, never larger.
pub(crate) fn tcp_bytes_queued(fd: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: all-zero is a valid `tcp_info` (plain integers).
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a live, writable `tcp_info` and `len` its size; the
    // kernel writes at most `len` bytes and stores the length it wrote.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::from_mut(&mut info).cast::<libc::c_void>(),
            &raw mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut unacked: libc::c_int = 0;
    // SAFETY: `SIOCOUTQ` (the same number as `TIOCOUTQ`) writes one int to
    // the live `unacked`.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &raw mut unacked) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.tcpi_bytes_acked + u64::from(unacked.unsigned_abs()))
}

/// `BPF_MAP_LOOKUP_ELEM` on a map with u64 keys and values.
pub(crate) fn bpf_map_lookup_u64(map: &OwnedFd, key: u64) -> io::Result<Option<u64>> {
    Ok(bpf_map_lookup::<u64, 1>(map, key)?.map(|[v]| v))
}

/// `BPF_MAP_LOOKUP_ELEM` of a `u32` key in a map whose values are `N` u64s
/// (an array map of counters).
pub(crate) fn bpf_map_lookup_u32_key<const N: usize>(
    map: &OwnedFd,
    key: u32,
) -> io::Result<Option<[u64; N]>> {
    bpf_map_lookup(map, key)
}

/// `BPF_MAP_LOOKUP_ELEM` of a `u64` key in a map whose values are two u64s.
pub(crate) fn bpf_map_lookup_u64_pair(map: &OwnedFd, key: u64) -> io::Result<Option<[u64; 2]>> {
    bpf_map_lookup(map, key)
}

/// `BPF_RAW_TRACEPOINT_OPEN`: attaches `prog` (a raw tracepoint program) to
/// the kernel tracepoint `name`. Attached for as long as the returned
/// descriptor lives.
pub(crate) fn bpf_raw_tracepoint_open(
    prog: &OwnedFd,
    name: &std::ffi::CStr,
) -> io::Result<OwnedFd> {
    let mut attr = RawTracepointAttr {
        // A live NUL-terminated string.
        name: name.as_ptr() as u64,
        prog_fd: fd_u32(prog),
        pad: 0,
    };
    bpf_fd(bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr)?)
}

/// `BPF_PROG_LOAD` of `insns` (8-byte `struct bpf_insn`s). On a verifier
/// rejection the error carries the end of the verifier's log.
pub(crate) fn bpf_prog_load(
    prog_type: u32,
    expected_attach_type: u32,
    insns: &[[u8; 8]],
    license: &std::ffi::CStr,
    name: [u8; 16],
) -> io::Result<OwnedFd> {
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: u32::try_from(insns.len()).map_err(|_| io::Error::other("program too long"))?,
        // `insns` is a live slice of `insn_cnt` 8-byte instructions.
        insns: insns.as_ptr() as u64,
        // A live NUL-terminated string.
        license: license.as_ptr() as u64,
        log_level: 1,
        // A live, writable buffer of `log_size` bytes.
        log_size: u32::try_from(log.len()).unwrap_or(u32::MAX),
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        prog_ifindex: 0,
        expected_attach_type,
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(rc) => bpf_fd(rc),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: String = text.lines().rev().take(8).collect::<Vec<_>>().join(" | ");
            if tail.is_empty() {
                Err(e)
            } else {
                Err(io::Error::new(e.kind(), format!("{e}; verifier: {tail}")))
            }
        }
    }
}

/// `SO_COOKIE` (`asm-generic/socket.h`; x86 and arm64 use the generic value).
const SO_COOKIE: libc::c_int = 57;

/// The socket's cookie (`getsockopt(SOL_SOCKET, SO_COOKIE)`), the id BPF's
/// `bpf_get_socket_cookie` and sock_diag report.
pub(crate) fn socket_cookie(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut cookie = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` is a live, writable u64 and `len` holds its size; the
    // kernel writes at most `len` bytes and stores the length it wrote.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_COOKIE,
            std::ptr::from_mut(&mut cookie).cast::<libc::c_void>(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != size_of::<u64>() {
        return Err(io::Error::other("SO_COOKIE: unexpected length"));
    }
    Ok(cookie)
}

/// `BPF_LINK_CREATE`: attaches `prog` to the cgroup open at `cgroup`. The link
/// lives as long as its descriptor: closing it (or exiting) detaches the program.
pub(crate) fn bpf_link_create(
    prog: &OwnedFd,
    cgroup: &impl AsRawFd,
    attach_type: u32,
) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: fd_u32(prog),
        target_fd: cgroup.as_raw_fd().unsigned_abs(),
        attach_type,
        flags: 0,
    };
    bpf_fd(bpf(BPF_LINK_CREATE, &mut attr)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn sockaddr_conversions_round_trip() {
        let v4: SocketAddrV4 = "198.18.0.7:6379".parse().unwrap();
        assert_eq!(from_sockaddr_in(&sockaddr_in(v4)), SocketAddr::V4(v4));
        let v6 = SocketAddrV6::new("fd23:6f70:656e::7".parse().unwrap(), 443, 5, 2);
        assert_eq!(from_sockaddr_in6(&sockaddr_in6(v6)), SocketAddr::V6(v6));
    }

    #[test]
    fn tcp_listener_binds_listens_and_does_not_block() {
        let l = tcp_listener((Ipv4Addr::LOCALHOST, 0).into(), 16).expect("bind 127.0.0.1:0");
        let addr = l.local_addr().unwrap();
        assert_eq!(addr.ip(), Ipv4Addr::LOCALHOST);
        assert_ne!(addr.port(), 0);
        assert_eq!(local_addr(l.as_fd()).unwrap(), addr);
        let err = l.accept().expect_err("nothing to accept");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        // Same port again while it listens: SO_REUSEADDR does not allow two listeners.
        assert!(tcp_listener(addr, 16).is_err());

        match tcp_listener((Ipv6Addr::LOCALHOST, 0).into(), 16) {
            Ok(l6) => {
                let addr6 = l6.local_addr().unwrap();
                assert_eq!(local_addr(l6.as_fd()).unwrap(), addr6);
            }
            Err(e) => sluice_test_support::skip_or_fail(&format!("cannot bind [::1]: {e}")),
        }
    }
}
