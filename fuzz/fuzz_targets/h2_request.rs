//! HTTP/2 request head → the request view policy evaluates
//! (`relay::http::h2::map::request_head`): never panics, and what it
//! accepts is the request the HTTP/2 fields said, through the strict
//! HTTP/1.1 parser: same method and origin-form path, `Host` exactly the
//! `:authority`, a body of unknown length framed as chunked, never CONNECT.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_proxy::relay::http::h2::map::request_head;
use sluice_proxy::relay::http::BodyFraming;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    // method \0 authority \0 path \0 name \0 value \0 name \0 value ...
    let mut parts = text.split('\0');
    let method = parts.next().unwrap_or_default();
    let authority = parts.next().filter(|_| flags & 1 != 0);
    let path = parts.next();
    let scheme = match flags & 6 {
        0 => None,
        2 => Some("https"),
        _ => Some("http"),
    };
    let has_body = flags & 8 != 0;
    let rest: Vec<&str> = parts.collect();
    let fields: Vec<(&str, &[u8])> = rest
        .chunks(2)
        .map(|c| (c[0], c.get(1).map_or(&b""[..], |v| v.as_bytes())))
        .collect();
    let Ok(head) = request_head(method, scheme, authority, path, fields.iter().copied(), has_body)
    else {
        return;
    };
    assert!(!method.eq_ignore_ascii_case("CONNECT"));
    assert_ne!(scheme, Some("http"));
    assert_eq!(head.method, method);
    assert_eq!(Some(head.target.as_str()), path);
    assert!(head.target.starts_with('/'));
    let hosts: Vec<&[u8]> = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.as_slice())
        .collect();
    if let Some(a) = authority {
        assert_eq!(hosts, [a.as_bytes()], "Host is the :authority");
    }
    let declared = fields
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
    if has_body && !declared {
        assert_eq!(head.framing, BodyFraming::Chunked);
    }
});
