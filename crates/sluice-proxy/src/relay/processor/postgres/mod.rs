//! The Postgres processor (design §6.2, `protocol: postgres`): the v3 wire
//! protocol between a client and the endpoint, with every SQL statement
//! classified (`classify`) and evaluated under the decision's pinned
//! generation before a byte of it goes upstream (`session`), and the
//! client's placeholder password swapped for the real secret during
//! authentication (`auth`).
//!
//! The life of one session:
//! 1. startup (`startup`): `SSLRequest` → `S` and TLS with the sandbox-CA
//!    leaf (or `N` without one), `GSSENCRequest` → `N`, direct TLS,
//!    `CancelRequest` forwarded over a new upstream connection; the
//!    `StartupMessage` parameters are checked (`search_path`, lexing
//!    settings, replication are refused);
//! 2. upstream: dialled through the decision's connector; TLS upstream
//!    exactly when the client used TLS with sluice (a server that refuses
//!    TLS then ends the session: sluice never downgrades a hop the client
//!    asked to encrypt; libpq's `sslmode=prefer` retries in plaintext);
//!    the `StartupMessage` goes up with `search_path=public` added;
//! 3. authentication (`auth`);
//! 4. the query loop (`session`) until either side closes, the session
//!    idles past the tunnel idle bound, or a reload revokes the decision.

mod auth;
mod classify;
mod io;
mod session;
mod startup;
pub mod wire;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use sluice_policy::request::ProtocolVerdict;
use sluice_policy::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use self::io::MsgReader;
use self::session::{End, Shared};
use self::startup::{ClientStartup, Outcome, ALPN_POSTGRESQL, STARTUP_TIMEOUT};
use super::{Processor, ProcessorSession};
use crate::relay::credentials::resolve_native_credential;
use crate::relay::idle::Activity;
use crate::relay::revoke::revoked;
use crate::relay::stream::{ClientStream, UpstreamStream};

/// The processor for `protocol: postgres`.
pub(crate) struct Postgres;

/// The one instance [`super::for_protocol`] hands out.
pub(crate) static POSTGRES: Postgres = Postgres;

/// The protocol's name in events.
fn name() -> &'static str {
    POSTGRES.protocol().as_str()
}

impl Processor for Postgres {
    fn protocol(&self) -> Protocol {
        Protocol::Postgres
    }

    fn serve<'a>(
        &'a self,
        client: TcpStream,
        session: ProcessorSession<'a>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(serve(client, session))
    }
}

fn audit_refusal(session: &ProcessorSession<'_>, reason: String, summary: &str) {
    session.relay.audit.processor_message(
        &session.decision,
        name(),
        &ProtocolVerdict::hard_deny(reason, summary.into()),
        false,
    );
}

async fn reply_and_close(client: &mut MsgReader<ClientStream>, reply: &[u8]) {
    let _ = client.io.write_all(reply).await;
    let _ = client.io.shutdown().await;
}

async fn serve(client: TcpStream, session: ProcessorSession<'_>) {
    let _ = client.set_nodelay(true);
    let negotiated = tokio::time::timeout(
        STARTUP_TIMEOUT,
        startup::negotiate(client, session.client_tls.as_deref()),
    )
    .await;
    let d = &session.decision;
    let (mut client, start) = match negotiated {
        Err(_) => {
            session
                .relay
                .audit
                .tunnel_closed(d, 0, 0, "postgres startup timed out");
            return;
        }
        Ok(Outcome::Gone(reason)) => {
            session.relay.audit.tunnel_closed(d, 0, 0, &reason);
            return;
        }
        Ok(Outcome::Refused {
            mut client,
            reply,
            reason,
        }) => {
            audit_refusal(&session, reason, "startup");
            reply_and_close(&mut client, &reply).await;
            return;
        }
        Ok(Outcome::Cancel(raw)) => return cancel(&session, &raw).await,
        Ok(Outcome::Startup(client, start)) => (client, start),
    };
    let (mut upstream, upstream_ip) = match open_upstream(&session, &start).await {
        Ok(u) => u,
        Err(reply) => return reply_and_close(&mut client, &reply).await,
    };
    let target = &d.intent.target;
    let resolve = |given: &[u8]| resolve_native_credential(&d.snapshot, target, given);
    let auth = tokio::time::timeout(
        STARTUP_TIMEOUT * 2,
        auth::authenticate(&mut client, &mut upstream, &start.user, &resolve),
    )
    .await;
    match auth {
        Ok(Ok(())) => {}
        Ok(Err(failure)) => {
            if failure.policy {
                audit_refusal(&session, failure.reason, "authentication");
            } else {
                session.relay.audit.tunnel_closed(d, 0, 0, &failure.reason);
            }
            if let Some(reply) = failure.reply {
                reply_and_close(&mut client, &reply).await;
            }
            return;
        }
        Err(_) => {
            session
                .relay
                .audit
                .tunnel_closed(d, 0, 0, "postgres authentication timed out");
            return;
        }
    }
    run(&session, *client, upstream, upstream_ip).await;
}

/// Dials the upstream, negotiates TLS when the client used it, and sends
/// the startup message. `Err` holds the client's FATAL reply (audited).
async fn open_upstream(
    session: &ProcessorSession<'_>,
    start: &ClientStartup,
) -> Result<(MsgReader<UpstreamStream>, Option<IpAddr>), Vec<u8>> {
    let d = &session.decision;
    let target = &d.intent.target;
    let fail = |text: String| wire::error_response(true, "08001", &format!("sluice: {text}"));
    let mut tcp = match session.connector.connect(session.limits.dial_timeout).await {
        Ok(s) => s,
        Err(e) => {
            session.relay.audit.upstream_unreachable(d, &e);
            return Err(fail(format!("connection to {target} failed")));
        }
    };
    let ip = tcp.peer_addr().ok().map(|a| a.ip());
    let mut stream = if start.tls {
        let mut answer = [0u8; 1];
        let asked = async {
            tcp.write_all(&wire::ssl_request()).await?;
            tcp.read_exact(&mut answer).await
        };
        let answered = tokio::time::timeout(session.limits.dial_timeout, asked).await;
        if !matches!(answered, Ok(Ok(_))) || answer[0] != b'S' {
            let why = format!("{target} does not accept TLS, which the client negotiated");
            session.relay.audit.upstream_unreachable(d, &why);
            return Err(fail(why));
        }
        let tls = session
            .relay
            .upstream_tls
            .connect_alpn(
                &target.host,
                tcp,
                session.limits.dial_timeout,
                ALPN_POSTGRESQL,
            )
            .await;
        match tls {
            Ok(t) => UpstreamStream::Tls(Box::new(t)),
            Err(e) => {
                session.relay.audit.upstream_unreachable(d, &e);
                return Err(fail(e.to_string()));
            }
        }
    } else {
        UpstreamStream::Plain(tcp)
    };
    let params = startup::upstream_params(&start.params);
    if stream
        .write_all(&wire::startup_message(start.version, &params))
        .await
        .is_err()
    {
        return Err(fail(format!("connection to {target} closed")));
    }
    Ok((MsgReader::new(stream), ip))
}

/// A `CancelRequest` goes to the upstream over a new connection (it names
/// a backend by the key the upstream itself handed out, so it needs no
/// policy of its own); nothing is answered.
async fn cancel(session: &ProcessorSession<'_>, raw: &[u8]) {
    if let Ok(mut tcp) = session.connector.connect(session.limits.dial_timeout).await {
        let _ = tcp.write_all(raw).await;
        let _ = tcp.shutdown().await;
    }
    session.relay.audit.tunnel_closed(
        &session.decision,
        raw.len() as u64,
        0,
        "postgres cancel request forwarded",
    );
}

/// The query phase until one side closes, the idle bound passes or a
/// reload revokes the decision; then the closing event.
async fn run(
    session: &ProcessorSession<'_>,
    client: MsgReader<ClientStream>,
    upstream: MsgReader<UpstreamStream>,
    upstream_ip: Option<IpAddr>,
) {
    let shared = Shared::new(session.relay, &session.decision, session.limits.max_message);
    let activity = Activity::new();
    let (c_rd, mut c_wr) = tokio::io::split(activity.meter(client.io));
    let mut c_rd = MsgReader::with_buf(c_rd, client.buf);
    let (mut u_rd, mut u_wr) = tokio::io::split(activity.meter(upstream.io));
    let end = {
        let up = session::client_to_upstream(&shared, &mut c_rd, &mut u_wr);
        let down = session::upstream_to_client(&shared, &mut u_rd, upstream.buf, &mut c_wr);
        tokio::select! {
            e = up => e,
            e = down => e,
            () = activity.idle_for(session.limits.idle) => End::Idle,
            () = revoked(session.relay, &session.decision, upstream_ip) => End::Revoked,
        }
    };
    let (reply, reason) = match end {
        End::Idle => (
            Some(wire::error_response(true, "57P05", "sluice: idle timeout")),
            "idle timeout".to_owned(),
        ),
        End::Revoked => (
            Some(wire::error_response(
                true,
                "57P01",
                "sluice: policy no longer allows this session",
            )),
            "policy no longer allows this session".to_owned(),
        ),
        End::ClientClosed | End::Terminated => (None, "closed".to_owned()),
        End::UpstreamClosed => (None, "upstream closed".to_owned()),
        End::Violation(why) => {
            let verdict = ProtocolVerdict::hard_deny(why.clone(), "protocol".into());
            session
                .relay
                .audit
                .processor_message(&session.decision, name(), &verdict, false);
            (
                Some(wire::error_response(
                    true,
                    "08P01",
                    &format!("sluice: {why}"),
                )),
                format!("protocol violation: {why}"),
            )
        }
        End::Unsafe(why) => (
            Some(wire::error_response(
                true,
                "0A000",
                &format!("sluice: {why}; the session cannot be inspected"),
            )),
            why,
        ),
    };
    if let Some(reply) = reply {
        let _ = c_wr.write_all(&reply).await;
    }
    let _ = c_wr.shutdown().await;
    session.relay.audit.tunnel_closed(
        &session.decision,
        shared
            .to_upstream
            .load(std::sync::atomic::Ordering::Relaxed),
        shared.to_client.load(std::sync::atomic::Ordering::Relaxed),
        &reason,
    );
}
