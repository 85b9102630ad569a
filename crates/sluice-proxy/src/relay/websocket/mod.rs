//! WebSocket frame-level relay (RFC 6455, permessage-deflate RFC 7692).
//!
//! After an admitted request got `101 Switching Protocols`, [`relay`] owns
//! both connections. Client → server text messages are reassembled,
//! inflated (bounded), UTF-8 checked and handed to a [`TextPolicy`], which
//! forwards (possibly rewritten) text or denies it (close 1008 both ways;
//! the message never reaches the upstream). Each client binary message is
//! put to [`TextPolicy::allow_binary`] first, then relayed unchanged; all
//! server → client traffic is relayed unchanged. Close codes: 1002 protocol, 1007
//! invalid UTF-8, 1008 policy, 1009 too big, 1012 reload (see
//! [`relay_with_stop`]).

mod client;
mod deflate;
pub mod frame;
mod graphql;
mod message;
mod relay;

use std::time::Duration;

pub use deflate::{parse_deflate_extension, Deflate};
pub use graphql::{classify_graphql_ws, GraphqlWsMessage};
pub use relay::{relay, relay_with_stop};

/// What the owner decides for one complete client → server text message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageVerdict {
    /// Forward this text (possibly rewritten, e.g. credentials injected).
    Forward(String),
    /// Refuse: the client gets close 1008, the upstream a close too.
    Deny { reason: String },
}

/// Evaluates client text messages; policy and credential rewrite live in
/// the implementation (closures `FnMut(&str) -> MessageVerdict` qualify).
pub trait TextPolicy: Send {
    /// One complete, inflated, valid UTF-8 client text message.
    fn on_text(&mut self, text: &str) -> MessageVerdict;

    /// The relay is ending the session because of client traffic: a
    /// [`MessageVerdict::Deny`] (its reason), a refused binary message, or a
    /// relay-level refusal (too big, too many fragments, invalid UTF-8,
    /// protocol error, assembly timeout). Called once, for logging.
    fn on_denied(&mut self, reason: &str) {
        let _ = reason;
    }

    /// Called at the start of each client binary message, before any of
    /// it is forwarded. `Err(reason)` refuses it like a denied text (close
    /// 1008); the request loop's policy evaluates `WEBSOCKET_BINARY` rules
    /// here. Default: allow.
    fn allow_binary(&mut self) -> Result<(), String> {
        Ok(())
    }

    /// Whether [`Self::screen`] must see text messages (middleware stages
    /// are attached). Default: no.
    fn screens(&self) -> bool {
        false
    }

    /// A complete text message through the middleware stages, before
    /// [`Self::on_text`] (so stages see placeholders, never secrets, and
    /// policy judges what they left): forward (possibly replaced) or deny.
    /// Only called when [`Self::screens`].
    fn screen(
        &mut self,
        text: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = MessageVerdict> + Send + '_>> {
        Box::pin(std::future::ready(MessageVerdict::Forward(text)))
    }

    /// The upstream accepted the upgrade (`101`), with this subprotocol.
    fn on_start(&mut self, subprotocol: Option<&str>) {
        let _ = subprotocol;
    }

    /// The session ended (after the relay returned).
    fn on_end(&mut self, end: &WsEnd) {
        let _ = end;
    }
}

impl<F> TextPolicy for F
where
    F: FnMut(&str) -> MessageVerdict + Send,
{
    fn on_text(&mut self, text: &str) -> MessageVerdict {
        self(text)
    }
}

/// Relay limits (`Default` = the platform values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WsLimits {
    /// Largest client text message after reassembly and inflation (⇒ 1009).
    pub max_message: usize,
    /// Most frames in one assembled message (⇒ 1002).
    pub max_fragments: usize,
    /// Largest single frame payload, either direction (⇒ 1002); also the
    /// cap for inflating a compressed client binary message.
    pub max_frame: usize,
    /// A partly assembled message with no new bytes for this long ends the
    /// session (close 1008); a message also has 2 minutes in total.
    pub idle: Duration,
    /// A session with no byte either way for this long is closed (1001 to
    /// both peers); `None`: no bound.
    pub session_idle: Option<Duration>,
}

impl Default for WsLimits {
    fn default() -> Self {
        Self {
            max_message: 4 * 1024 * 1024,
            max_fragments: 4096,
            max_frame: 16 * 1024 * 1024,
            idle: Duration::from_secs(30),
            session_idle: Some(Duration::from_secs(600)),
        }
    }
}

/// How a relayed WebSocket session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsEnd {
    /// A close handshake was started by either peer (and completed, or the
    /// connection dropped while waiting for the reply).
    Closed,
    /// The policy denied a client message (or binary); close 1008 sent.
    PolicyDenied,
    /// The relay closed with this code: 1002 (framing, either peer), 1007
    /// (invalid UTF-8 text or close reason), 1008 (assembly timeout),
    /// 1012 (stop fired, see [`relay_with_stop`]), 1001 (idle for
    /// [`WsLimits::session_idle`]).
    Protocol(u16),
    /// A client message over `max_message` (close 1009).
    TooBig,
    /// A peer vanished (EOF or I/O error) without a close frame.
    Io,
}
