//! Proxy request head parser: strict, never guesses framing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_proxy::relay::http::{BodyFraming, RequestHead};

fuzz_target!(|data: &[u8]| {
    let Ok(head) = RequestHead::parse(data) else {
        return;
    };
    // Accepted heads never contain a bare CR or LF anywhere.
    for (i, b) in data.iter().enumerate() {
        if *b == b'\n' {
            assert!(i > 0 && data[i - 1] == b'\r', "bare LF accepted");
        }
        if *b == b'\r' {
            assert_eq!(data.get(i + 1), Some(&b'\n'), "bare CR accepted");
        }
    }
    assert!(head.version <= 1, "HTTP/1.x only");
    assert!(!head.method.is_empty() && !head.target.is_empty());
    // Framing is unambiguous: chunked and Content-Length never coexist, and
    // the declared length matches the single Content-Length header.
    let lengths: Vec<&[u8]> = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.as_slice())
        .collect();
    let te = head
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
    assert!(
        !(te && !lengths.is_empty()),
        "TE with Content-Length accepted"
    );
    match head.framing {
        BodyFraming::Chunked => assert!(te),
        BodyFraming::Length(n) => {
            assert_eq!(lengths.len(), 1, "Length framing needs one Content-Length");
            let s = std::str::from_utf8(lengths[0]).expect("ascii length");
            assert_eq!(s.trim().parse::<u64>().ok(), Some(n));
        }
        _ => {}
    }
    // At most one Host header.
    let hosts = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
        .count();
    assert!(hosts <= 1);
    // Re-serializing the parsed head and parsing again gives the same head.
    let mut again = format!(
        "{} {} HTTP/1.{}\r\n",
        head.method, head.target, head.version
    )
    .into_bytes();
    for (n, v) in &head.headers {
        again.extend_from_slice(n.as_bytes());
        again.extend_from_slice(b": ");
        again.extend_from_slice(v);
        again.extend_from_slice(b"\r\n");
    }
    again.extend_from_slice(b"\r\n");
    let reparsed = RequestHead::parse(&again).expect("re-serialized head parses");
    assert_eq!(reparsed.framing, head.framing);
    assert_eq!(reparsed.close, head.close);
    assert_eq!(reparsed.target, head.target);
});
