//! Chunked body relay: framing kept byte for byte, never desynchronized;
//! the credential-marker scan sees the decoded payload across chunks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_policy::placeholder::contains_marker;
use sluice_proxy::relay::http::body_fuzzing::relay_chunked;

/// The buffered path's limit (the policy engines' body cap is 256 KiB).
const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some(r) = relay_chunked(data, LIMIT) else {
        // Refused by the streaming relay: the buffered path refuses too.
        return;
    };
    // What went upstream is exactly the body's bytes from the input, and
    // everything after it stays for the next request.
    let consumed = data.len() - r.leftover;
    assert_eq!(r.wire, &data[..consumed], "relay rewrote the framing");
    // The accepted framing decodes, to as many bytes as the relay counted.
    let decoded = r.decoded.expect("accepted framing decodes");
    assert_eq!(decoded.len() as u64, r.total);
    // The marker scan: a marker in the decoded payload (however the chunks
    // cut it) is always refused, by the stream scan and, for a body within
    // the read-ahead limit, before anything is forwarded; a refusal always
    // has a marker in the payload or in a framing line.
    if contains_marker(&decoded) {
        assert!(r.marker_refused, "marker in the payload relayed");
        if r.wire.len() <= LIMIT {
            assert!(r.prefetch_refused, "marker in a short body not refused ahead");
        }
    }
    if r.marker_refused || r.prefetch_refused {
        assert!(
            contains_marker(&decoded) || contains_marker(&r.wire),
            "refused a body without a marker"
        );
    }
    // The buffered path agrees whenever the body fits its limit.
    if r.wire.len() <= LIMIT {
        assert_eq!(r.buffered.as_deref(), Some(&decoded[..]), "buffered path disagrees");
    } else {
        assert!(r.buffered.is_none(), "buffered path ignored its limit");
    }
    // Re-framed as one chunk, the payload relays to the same bytes.
    let mut one = format!("{:x}\r\n", decoded.len()).into_bytes();
    one.extend_from_slice(&decoded);
    one.extend_from_slice(if decoded.is_empty() { b"" } else { b"\r\n0\r\n" });
    one.extend_from_slice(b"\r\n");
    let again = relay_chunked(&one, usize::MAX).expect("re-framed body relays");
    assert_eq!(again.decoded.as_deref(), Some(&decoded[..]));
    assert_eq!(again.leftover, 0);
});
