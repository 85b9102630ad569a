//! `GET /api/events`: a server-sent event stream of new denials
//! (`denial`), and `proposals` whenever the proposal store's revision or
//! the policy generation changes (the store is polled, so decisions made
//! on another gateway's console show up too). Heartbeat comments keep
//! proxies and browsers from closing it; the stream ends when the session
//! expires or the client goes away.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::{broadcast, mpsc};
use tokio::time::{interval, MissedTickBehavior};

use crate::api::denial_json;
use crate::server::{error, Body, State};

/// How often the store's revision is read.
const POLL: Duration = Duration::from_millis(500);
/// How often a heartbeat comment is sent.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// How long a frame may wait for a slow client before the stream ends.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The body of an event stream: frames from the stream's task.
struct SseBody {
    rx: mpsc::Receiver<Bytes>,
}

impl http_body::Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

fn frame(event: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// Opens a stream for the session `session_id` (503 when too many are open).
pub(crate) async fn open(state: &State, session_id: String) -> Response<Body> {
    let Ok(permit) = Arc::clone(&state.streams).try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many event streams are open",
        );
    };
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let service = Arc::clone(&state.service);
    let sessions = Arc::clone(&state.sessions);
    tokio::spawn(async move {
        let _permit = permit;
        let mut denials = service.denials().subscribe();
        let mut generations = service.policy().subscribe();
        let mut revision = service.store().revision().await.ok();
        let mut poll = interval(POLL);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut beat = interval(HEARTBEAT);
        beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        beat.tick().await;
        let hello = Bytes::from_static(b"retry: 2000\n: connected\n\n");
        if tx.send(hello).await.is_err() {
            return;
        }
        loop {
            let out = tokio::select! {
                r = denials.recv() => match r {
                    Ok(d) => frame("denial", &denial_json(&d)),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        frame("proposals", &serde_json::json!({ "reason": "lagged" }))
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                r = generations.changed() => match r {
                    Ok(()) => {
                        let generation = *generations.borrow_and_update();
                        frame("proposals", &serde_json::json!({ "generation": generation }))
                    }
                    Err(_) => break,
                },
                _ = poll.tick() => {
                    if sessions.get(&session_id).is_none() {
                        break;
                    }
                    let now = service.store().revision().await.ok();
                    if now.is_none() || now == revision {
                        continue;
                    }
                    revision = now;
                    frame("proposals", &serde_json::json!({ "revision": now }))
                }
                _ = beat.tick() => Bytes::from_static(b": ping\n\n"),
                () = tx.closed() => break,
            };
            match tokio::time::timeout(SEND_TIMEOUT, tx.send(out)).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
    });
    let mut r = Response::new(SseBody { rx }.boxed_unsync());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r
}
