//! The upstream: a byte sink that acks its count, and an HTTP/1.1 server.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::{Buf, BytesMut};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::client::IO_TIMEOUT;

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest body a `?size=N` may ask for.
const MAX_BODY: usize = 64 * 1024 * 1024;

pub(crate) async fn serve(
    bulk: SocketAddr,
    http: SocketAddr,
    https: Option<(SocketAddr, Arc<ServerConfig>)>,
    ws: Option<SocketAddr>,
    body_bytes: usize,
) -> anyhow::Result<()> {
    let ws_l = match ws {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("bind {addr}"))?,
        ),
        None => None,
    };
    let bulk_l = TcpListener::bind(bulk)
        .await
        .with_context(|| format!("bind {bulk}"))?;
    let http_l = TcpListener::bind(http)
        .await
        .with_context(|| format!("bind {http}"))?;
    let https_l = match https {
        Some((addr, config)) => Some((
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("bind {addr}"))?,
            TlsAcceptor::from(config),
        )),
        None => None,
    };
    eprintln!(
        "sluice-bench: sink on {}, http on {}{}",
        bulk_l.local_addr()?,
        http_l.local_addr()?,
        match &https_l {
            Some((l, _)) => format!(", https on {}", l.local_addr()?),
            None => String::new(),
        }
    );
    let default = Arc::new(Responses::new(body_bytes));
    let tls_default = Arc::clone(&default);
    let sink = async move {
        loop {
            if let Ok((s, _)) = bulk_l.accept().await {
                tokio::spawn(sink_conn(s));
            }
        }
    };
    let web = async move {
        loop {
            if let Ok((s, _)) = http_l.accept().await {
                let _ = s.set_nodelay(true);
                tokio::spawn(http_conn(s, Arc::clone(&default)));
            }
        }
    };
    let tls_web = async move {
        let Some((l, acceptor)) = https_l else {
            return std::future::pending::<()>().await;
        };
        loop {
            if let Ok((s, _)) = l.accept().await {
                let _ = s.set_nodelay(true);
                let (acceptor, responses) = (acceptor.clone(), Arc::clone(&tls_default));
                tokio::spawn(async move {
                    // A handshake that stalls is dropped, never waited on forever.
                    if let Ok(Ok(tls)) = tokio::time::timeout(IO_TIMEOUT, acceptor.accept(s)).await
                    {
                        http_conn(tls, responses).await;
                    }
                });
            }
        }
    };
    let ws_echo = async move {
        let Some(l) = ws_l else {
            return std::future::pending::<()>().await;
        };
        loop {
            if let Ok((s, _)) = l.accept().await {
                let _ = s.set_nodelay(true);
                tokio::spawn(crate::ws::echo_conn(s));
            }
        }
    };
    tokio::select! {
        () = sink => {},
        () = ws_echo => {},
        () = web => {},
        () = tls_web => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    Ok(())
}

/// Header of a sized bulk stream: this magic, then the byte count (u64,
/// big-endian). Proxies that do not forward a half-close (Squid,
/// tinyproxy) still get the ack once the count has arrived.
pub(crate) const BULK_MAGIC: &[u8; 8] = b"SLBULK02";

/// Read and discard until EOF (or, after a `BULK_MAGIC` header, until the
/// announced count), then write the count (u64, big-endian).
async fn sink_conn(mut s: TcpStream) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = [0u8; 16];
    if s.read_exact(&mut head).await.is_err() {
        return;
    }
    let (mut total, want) = if &head[..8] == BULK_MAGIC {
        let mut n = [0u8; 8];
        n.copy_from_slice(&head[8..]);
        (0u64, Some(u64::from_be_bytes(n)))
    } else {
        (16u64, None)
    };
    while want.is_none_or(|w| total < w) {
        match s.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(_) => return,
        }
    }
    let _ = s.write_all(&total.to_be_bytes()).await;
    let _ = s.shutdown().await;
}

/// The fixed JSON body every POST gets (GraphQL and MCP clients alike).
const POST_BODY: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}]},"data":{"viewer":{"login":"bench"}}}"#;

/// A non-streamed chat completion (`POST .../chat/completions`).
const CHAT_BODY: &str = r#"{"id":"cmpl-bench","object":"chat.completion","created":1,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"pong"},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}"#;
/// Pause between a streamed completion's first event and the rest.
const STREAM_GAP: std::time::Duration = std::time::Duration::from_millis(20);

/// Prebuilt responses: the default body size, and the POST answer.
struct Responses {
    default_size: usize,
    default: Vec<u8>,
    post: Vec<u8>,
    chat: Vec<u8>,
}

/// A streamed chat completion, as chunked SSE: the first event at once,
/// the rest after [`STREAM_GAP`].
async fn stream_chat<S: AsyncWrite + Unpin>(s: &mut S) -> std::io::Result<()> {
    fn chunk(out: &mut Vec<u8>, data: &str) {
        out.extend_from_slice(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes());
    }
    let mut first =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    chunk(&mut first, "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"po\"}}]}\n\n");
    s.write_all(&first).await?;
    s.flush().await?;
    tokio::time::sleep(STREAM_GAP).await;
    let mut rest = Vec::new();
    chunk(&mut rest, "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ng\"},\"finish_reason\":\"stop\"}]}\n\n");
    chunk(&mut rest, "data: {\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}\n\n");
    chunk(&mut rest, "data: [DONE]\n\n");
    rest.extend_from_slice(b"0\r\n\r\n");
    s.write_all(&rest).await?;
    s.flush().await
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

impl Responses {
    fn new(default_size: usize) -> Self {
        let post = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{POST_BODY}",
            POST_BODY.len()
        )
        .into_bytes();
        let chat = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{CHAT_BODY}",
            CHAT_BODY.len()
        )
        .into_bytes();
        Self {
            default_size,
            default: response(default_size, false),
            post,
            chat,
        }
    }
}

fn response(size: usize, close: bool) -> Vec<u8> {
    let conn = if close { "Connection: close\r\n" } else { "" };
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n{conn}Content-Length: {size}\r\n\r\n"
    )
    .into_bytes();
    r.resize(r.len() + size, b'x');
    r
}

/// `?size=N` anywhere in the query of an origin- or absolute-form target.
fn size_param(target: &str) -> Option<usize> {
    let query = target.split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("size="))
        .and_then(|v| v.parse().ok())
        .filter(|n| *n <= MAX_BODY)
}

/// Keep-alive loop: parse request heads (pipelining tolerated), skip
/// request bodies by Content-Length, answer each with a fixed body.
/// Generic over the stream so the same loop serves plain HTTP and HTTPS.
async fn http_conn<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, responses: Arc<Responses>) {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    loop {
        // Parse every complete request already buffered.
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            let (head_len, size, close, body_len, post, chat) = match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let post = req.method == Some("POST");
                    let chat = post && req.path.is_some_and(|p| p.ends_with("/chat/completions"));
                    let size = req
                        .path
                        .and_then(size_param)
                        .unwrap_or(responses.default_size);
                    let mut close = req.version == Some(0);
                    let mut body_len = 0usize;
                    for h in req.headers.iter() {
                        if h.name.eq_ignore_ascii_case("connection") {
                            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                            close = v.contains("close");
                        } else if h.name.eq_ignore_ascii_case("content-length") {
                            body_len = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                        }
                    }
                    (n, size, close, body_len, post, chat)
                }
                Ok(httparse::Status::Partial) => break,
                Err(_) => {
                    let _ = s
                        .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await;
                    let _ = s.shutdown().await;
                    return;
                }
            };
            if buf.len() < head_len + body_len {
                break;
            }
            let stream = chat && contains(&buf[head_len..head_len + body_len], b"\"stream\":true");
            buf.advance(head_len + body_len);
            let wrote = if stream && !close {
                stream_chat(&mut s).await
            } else if chat && !close {
                s.write_all(&responses.chat).await
            } else if post && !close {
                s.write_all(&responses.post).await
            } else if size == responses.default_size && !close {
                s.write_all(&responses.default).await
            } else {
                s.write_all(&response(size, close)).await
            };
            // TLS buffers records; flushing is a no-op on a plain socket.
            if wrote.is_err() || s.flush().await.is_err() {
                return;
            }
            if close {
                let _ = s.shutdown().await;
                return;
            }
        }
        if buf.len() > MAX_HEAD + MAX_BODY {
            return;
        }
        match s.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
