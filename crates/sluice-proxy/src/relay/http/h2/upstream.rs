//! The upstream side of an HTTP/2 tunnel: dialled on the first admitted
//! stream (never for a refused one), with ALPN `h2, http/1.1`. An upstream
//! that picks `h2` carries every stream on one connection; one that picks
//! `http/1.1` gets each stream as an HTTP/1.1 request on a small pool of
//! keep-alive connections. A new [`UpstreamKey`] (the generation moved)
//! starts afresh.

use std::sync::Arc;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Mutex;

use super::ReqBody;
use crate::destination::UpstreamConnector;
use crate::relay::http::{DialFailure, UpstreamKey};
use crate::relay::tls::ALPN_H2;
use crate::relay::RelayContext;

/// Idle HTTP/1.1 connections kept per tunnel: as many as the client may
/// have streams in flight, so a client that keeps 32 streams busy reuses 32
/// upstream connections instead of dialling (and shaking hands) for most
/// requests.
const MAX_IDLE_H1: usize = super::MAX_CONCURRENT_STREAMS as usize;
/// Largest response header list accepted from an HTTP/2 upstream.
const MAX_RESPONSE_HEADER_LIST: u32 = 64 * 1024;

/// A connection to send one request on.
pub(super) enum Sender {
    H2(http2::SendRequest<ReqBody>),
    H1(http1::SendRequest<ReqBody>),
}

#[derive(Default)]
struct State {
    key: Option<UpstreamKey>,
    h2: Option<http2::SendRequest<ReqBody>>,
    idle: Vec<http1::SendRequest<ReqBody>>,
}

/// The tunnel's upstream connections.
#[derive(Clone, Default)]
pub(super) struct Pool {
    state: Arc<Mutex<State>>,
}

impl Pool {
    /// A connection for `key`: the HTTP/2 one, an idle HTTP/1.1 one, or a new dial.
    pub(super) async fn sender(
        &self,
        ctx: &RelayContext,
        key: &UpstreamKey,
        connector: &UpstreamConnector,
    ) -> Result<Sender, DialFailure> {
        let mut st = self.state.lock().await;
        if st.key.as_ref() != Some(key) {
            *st = State {
                key: Some(key.clone()),
                ..State::default()
            };
        }
        if let Some(h2) = &st.h2 {
            if !h2.is_closed() {
                return Ok(Sender::H2(h2.clone()));
            }
            st.h2 = None;
        }
        while let Some(s) = st.idle.pop() {
            if s.is_ready() {
                return Ok(Sender::H1(s));
            }
        }
        // Dialled under the lock: the first dial settles the protocol, and
        // concurrent streams of an HTTP/2 upstream share it.
        let target = connector.target().clone();
        let tcp =
            connector
                .connect(ctx.dial_timeout)
                .await
                .map_err(|error| DialFailure::Connect {
                    target: target.clone(),
                    error,
                })?;
        let tls = ctx
            .upstream_tls
            .connect_h2(&target.host, tcp, ctx.dial_timeout)
            .await
            .map_err(|e| DialFailure::Tls {
                target: target.clone(),
                detail: e.to_string(),
            })?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(ALPN_H2);
        let io = TokioIo::new(tls);
        let failed = |e: hyper::Error| DialFailure::Tls {
            target: target.clone(),
            detail: format!("{target}: http handshake failed: {e}"),
        };
        if h2 {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .initial_stream_window_size(super::STREAM_WINDOW)
                .initial_connection_window_size(super::CONNECTION_WINDOW)
                .max_header_list_size(MAX_RESPONSE_HEADER_LIST)
                .max_concurrent_reset_streams(super::MAX_CONCURRENT_STREAMS as usize)
                .handshake(io)
                .await
                .map_err(failed)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream h2 connection ended");
                }
            });
            st.h2 = Some(sender.clone());
            Ok(Sender::H2(sender))
        } else {
            let (sender, conn) = http1::Builder::new().handshake(io).await.map_err(failed)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream http/1.1 connection ended");
                }
            });
            Ok(Sender::H1(sender))
        }
    }

    /// Keep an HTTP/1.1 connection for later streams once its exchange is
    /// over (its response body consumed).
    pub(super) fn release(&self, key: UpstreamKey, mut sender: http1::SendRequest<ReqBody>) {
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            if sender.ready().await.is_err() {
                return;
            }
            let mut st = state.lock().await;
            if st.key.as_ref() == Some(&key) && st.idle.len() < MAX_IDLE_H1 {
                st.idle.push(sender);
            }
        });
    }
}
