//! Netlink message framing shared by the netfilter (NFLOG) and sock_diag
//! users: the `nlmsghdr` layout (len, type, flags, seq, pid; host order,
//! messages 4-byte aligned), a bounded walk over one datagram, and the
//! error code of an `NLMSG_ERROR` message. No I/O here.

/// `sizeof(struct nlmsghdr)`.
pub(crate) const NLMSG_HDRLEN: usize = 16;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLM_F_REQUEST: u16 = 1;
pub(crate) const NLM_F_ACK: u16 = 4;

pub(crate) fn align4(n: usize) -> usize {
    (n + 3) & !3
}

pub(crate) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The 16-byte header of a message of `len` bytes in all (header included).
pub(crate) fn header(len: u32, msg_type: u16, flags: u16, seq: u32) -> [u8; NLMSG_HDRLEN] {
    let mut h = [0u8; NLMSG_HDRLEN];
    h[0..4].copy_from_slice(&len.to_ne_bytes());
    h[4..6].copy_from_slice(&msg_type.to_ne_bytes());
    h[6..8].copy_from_slice(&flags.to_ne_bytes());
    h[8..12].copy_from_slice(&seq.to_ne_bytes());
    // pid 0: the kernel fills in the sender's port id.
    h
}

/// One message of a datagram.
pub(crate) struct Message<'a> {
    pub(crate) msg_type: u16,
    pub(crate) seq: u32,
    /// The whole message, header included.
    pub(crate) bytes: &'a [u8],
}

impl Message<'_> {
    /// The payload after the header.
    pub(crate) fn body(&self) -> &[u8] {
        &self.bytes[NLMSG_HDRLEN..]
    }

    /// For `NLMSG_ERROR`: 0 (an acknowledgement) or a positive errno.
    pub(crate) fn errno(&self) -> Option<i32> {
        let code = u32_at(self.bytes, NLMSG_HDRLEN)? as i32;
        Some(code.checked_neg().unwrap_or(i32::MAX))
    }
}

/// A message header whose length does not fit the datagram.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Malformed;

/// The messages of one datagram in order; a header whose length is shorter
/// than a header or runs past the datagram yields [`Malformed`] and ends the
/// walk. Trailing bytes shorter than a header are ignored.
pub(crate) fn messages(datagram: &[u8]) -> impl Iterator<Item = Result<Message<'_>, Malformed>> {
    let mut at = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done || datagram.len().saturating_sub(at) < NLMSG_HDRLEN {
            return None;
        }
        let (len, msg_type) = (u32_at(datagram, at)?, u16_at(datagram, at + 4)?);
        let len = len as usize;
        if len < NLMSG_HDRLEN || len > datagram.len() - at {
            done = true;
            return Some(Err(Malformed));
        }
        let bytes = &datagram[at..at + len];
        at += align4(len);
        Some(Ok(Message {
            msg_type,
            seq: u32_at(bytes, 8).unwrap_or(0),
            bytes,
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_aligned_messages_and_stops_at_a_bad_length() {
        let mut d = Vec::new();
        d.extend_from_slice(&header(18, 7, 0, 1));
        d.extend_from_slice(&[1, 2, 0, 0]); // 2 payload bytes + 2 padding
        d.extend_from_slice(&header(20, NLMSG_ERROR, 0, 2));
        d.extend_from_slice(&(-5i32).to_ne_bytes());
        d.extend_from_slice(&header(999, 7, 0, 3));
        let got: Vec<_> = messages(&d).collect();
        assert_eq!(got.len(), 3);
        let first = got[0].as_ref().expect("first");
        assert_eq!(
            (first.msg_type, first.seq, first.body()),
            (7, 1, &[1u8, 2][..])
        );
        let second = got[1].as_ref().expect("second");
        assert_eq!((second.msg_type, second.errno()), (NLMSG_ERROR, Some(5)));
        assert!(got[2].is_err());
        // A length shorter than the header is malformed too; a short tail is ignored.
        assert!(messages(&header(4, 7, 0, 1)).next().expect("one").is_err());
        assert!(messages(&[0u8; 10]).next().is_none());
    }
}
