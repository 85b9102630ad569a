//! A minimal RFC 6455 WebSocket client and echo server: the opening
//! handshake, text/binary/ping/close frames with 7/16/64-bit lengths,
//! client masking. Enough for the echo benchmark, nothing more (no
//! fragmentation on send, no extensions).

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const MAX_HEAD: usize = 16 * 1024;
/// Largest frame payload accepted.
const MAX_PAYLOAD: usize = 16 * 1024 * 1024;
/// The fixed client key and mask (a benchmark needs no unpredictability).
const CLIENT_KEY: &str = "c2x1aWNlLWJlbmNoLWtleQ==";
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// SHA-1 (FIPS 180-4), for `Sec-WebSocket-Accept` only.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, c) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (hv, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *hv = hv.wrapping_add(v);
        }
    }
    let mut out = [0u8; 20];
    for (o, v) in out.chunks_exact_mut(4).zip(h) {
        o.copy_from_slice(&v.to_be_bytes());
    }
    out
}

fn accept_key(key: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(sha1(format!("{key}{GUID}").as_bytes()))
}

/// Reads an HTTP head (up to `\r\n\r\n`) into `buf`; returns its length.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S, buf: &mut BytesMut) -> anyhow::Result<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(i + 4);
        }
        if buf.len() > MAX_HEAD {
            bail!("HTTP head too long");
        }
        buf.reserve(4096);
        if s.read_buf(buf).await? == 0 {
            bail!("connection closed inside an HTTP head");
        }
    }
}

/// Sends the upgrade request for `path` on `s` and checks the `101`
/// (status and `Sec-WebSocket-Accept`). Returns bytes read past the head.
pub(crate) async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    host: &str,
    path: &str,
) -> anyhow::Result<BytesMut> {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {CLIENT_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(8192);
    let n = read_head(s, &mut buf)
        .await
        .context("WebSocket handshake")?;
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "101" {
        bail!(
            "WebSocket upgrade refused: {}",
            head.lines().next().unwrap_or_default()
        );
    }
    let want = accept_key(CLIENT_KEY);
    let ok = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == want
        })
    });
    if !ok {
        bail!("bad Sec-WebSocket-Accept in {head:?}");
    }
    buf.advance(n);
    Ok(buf)
}

fn frame_header(out: &mut Vec<u8>, opcode: u8, len: usize, masked: bool) {
    out.push(0x80 | opcode);
    let m = if masked { 0x80 } else { 0 };
    if len < 126 {
        out.push(m | len as u8);
    } else if let Ok(l) = u16::try_from(len) {
        out.push(m | 126);
        out.extend_from_slice(&l.to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// A masked text frame carrying `len` bytes of `x`.
pub(crate) fn client_text_frame(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 14);
    frame_header(&mut out, 1, len, true);
    out.extend_from_slice(&MASK);
    out.extend((0..len).map(|i| b'x' ^ MASK[i % 4]));
    out
}

/// Reads one complete frame; returns (opcode, payload), unmasked.
async fn read_frame_payload<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
) -> anyhow::Result<(u8, Vec<u8>)> {
    loop {
        if buf.len() >= 2 {
            let opcode = buf[0] & 0x0f;
            let masked = buf[1] & 0x80 != 0;
            let (len, mut off) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
                127 if buf.len() >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&buf[2..10]);
                    (usize::try_from(u64::from_be_bytes(b))?, 10)
                }
                126 | 127 => (usize::MAX, 0),
                l => (usize::from(l), 2),
            };
            if len != usize::MAX {
                if len > MAX_PAYLOAD {
                    bail!("frame of {len} bytes");
                }
                let mask_at = off;
                if masked {
                    off += 4;
                }
                if buf.len() >= off + len {
                    let mut payload = buf[off..off + len].to_vec();
                    if masked {
                        let m = [
                            buf[mask_at],
                            buf[mask_at + 1],
                            buf[mask_at + 2],
                            buf[mask_at + 3],
                        ];
                        for (i, b) in payload.iter_mut().enumerate() {
                            *b ^= m[i % 4];
                        }
                    }
                    buf.advance(off + len);
                    return Ok((opcode, payload));
                }
                buf.reserve(off + len - buf.len());
            }
        }
        if s.read_buf(buf).await? == 0 {
            bail!("connection closed inside a WebSocket frame");
        }
    }
}

/// Reads one frame; returns (opcode, payload length).
pub(crate) async fn read_frame<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
) -> anyhow::Result<(u8, usize)> {
    let (op, p) = read_frame_payload(s, buf).await?;
    Ok((op, p.len()))
}

/// Server side: answer the upgrade, then echo text and binary frames
/// (unmasked), answer pings, echo a close and stop.
pub(crate) async fn echo_conn<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> anyhow::Result<()> {
    let mut buf = BytesMut::with_capacity(8192);
    let n = read_head(&mut s, &mut buf).await?;
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    let key = head
        .lines()
        .find_map(|l| {
            l.split_once(':').and_then(|(k, v)| {
                k.trim()
                    .eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| v.trim().to_owned())
            })
        })
        .ok_or_else(|| anyhow!("upgrade without Sec-WebSocket-Key"))?;
    buf.advance(n);
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(&key)
    );
    s.write_all(resp.as_bytes()).await?;
    let mut out = Vec::with_capacity(16 * 1024);
    loop {
        let (opcode, payload) = read_frame_payload(&mut s, &mut buf).await?;
        let reply = match opcode {
            1 | 2 | 8 => opcode,
            9 => 10,
            _ => continue,
        };
        out.clear();
        frame_header(&mut out, reply, payload.len(), false);
        out.extend_from_slice(&payload);
        s.write_all(&out).await?;
        if opcode == 8 {
            let _ = s.shutdown().await;
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{accept_key, sha1};

    #[test]
    fn sha1_and_accept_key() {
        let hex: String = sha1(b"abc").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "a9993e364706816aba3e25717850c26c9cd0d89d");
        // RFC 6455 §1.3 example.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
