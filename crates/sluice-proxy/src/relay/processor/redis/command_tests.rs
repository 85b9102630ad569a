use super::*;

fn c(line: &str) -> (String, Vec<String>, Special) {
    let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
    let r = classify(&args);
    (
        r.name,
        r.keys
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect(),
        r.special,
    )
}

#[test]
fn table_is_sorted_and_unique() {
    for w in TABLE.windows(2) {
        assert!(w[0].0 < w[1].0, "{} before {}", w[0].0, w[1].0);
    }
    for (name, _) in TABLE {
        assert_eq!(*name, name.to_ascii_uppercase());
        if let Some((base, _)) = name.split_once('|') {
            assert!(CONTAINERS.contains(&base), "{name}");
        }
    }
}

#[test]
fn names_and_keys() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("get session:1", "GET", &["session:1"]),
        ("GeT k", "GET", &["k"]),
        ("get", "GET", &[]),
        ("set k v EX 10", "SET", &["k"]),
        ("mset a 1 b 2 c 3", "MSET", &["a", "b", "c"]),
        ("msetnx a 1 b", "MSETNX", &["a", "b"]),
        ("mget a b c", "MGET", &["a", "b", "c"]),
        ("del a b", "DEL", &["a", "b"]),
        ("exists a", "EXISTS", &["a"]),
        ("unlink a b c", "UNLINK", &["a", "b", "c"]),
        ("touch a", "TOUCH", &["a"]),
        ("rename a b", "RENAME", &["a", "b"]),
        ("copy a b DB 2", "COPY", &["a", "b"]),
        ("lmove a b LEFT RIGHT", "LMOVE", &["a", "b"]),
        ("blpop a b 0", "BLPOP", &["a", "b"]),
        ("brpop a 5", "BRPOP", &["a"]),
        ("bzpopmin a b 1", "BZPOPMIN", &["a", "b"]),
        ("bitop AND dest a b", "BITOP", &["dest", "a", "b"]),
        ("hset h f v f2 v2", "HSET", &["h"]),
        ("hexpire h 10 FIELDS 1 f", "HEXPIRE", &["h"]),
        ("eval return 2 a b x y", "EVAL", &["a", "b"]),
        ("evalsha abc 0 x", "EVALSHA", &[]),
        ("fcall f 1 k arg", "FCALL", &["k"]),
        ("eval s x a b", "EVAL", &["s", "x", "a", "b"]),
        ("eval s 5 a", "EVAL", &["s", "5", "a"]),
        ("eval s -1 a", "EVAL", &["s", "-1", "a"]),
        (
            "zunionstore d 2 a b WEIGHTS 1 2",
            "ZUNIONSTORE",
            &["d", "a", "b"],
        ),
        ("zinterstore d 1 a", "ZINTERSTORE", &["d", "a"]),
        ("zunion 2 a b WITHSCORES", "ZUNION", &["a", "b"]),
        ("sintercard 2 a b LIMIT 1", "SINTERCARD", &["a", "b"]),
        ("lmpop 2 a b LEFT", "LMPOP", &["a", "b"]),
        ("blmpop 0 2 a b LEFT", "BLMPOP", &["a", "b"]),
        ("xread COUNT 2 STREAMS s1 s2 0 0", "XREAD", &["s1", "s2"]),
        ("xread BLOCK 0 STREAMS s $", "XREAD", &["s"]),
        (
            "xreadgroup GROUP STREAMS c NOACK STREAMS s >",
            "XREADGROUP",
            &["s"],
        ),
        ("xread STREAMS a b c", "XREAD", &["STREAMS", "a", "b", "c"]),
        (
            "xread FOO STREAMS a 0",
            "XREAD",
            &["FOO", "STREAMS", "a", "0"],
        ),
        (
            "xread GROUP g c STREAMS a 0",
            "XREAD",
            &["GROUP", "g", "c", "STREAMS", "a", "0"],
        ),
        ("xadd s * f v", "XADD", &["s"]),
        ("sort l", "SORT", &["l"]),
        (
            "sort l BY w_* LIMIT 0 5 GET o_* GET # ALPHA STORE dst",
            "SORT",
            &["l", "w_*", "o_*", "dst"],
        ),
        ("sort l BY nosort", "SORT", &["l"]),
        ("sort_ro l GET x_*", "SORT_RO", &["l", "x_*"]),
        ("sort l BOGUS", "SORT", &["l", "BOGUS"]),
        ("georadius g 0 0 5 km STORE d", "GEORADIUS", &["g", "d"]),
        (
            "georadiusbymember g m 5 km STOREDIST d2",
            "GEORADIUSBYMEMBER",
            &["g", "d2"],
        ),
        (
            "geosearchstore d s FROMMEMBER m BYRADIUS 1 km",
            "GEOSEARCHSTORE",
            &["d", "s"],
        ),
        ("migrate h 6379 k 0 1000", "MIGRATE", &["k"]),
        (
            "migrate h 6379  0 1000 COPY AUTH2 u KEYS KEYS a b",
            "MIGRATE",
            &["a", "b"],
        ),
        ("object encoding k", "OBJECT|ENCODING", &["k"]),
        ("OBJECT help", "OBJECT|HELP", &[]),
        ("memory usage k SAMPLES 5", "MEMORY|USAGE", &["k"]),
        ("xinfo stream s FULL", "XINFO|STREAM", &["s"]),
        ("xgroup create s g $", "XGROUP|CREATE", &["s"]),
        ("config get maxmemory", "CONFIG|GET", &[]),
        ("client setinfo lib-name x", "CLIENT|SETINFO", &[]),
        ("config", "CONFIG", &[]),
        ("ssubscribe a b", "SSUBSCRIBE", &["a", "b"]),
        ("spublish a m", "SPUBLISH", &["a"]),
        ("subscribe a b", "SUBSCRIBE", &[]),
        ("publish a m", "PUBLISH", &[]),
        ("keys *", "KEYS", &[]),
        ("scan 0 MATCH s*", "SCAN", &[]),
        ("flushall", "FLUSHALL", &[]),
        ("mymodule.cmd k", "MYMODULE.CMD", &[]),
        ("watch a b", "WATCH", &["a", "b"]),
        ("pfmerge d a b", "PFMERGE", &["d", "a", "b"]),
    ];
    for (line, name, keys) in cases {
        let (n, k, _) = c(line);
        assert_eq!(n, *name, "{line}");
        assert_eq!(k, *keys, "{line}");
    }
}

#[test]
fn odd_names_are_escaped_and_cut() {
    let args: Vec<&[u8]> = vec![b"get\r\n+OK"];
    assert_eq!(classify(&args).name, "GET\\x0D\\x0A+OK");
    let args: Vec<&[u8]> = vec![b"a\\b\xff"];
    assert_eq!(classify(&args).name, "A\\x5CB\\xFF");
    let long = vec![b'x'; 100];
    let args: Vec<&[u8]> = vec![&long];
    let name = classify(&args).name;
    assert_eq!(name.len(), MAX_NAME + 3);
    assert!(name.ends_with("..."));
    let args: Vec<&[u8]> = vec![b"config", b"get\x00"];
    assert_eq!(classify(&args).name, "CONFIG|GET\\x00");
}

#[test]
fn specials() {
    let cases: &[(&str, Special)] = &[
        ("multi", Special::Multi),
        ("multi x", Special::None),
        ("exec", Special::Exec),
        ("discard", Special::Discard),
        ("auth pw", Special::Auth),
        ("hello 3 AUTH u p", Special::Hello),
        ("quit", Special::Quit),
        ("reset", Special::Reset),
        ("monitor", Special::Monitor),
        ("subscribe a", Special::Subscribe(Pubsub::Channel)),
        ("psubscribe a*", Special::Subscribe(Pubsub::Pattern)),
        ("ssubscribe a", Special::Subscribe(Pubsub::Shard)),
        ("unsubscribe", Special::Unsubscribe(Pubsub::Channel)),
        ("punsubscribe a", Special::Unsubscribe(Pubsub::Pattern)),
        ("sunsubscribe", Special::Unsubscribe(Pubsub::Shard)),
        ("get k", Special::None),
    ];
    for (line, want) in cases {
        assert_eq!(c(line).2, *want, "{line}");
    }
    for line in [
        "sync",
        "psync ? -1",
        "replconf listening-port 1",
        "client reply off",
    ] {
        assert!(
            matches!(c(line).2, Special::Unsupported(_)),
            "{line} is refused"
        );
    }
}
