//! Tunnel protocol classification from the first client bytes after the
//! CONNECT `200` (facts §4.3 step 13). [`classify`] is pure and three-way:
//! a verdict, or `None` while the bytes are still a plausible prefix of more
//! than one outcome. [`peek_classify`] drives it with `peek`, so nothing is
//! consumed and the chosen relay sees the stream from its first byte.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// Bytes examined at most: the length of the HTTP/2 connection preface.
pub const PEEK_LIMIT: usize = 24;
/// Default bound on waiting for the first bytes (the reference's window).
pub const DEFAULT_PEEK_WAIT: Duration = Duration::from_millis(100);
/// Pause between peeks while the bytes so far are undecided.
pub const PEEK_POLL: Duration = Duration::from_millis(5);

/// The HTTP/2 prior-knowledge connection preface.
pub const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bytes of the preface that must match before it is recognised (`PRI` is
/// not an HTTP/1 method this proxy accepts, so nothing else starts so).
const HTTP2_DECIDE_LEN: usize = 3;

/// HTTP/1 request methods recognised, each followed by a space.
pub const HTTP1_METHODS: [&[u8]; 9] = [
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"CONNECT", b"TRACE",
];

/// What a tunnel carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TunnelProtocol {
    /// A TLS handshake record (`0x16 0x03 0x00..=0x04`).
    Tls,
    /// Plaintext HTTP/1 (a known method followed by a space).
    Http1,
    /// The HTTP/2 prior-knowledge preface (h2c).
    Http2Preface,
    /// Anything else, including a client that sent nothing in time.
    Unknown,
}

/// Classify the first bytes of a tunnel. `None` means more bytes are needed
/// (the prefix is empty or still consistent with some outcome). At most
/// 9 bytes are ever needed, so `None` is never returned for
/// [`PEEK_LIMIT`] bytes.
#[must_use]
pub fn classify(prefix: &[u8]) -> Option<TunnelProtocol> {
    let mut undecided = prefix.is_empty();

    match prefix {
        [0x16, 0x03, minor, ..] if *minor <= 0x04 => return Some(TunnelProtocol::Tls),
        [0x16] | [0x16, 0x03] => undecided = true,
        _ => {}
    }

    for method in HTTP1_METHODS {
        let token_len = method.len() + 1;
        let n = prefix.len().min(token_len);
        let candidate = &prefix[..n];
        let matches = candidate
            .iter()
            .enumerate()
            .all(|(i, b)| match method.get(i) {
                Some(m) => b == m,
                None => *b == b' ',
            });
        if matches {
            if n == token_len {
                return Some(TunnelProtocol::Http1);
            }
            undecided = true;
        }
    }

    let n = prefix.len().min(HTTP2_PREFACE.len());
    if prefix[..n] == HTTP2_PREFACE[..n] {
        if n >= HTTP2_DECIDE_LEN {
            return Some(TunnelProtocol::Http2Preface);
        }
        undecided = true;
    }

    if undecided {
        None
    } else {
        Some(TunnelProtocol::Unknown)
    }
}

/// Peek (never read) at most [`PEEK_LIMIT`] bytes of `stream` and classify
/// them, polling every [`PEEK_POLL`] while undecided, for at most `wait`.
///
/// Returns [`TunnelProtocol::Unknown`] when `wait` elapses undecided (some
/// bytes seen) **or with no byte at all** (a server-speaks-first protocol,
/// or an idle client), and on EOF or a peek error; callers decide whether
/// `Unknown` means a raw relay or a refusal.
pub async fn peek_classify(stream: &TcpStream, wait: Duration) -> TunnelProtocol {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; PEEK_LIMIT];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            // EOF, error, or nothing arrived within the window.
            Ok(Ok(_) | Err(_)) | Err(_) => return TunnelProtocol::Unknown,
        };
        if let Some(verdict) = classify(&buf[..n]) {
            return verdict;
        }
        // `peek` returns at once while bytes are queued, so wait before
        // looking again; the last look happens at the deadline itself.
        let now = Instant::now();
        if now >= deadline {
            return TunnelProtocol::Unknown;
        }
        tokio::time::sleep_until((now + PEEK_POLL).min(deadline)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use TunnelProtocol::{Http1, Http2Preface, Tls, Unknown};

    #[test]
    fn tls_record_versions() {
        for minor in 0x00..=0x04u8 {
            assert_eq!(classify(&[0x16, 0x03, minor]), Some(Tls), "minor {minor}");
            assert_eq!(classify(&[0x16, 0x03, minor, 0x00, 0x2f]), Some(Tls));
        }
        assert_eq!(classify(&[0x16, 0x03, 0x05]), Some(Unknown));
        assert_eq!(classify(&[0x16, 0x02, 0x01]), Some(Unknown));
        assert_eq!(classify(&[0x17, 0x03, 0x03]), Some(Unknown));
        assert_eq!(classify(&[0x16]), None);
        assert_eq!(classify(&[0x16, 0x03]), None);
        assert_eq!(classify(&[0x16, 0x04]), Some(Unknown));
    }

    #[test]
    fn every_method_with_space_is_http1() {
        for method in HTTP1_METHODS {
            let mut line = method.to_vec();
            line.extend_from_slice(b" / HTTP/1.1\r\n");
            assert_eq!(
                classify(&line),
                Some(Http1),
                "{}",
                String::from_utf8_lossy(method)
            );
            let mut token = method.to_vec();
            token.push(b' ');
            assert_eq!(classify(&token), Some(Http1));
            // Every proper prefix of "METHOD " is undecided.
            for len in 1..token.len() {
                assert_eq!(
                    classify(&token[..len]),
                    None,
                    "{:?}",
                    String::from_utf8_lossy(&token[..len])
                );
            }
            // Without the space the token is something else.
            let mut wrong = method.to_vec();
            wrong.push(b'X');
            assert_eq!(classify(&wrong), Some(Unknown));
        }
    }

    #[test]
    fn partial_and_specific_prefixes() {
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"GET"), None);
        assert_eq!(classify(b"GET "), Some(Http1));
        assert_eq!(classify(b"P"), None);
        assert_eq!(classify(b"PR"), None);
        assert_eq!(classify(b"PU"), None);
        assert_eq!(classify(b"get / HTTP/1.1"), Some(Unknown));
        assert_eq!(classify(b"GET\t/"), Some(Unknown));
        assert_eq!(classify(b"FOO / HTTP/1.1"), Some(Unknown));
    }

    #[test]
    fn http2_preface() {
        assert_eq!(classify(HTTP2_PREFACE), Some(Http2Preface));
        assert_eq!(classify(b"PRI"), Some(Http2Preface));
        assert_eq!(classify(b"PRI * HT"), Some(Http2Preface));
        assert_eq!(classify(b"PRI * HTTP/1.1"), Some(Unknown));
        assert_eq!(classify(b"PRX"), Some(Unknown));
    }

    #[test]
    fn random_bytes_are_unknown() {
        assert_eq!(classify(b"SSH-2.0-OpenSSH_9.6\r\n"), Some(Unknown));
        assert_eq!(classify(&[0x00, 0x01, 0x02, 0x03]), Some(Unknown));
        assert_eq!(classify(&[0xff; PEEK_LIMIT]), Some(Unknown));
        assert_eq!(classify(b"\x05\x01\x00"), Some(Unknown));
    }

    #[test]
    fn full_window_is_always_decided() {
        // Any 24 bytes decide: the longest undecided prefix is 8 bytes.
        for first in 0..=255u8 {
            let mut buf = [b'A'; PEEK_LIMIT];
            buf[0] = first;
            assert!(classify(&buf).is_some());
        }
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        #[allow(clippy::disallowed_methods)] // test: dials its own local listener
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, server)
    }

    #[tokio::test]
    async fn peek_does_not_consume() {
        use tokio::io::AsyncReadExt;
        let (mut client, mut server) = pair().await;
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        let proto = peek_classify(&server, DEFAULT_PEEK_WAIT).await;
        assert_eq!(proto, Http1);
        let mut first = [0u8; 4];
        server.read_exact(&mut first).await.expect("read");
        assert_eq!(&first, b"GET ");
    }

    #[tokio::test]
    async fn peek_waits_for_split_prefix() {
        let (mut client, server) = pair().await;
        client.write_all(b"OPT").await.expect("write");
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            client
                .write_all(b"IONS * HTTP/1.1\r\n")
                .await
                .expect("write");
            client
        });
        assert_eq!(peek_classify(&server, Duration::from_secs(2)).await, Http1);
        drop(writer.await);
    }

    #[tokio::test]
    async fn peek_silent_or_undecided_client_is_unknown() {
        let (client, server) = pair().await;
        let wait = Duration::from_millis(30);
        assert_eq!(peek_classify(&server, wait).await, Unknown);
        drop(client);
        let (mut client, server) = pair().await;
        client.write_all(b"PO").await.expect("write");
        assert_eq!(peek_classify(&server, wait).await, Unknown);
        let (mut client, server) = pair().await;
        client
            .write_all(&[0x16, 0x03, 0x01, 0x02])
            .await
            .expect("write");
        assert_eq!(peek_classify(&server, wait).await, Tls);
    }
}
