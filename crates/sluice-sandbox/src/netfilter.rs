//! Pure encoders and decoders for the netfilter netlink messages the bypass monitor
//! uses (NFLOG, `nfnetlink_log`), a parser for the IP/TCP/UDP headers of a logged
//! packet, and builders for the refusal the monitor injects (a TCP reset or an ICMP
//! port unreachable for an IPv4 packet). No I/O here; everything is unit-tested with
//! literal bytes.
//!
//! Layouts (from `linux/netfilter/nfnetlink_log.h`, `linux/netlink.h`):
//! `nlmsghdr` (len, type, flags, seq, pid; host order) · `nfgenmsg` (family, version,
//! res_id big-endian) · attributes (`nlattr` len/type host order, payload padded to 4).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::netlink::{
    align4, header, messages, u16_at, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, NLM_F_ACK,
    NLM_F_REQUEST,
};

const NFGEN_HDRLEN: usize = 4;
const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_TIMEOUT: u16 = 4;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PAYLOAD: u16 = 9;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// Bytes of each logged packet copied to user space: enough for the IP header, the
/// TCP header (for the reset's acknowledgement number) and the 8 bytes an ICMP error
/// quotes.
pub const COPY_RANGE: u32 = 128;

/// Builder for one netfilter netlink message.
struct Msg(Vec<u8>);

impl Msg {
    fn new(msg_type: u16, flags: u16, seq: u32, res_id: u16) -> Self {
        let mut b = Vec::with_capacity(64);
        // Length 0, patched in `finish`.
        b.extend_from_slice(&header(0, (NFNL_SUBSYS_ULOG << 8) | msg_type, flags, seq));
        // nfgenmsg: AF_UNSPEC, NFNETLINK_V0, res_id (log group) big-endian.
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&res_id.to_be_bytes());
        Self(b)
    }

    fn attr(mut self, attr_type: u16, payload: &[u8]) -> Self {
        let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&attr_type.to_ne_bytes());
        self.0.extend_from_slice(payload);
        self.0.resize(align4(self.0.len()), 0);
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.0.len()).unwrap_or(u32::MAX);
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

/// `NFULNL_CFG_CMD_BIND` for log `group` (acknowledged).
#[must_use]
pub fn log_bind(group: u16, seq: u32) -> Vec<u8> {
    Msg::new(NFULNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, group)
        .attr(NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND])
        .finish()
}

/// Copy mode (`COPY_PACKET`, [`COPY_RANGE`] bytes) and immediate delivery (queue
/// threshold 1, flush timeout 10 ms) for `group` (acknowledged).
#[must_use]
pub fn log_mode(group: u16, seq: u32) -> Vec<u8> {
    // struct nfulnl_msg_config_mode { __be32 copy_range; u8 copy_mode; u8 _pad; }
    let mut mode = COPY_RANGE.to_be_bytes().to_vec();
    mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
    Msg::new(NFULNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, group)
        .attr(NFULA_CFG_MODE, &mode)
        .attr(NFULA_CFG_QTHRESH, &1u32.to_be_bytes())
        .attr(NFULA_CFG_TIMEOUT, &1u32.to_be_bytes())
        .finish()
}

/// One message received from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A logged packet: the copied bytes from the IP header on.
    Packet {
        /// Network-layer bytes (at most [`COPY_RANGE`]).
        payload: &'a [u8],
    },
    /// An acknowledgement (`errno == 0`) or error (`errno > 0`) for request `seq`.
    Ack {
        /// The request's sequence number.
        seq: u32,
        /// 0 on success, else a positive errno.
        errno: i32,
    },
    /// Anything else (ignored).
    Other,
}

/// Splits one received datagram into messages. Malformed trailing bytes end the walk.
#[must_use]
pub fn parse(datagram: &[u8]) -> Vec<Incoming<'_>> {
    messages(datagram)
        .map_while(Result::ok)
        .map(|msg| match msg.msg_type {
            NLMSG_ERROR => Incoming::Ack {
                seq: msg.seq,
                errno: msg.errno().unwrap_or(0),
            },
            NLMSG_DONE => Incoming::Other,
            t if t == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET => parse_packet(msg.bytes),
            _ => Incoming::Other,
        })
        .collect()
}

fn parse_packet(msg: &[u8]) -> Incoming<'_> {
    let mut at = NLMSG_HDRLEN + NFGEN_HDRLEN;
    while let (Some(len), Some(attr_type)) = (u16_at(msg, at), u16_at(msg, at + 2)) {
        let len = usize::from(len);
        if len < 4 || at + len > msg.len() {
            break;
        }
        if attr_type & NLA_TYPE_MASK == NFULA_PAYLOAD {
            return Incoming::Packet {
                payload: &msg[at + 4..at + len],
            };
        }
        at += align4(len);
    }
    Incoming::Other
}

/// The Internet checksum (RFC 1071) of `parts`, concatenated.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ipv4_header(src: [u8; 4], dst: [u8; 4], proto: u8, payload_len: usize) -> Vec<u8> {
    let total = u16::try_from(20 + payload_len).unwrap_or(u16::MAX);
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let c = checksum(&[&h]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

/// For an IPv4 packet the sandbox sent and the ruleset dropped, the refusal to inject
/// back to the sender (destination = the sender, source = the packet's destination):
/// a RST|ACK acknowledging a TCP SYN (`connect` fails with ECONNREFUSED), or an ICMP
/// port unreachable quoting a UDP datagram (a connected socket gets ECONNREFUSED).
/// `None` for anything else (IPv6, other TCP segments, truncated copies).
#[must_use]
pub fn refusal_v4(packet: &[u8]) -> Option<(Ipv4Addr, Vec<u8>)> {
    if packet.first()? >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let src: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
    let dst: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
    let l4 = packet.get(ihl..)?;
    match *packet.get(9)? {
        6 => {
            let flags = *l4.get(13)?;
            if flags & 0x02 == 0 || flags & 0x10 != 0 {
                return None; // only a bare SYN is answered this way
            }
            let seq = u32::from_be_bytes(l4.get(4..8)?.try_into().ok()?);
            let mut tcp = Vec::with_capacity(20);
            tcp.extend_from_slice(l4.get(2..4)?); // source port = their destination
            tcp.extend_from_slice(l4.get(0..2)?);
            tcp.extend_from_slice(&0u32.to_be_bytes());
            tcp.extend_from_slice(&seq.wrapping_add(1).to_be_bytes());
            tcp.extend_from_slice(&[0x50, 0x14, 0, 0, 0, 0, 0, 0]); // RST|ACK, window 0
            let mut pseudo = Vec::with_capacity(12);
            pseudo.extend_from_slice(&dst);
            pseudo.extend_from_slice(&src);
            pseudo.extend_from_slice(&[0, 6, 0, 20]);
            let c = checksum(&[&pseudo, &tcp]);
            tcp[16..18].copy_from_slice(&c.to_be_bytes());
            let mut out = ipv4_header(dst, src, 6, tcp.len());
            out.extend_from_slice(&tcp);
            Some((src.into(), out))
        }
        17 => {
            let quoted = packet.get(..ihl + 8)?;
            let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
            icmp.extend_from_slice(quoted);
            let c = checksum(&[&icmp]);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            let mut out = ipv4_header(dst, src, 1, icmp.len());
            out.extend_from_slice(&icmp);
            Some((src.into(), out))
        }
        _ => None,
    }
}

/// Transport protocol of a refused packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// Any other IP protocol number.
    Other(u8),
}

impl L4 {
    /// Lower-case protocol name (`tcp`, `udp`, or the number).
    #[must_use]
    pub fn name(self) -> String {
        match self {
            Self::Tcp => "tcp".into(),
            Self::Udp => "udp".into(),
            Self::Other(n) => n.to_string(),
        }
    }
}

/// The addresses of a packet's flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// Transport protocol.
    pub proto: L4,
    /// Source (the sandboxed socket).
    pub src: SocketAddr,
    /// Destination.
    pub dst: SocketAddr,
}

/// Parses the IPv4/IPv6 header and the TCP/UDP ports of a packet copied from the
/// output hook. IPv6 extension headers are not followed (ports are then 0).
#[must_use]
pub fn parse_flow(packet: &[u8]) -> Option<Flow> {
    let version = packet.first()? >> 4;
    let (proto, src, dst, l4) = match version {
        4 => {
            let ihl = usize::from(packet.first()? & 0x0f) * 4;
            if ihl < 20 || packet.len() < 20 {
                return None;
            }
            let src: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            (
                packet[9],
                IpAddr::V4(Ipv4Addr::from(src)),
                IpAddr::V4(Ipv4Addr::from(dst)),
                packet.get(ihl..).unwrap_or_default(),
            )
        }
        6 => {
            let src: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            (
                *packet.get(6)?,
                IpAddr::V6(Ipv6Addr::from(src)),
                IpAddr::V6(Ipv6Addr::from(dst)),
                packet.get(40..).unwrap_or_default(),
            )
        }
        _ => return None,
    };
    let proto = match proto {
        6 => L4::Tcp,
        17 => L4::Udp,
        n => L4::Other(n),
    };
    let (sport, dport) = match (proto, l4.get(..4)) {
        (L4::Tcp | L4::Udp, Some(p)) => (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        ),
        _ => (0, 0),
    };
    Some(Flow {
        proto,
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_message_layout() {
        let m = log_bind(7, 1);
        assert_eq!(m.len(), 16 + 4 + 8);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 28);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), 0x0401);
        assert_eq!(u16::from_ne_bytes(m[6..8].try_into().unwrap()), 5);
        assert_eq!(&m[18..20], &7u16.to_be_bytes());
        assert_eq!(u16::from_ne_bytes(m[20..22].try_into().unwrap()), 5);
        assert_eq!(m[24], NFULNL_CFG_CMD_BIND);
        // header 20 + mode (4+6 → 12) + qthresh 8 + timeout 8
        assert_eq!(log_mode(7, 2).len(), 48);
    }

    fn packet_msg(payload: &[u8]) -> Vec<u8> {
        Msg::new(NFULNL_MSG_PACKET, 0, 0, 1)
            .attr(1, &[0x08, 0x00, 3, 0])
            .attr(NFULA_PAYLOAD, payload)
            .finish()
    }

    #[test]
    fn parses_packets_and_acks() {
        let mut d = packet_msg(&[1, 2, 3]);
        let mut ack = Vec::new();
        ack.extend_from_slice(&36u32.to_ne_bytes());
        ack.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        ack.extend_from_slice(&0u16.to_ne_bytes());
        ack.extend_from_slice(&5u32.to_ne_bytes());
        ack.extend_from_slice(&0u32.to_ne_bytes());
        ack.extend_from_slice(&(-16i32).to_ne_bytes());
        ack.resize(36, 0);
        d.extend_from_slice(&ack);
        let msgs = parse(&d);
        assert_eq!(
            msgs,
            vec![
                Incoming::Packet {
                    payload: &[1, 2, 3]
                },
                Incoming::Ack { seq: 5, errno: 16 }
            ]
        );
        assert!(parse(&d[..10]).is_empty());
    }

    fn syn() -> Vec<u8> {
        let mut p = ipv4_header([10, 0, 0, 2], [192, 0, 2, 7], 6, 20);
        p.extend_from_slice(&[0xc3, 0x50, 0x00, 0x50, 0, 0, 0x10, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        p
    }

    #[test]
    fn tcp_reset_answers_the_syn() {
        let (to, rst) = refusal_v4(&syn()).unwrap();
        assert_eq!(to, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(checksum(&[&rst[..20]]), 0, "ip checksum");
        let f = parse_flow(&rst).unwrap();
        assert_eq!(f.src, "192.0.2.7:80".parse().unwrap());
        assert_eq!(f.dst, "10.0.0.2:50000".parse().unwrap());
        assert_eq!(&rst[28..32], &0x1001u32.to_be_bytes(), "ack = seq + 1");
        assert_eq!(rst[33], 0x14, "RST|ACK");
        let mut pseudo = vec![192, 0, 2, 7, 10, 0, 0, 2, 0, 6, 0, 20];
        pseudo.extend_from_slice(&rst[20..]);
        assert_eq!(checksum(&[&pseudo]), 0, "tcp checksum");
        let mut ack = syn();
        ack[33] = 0x10;
        assert!(refusal_v4(&ack).is_none());
    }

    #[test]
    fn icmp_unreachable_quotes_the_datagram() {
        let mut udp = ipv4_header([10, 0, 0, 2], [10, 0, 0, 1], 17, 12);
        udp.extend_from_slice(&[0x04, 0xd2, 0x00, 0x35, 0, 12, 0, 0, 1, 2, 3, 4]);
        let (_, icmp) = refusal_v4(&udp).unwrap();
        assert_eq!(icmp[9], 1);
        assert_eq!(&icmp[20..22], &[3, 3]);
        assert_eq!(checksum(&[&icmp[20..]]), 0);
        assert_eq!(&icmp[28..], &udp[..28]);
    }

    #[test]
    fn parses_ipv4_tcp_and_ipv6_udp() {
        let mut v4 = vec![0x45, 0, 0, 60, 0, 0, 0, 0, 64, 6, 0, 0];
        v4.extend_from_slice(&[10, 0, 0, 2, 192, 0, 2, 7]);
        v4.extend_from_slice(&[0xc3, 0x50, 0x00, 0x50]);
        let f = parse_flow(&v4).unwrap();
        assert_eq!(f.proto, L4::Tcp);
        assert_eq!(f.src, "10.0.0.2:50000".parse().unwrap());
        assert_eq!(f.dst, "192.0.2.7:80".parse().unwrap());

        let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0x04, 0xd2, 0x00, 0x35]);
        let f = parse_flow(&v6).unwrap();
        assert_eq!(f.proto, L4::Udp);
        assert_eq!(f.dst, "[2001:db8::1]:53".parse().unwrap());
        assert_eq!(f.src.port(), 1234);
        assert!(parse_flow(&[0x45, 0]).is_none());
        assert!(parse_flow(&[]).is_none());
    }
}
