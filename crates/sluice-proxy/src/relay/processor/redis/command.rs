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

/// Where a command's keys are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeySpec {
    /// Redis' (first, last, step): positions counted from the command name
    /// (0); a negative last counts from the end (-1: the last argument).
    Range(u8, i8, u8),
    /// `EVAL script numkeys key...`, also `EVALSHA`, `FCALL` and their `_RO`.
    Eval,
    /// `numkeys` at this position, the keys right after it.
    NumKeys(u8),
    /// `ZUNIONSTORE dest numkeys key...` (and `ZINTERSTORE`, `ZDIFFSTORE`).
    DestNumKeys,
    /// `XREAD`/`XREADGROUP ... STREAMS key... id...`.
    XRead,
    /// `SORT key ... [BY pattern] [GET pattern...] [STORE dest]`.
    Sort,
    /// `GEORADIUS[BYMEMBER] key ... [STORE key] [STOREDIST key]`.
    GeoRadius,
    /// `MIGRATE host port key|"" db timeout ... [KEYS key...]`.
    Migrate,
}

use KeySpec::{DestNumKeys, Eval, GeoRadius, Migrate, NumKeys, Range, Sort, XRead};

/// Redis 7.0's key positions (generated from `COMMAND`), the 7.2-8.x hash
/// field expiry, vector set and stream additions (key first), sorted by name.
const TABLE: &[(&str, KeySpec)] = &[
    ("APPEND", Range(1, 1, 1)),
    ("BITCOUNT", Range(1, 1, 1)),
    ("BITFIELD", Range(1, 1, 1)),
    ("BITFIELD_RO", Range(1, 1, 1)),
    ("BITOP", Range(2, -1, 1)),
    ("BITPOS", Range(1, 1, 1)),
    ("BLMOVE", Range(1, 2, 1)),
    ("BLMPOP", NumKeys(2)),
    ("BLPOP", Range(1, -2, 1)),
    ("BRPOP", Range(1, -2, 1)),
    ("BRPOPLPUSH", Range(1, 2, 1)),
    ("BZMPOP", NumKeys(2)),
    ("BZPOPMAX", Range(1, -2, 1)),
    ("BZPOPMIN", Range(1, -2, 1)),
    ("COPY", Range(1, 2, 1)),
    ("DECR", Range(1, 1, 1)),
    ("DECRBY", Range(1, 1, 1)),
    ("DEL", Range(1, -1, 1)),
    ("DUMP", Range(1, 1, 1)),
    ("EVAL", Eval),
    ("EVALSHA", Eval),
    ("EVALSHA_RO", Eval),
    ("EVAL_RO", Eval),
    ("EXISTS", Range(1, -1, 1)),
    ("EXPIRE", Range(1, 1, 1)),
    ("EXPIREAT", Range(1, 1, 1)),
    ("EXPIRETIME", Range(1, 1, 1)),
    ("FCALL", Eval),
    ("FCALL_RO", Eval),
    ("GEOADD", Range(1, 1, 1)),
    ("GEODIST", Range(1, 1, 1)),
    ("GEOHASH", Range(1, 1, 1)),
    ("GEOPOS", Range(1, 1, 1)),
    ("GEORADIUS", GeoRadius),
    ("GEORADIUSBYMEMBER", GeoRadius),
    ("GEORADIUSBYMEMBER_RO", Range(1, 1, 1)),
    ("GEORADIUS_RO", Range(1, 1, 1)),
    ("GEOSEARCH", Range(1, 1, 1)),
    ("GEOSEARCHSTORE", Range(1, 2, 1)),
    ("GET", Range(1, 1, 1)),
    ("GETBIT", Range(1, 1, 1)),
    ("GETDEL", Range(1, 1, 1)),
    ("GETEX", Range(1, 1, 1)),
    ("GETRANGE", Range(1, 1, 1)),
    ("GETSET", Range(1, 1, 1)),
    ("HDEL", Range(1, 1, 1)),
    ("HEXISTS", Range(1, 1, 1)),
    ("HEXPIRE", Range(1, 1, 1)),
    ("HEXPIREAT", Range(1, 1, 1)),
    ("HEXPIRETIME", Range(1, 1, 1)),
    ("HGET", Range(1, 1, 1)),
    ("HGETALL", Range(1, 1, 1)),
    ("HGETDEL", Range(1, 1, 1)),
    ("HGETEX", Range(1, 1, 1)),
    ("HINCRBY", Range(1, 1, 1)),
    ("HINCRBYFLOAT", Range(1, 1, 1)),
    ("HKEYS", Range(1, 1, 1)),
    ("HLEN", Range(1, 1, 1)),
    ("HMGET", Range(1, 1, 1)),
    ("HMSET", Range(1, 1, 1)),
    ("HPERSIST", Range(1, 1, 1)),
    ("HPEXPIRE", Range(1, 1, 1)),
    ("HPEXPIREAT", Range(1, 1, 1)),
    ("HPEXPIRETIME", Range(1, 1, 1)),
    ("HPTTL", Range(1, 1, 1)),
    ("HRANDFIELD", Range(1, 1, 1)),
    ("HSCAN", Range(1, 1, 1)),
    ("HSET", Range(1, 1, 1)),
    ("HSETEX", Range(1, 1, 1)),
    ("HSETNX", Range(1, 1, 1)),
    ("HSTRLEN", Range(1, 1, 1)),
    ("HTTL", Range(1, 1, 1)),
    ("HVALS", Range(1, 1, 1)),
    ("INCR", Range(1, 1, 1)),
    ("INCRBY", Range(1, 1, 1)),
    ("INCRBYFLOAT", Range(1, 1, 1)),
    ("LCS", Range(1, 2, 1)),
    ("LINDEX", Range(1, 1, 1)),
    ("LINSERT", Range(1, 1, 1)),
    ("LLEN", Range(1, 1, 1)),
    ("LMOVE", Range(1, 2, 1)),
    ("LMPOP", NumKeys(1)),
    ("LPOP", Range(1, 1, 1)),
    ("LPOS", Range(1, 1, 1)),
    ("LPUSH", Range(1, 1, 1)),
    ("LPUSHX", Range(1, 1, 1)),
    ("LRANGE", Range(1, 1, 1)),
    ("LREM", Range(1, 1, 1)),
    ("LSET", Range(1, 1, 1)),
    ("LTRIM", Range(1, 1, 1)),
    ("MEMORY|USAGE", Range(2, 2, 1)),
    ("MGET", Range(1, -1, 1)),
    ("MIGRATE", Migrate),
    ("MOVE", Range(1, 1, 1)),
    ("MSET", Range(1, -1, 2)),
    ("MSETNX", Range(1, -1, 2)),
    ("OBJECT|ENCODING", Range(2, 2, 1)),
    ("OBJECT|FREQ", Range(2, 2, 1)),
    ("OBJECT|IDLETIME", Range(2, 2, 1)),
    ("OBJECT|REFCOUNT", Range(2, 2, 1)),
    ("PERSIST", Range(1, 1, 1)),
    ("PEXPIRE", Range(1, 1, 1)),
    ("PEXPIREAT", Range(1, 1, 1)),
    ("PEXPIRETIME", Range(1, 1, 1)),
    ("PFADD", Range(1, 1, 1)),
    ("PFCOUNT", Range(1, -1, 1)),
    ("PFDEBUG", Range(2, 2, 1)),
    ("PFMERGE", Range(1, -1, 1)),
    ("PSETEX", Range(1, 1, 1)),
    ("PTTL", Range(1, 1, 1)),
    ("RENAME", Range(1, 2, 1)),
    ("RENAMENX", Range(1, 2, 1)),
    ("RESTORE", Range(1, 1, 1)),
    ("RESTORE-ASKING", Range(1, 1, 1)),
    ("RPOP", Range(1, 1, 1)),
    ("RPOPLPUSH", Range(1, 2, 1)),
    ("RPUSH", Range(1, 1, 1)),
    ("RPUSHX", Range(1, 1, 1)),
    ("SADD", Range(1, 1, 1)),
    ("SCARD", Range(1, 1, 1)),
    ("SDIFF", Range(1, -1, 1)),
    ("SDIFFSTORE", Range(1, -1, 1)),
    ("SET", Range(1, 1, 1)),
    ("SETBIT", Range(1, 1, 1)),
    ("SETEX", Range(1, 1, 1)),
    ("SETNX", Range(1, 1, 1)),
    ("SETRANGE", Range(1, 1, 1)),
    ("SINTER", Range(1, -1, 1)),
    ("SINTERCARD", NumKeys(1)),
    ("SINTERSTORE", Range(1, -1, 1)),
    ("SISMEMBER", Range(1, 1, 1)),
    ("SMEMBERS", Range(1, 1, 1)),
    ("SMISMEMBER", Range(1, 1, 1)),
    ("SMOVE", Range(1, 2, 1)),
    ("SORT", Sort),
    ("SORT_RO", Sort),
    ("SPOP", Range(1, 1, 1)),
    ("SPUBLISH", Range(1, 1, 1)),
    ("SRANDMEMBER", Range(1, 1, 1)),
    ("SREM", Range(1, 1, 1)),
    ("SSCAN", Range(1, 1, 1)),
    ("SSUBSCRIBE", Range(1, -1, 1)),
    ("STRLEN", Range(1, 1, 1)),
    ("SUBSTR", Range(1, 1, 1)),
    ("SUNION", Range(1, -1, 1)),
    ("SUNIONSTORE", Range(1, -1, 1)),
    ("SUNSUBSCRIBE", Range(1, -1, 1)),
    ("TOUCH", Range(1, -1, 1)),
    ("TTL", Range(1, 1, 1)),
    ("TYPE", Range(1, 1, 1)),
    ("UNLINK", Range(1, -1, 1)),
    ("VADD", Range(1, 1, 1)),
    ("VCARD", Range(1, 1, 1)),
    ("VDIM", Range(1, 1, 1)),
    ("VEMB", Range(1, 1, 1)),
    ("VGETATTR", Range(1, 1, 1)),
    ("VINFO", Range(1, 1, 1)),
    ("VISMEMBER", Range(1, 1, 1)),
    ("VLINKS", Range(1, 1, 1)),
    ("VRANDMEMBER", Range(1, 1, 1)),
    ("VREM", Range(1, 1, 1)),
    ("VSETATTR", Range(1, 1, 1)),
    ("VSIM", Range(1, 1, 1)),
    ("WATCH", Range(1, -1, 1)),
    ("XACK", Range(1, 1, 1)),
    ("XACKDEL", Range(1, 1, 1)),
    ("XADD", Range(1, 1, 1)),
    ("XAUTOCLAIM", Range(1, 1, 1)),
    ("XCLAIM", Range(1, 1, 1)),
    ("XDEL", Range(1, 1, 1)),
    ("XDELEX", Range(1, 1, 1)),
    ("XGROUP|CREATE", Range(2, 2, 1)),
    ("XGROUP|CREATECONSUMER", Range(2, 2, 1)),
    ("XGROUP|DELCONSUMER", Range(2, 2, 1)),
    ("XGROUP|DESTROY", Range(2, 2, 1)),
    ("XGROUP|SETID", Range(2, 2, 1)),
    ("XINFO|CONSUMERS", Range(2, 2, 1)),
    ("XINFO|GROUPS", Range(2, 2, 1)),
    ("XINFO|STREAM", Range(2, 2, 1)),
    ("XLEN", Range(1, 1, 1)),
    ("XPENDING", Range(1, 1, 1)),
    ("XRANGE", Range(1, 1, 1)),
    ("XREAD", XRead),
    ("XREADGROUP", XRead),
    ("XREVRANGE", Range(1, 1, 1)),
    ("XSETID", Range(1, 1, 1)),
    ("XTRIM", Range(1, 1, 1)),
    ("ZADD", Range(1, 1, 1)),
    ("ZCARD", Range(1, 1, 1)),
    ("ZCOUNT", Range(1, 1, 1)),
    ("ZDIFF", NumKeys(1)),
    ("ZDIFFSTORE", DestNumKeys),
    ("ZINCRBY", Range(1, 1, 1)),
    ("ZINTER", NumKeys(1)),
    ("ZINTERCARD", NumKeys(1)),
    ("ZINTERSTORE", DestNumKeys),
    ("ZLEXCOUNT", Range(1, 1, 1)),
    ("ZMPOP", NumKeys(1)),
    ("ZMSCORE", Range(1, 1, 1)),
    ("ZPOPMAX", Range(1, 1, 1)),
    ("ZPOPMIN", Range(1, 1, 1)),
    ("ZRANDMEMBER", Range(1, 1, 1)),
    ("ZRANGE", Range(1, 1, 1)),
    ("ZRANGEBYLEX", Range(1, 1, 1)),
    ("ZRANGEBYSCORE", Range(1, 1, 1)),
    ("ZRANGESTORE", Range(1, 2, 1)),
    ("ZRANK", Range(1, 1, 1)),
    ("ZREM", Range(1, 1, 1)),
    ("ZREMRANGEBYLEX", Range(1, 1, 1)),
    ("ZREMRANGEBYRANK", Range(1, 1, 1)),
    ("ZREMRANGEBYSCORE", Range(1, 1, 1)),
    ("ZREVRANGE", Range(1, 1, 1)),
    ("ZREVRANGEBYLEX", Range(1, 1, 1)),
    ("ZREVRANGEBYSCORE", Range(1, 1, 1)),
    ("ZREVRANK", Range(1, 1, 1)),
    ("ZSCAN", Range(1, 1, 1)),
    ("ZSCORE", Range(1, 1, 1)),
    ("ZUNION", NumKeys(1)),
    ("ZUNIONSTORE", DestNumKeys),
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
