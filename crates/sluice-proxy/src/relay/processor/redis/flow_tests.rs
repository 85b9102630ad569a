//! The reply order, table-driven: a script of entries the client side
//! queues and messages the upstream sends; what the client receives.

use super::super::reply::Framer;
use super::*;

#[derive(Clone, Copy)]
enum Ev<'a> {
    /// A forwarded command.
    Cmd(Expect),
    /// A denied command (its local error).
    Deny(&'a str),
    /// Upstream bytes (whole messages).
    Up(&'a [u8]),
}

use Ev::{Cmd, Deny, Up};

/// Runs a script; returns what the client got.
fn run(script: &[Ev<'_>]) -> String {
    let mut flow = Flow::new();
    let mut framer = Framer::new();
    let mut out = Vec::new();
    for ev in script {
        match ev {
            Cmd(e) => flow.push(Pending::Reply(*e)),
            Deny(text) => flow.push(Pending::Local(format!("-{text}\r\n").into_bytes())),
            Up(mut data) => {
                let mut held = Vec::new();
                while !data.is_empty() {
                    let holding = framer.at_boundary() && flow.holding();
                    let (n, m) = framer.feed(data).expect("valid upstream bytes");
                    held.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    let m = m.expect("whole messages");
                    if flow.on_message(&m) || !holding {
                        out.extend_from_slice(&held);
                    }
                    held.clear();
                    assert_eq!(flow.drain_ready(&mut out), None);
                }
            }
        }
        assert_eq!(flow.drain_ready(&mut out), None);
    }
    String::from_utf8(out).expect("text")
}

const SUB_A: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n";
const SUB_B: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n";
const MSG_A: &[u8] = b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n";
const UNSUB_A: &[u8] = b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n";
const UNSUB_B: &[u8] = b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n";
const UNSUB_NONE: &[u8] = b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n";

fn sub(kind: Pubsub, left: usize) -> Ev<'static> {
    Cmd(Expect::Subscribe { kind, left })
}

fn unsub(kind: Pubsub, left: Option<usize>) -> Ev<'static> {
    Cmd(Expect::Unsubscribe { kind, left })
}

#[test]
fn scripts() {
    let one = Cmd(Expect::One);
    let ch = Pubsub::Channel;
    let cases: &[(&str, &[Ev<'_>], &str)] = &[
        (
            "denials wait for the replies before them",
            &[one, Deny("E1"), one, Deny("E2"), Deny("E3"), Up(b"+A\r\n"), Up(b"+B\r\n")],
            "+A\r\n-E1\r\n+B\r\n-E2\r\n-E3\r\n",
        ),
        (
            "a denial first is written at once",
            &[Deny("E1"), one, Up(b":1\r\n")],
            "-E1\r\n:1\r\n",
        ),
        (
            "RESP3 pushes are not replies",
            &[one, Deny("E"), Up(b">2\r\n+invalidate\r\n*0\r\n"), Up(b"+A\r\n")],
            ">2\r\n+invalidate\r\n*0\r\n+A\r\n-E\r\n",
        ),
        (
            "subscribe with two channels owes two confirmations",
            &[sub(ch, 2), Deny("E"), Up(SUB_A), Up(SUB_B)],
            "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n-E\r\n",
        ),
        (
            "messages while subscribed are out of band",
            &[
                sub(ch, 1),
                Up(SUB_A),
                one,
                Deny("E"),
                Up(MSG_A),
                Up(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"),
            ],
            "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n-E\r\n",
        ),
        (
            "a subscribe error settles the subscribe",
            &[sub(ch, 3), Deny("E"), Up(b"-NOPERM no\r\n")],
            "-NOPERM no\r\n-E\r\n",
        ),
        (
            "unsubscribe from all owes one per subscribed channel",
            &[
                sub(ch, 2),
                Up(SUB_A),
                Up(SUB_B),
                unsub(ch, None),
                Deny("E"),
                Up(UNSUB_A),
                Up(UNSUB_B),
                one,
                Up(b"+X\r\n"),
            ],
            "{SUB_A}{SUB_B}{UNSUB_A}{UNSUB_B}-E\r\n+X\r\n",
        ),
        (
            "unsubscribe from all while subscribed to nothing owes one",
            &[unsub(ch, None), Deny("E"), Up(UNSUB_NONE)],
            "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n-E\r\n",
        ),
        (
            "after the last unsubscribe, an array is a reply again",
            &[
                sub(ch, 1),
                Up(SUB_A),
                unsub(ch, Some(1)),
                Up(b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n"),
                one,
                Deny("E"),
                Up(MSG_A),
            ],
            "{SUB_A}*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n{MSG_A}-E\r\n",
        ),
        (
            "monitor lines are out of band",
            &[
                Cmd(Expect::Monitor),
                Up(b"+OK\r\n"),
                one,
                Deny("E"),
                Up(b"+1700000000.1 [0 1.2.3.4:5] \"get\" \"k\"\r\n"),
                Up(b"+PONG\r\n"),
            ],
            "+OK\r\n+1700000000.1 [0 1.2.3.4:5] \"get\" \"k\"\r\n+PONG\r\n-E\r\n",
        ),
        (
            "reset ends monitoring",
            &[
                Cmd(Expect::Monitor),
                Up(b"+OK\r\n"),
                Cmd(Expect::Reset),
                Up(b"+RESET\r\n"),
                one,
                Deny("E"),
                Up(b"+1700000000.1 [0 x\r\n"),
            ],
            "+OK\r\n+RESET\r\n+1700000000.1 [0 x\r\n-E\r\n",
        ),
        (
            "the discard of an aborted transaction is swallowed",
            &[
                one,
                Up(b"+OK\r\n"),
                Cmd(Expect::Swallow),
                Deny("EXECABORT"),
                Up(b"+OK\r\n"),
            ],
            "+OK\r\n-EXECABORT\r\n",
        ),
        (
            "a push before the swallowed reply still reaches the client",
            &[
                Cmd(Expect::Swallow),
                Deny("EXECABORT"),
                Up(b">2\r\n+invalidate\r\n_\r\n+OK\r\n"),
            ],
            ">2\r\n+invalidate\r\n_\r\n-EXECABORT\r\n",
        ),
        (
            "RESP3: confirmations are pushes, a reply array is a reply",
            &[
                Cmd(Expect::Hello),
                Up(b"%1\r\n+proto\r\n:3\r\n"),
                sub(ch, 1),
                Up(b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"),
                one,
                Deny("E"),
                Up(MSG_A),
            ],
            "%1\r\n+proto\r\n:3\r\n>3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n{MSG_A}-E\r\n",
        ),
        (
            "an unsolicited reply passes",
            &[Up(b"-ERR max clients\r\n"), Deny("E")],
            "-ERR max clients\r\n-E\r\n",
        ),
    ];
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    for (what, script, want) in cases {
        // `{NAME}` stands for the bytes of that constant.
        let want = want
            .replace("{SUB_A}", &text(SUB_A))
            .replace("{SUB_B}", &text(SUB_B))
            .replace("{MSG_A}", &text(MSG_A))
            .replace("{UNSUB_A}", &text(UNSUB_A))
            .replace("{UNSUB_B}", &text(UNSUB_B));
        assert_eq!(run(script), want, "{what}");
    }
}

#[test]
fn unsubscribe_all_counts_only_its_own_kind() {
    let mut flow = Flow::new();
    let mut framer = Framer::new();
    let mut feed = |flow: &mut Flow, data: &[u8]| {
        let (n, m) = framer.feed(data).expect("valid");
        assert_eq!(n, data.len());
        flow.on_message(&m.expect("whole"))
    };
    flow.push(Pending::Reply(Expect::Subscribe {
        kind: Pubsub::Channel,
        left: 1,
    }));
    flow.push(Pending::Reply(Expect::Subscribe {
        kind: Pubsub::Pattern,
        left: 2,
    }));
    feed(&mut flow, SUB_A);
    feed(&mut flow, b"*3\r\n$10\r\npsubscribe\r\n$2\r\np*\r\n:2\r\n");
    feed(&mut flow, b"*3\r\n$10\r\npsubscribe\r\n$2\r\nq*\r\n:3\r\n");
    assert_eq!((flow.channels, flow.patterns, flow.shards), (1, 2, 0));
    assert_eq!(flow.len(), 0);
    // PUNSUBSCRIBE from all: two confirmations, then a reply.
    flow.push(Pending::Reply(Expect::Unsubscribe {
        kind: Pubsub::Pattern,
        left: None,
    }));
    flow.push(Pending::Reply(Expect::One));
    feed(
        &mut flow,
        b"*3\r\n$12\r\npunsubscribe\r\n$2\r\np*\r\n:2\r\n",
    );
    assert_eq!(flow.len(), 2);
    feed(
        &mut flow,
        b"*3\r\n$12\r\npunsubscribe\r\n$2\r\nq*\r\n:1\r\n",
    );
    assert_eq!(flow.len(), 1);
    assert_eq!((flow.channels, flow.patterns), (1, 0));
    // Still subscribed to a channel: a message is out of band.
    feed(&mut flow, MSG_A);
    assert_eq!(flow.len(), 1);
    feed(&mut flow, b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    assert_eq!(flow.len(), 0);
}

#[test]
fn close_waits_for_earlier_replies() {
    let mut flow = Flow::new();
    let mut out = Vec::new();
    flow.push(Pending::Reply(Expect::One));
    flow.push(Pending::Local(b"+OK\r\n".to_vec()));
    flow.push(Pending::Close(End::Closed));
    assert_eq!(flow.drain_ready(&mut out), None);
    let mut framer = Framer::new();
    let (_, m) = framer.feed(b":1\r\n").expect("valid");
    assert!(flow.on_message(&m.expect("whole")));
    assert_eq!(flow.drain_ready(&mut out), Some(End::Closed));
    assert_eq!(out, b"+OK\r\n");
}

#[test]
fn monitor_lines() {
    let line = |s: &[u8]| {
        let mut f = Framer::new();
        let data = [b"+", s, b"\r\n"].concat();
        let (_, m) = f.feed(&data).expect("valid");
        is_monitor_line(&m.expect("whole").text)
    };
    assert!(line(b"1700000000.123456 [0 127.0.0.1:1] \"get\""));
    assert!(line(b"1.2 [x"));
    for not in [
        &b"OK"[..],
        b"PONG",
        b"1.2",
        b"1. [",
        b".2 [",
        b"12 [0",
        b"1.2x[",
    ] {
        assert!(!line(not), "{:?}", String::from_utf8_lossy(not));
    }
}
