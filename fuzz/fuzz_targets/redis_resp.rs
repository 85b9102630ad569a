//! Redis: any bytes as client commands and as upstream replies. The command
//! parser never panics; a command lies within the buffer, its multibulk bytes
//! are the canonical encoding of its arguments, it parses the same alone and
//! when fed in two pieces (the parser is resumable), and appending bytes
//! never clears an error. The reply framer never panics and finds the same
//! messages at the same offsets whatever the pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_proxy::relay::processor::redis::reply::{FrameError, Framer, Message};
use sluice_proxy::relay::processor::redis::resp::{
    encode_command, CommandParser, Limits, Parse,
};

const LIMITS: Limits = Limits {
    max_message: 1 << 16,
    max_args: 256,
};

fn commands(data: &[u8], cut: usize) {
    let whole = CommandParser::default().parse(data, &LIMITS);
    match &whole {
        Parse::Command(c) => {
            assert!(c.len > 0 && c.len <= data.len());
            let args = c.args(data);
            assert!(!args.is_empty());
            if let Some(raw) = c.raw(data) {
                let mut enc = Vec::new();
                encode_command(&args, &mut enc);
                assert_eq!(enc, raw);
                assert_eq!(
                    CommandParser::default().parse(&data[..c.len - 1], &LIMITS),
                    Parse::NeedMore
                );
            }
            assert_eq!(CommandParser::default().parse(&data[..c.len], &LIMITS), whole);
        }
        Parse::Ignored(n) => assert!(*n > 0 && *n <= data.len()),
        Parse::NeedMore => {}
        Parse::Error(_) => {
            let mut longer = data.to_vec();
            longer.extend_from_slice(b"\r\n*1\r\n$4\r\nPING\r\n");
            assert!(matches!(
                CommandParser::default().parse(&longer, &LIMITS),
                Parse::Error(_)
            ));
        }
    }
    let mut p = CommandParser::default();
    let first = p.parse(&data[..cut], &LIMITS);
    let second = if first == Parse::NeedMore {
        p.parse(data, &LIMITS)
    } else {
        first
    };
    assert_eq!(second, whole);
}

fn frames(data: &[u8], cuts: &[usize]) -> (Vec<(usize, Message)>, Option<FrameError>) {
    let mut f = Framer::new();
    let mut out = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&data.len())) {
        let end = end.clamp(start, data.len());
        let mut at = start;
        while at < end {
            match f.feed(&data[at..end]) {
                Ok((n, m)) => {
                    assert!(n > 0 && at + n <= end);
                    at += n;
                    if let Some(m) = m {
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

fuzz_target!(|input: &[u8]| {
    let Some((&seed, data)) = input.split_first() else {
        return;
    };
    let cut = if data.is_empty() { 0 } else { usize::from(seed) % (data.len() + 1) };
    commands(data, cut);
    let whole = frames(data, &[]);
    assert_eq!(frames(data, &[cut]), whole);
    let bytewise: Vec<usize> = (1..data.len().min(512)).collect();
    if data.len() <= 512 {
        assert_eq!(frames(data, &bytewise), whole);
    }
});
