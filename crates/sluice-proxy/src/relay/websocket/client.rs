//! Client → upstream direction: frames are parsed and checked, text (and
//! compressed binary) messages reassembled, inflated and put to the policy;
//! the rest passes through.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{timeout_at, Instant};

use super::deflate::{Deflate, InflateError, Inflater};
use super::frame::{self, check_close_payload, Masking, Opcode, Parse, Rules};
use super::message::{AssemblyLimits, Kind, Message, Reassembler, Step};
use super::relay::{fill, mask_key, DirEnd, Ends, ASSEMBLY_MAX};
use super::{MessageVerdict, TextPolicy, WsEnd, WsLimits};

/// The relay refuses client traffic: tell the policy, close both ways.
async fn refuse<WC, WU, P>(ends: &Ends<WC, WU>, policy: &mut P, code: u16, reason: &str) -> DirEnd
where
    WC: AsyncWrite + Unpin,
    WU: AsyncWrite + Unpin,
    P: TextPolicy + ?Sized,
{
    policy.on_denied(reason);
    ends.close_both(code, reason).await;
    DirEnd::Failed(match code {
        1009 => WsEnd::TooBig,
        code => WsEnd::Protocol(code),
    })
}

async fn deny<WC, WU, P>(ends: &Ends<WC, WU>, policy: &mut P, reason: &str) -> DirEnd
where
    WC: AsyncWrite + Unpin,
    WU: AsyncWrite + Unpin,
    P: TextPolicy + ?Sized,
{
    policy.on_denied(reason);
    ends.close_both(1008, reason).await;
    DirEnd::Failed(WsEnd::PolicyDenied)
}

pub(super) async fn client_to_upstream<R, WC, WU, P>(
    mut rd: R,
    mut buf: BytesMut,
    ends: &Ends<WC, WU>,
    deflate: Option<Deflate>,
    limits: &WsLimits,
    policy: &mut P,
) -> DirEnd
where
    R: AsyncRead + Unpin,
    WC: AsyncWrite + Unpin,
    WU: AsyncWrite + Unpin,
    P: TextPolicy + ?Sized,
{
    let rules = Rules {
        masking: Masking::Required,
        rsv1_allowed: deflate.is_some(),
        max_payload: limits.max_frame,
    };
    let mut asm = Reassembler::new(AssemblyLimits {
        max_text: limits.max_message,
        max_binary: limits.max_frame,
        max_fragments: limits.max_fragments,
    });
    let mut inflater = deflate.map(|d| Inflater::new(d.client_no_context_takeover));
    let mut started: Option<Instant> = None;
    loop {
        let h = match frame::parse(&buf, &rules) {
            Parse::Frame(h) => h,
            Parse::Error(e) => {
                return refuse(
                    ends,
                    policy,
                    1002,
                    &format!("websocket protocol error: {e}"),
                )
                .await;
            }
            Parse::NeedMore => {
                let more = match started {
                    Some(t0) if asm.assembling() => {
                        let deadline = (Instant::now() + limits.idle).min(t0 + ASSEMBLY_MAX);
                        match timeout_at(deadline, fill(&mut rd, &mut buf)).await {
                            Ok(more) => more,
                            Err(_) => {
                                let reason = "websocket message assembly timed out";
                                return refuse(ends, policy, 1008, reason).await;
                            }
                        }
                    }
                    _ => fill(&mut rd, &mut buf).await,
                };
                if !more {
                    return DirEnd::Eof;
                }
                continue;
            }
        };
        let raw = buf.split_to(h.frame_len());
        match h.opcode {
            Opcode::Close => {
                let mut payload = raw[h.header_len..].to_vec();
                if let Some(key) = h.mask {
                    frame::apply_mask(&mut payload, key, 0);
                }
                if let Err(code) = check_close_payload(&payload) {
                    return refuse(ends, policy, code, "invalid websocket close frame").await;
                }
                let _ = ends.upstream.lock().await.send_close(&raw).await;
                return DirEnd::CloseForwarded;
            }
            Opcode::Ping | Opcode::Pong => {
                if ends.to_upstream(&raw).await.is_err() {
                    return DirEnd::Eof;
                }
            }
            Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                let step = match asm.push(&h, &raw[h.header_len..]) {
                    Ok(step) => step,
                    Err(e) => {
                        return refuse(ends, policy, e.close_code(), &format!("websocket {e}"))
                            .await;
                    }
                };
                let out = match step {
                    Step::Pending => {
                        started.get_or_insert_with(Instant::now);
                        continue;
                    }
                    Step::PassThrough { first } => {
                        if first {
                            if let Err(reason) = policy.allow_binary() {
                                return deny(ends, policy, &reason).await;
                            }
                        }
                        raw
                    }
                    Step::Complete(m) => {
                        started = None;
                        match evaluate(m, inflater.as_mut(), limits, policy).await {
                            Ok(frame) => frame,
                            Err(Refusal::Deny(reason)) => return deny(ends, policy, &reason).await,
                            Err(Refusal::Close(code, reason)) => {
                                return refuse(ends, policy, code, reason).await;
                            }
                        }
                    }
                };
                if ends.to_upstream(&out).await.is_err() {
                    return DirEnd::Eof;
                }
            }
        }
    }
}

enum Refusal {
    Deny(String),
    Close(u16, &'static str),
}

/// Inflate, check and evaluate one complete client message; the frame to
/// send upstream (uncompressed, FIN, masked with a fresh key).
async fn evaluate<P: TextPolicy + ?Sized>(
    m: Message,
    inflater: Option<&mut Inflater>,
    limits: &WsLimits,
    policy: &mut P,
) -> Result<BytesMut, Refusal> {
    let cap = match m.kind {
        Kind::Text => limits.max_message,
        Kind::Binary => limits.max_frame,
    };
    let payload = match (m.compressed, inflater) {
        (false, _) => Vec::from(m.payload),
        (true, Some(inf)) => inf.inflate(&m.payload, cap).map_err(|e| match e {
            InflateError::TooBig => Refusal::Close(1009, "websocket message too big"),
            InflateError::Corrupt => Refusal::Close(1002, "websocket invalid compressed data"),
        })?,
        // Unreachable: RSV1 is a parse error without negotiated deflate.
        (true, None) => return Err(Refusal::Close(1002, "websocket unexpected compression")),
    };
    let mut out = BytesMut::new();
    match m.kind {
        Kind::Text => {
            let text = String::from_utf8(payload)
                .map_err(|_| Refusal::Close(1007, "websocket text message is not valid UTF-8"))?;
            // Middleware first (it sees placeholders, never secrets); then
            // credentials and policy on what it left.
            let text = if policy.screens() {
                match policy.screen(text).await {
                    MessageVerdict::Forward(t) => t,
                    MessageVerdict::Deny { reason } => return Err(Refusal::Deny(reason)),
                }
            } else {
                text
            };
            match policy.on_text(&text) {
                MessageVerdict::Forward(text) => {
                    frame::encode(
                        &mut out,
                        true,
                        false,
                        Opcode::Text,
                        Some(mask_key()),
                        text.as_bytes(),
                    );
                }
                MessageVerdict::Deny { reason } => return Err(Refusal::Deny(reason)),
            }
        }
        Kind::Binary => {
            policy.allow_binary().map_err(Refusal::Deny)?;
            frame::encode(
                &mut out,
                true,
                false,
                Opcode::Binary,
                Some(mask_key()),
                &payload,
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
