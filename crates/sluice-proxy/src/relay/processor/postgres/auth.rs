//! Authentication on both sides: the client proves nothing to sluice but
//! hands over a placeholder password (asked for in cleartext, only when the
//! upstream wants a password); sluice resolves it and answers the upstream
//! with the real secret in whatever method the upstream asks: SCRAM-SHA-256
//! (client side of RFC 5802/7677, via `postgres-protocol`), md5 or
//! cleartext. Then the upstream's `ParameterStatus`, `BackendKeyData` and
//! first `ReadyForQuery` are passed to the client.
//!
//! The secret lives only in this module's locals; it never reaches an
//! event, a log line or an error text.

use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::io::MsgReader;
use super::wire::{self, AuthRequest};

/// Largest message either side may send before the session starts.
pub(super) const MAX_STARTUP_MESSAGE: usize = 64 * 1024;
/// Most upstream messages of the authentication exchange.
const MAX_AUTH_STEPS: usize = 16;
/// Most upstream messages between `AuthenticationOk` and `ReadyForQuery`.
const MAX_AFTER_AUTH: usize = 1024;

/// Why the session did not start. `reply` goes to the client when present;
/// `reason` is log-safe (no secret, no password).
#[derive(Debug)]
pub(super) struct AuthFailure {
    pub(super) reply: Option<Vec<u8>>,
    pub(super) reason: String,
    /// A policy matter (placeholder not bound here...), audited as a denial.
    pub(super) policy: bool,
}

impl AuthFailure {
    fn fatal(code: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self {
            reply: Some(wire::error_response(
                true,
                code,
                &format!("sluice: {reason}"),
            )),
            reason,
            policy: false,
        }
    }

    fn closed(reason: &str) -> Self {
        Self {
            reply: None,
            reason: reason.into(),
            policy: false,
        }
    }
}

/// Resolves the client's password field: `Ok(None)` to send it as it is,
/// `Ok(Some(secret))` for a placeholder, `Err` (log-safe) to refuse.
pub(super) type Resolve<'a> = &'a (dyn Fn(&[u8]) -> Result<Option<String>, String> + Sync);

/// The password the upstream must get, asked from the client once.
async fn password<C>(
    client: &mut MsgReader<C>,
    resolve: Resolve<'_>,
    cached: &mut Option<Vec<u8>>,
) -> Result<Vec<u8>, AuthFailure>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(p) = cached {
        return Ok(p.clone());
    }
    client
        .io
        .write_all(&wire::authentication(3))
        .await
        .map_err(|_| AuthFailure::closed("client closed during authentication"))?;
    let msg = match client.message(MAX_STARTUP_MESSAGE).await {
        Ok(Some(m)) if m.tag == b'p' => m,
        Ok(None) => return Err(AuthFailure::closed("client closed during authentication")),
        Ok(Some(_)) | Err(_) => {
            return Err(AuthFailure::fatal("08P01", "expected a password message"))
        }
    };
    let given = wire::password_text(msg.body())
        .map_err(|_| AuthFailure::fatal("08P01", "malformed password message"))?;
    let secret = match resolve(given) {
        Ok(Some(secret)) => secret.into_bytes(),
        Ok(None) => given.to_vec(),
        Err(reason) => {
            return Err(AuthFailure {
                reply: Some(wire::error_response(
                    true,
                    "28P01",
                    &format!("sluice: password refused: {reason}"),
                )),
                reason: format!("password refused: {reason}"),
                policy: true,
            })
        }
    };
    *cached = Some(secret.clone());
    Ok(secret)
}

/// Runs the upstream's authentication exchange for `user`, then passes
/// everything up to the first `ReadyForQuery` to the client (after sending
/// it `AuthenticationOk`). On `Err` the client has not been answered yet.
pub(super) async fn authenticate<C, U>(
    client: &mut MsgReader<C>,
    upstream: &mut MsgReader<U>,
    user: &str,
    resolve: Resolve<'_>,
) -> Result<(), AuthFailure>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut secret: Option<Vec<u8>> = None;
    let mut scram: Option<ScramSha256> = None;
    let upstream_gone = || AuthFailure::fatal("08006", "upstream closed during authentication");
    let mut steps = 0;
    loop {
        steps += 1;
        if steps > MAX_AUTH_STEPS {
            return Err(AuthFailure::fatal(
                "08P01",
                "upstream authentication did not finish",
            ));
        }
        let Ok(Some(msg)) = upstream.message(MAX_STARTUP_MESSAGE).await else {
            return Err(upstream_gone());
        };
        let reply = match msg.tag {
            b'R' => {
                let request = wire::auth_request(msg.body()).map_err(|_| {
                    AuthFailure::fatal("08P01", "malformed authentication request from upstream")
                })?;
                match request {
                    AuthRequest::Ok => break,
                    AuthRequest::Cleartext => {
                        let pw = password(client, resolve, &mut secret).await?;
                        wire::password_message(&pw)
                    }
                    AuthRequest::Md5(salt) => {
                        let pw = password(client, resolve, &mut secret).await?;
                        wire::password_message(md5_hash(user.as_bytes(), &pw, salt).as_bytes())
                    }
                    AuthRequest::Sasl(mechanisms) => {
                        if !mechanisms.contains(&SCRAM_SHA_256.as_bytes()) {
                            return Err(AuthFailure::fatal(
                                "28000",
                                "upstream offers no SASL mechanism sluice supports",
                            ));
                        }
                        let pw = password(client, resolve, &mut secret).await?;
                        let s = ScramSha256::new(&pw, ChannelBinding::unsupported());
                        let first = wire::sasl_initial_response(SCRAM_SHA_256, s.message());
                        scram = Some(s);
                        first
                    }
                    AuthRequest::SaslContinue(data) => {
                        let s = scram.as_mut().ok_or_else(|| {
                            AuthFailure::fatal(
                                "08P01",
                                "unexpected SASL continuation from upstream",
                            )
                        })?;
                        s.update(data).map_err(|_| {
                            AuthFailure::fatal("08P01", "invalid SCRAM message from upstream")
                        })?;
                        wire::sasl_response(s.message())
                    }
                    AuthRequest::SaslFinal(data) => {
                        let s = scram.as_mut().ok_or_else(|| {
                            AuthFailure::fatal(
                                "08P01",
                                "unexpected SASL final message from upstream",
                            )
                        })?;
                        s.finish(data).map_err(|_| {
                            AuthFailure::fatal(
                                "28000",
                                "upstream SCRAM server signature is invalid",
                            )
                        })?;
                        continue;
                    }
                    AuthRequest::Unsupported(code) => {
                        return Err(AuthFailure::fatal(
                            "28000",
                            format!("upstream authentication method {code} is not supported"),
                        ))
                    }
                }
            }
            // The upstream's own refusal ("password authentication failed",
            // unknown database...) reaches the client as it is.
            b'E' => {
                return Err(AuthFailure {
                    reply: Some(msg.raw.to_vec()),
                    reason: "upstream refused the session".into(),
                    policy: false,
                })
            }
            b'v' | b'N' => {
                client
                    .io
                    .write_all(&msg.raw)
                    .await
                    .map_err(|_| AuthFailure::closed("client closed during authentication"))?;
                continue;
            }
            _ => {
                return Err(AuthFailure::fatal(
                    "08P01",
                    "unexpected message from upstream during authentication",
                ))
            }
        };
        upstream
            .io
            .write_all(&reply)
            .await
            .map_err(|_| upstream_gone())?;
    }
    drop(secret);
    let client_gone = || AuthFailure::closed("client closed during startup");
    client
        .io
        .write_all(&wire::authentication(0))
        .await
        .map_err(|_| client_gone())?;
    for _ in 0..MAX_AFTER_AUTH {
        let Ok(Some(msg)) = upstream.message(MAX_STARTUP_MESSAGE).await else {
            return Err(upstream_gone());
        };
        client
            .io
            .write_all(&msg.raw)
            .await
            .map_err(|_| client_gone())?;
        match msg.tag {
            b'Z' => return Ok(()),
            b'E' => return Err(AuthFailure::closed("upstream refused the session")),
            b'S' | b'K' | b'N' | b'v' => {}
            _ => {
                return Err(AuthFailure::closed(
                    "unexpected message from upstream before ReadyForQuery",
                ))
            }
        }
    }
    Err(AuthFailure::closed("upstream did not become ready"))
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
