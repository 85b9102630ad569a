//! The decision for each client command, under the endpoint's rules of the
//! pinned policy generation: forward it (possibly with an `AUTH` password
//! resolved), answer it locally, or end the session. Keeps the transaction
//! state a denial inside `MULTI` needs. Pure: no I/O, no events (the
//! verdict to log is returned).

use std::borrow::Cow;

use sluice_policy::request::native::{evaluate_redis, RedisCommand};
use sluice_policy::request::ProtocolVerdict;
use sluice_policy::{Endpoint, PolicySnapshot};

use super::command::{classify, Classified, Special};
use super::flow::Expect;
use super::resp::{encode_command, error_line};
use crate::egress::Target;
use crate::relay::credentials::resolve_native_credential;

/// Redis' own answer to `EXEC` after a failed queueing.
pub(crate) const EXECABORT: &[u8] =
    b"-EXECABORT Transaction discarded because of previous errors.\r\n";
/// `DISCARD`, sent upstream to abort a transaction.
pub(crate) const DISCARD: &[u8] = b"*1\r\n$7\r\nDISCARD\r\n";

/// What to do with one command.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action<'b> {
    /// Send these bytes upstream; the upstream owes `expect`.
    Forward {
        bytes: Cow<'b, [u8]>,
        expect: Expect,
    },
    /// Answer with these bytes; the upstream never sees the command.
    Local(Vec<u8>),
    /// End a transaction that must not run: `DISCARD` upstream (its reply
    /// swallowed), this reply to the client.
    Abort(Vec<u8>),
    /// `QUIT`: `+OK` after every earlier reply, then close.
    Quit,
}

/// An action and the event it needs: `(verdict, audit_only)` for
/// `Audit::processor_message`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Decision<'b> {
    pub(crate) action: Action<'b>,
    pub(crate) event: Option<(ProtocolVerdict, bool)>,
}

/// Where the connection is in a transaction, as the client's commands say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Txn {
    None,
    /// `MULTI` was forwarded; `refused`: a queued command was denied, so
    /// `EXEC` becomes `DISCARD` + `EXECABORT`.
    Open {
        refused: bool,
    },
    /// `MULTI` itself was denied: nothing up to `EXEC`/`DISCARD` runs.
    Denied,
}

/// Per-session policy gate (see the module docs).
pub(crate) struct Gate<'p> {
    snapshot: &'p PolicySnapshot,
    endpoint: &'p Endpoint,
    target: &'p Target,
    /// `enforcement: audit`: policy denials are forwarded and logged.
    audit: bool,
    txn: Txn,
}

/// The local error for a denial.
fn denial(reason: &str) -> Vec<u8> {
    error_line(&format!("ERR sluice: {reason}"))
}

fn summary(c: &Classified<'_>) -> String {
    format!("command={} keys={}", c.name, c.keys.len())
}

impl<'p> Gate<'p> {
    pub(crate) fn new(
        snapshot: &'p PolicySnapshot,
        endpoint: &'p Endpoint,
        target: &'p Target,
        audit: bool,
    ) -> Self {
        Self {
            snapshot,
            endpoint,
            target,
            audit,
            txn: Txn::None,
        }
    }

    /// Decides one command. `args` are its arguments (name first, never
    /// empty); `raw` its bytes when they can be forwarded as they are.
    pub(crate) fn decide<'b>(&mut self, args: &[&'b [u8]], raw: Option<&'b [u8]>) -> Decision<'b> {
        let c = classify(args);
        if c.special == Special::Quit {
            return Decision {
                action: Action::Quit,
                event: None,
            };
        }
        if self.txn == Txn::Denied {
            return self.inside_denied_txn(c.special);
        }
        let in_txn = matches!(self.txn, Txn::Open { .. });
        // Inside an open transaction, EXEC and DISCARD end what MULTI (which
        // policy allowed) started: they follow it.
        let ends_txn = in_txn && matches!(c.special, Special::Exec | Special::Discard);
        if let Special::Unsupported(why) = c.special {
            return self.refuse(ProtocolVerdict::hard_deny(why.into(), summary(&c)));
        }
        if in_txn
            && matches!(
                c.special,
                Special::Subscribe(_)
                    | Special::Unsubscribe(_)
                    | Special::Monitor
                    | Special::Hello
                    | Special::Reset
            )
        {
            let why = format!(
                "{} inside MULTI is not supported through sluice",
                c.name.split('|').next().unwrap_or_default()
            );
            return self.refuse(ProtocolVerdict::hard_deny(why, summary(&c)));
        }
        let mut event = None;
        if !ends_txn {
            let mut verdict = evaluate_redis(
                self.endpoint,
                &RedisCommand {
                    name: &c.name,
                    keys: &c.keys,
                },
            );
            // Connection set-up (authenticate, pick the protocol, reset)
            // needs no allow rule; a deny rule still applies.
            if !verdict.allowed
                && verdict.rule.is_none()
                && matches!(c.special, Special::Auth | Special::Hello | Special::Reset)
            {
                verdict = ProtocolVerdict::allow(verdict.summary);
            }
            if !verdict.allowed {
                if !self.audit || verdict.hard {
                    if c.special == Special::Multi && !in_txn {
                        self.txn = Txn::Denied;
                    }
                    return self.refuse(verdict);
                }
                event = Some((verdict, true));
            }
        }
        let bytes = match self.credentials(&c, args) {
            Ok(None) => raw.map_or_else(
                || {
                    let mut out = Vec::new();
                    encode_command(args, &mut out);
                    Cow::Owned(out)
                },
                Cow::Borrowed,
            ),
            Ok(Some(rewritten)) => Cow::Owned(rewritten),
            Err(why) => return self.refuse(ProtocolVerdict::hard_deny(why, summary(&c))),
        };
        let action = match self.expect(c.special, args.len()) {
            Some(expect) => Action::Forward { bytes, expect },
            None => Action::Abort(EXECABORT.to_vec()),
        };
        Decision { action, event }
    }

    /// A denial: the local error, the event, and a transaction that can no
    /// longer run.
    fn refuse<'b>(&mut self, verdict: ProtocolVerdict) -> Decision<'b> {
        if let Txn::Open { refused } = &mut self.txn {
            *refused = true;
        }
        Decision {
            action: Action::Local(denial(&verdict.reason)),
            event: Some((verdict, false)),
        }
    }

    /// After a denied `MULTI`: nothing runs until the client ends the
    /// transaction it thinks it opened.
    fn inside_denied_txn<'b>(&mut self, special: Special) -> Decision<'b> {
        let reply = match special {
            Special::Exec => {
                self.txn = Txn::None;
                EXECABORT.to_vec()
            }
            Special::Discard => {
                self.txn = Txn::None;
                b"+OK\r\n".to_vec()
            }
            _ => denial("not run: the transaction's MULTI was denied"),
        };
        Decision {
            action: Action::Local(reply),
            event: None,
        }
    }

    /// What the upstream owes for a forwarded command, and the transaction
    /// state after it; `None`: abort the transaction instead.
    fn expect(&mut self, special: Special, argc: usize) -> Option<Expect> {
        if let Txn::Open { refused } = self.txn {
            // Queued commands answer `+QUEUED` (or an error), one each.
            return match special {
                Special::Exec => {
                    self.txn = Txn::None;
                    (!refused).then_some(Expect::One)
                }
                Special::Discard => {
                    self.txn = Txn::None;
                    Some(Expect::One)
                }
                _ => Some(Expect::One),
            };
        }
        Some(match special {
            Special::Multi => {
                self.txn = Txn::Open { refused: false };
                Expect::One
            }
            Special::Subscribe(kind) if argc > 1 => Expect::Subscribe {
                kind,
                left: argc - 1,
            },
            Special::Unsubscribe(kind) => Expect::Unsubscribe {
                kind,
                left: (argc > 1).then(|| argc - 1),
            },
            Special::Monitor => Expect::Monitor,
            Special::Hello => Expect::Hello,
            Special::Reset => Expect::Reset,
            _ => Expect::One,
        })
    }

    /// `AUTH [user] pass` and `HELLO ... AUTH user pass`: a password that is
    /// a placeholder is replaced by the provider's secret (the command comes
    /// back re-encoded). `Err`: refuse, never forward.
    fn credentials(&self, c: &Classified<'_>, args: &[&[u8]]) -> Result<Option<Vec<u8>>, String> {
        let at: Vec<usize> = match c.special {
            Special::Auth if args.len() == 2 => vec![1],
            Special::Auth if args.len() == 3 => vec![2],
            Special::Hello => hello_passwords(args),
            _ => Vec::new(),
        };
        let mut secrets = Vec::new();
        for &i in &at {
            if let Some(secret) = resolve_native_credential(self.snapshot, self.target, args[i])? {
                secrets.push((i, secret));
            }
        }
        if secrets.is_empty() {
            return Ok(None);
        }
        let mut with = args.to_vec();
        for (i, secret) in &secrets {
            with[*i] = secret.as_bytes();
        }
        let mut out = Vec::new();
        encode_command(&with, &mut out);
        Ok(Some(out))
    }
}

/// The password positions in `HELLO [protover [AUTH user pass] [SETNAME name]]`,
/// with Redis' option loop (it stops at the first option it cannot read).
fn hello_passwords(args: &[&[u8]]) -> Vec<usize> {
    let mut at = Vec::new();
    let mut j = 2;
    while j < args.len() {
        let more = args.len() - 1 - j;
        if args[j].eq_ignore_ascii_case(b"AUTH") && more >= 2 {
            at.push(j + 2);
            j += 3;
        } else if args[j].eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
            j += 2;
        } else {
            break;
        }
    }
    at
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
