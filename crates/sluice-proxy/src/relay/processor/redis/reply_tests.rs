use super::super::prop::{seed, Rng};
use super::*;

/// Every message in `data` fed as one piece: (end offset, message) each,
/// and the error if one stops it.
fn frame_all(data: &[u8]) -> (Vec<(usize, Message)>, Option<FrameError>) {
    frame_chunks(data, &[data.len()])
}

/// The same, fed in pieces ending at `cuts`.
fn frame_chunks(data: &[u8], cuts: &[usize]) -> (Vec<(usize, Message)>, Option<FrameError>) {
    let mut f = Framer::new();
    let mut out = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&data.len())) {
        let end = end.clamp(start, data.len());
        let mut piece = &data[start..end];
        let mut at = start;
        while !piece.is_empty() {
            match f.feed(piece) {
                Ok((n, m)) => {
                    assert!(n <= piece.len() && (n > 0 || piece.is_empty()));
                    at += n;
                    piece = &piece[n..];
                    if let Some(m) = m {
                        assert!(f.at_boundary());
                        out.push((at, m));
                    }
                }
                Err(e) => return (out, Some(e)),
            }
        }
        start = end;
    }
    (out, None)
}

fn one(data: &[u8]) -> Message {
    let (msgs, err) = frame_all(data);
    assert_eq!(err, None, "{:?}", String::from_utf8_lossy(data));
    assert_eq!(
        msgs.len(),
        1,
        "{:?}: {msgs:?}",
        String::from_utf8_lossy(data)
    );
    assert_eq!(msgs[0].0, data.len(), "{:?}", String::from_utf8_lossy(data));
    msgs[0].1
}

#[test]
fn every_type_is_one_message() {
    // (input, kind, first, third, text)
    type Case<'a> = (&'a [u8], u8, Option<&'a str>, Option<i64>, &'a str);
    let cases: &[Case<'_>] = &[
        (b"+OK\r\n", b'+', None, None, "OK"),
        (b"+\r\n", b'+', None, None, ""),
        (b"-ERR no\r\n", b'-', None, None, ""),
        (b":-12\r\n", b':', None, None, ""),
        (b"$5\r\nhe\r\no\r\n", b'$', None, None, ""),
        (b"$0\r\n\r\n", b'$', None, None, ""),
        (b"$-1\r\n", b'$', None, None, ""),
        (b"*-1\r\n", b'*', None, None, ""),
        (b"*0\r\n", b'*', None, None, ""),
        (b"_\r\n", b'_', None, None, ""),
        (b",1.5\r\n", b',', None, None, ""),
        (b"#t\r\n", b'#', None, None, ""),
        (b"(1234567890123456789012\r\n", b'(', None, None, ""),
        (b"!9\r\nERR oops!\r\n", b'!', None, None, ""),
        (b"=7\r\ntxt:abc\r\n", b'=', None, None, ""),
        (b"~2\r\n:1\r\n:2\r\n", b'~', None, None, ""),
        (b"%1\r\n+k\r\n*2\r\n:1\r\n:2\r\n", b'%', None, None, ""),
        (
            b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n",
            b'*',
            Some("subscribe"),
            Some(1),
            "",
        ),
        (
            b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\nhey\r\n",
            b'>',
            Some("message"),
            None,
            "",
        ),
        (
            b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n",
            b'>',
            Some("unsubscribe"),
            Some(0),
            "",
        ),
        (b"*2\r\n+pong\r\n$0\r\n\r\n", b'*', Some("pong"), None, ""),
        // An attribute belongs to the value after it.
        (b"|1\r\n+ttl\r\n:3\r\n+OK\r\n", b'+', None, None, "OK"),
        // ... also inside an aggregate, where it is not an element.
        (
            b"*3\r\n|1\r\n+a\r\n+b\r\n$9\r\nsubscribe\r\n|1\r\n+c\r\n+d\r\n+x\r\n:7\r\n",
            b'*',
            Some("subscribe"),
            Some(7),
            "",
        ),
        // Streamed string and aggregate.
        (
            b"$?\r\n;4\r\nHell\r\n;1\r\no\r\n;0\r\n",
            b'$',
            None,
            None,
            "",
        ),
        (b"*?\r\n:1\r\n*?\r\n.\r\n.\r\n", b'*', None, None, ""),
        (b"*2\r\n*1\r\n:1\r\n$1\r\nx\r\n", b'*', None, None, ""),
        (
            b"+1700000000.123456 [0 127.0.0.1:1234] \"get\" \"k\"\r\n",
            b'+',
            None,
            None,
            "1700000000.123456 [0 127.0.0.1:1",
        ),
    ];
    for (input, kind, first, third, text) in cases {
        let m = one(input);
        assert_eq!(m.kind, *kind, "{:?}", String::from_utf8_lossy(input));
        assert_eq!(
            m.head()
                .map(|s| String::from_utf8_lossy(s.bytes()).into_owned()),
            first.map(str::to_owned),
            "{:?}",
            String::from_utf8_lossy(input)
        );
        assert_eq!(m.third, *third, "{:?}", String::from_utf8_lossy(input));
        assert_eq!(
            m.text.bytes(),
            text.as_bytes(),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    assert!(one(b"-ERR x\r\n").is_error() && one(b"!1\r\nx\r\n").is_error());
    assert!(
        one(b"+MONITOR line that is long enough to be cut\r\n")
            .text
            .cut
    );
    assert!(one(b"+RESET\r\n").text.is(b"RESET"));
}

#[test]
fn messages_end_where_they_end() {
    let data = b"+OK\r\n$3\r\nabc\r\n*2\r\n:1\r\n:2\r\n>2\r\n+a\r\n+b\r\n-ERR\r\n";
    let (msgs, err) = frame_all(data);
    assert_eq!(err, None);
    let ends: Vec<usize> = msgs.iter().map(|(e, _)| *e).collect();
    assert_eq!(ends, [5, 14, 26, 38, 44]);
    // One byte at a time: the same.
    let cuts: Vec<usize> = (1..data.len()).collect();
    assert_eq!(frame_chunks(data, &cuts), (msgs, None));
}

#[test]
fn framing_errors() {
    let cases: &[(&[u8], FrameError)] = &[
        (b"?\r\n", FrameError::Type(b'?')),
        (b"$x\r\n", FrameError::Length),
        (b"$01\r\n", FrameError::Length),
        (b"$-2\r\n", FrameError::Length),
        (b"!?\r\n", FrameError::Length),
        (b"*123456789012345678901\r\n", FrameError::Length),
        (b"$1\r\nab\r\n", FrameError::LineEnd),
        (b"+a\nb\r\n", FrameError::LineEnd),
        (b"+a\rb\r\n", FrameError::LineEnd),
        (b"*1\r\n.\r\n", FrameError::Type(b'.')),
        (b"$?\r\n+a\r\n", FrameError::Type(b'+')),
        (b"$?\r\n;x\r\n", FrameError::Length),
        (b"*?\r\n.x\r\n", FrameError::Length),
    ];
    for (input, want) in cases {
        assert_eq!(
            frame_all(input).1,
            Some(*want),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    let deep = b"*1\r\n".repeat(MAX_DEPTH + 1);
    assert_eq!(frame_all(&deep).1, Some(FrameError::TooDeep));
    let ok = [b"*1\r\n".repeat(MAX_DEPTH), b":1\r\n".to_vec()].concat();
    assert_eq!(frame_all(&ok).0.len(), 1);
}

/// A random RESP3 value (depth-bounded) appended to `out`.
fn value(rng: &mut Rng, depth: usize, out: &mut Vec<u8>) {
    let leaf = depth >= 4 || rng.chance(2);
    if leaf {
        match rng.below(9) {
            0 => out.extend_from_slice(b"+OK\r\n"),
            1 => out.extend_from_slice(b"-ERR x\r\n"),
            2 => out.extend_from_slice(format!(":{}\r\n", rng.next() as i64).as_bytes()),
            3 => {
                let b = rng.bytes(20);
                out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.extend_from_slice(&b);
                out.extend_from_slice(b"\r\n");
            }
            4 if rng.chance(2) => out.extend_from_slice(b"$-1\r\n"),
            4 => out.extend_from_slice(b"_\r\n"),
            5 => out.extend_from_slice(b"#f\r\n"),
            6 => out.extend_from_slice(b",-inf\r\n"),
            7 => out.extend_from_slice(b"$?\r\n;2\r\nab\r\n;0\r\n"),
            _ => out.extend_from_slice(b"=5\r\ntxt:a\r\n"),
        }
        return;
    }
    let n = rng.below(4);
    match rng.below(6) {
        0 => {
            out.extend_from_slice(b"*?\r\n");
            for _ in 0..n {
                value(rng, depth + 1, out);
            }
            out.extend_from_slice(b".\r\n");
        }
        1 => {
            out.extend_from_slice(format!("%{n}\r\n").as_bytes());
            for _ in 0..2 * n {
                value(rng, depth + 1, out);
            }
        }
        2 => {
            out.extend_from_slice(b"|1\r\n+a\r\n:1\r\n");
            value(rng, depth, out);
        }
        k => {
            let t = [b'*', b'~', b'>'][k - 3];
            out.push(t);
            out.extend_from_slice(format!("{n}\r\n").as_bytes());
            for _ in 0..n {
                value(rng, depth + 1, out);
            }
        }
    }
}

/// Valid streams: as many messages as values, at the same offsets whatever
/// the pieces. Random and mutated streams: no panic, and the same answer
/// in pieces as in one piece.
#[test]
fn properties_over_random_and_mutated_streams() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    for round in 0..5_000 {
        let mut data = Vec::new();
        let mut ends = Vec::new();
        for _ in 0..=rng.below(4) {
            value(&mut rng, 0, &mut data);
            ends.push(data.len());
        }
        let (msgs, err) = frame_all(&data);
        assert_eq!(err, None, "seed {seed} round {round}");
        assert_eq!(
            msgs.iter().map(|(e, _)| *e).collect::<Vec<_>>(),
            ends,
            "seed {seed} round {round}: {:?}",
            String::from_utf8_lossy(&data)
        );
        let mut cuts: Vec<usize> = (0..rng.below(6))
            .map(|_| rng.below(data.len() + 1))
            .collect();
        cuts.sort_unstable();
        assert_eq!(
            frame_chunks(&data, &cuts),
            (msgs, None),
            "seed {seed} round {round}"
        );
        let bad = if round % 2 == 0 {
            rng.mutate(&data)
        } else {
            rng.bytes(48)
        };
        let whole = frame_all(&bad);
        let cut = rng.below(bad.len() + 1);
        assert_eq!(
            frame_chunks(&bad, &[cut]),
            whole,
            "seed {seed} round {round}: {:?}",
            String::from_utf8_lossy(&bad)
        );
    }
}
