use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Most unread request bytes drained after a local answer.
const DRAIN_BYTES: usize = 256 * 1024;
/// Longest wait for the client to stop sending after a local answer.
const DRAIN_TIME: Duration = Duration::from_millis(500);

/// Write a local answer, half-close, and drain what the client is still
/// sending for a bounded time. Closing with unread input makes the kernel
/// send RST, which can destroy the answer before the client reads it.
pub async fn answer_and_close<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, response: &[u8]) {
    if stream.write_all(response).await.is_err() {
        return;
    }
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut total = 0usize;
        while total < DRAIN_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
}
