//! The command table: what a command is called for policy (`NAME`, or
//! `NAME|SUB` for container commands) and which arguments are keys, after
//! Redis' own `COMMAND` table (first key, last key, step) plus the commands
//! whose keys move (`numkeys` arguments, `STREAMS`, `STORE`, `KEYS`). A
//! command missing from the table is evaluated by name with no keys.
//!
//! Where a command's arguments do not parse the way Redis parses them (a
//! non-numeric `numkeys`, an unknown option), every argument after the name
//! counts as a key: the server refuses such a command anyway, and more keys
//! only make a key rule harder to satisfy (allow: every key must match) and
//! easier to trigger (deny: any key matching denies).

use std::fmt::Write as _;

use super::table::KeySpec::{DestNumKeys, Eval, GeoRadius, Migrate, NumKeys, Range, Sort, XRead};
use super::table::{KeySpec, TABLE};

/// Longest command or subcommand name kept for policy; longer ones are cut
/// and marked (they match no named rule, only globs).
const MAX_NAME: usize = 64;

/// The three Pub/Sub namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pubsub {
    /// `SUBSCRIBE` / `UNSUBSCRIBE`.
    Channel,
    /// `PSUBSCRIBE` / `PUNSUBSCRIBE`.
    Pattern,
    /// `SSUBSCRIBE` / `SUNSUBSCRIBE` (shard channels; Redis counts them as keys).
    Shard,
}

impl Pubsub {
    /// The first element of the server's subscribe confirmation.
    pub(crate) fn subscribed(self) -> &'static [u8] {
        match self {
            Self::Channel => b"subscribe",
            Self::Pattern => b"psubscribe",
            Self::Shard => b"ssubscribe",
        }
    }

    /// The first element of the server's unsubscribe confirmation.
    pub(crate) fn unsubscribed(self) -> &'static [u8] {
        match self {
            Self::Channel => b"unsubscribe",
            Self::Pattern => b"punsubscribe",
            Self::Shard => b"sunsubscribe",
        }
    }
}

/// Commands the session treats specially (everything else: one command,
/// one reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Special {
    None,
    Multi,
    Exec,
    Discard,
    Auth,
    Hello,
    Quit,
    Reset,
    Subscribe(Pubsub),
    Unsubscribe(Pubsub),
    Monitor,
    /// A command whose replies sluice cannot count (replication streams,
    /// `CLIENT REPLY`): refused whatever the policy says.
    Unsupported(&'static str),
}

/// One command, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Classified<'a> {
    /// Upper case; `NAME|SUB` for container commands; bytes outside
    /// printable ASCII as `\xHH`.
    pub(crate) name: String,
    /// Every key argument.
    pub(crate) keys: Vec<&'a [u8]>,
    pub(crate) special: Special,
}

/// Commands with subcommands (policy sees `NAME|SUB`).
const CONTAINERS: &[&str] = &[
    "ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "FUNCTION", "LATENCY", "MEMORY", "MODULE",
    "OBJECT", "PUBSUB", "SCRIPT", "SLOWLOG", "XGROUP", "XINFO",
];

fn push_name(out: &mut String, arg: &[u8]) {
    for &b in arg.iter().take(MAX_NAME) {
        if b.is_ascii_graphic() && b != b'\\' {
            out.push(char::from(b.to_ascii_uppercase()));
        } else {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
    if arg.len() > MAX_NAME {
        out.push_str("...");
    }
}

/// The policy name of `args` (command name first): `NAME` or `NAME|SUB`.
#[must_use]
pub(crate) fn policy_name(args: &[&[u8]]) -> String {
    let mut name = String::new();
    let Some(first) = args.first() else {
        return name;
    };
    push_name(&mut name, first);
    if let Some(sub) = args.get(1) {
        if CONTAINERS.contains(&name.as_str()) {
            name.push('|');
            push_name(&mut name, sub);
        }
    }
    name
}

/// Classifies one command (`args[0]` is its name; never empty when it
/// comes from the parser).
#[must_use]
pub(crate) fn classify<'a>(args: &[&'a [u8]]) -> Classified<'a> {
    let name = policy_name(args);
    let argc = args.len();
    let special = match (name.as_str(), argc) {
        ("MULTI", 1) => Special::Multi,
        ("EXEC", 1) => Special::Exec,
        ("DISCARD", 1) => Special::Discard,
        ("RESET", 1) => Special::Reset,
        ("MONITOR", 1) => Special::Monitor,
        ("AUTH", _) => Special::Auth,
        ("HELLO", _) => Special::Hello,
        ("QUIT", _) => Special::Quit,
        ("SUBSCRIBE", _) => Special::Subscribe(Pubsub::Channel),
        ("PSUBSCRIBE", _) => Special::Subscribe(Pubsub::Pattern),
        ("SSUBSCRIBE", _) => Special::Subscribe(Pubsub::Shard),
        ("UNSUBSCRIBE", _) => Special::Unsubscribe(Pubsub::Channel),
        ("PUNSUBSCRIBE", _) => Special::Unsubscribe(Pubsub::Pattern),
        ("SUNSUBSCRIBE", _) => Special::Unsubscribe(Pubsub::Shard),
        ("SYNC" | "PSYNC" | "REPLCONF", _) => {
            Special::Unsupported("replication commands are not supported through sluice")
        }
        ("CLIENT|REPLY", _) => Special::Unsupported(
            "CLIENT REPLY is not supported through sluice (every command gets its reply)",
        ),
        _ => Special::None,
    };
    let keys = match TABLE.binary_search_by(|(n, _)| (*n).cmp(name.as_str())) {
        Ok(i) => keys(TABLE[i].1, args),
        Err(_) => Vec::new(),
    };
    Classified {
        name,
        keys,
        special,
    }
}

/// Every argument after the name: the fallback when the arguments do not
/// parse as Redis would parse them.
fn all<'a>(args: &[&'a [u8]]) -> Vec<&'a [u8]> {
    args.iter().skip(1).copied().collect()
}

fn count(arg: &[u8]) -> Option<usize> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// `numkeys` at `at`, keys right after it; `None` when that does not parse.
fn numkeys<'a>(args: &[&'a [u8]], at: usize) -> Option<Vec<&'a [u8]>> {
    let n = args.get(at).and_then(|a| count(a))?;
    args.get(at + 1..(at + 1).checked_add(n)?)
        .map(<[&[u8]]>::to_vec)
}

fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

fn keys<'a>(spec: KeySpec, args: &[&'a [u8]]) -> Vec<&'a [u8]> {
    let argc = args.len();
    match spec {
        Range(first, last, step) => {
            let first = usize::from(first);
            let last = if last < 0 {
                argc.checked_sub(usize::from(last.unsigned_abs()))
            } else {
                Some(usize::from(last.unsigned_abs()))
            };
            let Some(last) = last.map(|l| l.min(argc.saturating_sub(1))) else {
                return Vec::new();
            };
            if first > last {
                return Vec::new();
            }
            (first..=last)
                .step_by(usize::from(step.max(1)))
                .map(|i| args[i])
                .collect()
        }
        Eval => numkeys(args, 2).unwrap_or_else(|| all(args)),
        NumKeys(at) => numkeys(args, usize::from(at)).unwrap_or_else(|| all(args)),
        DestNumKeys => match numkeys(args, 2) {
            Some(mut k) => {
                k.insert(0, args[1]);
                k
            }
            None => all(args),
        },
        XRead => xread(args),
        Sort => sort(args),
        GeoRadius => {
            let mut k: Vec<&[u8]> = args.get(1).copied().into_iter().collect();
            let mut i = 5;
            while i + 1 < argc {
                if is(args[i], "STORE") || is(args[i], "STOREDIST") {
                    k.push(args[i + 1]);
                    i += 1;
                }
                i += 1;
            }
            k
        }
        Migrate => {
            let mut k: Vec<&[u8]> = args
                .get(3)
                .copied()
                .filter(|a| !a.is_empty())
                .into_iter()
                .collect();
            let mut i = 6;
            while i < argc {
                let a = args[i];
                if is(a, "KEYS") {
                    k.extend_from_slice(&args[i + 1..]);
                    break;
                }
                if is(a, "AUTH") {
                    i += 1;
                } else if is(a, "AUTH2") {
                    i += 2;
                }
                i += 1;
            }
            k
        }
    }
}

/// Redis' `xreadCommand` option loop.
fn xread<'a>(args: &[&'a [u8]]) -> Vec<&'a [u8]> {
    let argc = args.len();
    let group = is(args[0], "XREADGROUP");
    let mut i = 1;
    while i < argc {
        let more = argc - i - 1;
        let o = args[i];
        if is(o, "STREAMS") && more > 0 {
            let rest = &args[i + 1..];
            if !rest.len().is_multiple_of(2) {
                return all(args);
            }
            return rest[..rest.len() / 2].to_vec();
        } else if (is(o, "COUNT") || is(o, "BLOCK")) && more > 0 {
            i += 2;
        } else if group && is(o, "GROUP") && more >= 2 {
            i += 3;
        } else if group && is(o, "NOACK") {
            i += 1;
        } else {
            return all(args);
        }
    }
    Vec::new()
}

/// Redis' `sortCommand` option loop; `BY` and `GET` patterns that can name
/// other keys (they contain `*`) count as keys too.
fn sort<'a>(args: &[&'a [u8]]) -> Vec<&'a [u8]> {
    let argc = args.len();
    let Some(&key) = args.get(1) else {
        return Vec::new();
    };
    let mut k = vec![key];
    let mut j = 2;
    while j < argc {
        let left = argc - j - 1;
        let o = args[j];
        if is(o, "ASC") || is(o, "DESC") || is(o, "ALPHA") {
            j += 1;
        } else if is(o, "LIMIT") && left >= 2 {
            j += 3;
        } else if is(o, "STORE") && left >= 1 {
            k.push(args[j + 1]);
            j += 2;
        } else if (is(o, "BY") || is(o, "GET")) && left >= 1 {
            if args[j + 1].contains(&b'*') {
                k.push(args[j + 1]);
            }
            j += 2;
        } else {
            return all(args);
        }
    }
    k
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
