//! Writing a backend's answer to the caller. Streaming protocols go out
//! with chunked framing, each backend frame written and flushed as it
//! arrives; a stream that stalls past the idle bound, grows past the size
//! cap or breaks ends with an SSE `error` event (for event streams) and the
//! connection closes. Buffered protocols are read whole (bounded) and sent
//! with their exact `Content-Length`.

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::Body;
use http_body_util::BodyExt as _;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::usage::{SseUsage, Usage};

/// Response headers never copied to the caller (framing and hop-by-hop).
const DROPPED: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "transfer-encoding",
    "content-length",
    "te",
    "trailer",
    "upgrade",
];
/// Most of a non-event-stream streamed body kept for reading its usage.
const MAX_USAGE_BODY: usize = 4 * 1024 * 1024;

/// Bounds on one answer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AnswerLimits {
    /// Largest body relayed (streamed or buffered).
    pub(crate) max_bytes: usize,
    /// Longest wait for the next frame of the body.
    pub(crate) idle: Duration,
}

/// How relaying a body ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BodyEnd {
    Complete,
    TooLarge,
    Idle,
    /// The backend broke the body (reset, bad framing).
    Broken(String),
    /// The caller went away.
    ClientGone,
}

impl BodyEnd {
    /// A log- and client-safe description (no body bytes).
    pub(crate) fn describe(&self, limits: AnswerLimits) -> String {
        match self {
            Self::Complete => "complete".into(),
            Self::TooLarge => format!("response exceeded {} bytes", limits.max_bytes),
            Self::Idle => format!("backend sent nothing for {:?}", limits.idle),
            Self::Broken(e) => format!("backend stream failed: {e}"),
            Self::ClientGone => "client closed the connection".into(),
        }
    }
}

/// What the caller got: how the body ended, its size, when its first byte
/// left, and the token counts read from it.
#[derive(Debug)]
pub(crate) struct Answered {
    pub(crate) end: BodyEnd,
    pub(crate) bytes: u64,
    pub(crate) first_byte: Option<Instant>,
    pub(crate) usage: Usage,
}

/// The response head for the caller: the backend's status and headers
/// minus framing and hop-by-hop fields, plus our own framing.
pub(crate) fn head(
    status: http::StatusCode,
    headers: &HeaderMap,
    framing: &str,
    close: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("Unknown")
        )
        .as_bytes(),
    );
    for (name, value) in headers {
        if DROPPED.contains(&name.as_str()) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(framing.as_bytes());
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Whether the backend answered with an event stream.
pub(crate) fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// Streams `body` to `client` after `head`: chunked framing when `chunked`
/// (else raw bytes and the connection closes after), each frame flushed.
pub(crate) async fn stream<B, W>(
    mut body: B,
    client: &mut W,
    head: &[u8],
    chunked: bool,
    sse: bool,
    limits: AnswerLimits,
) -> Answered
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
    W: AsyncWrite + Unpin,
{
    let mut sse_usage = SseUsage::default();
    let mut json = Vec::new();
    let mut bytes = 0u64;
    let mut first_byte = None;
    let answered = |end, bytes, first_byte, sse_usage: SseUsage, json: Vec<u8>| {
        let mut usage = sse_usage.usage;
        if !sse {
            usage.observe_body(&json);
        }
        Answered {
            end,
            bytes,
            first_byte,
            usage,
        }
    };
    if client.write_all(head).await.is_err() || client.flush().await.is_err() {
        return answered(BodyEnd::ClientGone, 0, None, sse_usage, json);
    }
    let end = loop {
        let frame = match tokio::time::timeout(limits.idle, body.frame()).await {
            Err(_) => break BodyEnd::Idle,
            Ok(None) => break BodyEnd::Complete,
            Ok(Some(Err(e))) => break BodyEnd::Broken(e.to_string()),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers: not relayed
        };
        if data.is_empty() {
            continue;
        }
        if bytes + data.len() as u64 > limits.max_bytes as u64 {
            break BodyEnd::TooLarge;
        }
        bytes += data.len() as u64;
        if sse {
            sse_usage.feed(&data);
        } else if json.len() + data.len() <= MAX_USAGE_BODY {
            json.extend_from_slice(&data);
        }
        if write_piece(client, &data, chunked).await.is_err() {
            break BodyEnd::ClientGone;
        }
        first_byte.get_or_insert_with(Instant::now);
    };
    match &end {
        BodyEnd::Complete => {
            if chunked && client.write_all(b"0\r\n\r\n").await.is_err() {
                return answered(BodyEnd::ClientGone, bytes, first_byte, sse_usage, json);
            }
        }
        BodyEnd::ClientGone => {}
        other => {
            if sse {
                let event = error_event(&other.describe(limits));
                if write_piece(client, &event, chunked).await.is_ok() && chunked {
                    let _ = client.write_all(b"0\r\n\r\n").await;
                }
            }
        }
    }
    let _ = client.flush().await;
    answered(end, bytes, first_byte, sse_usage, json)
}

async fn write_piece<W: AsyncWrite + Unpin>(
    client: &mut W,
    data: &[u8],
    chunked: bool,
) -> std::io::Result<()> {
    if chunked {
        client
            .write_all(format!("{:x}\r\n", data.len()).as_bytes())
            .await?;
        client.write_all(data).await?;
        client.write_all(b"\r\n").await?;
    } else {
        client.write_all(data).await?;
    }
    client.flush().await
}

/// An SSE `error` event both OpenAI and Anthropic clients surface as an
/// error: `{"type":"error","error":{"type":...,"message":...}}`.
fn error_event(message: &str) -> Vec<u8> {
    let payload = serde_json::json!({
        "type": "error",
        "error": { "type": "sluice_stream_error", "message": message },
    });
    format!("event: error\ndata: {payload}\n\n").into_bytes()
}

/// Reads a whole body, at most `limits.max_bytes`, each frame within `limits.idle`.
pub(crate) async fn collect<B>(mut body: B, limits: AnswerLimits) -> Result<Vec<u8>, BodyEnd>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut out = Vec::new();
    loop {
        let frame = match tokio::time::timeout(limits.idle, body.frame()).await {
            Err(_) => return Err(BodyEnd::Idle),
            Ok(None) => return Ok(out),
            Ok(Some(Err(e))) => return Err(BodyEnd::Broken(e.to_string())),
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limits.max_bytes {
                return Err(BodyEnd::TooLarge);
            }
            out.extend_from_slice(&data);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body::Frame;
    use http_body_util::StreamBody;

    use super::*;

    type Frames =
        StreamBody<tokio_stream::wrappers::ReceiverStream<Result<Frame<Bytes>, Infallible>>>;

    fn body() -> (
        tokio::sync::mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
        Frames,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        (
            tx,
            StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
    }

    const LIMITS: AnswerLimits = AnswerLimits {
        max_bytes: 64,
        idle: Duration::from_millis(200),
    };

    fn send(tx: &tokio::sync::mpsc::Sender<Result<Frame<Bytes>, Infallible>>, s: &'static str) {
        tx.try_send(Ok(Frame::data(Bytes::from_static(s.as_bytes()))))
            .expect("room");
    }

    #[tokio::test]
    async fn chunks_are_written_as_they_come_and_usage_read() {
        let (tx, b) = body();
        send(&tx, "data: {\"a\":1}\n\n");
        send(
            &tx,
            "data: {\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1}}\n\n",
        );
        drop(tx);
        let mut out = Vec::new();
        let roomy = AnswerLimits {
            max_bytes: 1024,
            ..LIMITS
        };
        let a = stream(b, &mut out, b"H\r\n\r\n", true, true, roomy).await;
        assert_eq!(a.end, BodyEnd::Complete);
        assert_eq!(
            a.usage,
            Usage {
                input: Some(2),
                output: Some(1)
            }
        );
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text,
            "H\r\n\r\nf\r\ndata: {\"a\":1}\n\n\r\n3b\r\ndata: {\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1}}\n\n\r\n0\r\n\r\n"
        );
        assert!(a.first_byte.is_some());
    }

    #[tokio::test]
    async fn a_stall_ends_with_an_sse_error_event() {
        let (tx, b) = body();
        send(&tx, "data: x\n\n");
        let mut out = Vec::new();
        let a = stream(b, &mut out, b"", true, true, LIMITS).await;
        drop(tx);
        assert_eq!(a.end, BodyEnd::Idle);
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("event: error\ndata: {"), "{text}");
        assert!(text.contains("sluice_stream_error"), "{text}");
        assert!(text.ends_with("\r\n0\r\n\r\n"), "{text}");
    }

    #[tokio::test]
    async fn the_cap_stops_before_the_frame_that_crosses_it() {
        let (tx, b) = body();
        send(&tx, "data: 0123456789012345678901234567890123456789\n\n");
        send(&tx, "data: 0123456789012345678901234567890123456789\n\n");
        drop(tx);
        let mut out = Vec::new();
        let a = stream(b, &mut out, b"", true, true, LIMITS).await;
        assert_eq!(a.end, BodyEnd::TooLarge);
        assert_eq!(a.bytes, 48);
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text.matches("0123456789012345678901234567890123456789")
                .count(),
            1
        );
        assert!(text.contains("response exceeded 64 bytes"), "{text}");
        // A non-SSE stream is cut without a clean end: the caller sees truncation.
        let (tx, b) = body();
        send(
            &tx,
            "{\"data\": \"01234567890123456789012345678901234567890123456789\"}",
        );
        send(&tx, "more");
        drop(tx);
        let mut out = Vec::new();
        let a = stream(b, &mut out, b"", true, false, LIMITS).await;
        assert_eq!(a.end, BodyEnd::TooLarge);
        assert!(!String::from_utf8_lossy(&out).ends_with("0\r\n\r\n"));
    }

    #[tokio::test]
    async fn collect_is_bounded() {
        let (tx, b) = body();
        send(&tx, "{\"usage\":{}}");
        drop(tx);
        assert_eq!(collect(b, LIMITS).await.expect("whole"), b"{\"usage\":{}}");
        let (tx, b) = body();
        for _ in 0..5 {
            send(&tx, "0123456789012345");
        }
        drop(tx);
        assert_eq!(collect(b, LIMITS).await, Err(BodyEnd::TooLarge));
    }

    #[test]
    fn response_head_drops_framing() {
        let mut h = HeaderMap::new();
        h.insert("content-type", "text/event-stream".parse().expect("value"));
        h.insert("content-length", "10".parse().expect("value"));
        h.insert("connection", "keep-alive".parse().expect("value"));
        h.insert("x-request-id", "r1".parse().expect("value"));
        assert!(is_event_stream(&h));
        let text = String::from_utf8(head(
            http::StatusCode::OK,
            &h,
            "transfer-encoding: chunked\r\n",
            false,
        ))
        .expect("utf-8");
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-request-id: r1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }
}
