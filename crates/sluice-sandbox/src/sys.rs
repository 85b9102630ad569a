//! The few raw system calls `sluice run` and identity need, each behind a safe wrapper:
//! netfilter and sock_diag netlink sockets, created inside a network namespace when
//! asked (`socket`, `bind`, `setns`), blocking send/receive with a timeout, a raw IPv4 socket to inject
//! refusals, and `kill`.
//!
//! This is the only module in the workspace that contains `unsafe`. Every block is a
//! direct libc call whose pointer arguments point at live, correctly sized local
//! values; descriptors are wrapped in [`OwnedFd`] as soon as they exist.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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

fn setsockopt_int(fd: &OwnedFd, level: i32, name: i32, value: libc::c_int) -> io::Result<()> {
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
pub(crate) fn send_ipv4(fd: &OwnedFd, packet: &[u8], dst: std::net::Ipv4Addr) -> io::Result<()> {
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
