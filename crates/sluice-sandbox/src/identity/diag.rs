//! Socket lookup by exact 4-tuple through `NETLINK_SOCK_DIAG` (what `ss`
//! uses): one request, one answer, whatever the number of sockets.
//!
//! Reading `/proc/net/tcp` instead makes the kernel walk and print every
//! socket of the namespace, TIME_WAIT ones included: under connection churn
//! that is tens of thousands of lines per lookup (measured: 15,000 lines and
//! about 300 ms per new connection, 50 connections/s). The table remains the
//! fallback when the kernel has no `inet_diag` for TCP.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::parse::TCP_ESTABLISHED;
use crate::netlink::{
    header, messages, u32_at, NLMSG_ERROR, NLMSG_HDRLEN as NLMSG_HDR, NLM_F_REQUEST,
};
use crate::sys;

/// `SOCK_DIAG_BY_FAMILY` (`linux/sock_diag.h`; not in the libc crate).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg`.
const MSG_LEN: usize = 72;
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;
const IPPROTO_TCP: u8 = libc::IPPROTO_TCP as u8;
/// An answer later than this is treated as a failed lookup.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// A sock_diag socket in one network namespace.
#[derive(Debug)]
pub(crate) struct SockDiag {
    /// One request at a time; answers are matched by sequence number.
    fd: Mutex<OwnedFd>,
    seq: AtomicU32,
}

/// What the kernel said about a 4-tuple.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// An established socket: its inode, and its cookie (the kernel's
    /// boot-unique socket id, what BPF's `bpf_get_socket_cookie` returns).
    Socket {
        /// `socket:[inode]` in `/proc/PID/fd`.
        inode: u64,
        /// `idiag_cookie`.
        cookie: u64,
    },
    /// No established socket with a real inode has this 4-tuple.
    NotFound,
}

impl SockDiag {
    /// A socket in the calling thread's network namespace.
    pub(crate) fn open() -> io::Result<Self> {
        Self::wrap(sys::sock_diag_socket()?)
    }

    /// A socket in the network namespace at `ns_path` (e.g. `/proc/PID/ns/net`).
    pub(crate) fn open_in(ns_path: &Path) -> io::Result<Self> {
        Self::wrap(sys::in_netns(ns_path, sys::sock_diag_socket)?)
    }

    fn wrap(fd: OwnedFd) -> io::Result<Self> {
        sys::set_recv_timeout(&fd, ANSWER_TIMEOUT)?;
        Ok(Self {
            fd: Mutex::new(fd),
            seq: AtomicU32::new(1),
        })
    }

    /// The inode of the TCP socket whose local end is `src` and remote end `dst`.
    ///
    /// # Errors
    /// I/O errors, an error answer other than "no such socket", or a malformed
    /// answer: the caller falls back to the `/proc` table.
    pub(crate) fn tcp_inode(&self, src: SocketAddr, dst: SocketAddr) -> io::Result<Lookup> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let request = request(seq, src, dst);
        let fd = self.fd.lock().unwrap_or_else(PoisonError::into_inner);
        sys::send(&fd, &request)?;
        let mut buf = [0u8; 8192];
        // Answers to earlier, timed-out requests may still be queued: skip them.
        for _ in 0..16 {
            let n = sys::recv(&fd, &mut buf)?;
            if let Some(answer) = answer(&buf[..n.min(buf.len())], seq)? {
                return Ok(answer);
            }
        }
        Err(io::Error::other("sock_diag: no answer to the request"))
    }
}

/// Unmapped address: an IPv4-mapped IPv6 address is its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// `nlmsghdr` + `inet_diag_req_v2` for an exact lookup (no `NLM_F_DUMP`).
fn request(seq: u32, src: SocketAddr, dst: SocketAddr) -> [u8; NLMSG_HDR + REQ_LEN] {
    let (s_ip, d_ip) = (canonical(src.ip()), canonical(dst.ip()));
    let v4 = s_ip.is_ipv4() && d_ip.is_ipv4();
    let mut m = [0u8; NLMSG_HDR + REQ_LEN];
    let len = (NLMSG_HDR + REQ_LEN) as u32;
    m[..NLMSG_HDR].copy_from_slice(&header(len, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq));
    let r = &mut m[NLMSG_HDR..];
    r[0] = if v4 { AF_INET } else { AF_INET6 };
    r[1] = IPPROTO_TCP;
    // r[2] ext = 0, r[3] pad; states: all.
    r[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    // inet_diag_sockid at r[8..56]: sport, dport (big-endian), src[16], dst[16], if, cookie[2].
    r[8..10].copy_from_slice(&src.port().to_be_bytes());
    r[10..12].copy_from_slice(&dst.port().to_be_bytes());
    put_addr(&mut r[12..28], s_ip, v4);
    put_addr(&mut r[28..44], d_ip, v4);
    // idiag_if 0; cookie INET_DIAG_NOCOOKIE (all ones): no cookie check.
    r[48..56].fill(0xff);
    m
}

fn put_addr(out: &mut [u8], ip: IpAddr, v4: bool) {
    match ip {
        IpAddr::V4(a) if v4 => out[..4].copy_from_slice(&a.octets()),
        IpAddr::V4(a) => out.copy_from_slice(&a.to_ipv6_mapped().octets()),
        IpAddr::V6(a) => out.copy_from_slice(&a.octets()),
    }
}

/// Parses one datagram: `Ok(Some(..))` for the answer to `seq`, `Ok(None)`
/// when the datagram answers another request.
fn answer(data: &[u8], seq: u32) -> io::Result<Option<Lookup>> {
    let malformed = || io::Error::other("sock_diag: malformed answer");
    for msg in messages(data) {
        let msg = msg.map_err(|_| malformed())?;
        if msg.seq != seq {
            continue;
        }
        return match msg.msg_type {
            NLMSG_ERROR => match msg.errno().ok_or_else(malformed)? {
                libc::ENOENT => Ok(Some(Lookup::NotFound)),
                errno => Err(io::Error::from_raw_os_error(errno)),
            },
            SOCK_DIAG_BY_FAMILY => {
                let body = msg.body().get(..MSG_LEN).ok_or_else(malformed)?;
                let state = body[1];
                let inode = u32_at(body, 68).ok_or_else(malformed)?;
                // inet_diag_sockid.idiag_cookie[2] at 44: low word, high word.
                let lo = u32_at(body, 44).ok_or_else(malformed)?;
                let hi = u32_at(body, 48).ok_or_else(malformed)?;
                Ok(Some(if state == TCP_ESTABLISHED && inode != 0 {
                    Lookup::Socket {
                        inode: u64::from(inode),
                        cookie: u64::from(hi) << 32 | u64::from(lo),
                    }
                } else {
                    Lookup::NotFound
                }))
            }
            _ => Err(malformed()),
        };
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    #[allow(clippy::disallowed_methods)] // test: dials its own local listener
    fn finds_a_live_socket_and_not_a_made_up_one() {
        let diag = SockDiag::open().expect("sock_diag socket");
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (_server, _) = l.accept().expect("accept");
        let (src, dst) = (
            client.local_addr().expect("src"),
            client.peer_addr().expect("dst"),
        );
        let Lookup::Socket { inode, cookie } = diag.tcp_inode(src, dst).expect("lookup") else {
            panic!("live socket not found");
        };
        // The inode is the one behind the client's descriptor.
        let link = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&client)
        ))
        .expect("fd link");
        assert_eq!(link.to_string_lossy(), format!("socket:[{inode}]"));
        assert_ne!(cookie, 0);
        // The same tuple reversed is the server side, a different socket.
        let Lookup::Socket {
            inode: other,
            cookie: other_cookie,
        } = diag.tcp_inode(dst, src).expect("lookup")
        else {
            panic!("server side not found");
        };
        assert_ne!((other, other_cookie), (inode, cookie));
        // A port nobody uses.
        let mut gone = src;
        gone.set_port(1);
        assert_eq!(diag.tcp_inode(gone, dst).expect("lookup"), Lookup::NotFound);
    }

    #[test]
    fn ipv4_mapped_addresses_are_looked_up_as_ipv4() {
        let r = request(
            7,
            "[::ffff:127.0.0.1]:4000".parse().unwrap(),
            "127.0.0.2:80".parse().unwrap(),
        );
        assert_eq!(r[NLMSG_HDR], AF_INET);
        assert_eq!(&r[NLMSG_HDR + 12..NLMSG_HDR + 16], &[127, 0, 0, 1]);
        assert_eq!(&r[NLMSG_HDR + 28..NLMSG_HDR + 32], &[127, 0, 0, 2]);
        assert_eq!(&r[NLMSG_HDR + 8..NLMSG_HDR + 10], &4000u16.to_be_bytes());
    }

    #[test]
    fn answers_are_matched_by_sequence_and_bounded() {
        // A stale answer (other seq) is skipped; a short or overlong one is refused.
        let mut stale = vec![0u8; NLMSG_HDR + 4];
        stale[0..4].copy_from_slice(&((NLMSG_HDR + 4) as u32).to_ne_bytes());
        stale[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        stale[8..12].copy_from_slice(&3u32.to_ne_bytes());
        assert!(answer(&stale, 4).expect("parsed").is_none());
        stale[8..12].copy_from_slice(&4u32.to_ne_bytes());
        stale[16..20].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        assert_eq!(answer(&stale, 4).expect("parsed"), Some(Lookup::NotFound));
        let mut short = stale.clone();
        short[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        assert!(answer(&short, 4).is_err());
        let mut overlong = stale;
        overlong[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(answer(&overlong, 4).is_err());
    }
}
