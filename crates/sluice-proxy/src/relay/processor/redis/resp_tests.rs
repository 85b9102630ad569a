use super::super::prop::{seed, Rng};
use super::*;

const LIMITS: Limits = Limits {
    max_message: 1 << 20,
    max_args: 1024,
};

fn parse_all(buf: &[u8]) -> Parse {
    CommandParser::default().parse(buf, &LIMITS)
}

fn args_of(buf: &[u8]) -> Vec<Vec<u8>> {
    match parse_all(buf) {
        Parse::Command(c) => c.args(buf).into_iter().map(<[u8]>::to_vec).collect(),
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    }
}

fn v(items: &[&str]) -> Vec<Vec<u8>> {
    items.iter().map(|s| s.as_bytes().to_vec()).collect()
}

#[test]
fn commands() {
    let cases: &[(&[u8], &[&str], usize)] = &[
        (b"*1\r\n$4\r\nPING\r\n", &["PING"], 14),
        (
            b"*2\r\n$3\r\nGET\r\n$9\r\nsession:1\r\n*1\r\n",
            &["GET", "session:1"],
            28,
        ),
        (b"*2\r\n$3\r\nSET\r\n$0\r\n\r\n", &["SET", ""], 19),
        // Binary arguments, CRLF inside a bulk string.
        (
            b"*2\r\n$4\r\nECHO\r\n$4\r\n\r\n\0\xff\r\n",
            &["ECHO", "\r\n\0\u{ff}"],
            0,
        ),
        (b"PING\r\n", &["PING"], 6),
        (b"PING\n", &["PING"], 5),
        (b"  GET   k \r\n", &["GET", "k"], 12),
        (b"SET k \"a b\"\r\n", &["SET", "k", "a b"], 13),
        (b"SET k \"\\x41\\n\\\"\"\r\n", &["SET", "k", "A\n\""], 18),
        (b"SET k 'it\\'s'\r\n", &["SET", "k", "it's"], 15),
        (b"SET k \"\"\r\n", &["SET", "k", ""], 10),
        (b"SET k ab\"c d\"\r\n", &["SET", "k", "abc d"], 15),
    ];
    for (input, want, len) in cases {
        let r = parse_all(input);
        let Parse::Command(c) = &r else {
            panic!("{:?}: {r:?}", String::from_utf8_lossy(input));
        };
        let got: Vec<Vec<u8>> = c.args(input).into_iter().map(<[u8]>::to_vec).collect();
        let want: Vec<Vec<u8>> = if input.starts_with(b"*2\r\n$4\r\nECHO") {
            vec![b"ECHO".to_vec(), b"\r\n\0\xff".to_vec()]
        } else {
            v(want)
        };
        assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
        if *len > 0 {
            assert_eq!(c.len, *len, "{:?}", String::from_utf8_lossy(input));
        }
    }
}

#[test]
fn ignored_need_more_and_errors() {
    use RespError::*;
    let cases: &[(&[u8], Parse)] = &[
        (b"", Parse::NeedMore),
        (b"*", Parse::NeedMore),
        (b"*2\r", Parse::NeedMore),
        (b"*2\r\n$3\r\nGET\r\n", Parse::NeedMore),
        (b"*2\r\n$3\r\nGET\r\n$9\r\nsess", Parse::NeedMore),
        (b"*1\r\n$4\r\nPING\r", Parse::NeedMore),
        (b"PING", Parse::NeedMore),
        (b"*0\r\n", Parse::Ignored(4)),
        (b"*-1\r\n", Parse::Ignored(5)),
        (b"\r\n", Parse::Ignored(2)),
        (b"   \n", Parse::Ignored(4)),
        (b"*1\r\n+PING\r\n", Parse::Error(ExpectedBulk(b'+'))),
        (b"*1\r\n:1\r\n", Parse::Error(ExpectedBulk(b':'))),
        (b"*1\r\n*1\r\n$1\r\na\r\n", Parse::Error(ExpectedBulk(b'*'))),
        (b"*x\r\n", Parse::Error(MultibulkLength)),
        (b"*01\r\n", Parse::Error(MultibulkLength)),
        (b"*+1\r\n", Parse::Error(MultibulkLength)),
        (b"*1\n", Parse::Error(MultibulkLength)),
        (b"*1\rX", Parse::Error(MultibulkLength)),
        (b"*123456789012345678901\r\n", Parse::Error(MultibulkLength)),
        (b"*2000\r\n", Parse::Error(TooManyArgs)),
        (b"*1\r\n$-1\r\n", Parse::Error(BulkLength)),
        (b"*1\r\n$04\r\nPING\r\n", Parse::Error(BulkLength)),
        (b"*1\r\n$\r\n", Parse::Error(BulkLength)),
        (b"*1\r\n$4\r\nPINGx\r\n", Parse::Error(BulkTerminator)),
        (b"*1\r\n$4\r\nPING\n\n", Parse::Error(BulkTerminator)),
        (b"*1\r\n$2000000\r\n", Parse::Error(TooLarge)),
        (b"*1000\r\n", Parse::NeedMore),
        (b"ECHO \"abc\r\n", Parse::Error(UnbalancedQuotes)),
        (b"ECHO \"a\"b\r\n", Parse::Error(UnbalancedQuotes)),
        (b"ECHO 'a\r\n", Parse::Error(UnbalancedQuotes)),
        (b"GET a\0b\r\n", Parse::Error(InlineNul)),
        (b"\x16\x03\x01\x02\x00", Parse::Error(Tls)),
    ];
    for (input, want) in cases {
        assert_eq!(
            &parse_all(input),
            want,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    let long = vec![b'a'; MAX_INLINE];
    assert_eq!(parse_all(&long), Parse::Error(InlineTooLong));
    // Bounded by the message limit before the bytes arrive.
    let small = Limits {
        max_message: 64,
        max_args: 1024,
    };
    let mut p = CommandParser::default();
    assert_eq!(p.parse(b"*20\r\n", &small), Parse::Error(TooLarge));
    assert_eq!(
        p.parse(b"*2\r\n$3\r\nSET\r\n$60\r\n", &small),
        Parse::Error(TooLarge)
    );
}

#[test]
fn error_messages_are_redis_shaped_and_printable() {
    assert_eq!(
        RespError::ExpectedBulk(b'+').to_string(),
        "expected '$', got '+'"
    );
    assert_eq!(
        RespError::ExpectedBulk(b'\n').to_string(),
        "expected '$', got '\\x0a'"
    );
    assert_eq!(error_line("ERR a\r\n+OK"), b"-ERR a??+OK\r\n");
    assert_eq!(error_line("ERR é"), b"-ERR ??\r\n");
    assert_eq!(error_line(&"x".repeat(1000)).len(), 515);
}

#[test]
fn resumes_where_it_stopped() {
    let cmd = b"*3\r\n$3\r\nSET\r\n$9\r\nsession:1\r\n$5\r\nvalue\r\n";
    let mut p = CommandParser::default();
    for cut in 0..cmd.len() {
        assert_eq!(p.parse(&cmd[..cut], &LIMITS), Parse::NeedMore, "cut {cut}");
    }
    let Parse::Command(c) = p.parse(cmd, &LIMITS) else {
        panic!("complete");
    };
    assert_eq!(c.len, cmd.len());
    assert_eq!(c.raw(cmd), Some(&cmd[..]));
    // The parser starts afresh after a command.
    assert_eq!(p.parse(b"PING\r\n", &LIMITS), parse_all(b"PING\r\n"));
}

#[test]
fn split_args_like_redis() {
    let cases: &[(&[u8], Option<&[&str]>)] = &[
        (b"", Some(&[])),
        (b"a b\tc", Some(&["a", "b", "c"])),
        (b"\"\\t\\r\\a\\b\\\\\"", Some(&["\t\r\u{7}\u{8}\\"])),
        (b"\"\\xZZ\"", Some(&["xZZ"])),
        (b"'\\n'", Some(&["\\n"])),
        (b"\"a\" \"b\"", Some(&["a", "b"])),
        (b"\"a\"\"b\"", None),
        (b"'a'b", None),
        (b"\"a", None),
        (b"\"a\\", None),
    ];
    for (line, want) in cases {
        assert_eq!(
            split_args(line),
            want.map(v),
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn encode_round_trips() {
    let args: Vec<&[u8]> = vec![b"SET", b"k", b"a\r\nb", b""];
    let mut out = Vec::new();
    encode_command(&args, &mut out);
    assert_eq!(
        out,
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n$0\r\n\r\n"
    );
    assert_eq!(
        args_of(&out),
        args.iter().map(|a| a.to_vec()).collect::<Vec<_>>()
    );
}

/// Properties over random and mutated input: no panic; a command is
/// within the buffer, its multibulk bytes are exactly the canonical encoding
/// of its arguments, it parses the same alone and fed in two pieces; a
/// strict prefix of a multibulk command needs more bytes; an error stays an
/// error when bytes are appended.
#[test]
fn properties_over_random_and_mutated_input() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let valid: &[&[u8]] = &[
        b"*2\r\n$3\r\nGET\r\n$9\r\nsession:1\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n",
        b"SET k \"a\\x41\" 'b'\r\n",
        b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n",
        b"*0\r\nPING\n",
    ];
    for round in 0..20_000 {
        let input = if round % 2 == 0 {
            let base = rng_pick(&mut rng, valid);
            rng.mutate(base)
        } else {
            rng.bytes(64)
        };
        check(&input, &mut rng).unwrap_or_else(|e| {
            panic!(
                "seed {seed} round {round} input {:?}: {e}",
                String::from_utf8_lossy(&input)
            )
        });
    }
}

fn rng_pick<'a>(rng: &mut Rng, items: &[&'a [u8]]) -> &'a [u8] {
    items[rng.below(items.len())]
}

fn check(input: &[u8], rng: &mut Rng) -> Result<(), String> {
    let whole = parse_all(input);
    match &whole {
        Parse::Command(c) => {
            if c.len == 0 || c.len > input.len() {
                return Err(format!("length {} out of bounds", c.len));
            }
            let args = c.args(input);
            if args.is_empty() {
                return Err("a command without arguments".into());
            }
            if let Some(raw) = c.raw(input) {
                let mut enc = Vec::new();
                encode_command(&args, &mut enc);
                if enc != raw {
                    return Err("multibulk bytes are not canonical".into());
                }
                for cut in [0, c.len / 2, c.len - 1] {
                    if parse_all(&input[..cut]) != Parse::NeedMore {
                        return Err(format!("prefix {cut} did not need more"));
                    }
                }
            }
            if parse_all(&input[..c.len]) != whole {
                return Err("the command alone parses differently".into());
            }
        }
        Parse::Ignored(n) => {
            if *n == 0 || *n > input.len() {
                return Err(format!("ignored {n} out of bounds"));
            }
        }
        Parse::NeedMore => {}
        Parse::Error(_) => {
            let mut longer = input.to_vec();
            longer.extend_from_slice(b"\r\n*1\r\n$4\r\nPING\r\n");
            if !matches!(parse_all(&longer), Parse::Error(_)) {
                return Err("appending bytes cleared an error".into());
            }
        }
    }
    // Fed in two pieces, the resumable parser agrees (and what a prefix
    // already decides, more bytes do not change).
    let cut = rng.below(input.len() + 1);
    let mut p = CommandParser::default();
    let first = p.parse(&input[..cut], &LIMITS);
    let second = if first == Parse::NeedMore {
        p.parse(input, &LIMITS)
    } else {
        first
    };
    if second != whole {
        return Err(format!("pieces at {cut}: {second:?} vs {whole:?}"));
    }
    Ok(())
}
