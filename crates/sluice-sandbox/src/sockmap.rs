//! A kernel socket-to-socket redirect (BPF sockhash + `sk_skb` stream
//! verdict), kept to measure it against the relay's `splice(2)`; the relay
//! does not use it.
//!
//! Issue 22 asked whether raw tunnels should move their bytes inside the
//! kernel. This module builds exactly that: both sockets of a tunnel go into
//! a sockhash keyed by socket cookie, and a verdict program redirects every
//! received buffer to the peer's sending side, counting the bytes per
//! direction (the counts an audit event would need). `bench/sockmap` runs
//! it against `splice(2)` and a direct connection. What it showed on this
//! kernel (see `docs/benchmarks.md`, "Kernel redirect (sockmap)") is why the
//! relay keeps `splice(2)`:
//!
//! * no back-pressure: the kernel takes each buffer off the receiving
//!   socket (reopening its window) and queues it on the peer's psock
//!   without a limit, so a sender facing a receiver that stops reading can
//!   queue gigabytes of kernel memory (the `splice` relay holds a few socket
//!   buffers); `tests::a_stalled_reader_does_not_stop_the_sender` shows it;
//! * redirected bytes are sent from a kernel worker, which cost more machine
//!   CPU per GiB than `splice` and gave lower throughput.
//!
//! Loading needs root (CAP_BPF, CAP_NET_ADMIN).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::ebpf::{
    insn, ld_map, ATOMIC_ADD_DW, CALL, EXIT, FN_GET_SOCKET_COOKIE, FN_MAP_LOOKUP_ELEM, JEQ_IMM,
    LDX_DW, LICENSE, MOV64_IMM, MOV64_REG, STX_DW,
};
use crate::sys;

/// `BPF_MAP_TYPE_HASH`, `BPF_MAP_TYPE_SOCKHASH`.
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_SOCKHASH: u32 = 18;
/// `BPF_PROG_TYPE_SK_SKB`; `BPF_SK_SKB_STREAM_VERDICT`.
const BPF_PROG_TYPE_SK_SKB: u32 = 14;
const BPF_SK_SKB_STREAM_VERDICT: u32 = 5;
/// `bpf_sk_redirect_hash` (`enum bpf_func_id`).
const FN_SK_REDIRECT_HASH: i32 = 72;
/// `SK_PASS`: leave the buffer to the socket's reader.
const SK_PASS: i32 = 1;
/// `BPF_LDX | BPF_MEM | BPF_W`.
const LDX_W: u8 = 0x61;
/// Sockets the map holds (two per tunnel).
const SOCKETS: u32 = 4096;

/// The sockhash, the peer table and the attached verdict program.
#[derive(Debug)]
pub struct SockmapRedirect {
    /// Socket cookie -> socket.
    sockets: OwnedFd,
    /// Socket cookie -> (peer's cookie, bytes redirected from this socket).
    peers: OwnedFd,
    _program: OwnedFd,
}

impl SockmapRedirect {
    /// Creates the maps and attaches the verdict program to the sockhash.
    ///
    /// # Errors
    /// Any `bpf(2)` failure (no privilege, a kernel without sockhash).
    pub fn load() -> io::Result<Self> {
        let sockets =
            sys::bpf_map_create(BPF_MAP_TYPE_SOCKHASH, 8, 8, SOCKETS, name(b"sluice_socks"))?;
        let peers = sys::bpf_map_create(BPF_MAP_TYPE_HASH, 8, 16, SOCKETS, name(b"sluice_peers"))?;
        let program = sys::bpf_prog_load(
            BPF_PROG_TYPE_SK_SKB,
            0,
            &verdict_program(&sockets, &peers),
            LICENSE,
            name(b"sluice_redirect"),
        )?;
        sys::bpf_prog_attach(&program, &sockets, BPF_SK_SKB_STREAM_VERDICT)?;
        Ok(Self {
            sockets,
            peers,
            _program: program,
        })
    }

    /// Redirects everything `a` receives to `b`'s sending side and the
    /// other way round, until either socket closes. Bytes already queued on
    /// either socket are processed at once (`SO_RCVLOWAT` re-runs the
    /// socket's data-ready path, which now runs the verdict).
    ///
    /// # Errors
    /// A `bpf(2)` or `setsockopt` failure (e.g. the map is full).
    pub fn pair(&self, a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> io::Result<()> {
        let (ca, cb) = (sys::socket_cookie(a)?, sys::socket_cookie(b)?);
        sys::bpf_map_update(&self.peers, ca, [cb, 0])?;
        sys::bpf_map_update(&self.peers, cb, [ca, 0])?;
        sys::bpf_map_update(&self.sockets, ca, u64::from(a.as_raw_fd().unsigned_abs()))?;
        sys::bpf_map_update(&self.sockets, cb, u64::from(b.as_raw_fd().unsigned_abs()))?;
        sys::set_rcvlowat(a, 1)?;
        sys::set_rcvlowat(b, 1)
    }

    /// Bytes redirected away from `from` so far.
    ///
    /// # Errors
    /// A `bpf(2)` failure; `NotFound` if `from` was never paired.
    pub fn redirected(&self, from: BorrowedFd<'_>) -> io::Result<u64> {
        let cookie = sys::socket_cookie(from)?;
        sys::bpf_map_lookup_u64_pair(&self.peers, cookie)?
            .map(|[_, bytes]| bytes)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "socket not paired"))
    }
}

/// Bytes ever queued on a TCP socket's sending side (acknowledged plus
/// in flight): once it has grown by [`SockmapRedirect::redirected`] from the
/// peer, the kernel has handed every redirected byte to this socket and a
/// half-close cannot overtake them.
///
/// # Errors
/// The `getsockopt`/`ioctl` error.
pub fn tcp_bytes_queued(fd: impl AsFd) -> io::Result<u64> {
    sys::tcp_bytes_queued(fd.as_fd())
}

fn name(text: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let n = text.len().min(15);
    out[..n].copy_from_slice(&text[..n]);
    out
}

/// ```text
/// r6 = r1                               ; struct __sk_buff *
/// r0 = bpf_get_socket_cookie(skb) ; *(u64 *)(r10 - 8) = r0
/// r0 = bpf_map_lookup_elem(peers, r10 - 8)
/// if r0 == 0 goto pass
/// r7 = skb->len ; lock *(u64 *)(r0 + 8) += r7
/// r1 = *(u64 *)(r0 + 0) ; *(u64 *)(r10 - 16) = r1
/// return bpf_sk_redirect_hash(skb, sockets, r10 - 16, 0)   ; 0: egress
/// pass: return SK_PASS
/// ```
fn verdict_program(sockets: &OwnedFd, peers: &OwnedFd) -> Vec<[u8; 8]> {
    let mut p = vec![
        insn(MOV64_REG, 6, 1, 0, 0),
        insn(CALL, 0, 0, 0, FN_GET_SOCKET_COOKIE),
        insn(STX_DW, 10, 0, -8, 0),
    ];
    p.extend(ld_map(1, peers));
    p.extend([
        insn(MOV64_REG, 2, 10, 0, 0),
        insn(crate::ebpf::ADD64_IMM, 2, 0, 0, -8),
        insn(CALL, 0, 0, 0, FN_MAP_LOOKUP_ELEM),
        insn(JEQ_IMM, 0, 0, 12, 0),
        insn(LDX_W, 7, 6, 0, 0),
        insn(ATOMIC_ADD_DW, 0, 7, 8, 0),
        insn(LDX_DW, 1, 0, 0, 0),
        insn(STX_DW, 10, 1, -16, 0),
        insn(MOV64_REG, 1, 6, 0, 0),
    ]);
    p.extend(ld_map(2, sockets));
    p.extend([
        insn(MOV64_REG, 3, 10, 0, 0),
        insn(crate::ebpf::ADD64_IMM, 3, 0, 0, -16),
        insn(MOV64_IMM, 4, 0, 0, 0),
        insn(CALL, 0, 0, 0, FN_SK_REDIRECT_HASH),
        insn(EXIT, 0, 0, 0, 0),
        insn(MOV64_IMM, 0, 0, 0, SK_PASS),
        insn(EXIT, 0, 0, 0, 0),
    ]);
    p
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;
    use std::time::{Duration, Instant};

    use super::*;

    /// client -> (a | b) -> server on loopback.
    #[allow(clippy::disallowed_methods)] // test: dials its own local listeners
    fn topology() -> (TcpStream, TcpStream, TcpStream, TcpStream) {
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let back = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(front.local_addr().unwrap()).unwrap();
        let (a, _) = front.accept().unwrap();
        let b = TcpStream::connect(back.local_addr().unwrap()).unwrap();
        let (server, _) = back.accept().unwrap();
        (client, a, b, server)
    }

    fn loaded() -> Option<SockmapRedirect> {
        match SockmapRedirect::load() {
            Ok(map) => Some(map),
            // Unprivileged runs (not CI, which is root) cannot load it.
            Err(e) if !nix::unistd::geteuid().is_root() => {
                eprintln!("skipped: not root ({e})");
                None
            }
            Err(e) => panic!("sockhash and sk_skb programs must load as root: {e}"),
        }
    }

    #[test]
    fn redirects_both_ways_in_order_and_counts_the_bytes() {
        let Some(map) = loaded() else { return };
        let (mut client, a, b, mut server) = topology();
        // Sent before the pair exists: must still arrive, first.
        client.write_all(b"early ").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        map.pair(a.as_fd(), b.as_fd()).unwrap();
        // Nothing else arrives until it is through: the pairing itself ran
        // the verdict on the waiting bytes.
        server
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut early = [0u8; 6];
        server.read_exact(&mut early).unwrap();
        assert_eq!(&early, b"early ");
        let base = tcp_bytes_queued(&b).unwrap();
        let body: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&body).unwrap();
        let mut got = vec![0u8; body.len()];
        server.read_exact(&mut got).unwrap();
        assert_eq!(got, body);
        server.write_all(b"reply").unwrap();
        let mut reply = [0u8; 5];
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        client.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"reply");
        assert_eq!(map.redirected(a.as_fd()).unwrap(), 6 + body.len() as u64);
        assert_eq!(map.redirected(b.as_fd()).unwrap(), 5);
        // Every redirected byte was handed to `b` (the drain condition a
        // half-close would wait for).
        let deadline = Instant::now() + Duration::from_secs(5);
        while tcp_bytes_queued(&b).unwrap() - base < body.len() as u64 {
            assert!(
                Instant::now() < deadline,
                "redirected bytes never reached b"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The property that keeps it out of the relay: with the server not
    /// reading, the sender is never pushed back; the bytes pile up in the
    /// kernel beyond every socket buffer on the path.
    #[test]
    fn a_stalled_reader_does_not_stop_the_sender() {
        let Some(map) = loaded() else { return };
        let (client, a, b, server) = topology();
        map.pair(a.as_fd(), b.as_fd()).unwrap();
        client.set_nonblocking(true).unwrap();
        // What the four sockets can buffer at most (autotuning's maxima).
        let max = |path: &str| -> u64 {
            let text = std::fs::read_to_string(path).unwrap();
            text.split_whitespace().nth(2).unwrap().parse().unwrap()
        };
        let buffers = 4 * (max("/proc/sys/net/ipv4/tcp_rmem") + max("/proc/sys/net/ipv4/tcp_wmem"));
        let cap = 3 * buffers;
        let chunk = vec![1u8; 1 << 20];
        let (mut sent, mut idle_since) = (0u64, Instant::now());
        while sent < cap && idle_since.elapsed() < Duration::from_secs(2) {
            match (&client).write(&chunk) {
                Ok(n) => {
                    sent += n as u64;
                    idle_since = Instant::now();
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        assert!(
            sent > 2 * buffers,
            "the sender was held back after {sent} bytes (socket buffers at most {buffers}): \
             this kernel back-pressures sockmap redirects; revisit the relay's choice"
        );
        drop(server);
    }
}
