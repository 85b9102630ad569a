//! The transparent TCP listener of a sandbox: where the namespace's nftables
//! `redirect` (see [`crate::nft::Capture`]) delivers TCP connections the sandbox
//! opened to a synthetic policy-DNS address, and the original destination of each.
//!
//! Why the listening socket lives *inside* the sandbox namespace while the rest of
//! sluice runs in the host namespace: the redirect is NAT, done by the sandbox
//! namespace's conntrack, and `getsockopt(SO_ORIGINAL_DST)` answers from the
//! conntrack table of the namespace the socket belongs to. A socket in the host
//! namespace would find no entry (`ENOENT`) and could never learn which synthetic
//! address and port the client dialled. So [`bind_in_netns`] creates the socket on a
//! short-lived thread that joined the sandbox namespace; the accepted connections
//! belong to that namespace too, and any thread (e.g. a tokio worker in the host
//! namespace) can accept from it and call [`original_dst`].
//!
//! Bind it on `127.0.0.1:PORT` and `[::1]:PORT` in the namespace: `redirect` rewrites
//! the destination to the loopback address of the packet's family (and the port).
//! A connection whose original destination is not in a capture pool (e.g. dialled
//! straight to the listener on loopback) reports the listener's own address; the
//! caller must refuse it.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::path::Path;

use crate::sys;

/// Listen backlog of the transparent listener.
pub const BACKLOG: i32 = 1024;

/// A TCP listener on `addr` inside the network namespace at `ns_path` (e.g.
/// [`crate::netns::SandboxNetns::ns_path`]): `SO_REUSEADDR`, `IPV6_V6ONLY` for an
/// IPv6 address, backlog [`BACKLOG`], non-blocking (ready for
/// `tokio::net::TcpListener::from_std`) and close-on-exec. Port 0 picks a free port;
/// read it back with `local_addr`.
///
/// # Errors
/// Opening the namespace, `setns`, or the socket calls (e.g. `EADDRINUSE`, or
/// `EADDRNOTAVAIL` for `[::1]` when IPv6 is disabled in the namespace).
pub fn bind_in_netns(ns_path: &Path, addr: SocketAddr) -> io::Result<TcpListener> {
    sys::in_netns(ns_path, move || sys::tcp_listener(addr, BACKLOG))
}

/// [`bind_in_netns`] in this process's own network namespace: for `sluice serve`
/// as a Kubernetes sidecar, which shares the pod's namespace (and so its conntrack
/// table) with the workload whose connections the pod's fence redirects.
///
/// # Errors
/// The socket calls (e.g. `EADDRINUSE`, `EADDRNOTAVAIL` for `[::1]` without IPv6).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    sys::tcp_listener(addr, BACKLOG)
}

/// The destination the client originally dialled, before the namespace's NAT
/// redirected the connection to the transparent listener (`SO_ORIGINAL_DST`, or
/// `IP6T_SO_ORIGINAL_DST` for IPv6; the family is the socket's own). `stream` is a
/// connection accepted from a [`bind_in_netns`] listener (std or tokio `TcpStream`).
///
/// # Errors
/// `ENOENT` when the namespace has no conntrack entry for the connection; the
/// `getsockname`/`getsockopt` error otherwise.
pub fn original_dst(stream: &impl AsFd) -> io::Result<SocketAddr> {
    sys::original_dst(stream.as_fd())
}
