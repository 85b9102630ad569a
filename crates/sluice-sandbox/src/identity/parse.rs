//! Pure parsers for the `/proc` text and byte formats used by process identity.
//!
//! Nothing here touches the file system, so every function is unit-tested with literal
//! `/proc` content.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `st` value of an ESTABLISHED socket in `/proc/net/tcp{,6}`.
pub(crate) const TCP_ESTABLISHED: u8 = 0x01;

/// Suffix the kernel appends to `/proc/<pid>/exe` link text when the binary was unlinked.
pub(crate) const DELETED_SUFFIX: &str = " (deleted)";

/// At most this many absolute paths are kept from one command line.
pub(crate) const MAX_CMDLINE_PATHS: usize = 64;

/// At most this many pids are taken from one `task/<tid>/children` file.
pub(crate) const MAX_CHILDREN_PER_FILE: usize = 65_536;

/// Byte order of each 32-bit word of an address in `/proc/net/tcp{,6}`.
///
/// The kernel prints each `__be32` word of the address as a host-order `%08X`, so on a
/// little-endian host every word appears byte-reversed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WordOrder {
    Little,
    Big,
}

impl WordOrder {
    /// The order of the host we run on (what the local kernel prints).
    pub(crate) const NATIVE: Self = if cfg!(target_endian = "big") {
        Self::Big
    } else {
        Self::Little
    };

    fn word_bytes(self, word: u32) -> [u8; 4] {
        match self {
            Self::Little => word.to_le_bytes(),
            Self::Big => word.to_be_bytes(),
        }
    }
}

/// One parsed row of `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpEntry {
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
    pub(crate) state: u8,
    pub(crate) inode: u64,
}

/// Parses a fixed-width hexadecimal field; rejects signs and anything but hex digits.
fn parse_hex_u32(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// Parses `0100007F:1F90` (IPv4) or a 32-hex-digit IPv6 address with port.
pub(crate) fn parse_hex_socket_addr(s: &str, order: WordOrder) -> Option<SocketAddr> {
    let (ip_hex, port_hex) = s.split_once(':')?;
    if port_hex.len() != 4 {
        return None;
    }
    let port = u16::try_from(parse_hex_u32(port_hex)?).ok()?;
    let ip = match ip_hex.len() {
        8 => IpAddr::V4(Ipv4Addr::from(order.word_bytes(parse_hex_u32(ip_hex)?))),
        32 => {
            let mut octets = [0u8; 16];
            for (i, chunk) in octets.chunks_exact_mut(4).enumerate() {
                let word_hex = ip_hex.get(i * 8..i * 8 + 8)?;
                chunk.copy_from_slice(&order.word_bytes(parse_hex_u32(word_hex)?));
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Parses one data row. Returns `None` for anything malformed.
pub(crate) fn parse_tcp_line(line: &str, order: WordOrder) -> Option<TcpEntry> {
    // sl local rem st tx:rx tr:tm retrnsmt uid timeout inode ...
    let mut fields = line.split_ascii_whitespace();
    let sl = fields.next()?;
    if !sl.ends_with(':') {
        return None;
    }
    let local = parse_hex_socket_addr(fields.next()?, order)?;
    let remote = parse_hex_socket_addr(fields.next()?, order)?;
    let st = fields.next()?;
    if st.len() != 2 {
        return None;
    }
    let state = u8::try_from(parse_hex_u32(st)?).ok()?;
    let inode_field = fields.nth(5)?;
    if !inode_field.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let inode = inode_field.parse().ok()?;
    Some(TcpEntry {
        local,
        remote,
        state,
        inode,
    })
}

/// `(ip, port)` with IPv4-mapped IPv6 folded to IPv4 (flow info and scope id ignored).
pub(crate) fn normalize(addr: SocketAddr) -> (IpAddr, u16) {
    (addr.ip().to_canonical(), addr.port())
}

/// Finds the inode of the ESTABLISHED socket whose local end is `peer` and remote end is
/// `local` in a whole `/proc/net/tcp{,6}` file.
///
/// Header and blank lines are skipped; rows with inode 0 never match. On a malformed row
/// returns `Err(line_number)` (1-based).
pub(crate) fn find_established_inode(
    table: &str,
    order: WordOrder,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<Option<u64>, usize> {
    let want_local = normalize(peer);
    let want_remote = normalize(local);
    for (idx, line) in table.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with("sl ") {
            continue;
        }
        let entry = parse_tcp_line(trimmed, order).ok_or(idx + 1)?;
        if entry.state == TCP_ESTABLISHED
            && entry.inode != 0
            && normalize(entry.local) == want_local
            && normalize(entry.remote) == want_remote
        {
            return Ok(Some(entry.inode));
        }
    }
    Ok(None)
}

/// Finds the inode of the socket for an outgoing flow `local -> remote` in a whole
/// `/proc/net/{tcp,udp}{,6}` file, in any state (a bypassing TCP socket is in
/// SYN_SENT). With `wildcard`, a row whose local address is unspecified (an unbound
/// UDP socket) or whose remote is unset (an unconnected UDP socket) also matches;
/// exact rows win. Rows with inode 0 never match. `Err(line_number)` on a malformed row.
pub(crate) fn find_flow_inode(
    table: &str,
    order: WordOrder,
    local: SocketAddr,
    remote: SocketAddr,
    wildcard: bool,
) -> Result<Option<u64>, usize> {
    let (want_ip, want_port) = normalize(local);
    let want_remote = normalize(remote);
    let mut loose = None;
    for (idx, line) in table.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with("sl ") {
            continue;
        }
        let entry = parse_tcp_line(trimmed, order).ok_or(idx + 1)?;
        let (ip, port) = normalize(entry.local);
        if entry.inode == 0 || port != want_port {
            continue;
        }
        let rem = normalize(entry.remote);
        if ip == want_ip && rem == want_remote {
            return Ok(Some(entry.inode));
        }
        if wildcard
            && loose.is_none()
            && (ip == want_ip || ip.is_unspecified())
            && (rem == want_remote || rem.1 == 0)
        {
            loose = Some(entry.inode);
        }
    }
    Ok(loose)
}

/// Extracts the `PPid:` value from `/proc/<pid>/status`.
pub(crate) fn parse_ppid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("PPid:"))
        .and_then(|rest| rest.trim().parse().ok())
}

/// The parent pid from `/proc/<pid>/stat` (`pid (comm) state ppid ...`):
/// cheaper for the kernel to render than `status`. `comm` may hold spaces
/// and parentheses, so the fields are read after the *last* `)`.
pub(crate) fn parse_stat_ppid(stat: &str) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_ascii_whitespace();
    let _state = fields.next()?;
    fields.next()?.parse().ok()
}

/// Extracts the inode from an fd link text such as `socket:[12345]`.
pub(crate) fn parse_socket_inode(link: &str) -> Option<u64> {
    let digits = link.strip_prefix("socket:[")?.strip_suffix(']')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Parses a whitespace-separated pid list (`/proc/<pid>/task/<tid>/children`).
/// Non-numeric tokens are ignored; at most [`MAX_CHILDREN_PER_FILE`] pids are returned.
pub(crate) fn parse_pid_list(text: &str) -> Vec<u32> {
    text.split_ascii_whitespace()
        .filter_map(|tok| tok.parse().ok())
        .take(MAX_CHILDREN_PER_FILE)
        .collect()
}

/// Splits `/proc/<pid>/cmdline` (NUL-terminated arguments) into arguments.
/// Invalid UTF-8 is replaced; one trailing terminator does not produce an empty argument.
pub(crate) fn split_cmdline(raw: &[u8]) -> Vec<String> {
    let body = raw.strip_suffix(&[0]).unwrap_or(raw);
    if body.is_empty() {
        return Vec::new();
    }
    body.split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// Absolute-path arguments of a command line, de-duplicated, in order, excluding any
/// path in `exclude` (the exe and ancestor exes). Capped at [`MAX_CMDLINE_PATHS`].
pub(crate) fn cmdline_abs_paths(raw: &[u8], exclude: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for arg in split_cmdline(raw) {
        if out.len() >= MAX_CMDLINE_PATHS {
            break;
        }
        if arg.starts_with('/') && !exclude.contains(&arg.as_str()) && !out.contains(&arg) {
            out.push(arg);
        }
    }
    out
}

/// Removes the kernel's ` (deleted)` marker from exe link text, but only when the literal
/// path is not itself the running binary (a file may really be named `x (deleted)`).
pub(crate) fn strip_deleted_suffix(link: &str, literal_is_target: bool) -> &str {
    match link.strip_suffix(DELETED_SUFFIX) {
        Some(stripped) if !literal_is_target => stripped,
        _ => link,
    }
}

/// Lowercase hexadecimal encoding.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
