//! Client → upstream behaviour through the whole relay (harness in
//! `relay_tests.rs`).

use std::time::Duration;

use flate2::{Compress, Compression};

use super::super::deflate::{deflate_message, Deflate};
use super::super::frame::Opcode;
use super::super::parse_deflate_extension;
use super::super::relay::tests::{client_text, close_cleanly, frame, start, start_with, KEY};
use super::super::{WsEnd, WsLimits};

#[tokio::test]
async fn allowed_text_is_rewritten_and_masked_toward_upstream() {
    let mut h = start();
    h.client.send(&client_text("hello PLACEHOLDER")).await;
    let (hd, payload, _) = h.upstream.frame().await.expect("forwarded text");
    assert!(hd.fin && !hd.rsv1 && hd.mask.is_some());
    assert_eq!(hd.opcode, Opcode::Text);
    assert_eq!(payload, b"hello secret");
    // Server → client is copied byte for byte.
    let reply = frame(true, false, Opcode::Text, None, b"hi there");
    h.upstream.send(&reply).await;
    assert_eq!(h.client.frame().await.map(|f| f.2), Some(reply));
    assert_eq!(h.log.seen(), vec!["hello PLACEHOLDER"]);
    close_cleanly(h).await;
}

#[tokio::test]
async fn denied_text_closes_1008_and_never_reaches_upstream() {
    let mut h = start();
    h.client.send(&client_text("something forbidden")).await;
    assert_eq!(h.client.close_code().await, 1008);
    // The first thing the upstream sees is a close.
    assert_eq!(h.upstream.close_code().await, 1008);
    assert!(h.upstream.frame().await.is_none());
    assert_eq!(h.log.denied(), vec!["blocked by test policy"]);
    assert_eq!(h.end().await, WsEnd::PolicyDenied);
}

#[tokio::test]
async fn fragmented_text_with_interleaved_ping_is_evaluated_once() {
    let mut h = start();
    let ping = frame(true, false, Opcode::Ping, Some(KEY), b"p");
    let mut wire = frame(false, false, Opcode::Text, Some(KEY), b"frag");
    wire.extend(&ping);
    wire.extend(frame(false, false, Opcode::Continuation, Some(KEY), b"men"));
    wire.extend(frame(
        true,
        false,
        Opcode::Continuation,
        Some([1, 2, 3, 4]),
        b"ted",
    ));
    h.client.send(&wire).await;
    assert_eq!(h.upstream.frame().await.map(|f| f.2), Some(ping));
    let (hd, payload, _) = h.upstream.frame().await.expect("message");
    assert_eq!(
        (hd.opcode, hd.fin, payload.as_slice()),
        (Opcode::Text, true, &b"fragmented"[..])
    );
    assert_eq!(h.log.seen(), vec!["fragmented"]);
    close_cleanly(h).await;
}

#[tokio::test]
async fn initial_client_bytes_are_relayed() {
    let mut h = start_with(None, WsLimits::default(), true, &client_text("early"));
    let (_, payload, _) = h.upstream.frame().await.expect("early text");
    assert_eq!(payload, b"early");
    close_cleanly(h).await;
}

fn small() -> WsLimits {
    WsLimits {
        max_message: 64,
        max_fragments: 3,
        max_frame: 256,
        idle: Duration::from_secs(30),
        session_idle: None,
    }
}

#[tokio::test]
async fn oversized_text_closes_1009() {
    let mut h = start_with(None, small(), true, &[]);
    h.client.send(&client_text(&"a".repeat(65))).await;
    assert_eq!(h.client.close_code().await, 1009);
    assert_eq!(h.upstream.close_code().await, 1009);
    assert!(h.log.seen().is_empty());
    assert_eq!(h.end().await, WsEnd::TooBig);
}

#[tokio::test]
async fn oversized_fragmented_text_closes_1009() {
    let mut h = start_with(None, small(), true, &[]);
    let mut wire = frame(false, false, Opcode::Text, Some(KEY), &[b'a'; 40]);
    wire.extend(frame(
        true,
        false,
        Opcode::Continuation,
        Some(KEY),
        &[b'a'; 40],
    ));
    h.client.send(&wire).await;
    assert_eq!(h.client.close_code().await, 1009);
    assert_eq!(h.end().await, WsEnd::TooBig);
}

#[tokio::test]
async fn protocol_violations() {
    let mut fragments = Vec::new();
    fragments.extend(frame(false, false, Opcode::Text, Some(KEY), b"a"));
    for _ in 0..3 {
        fragments.extend(frame(false, false, Opcode::Continuation, Some(KEY), b"a"));
    }
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (frame(true, false, Opcode::Text, None, b"unmasked"), 1002),
        (fragments, 1002),
        (
            frame(true, false, Opcode::Binary, Some(KEY), &[0; 300]),
            1002,
        ),
        (
            frame(true, true, Opcode::Text, Some(KEY), b"rsv1 without deflate"),
            1002,
        ),
        (
            frame(true, false, Opcode::Continuation, Some(KEY), b"orphan"),
            1002,
        ),
        (
            frame(true, false, Opcode::Text, Some(KEY), &[0xC3, 0x28]),
            1007,
        ),
        (frame(true, false, Opcode::Close, Some(KEY), &[0x03]), 1002),
    ];
    for (wire, code) in cases {
        let mut h = start_with(None, small(), true, &[]);
        h.client.send(&wire).await;
        assert_eq!(h.client.close_code().await, code, "{wire:02x?}");
        assert_eq!(h.upstream.close_code().await, code);
        assert_eq!(h.log.denied().len(), 1);
        assert_eq!(h.end().await, WsEnd::Protocol(code));
    }
}

#[tokio::test]
async fn binary_refused_by_policy_closes_1008() {
    let mut h = start_with(None, WsLimits::default(), false, &[]);
    h.client
        .send(&frame(true, false, Opcode::Binary, Some(KEY), b"bin"))
        .await;
    assert_eq!(h.client.close_code().await, 1008);
    assert_eq!(h.upstream.close_code().await, 1008);
    assert_eq!(h.end().await, WsEnd::PolicyDenied);
}

fn deflate() -> Option<Deflate> {
    parse_deflate_extension("permessage-deflate")
}

#[tokio::test]
async fn compressed_client_messages_are_inflated_and_evaluated() {
    let mut h = start_with(deflate(), WsLimits::default(), true, &[]);
    let mut c = Compress::new(Compression::default(), false);
    for text in ["compressed hello PLACEHOLDER", "compressed hello again"] {
        let z = deflate_message(&mut c, text.as_bytes());
        // Split the compressed message into two fragments (RSV1 on the first).
        let (a, b) = z.split_at(z.len() / 2);
        let mut wire = frame(false, true, Opcode::Text, Some(KEY), a);
        wire.extend(frame(true, false, Opcode::Continuation, Some(KEY), b));
        h.client.send(&wire).await;
        let (hd, payload, _) = h.upstream.frame().await.expect("inflated text");
        assert!(!hd.rsv1 && hd.fin);
        assert_eq!(payload, text.replace("PLACEHOLDER", "secret").as_bytes());
    }
    // A compressed binary message goes upstream inflated.
    let z = deflate_message(&mut c, &[5; 100]);
    h.client
        .send(&frame(true, true, Opcode::Binary, Some(KEY), &z))
        .await;
    let (hd, payload, _) = h.upstream.frame().await.expect("inflated binary");
    assert_eq!(
        (hd.opcode, hd.rsv1, payload),
        (Opcode::Binary, false, vec![5; 100])
    );
    // Server frames (compressed or not) pass untouched.
    let down = frame(true, true, Opcode::Text, None, &[0xAA, 0xBB]);
    h.upstream.send(&down).await;
    assert_eq!(h.client.frame().await.map(|f| f.2), Some(down));
    assert_eq!(h.log.seen().len(), 2);
    close_cleanly(h).await;
}

#[tokio::test]
async fn compression_bomb_closes_1009() {
    let limits = WsLimits {
        max_message: 1000,
        ..small()
    };
    let mut h = start_with(deflate(), limits, true, &[]);
    let mut c = Compress::new(Compression::best(), false);
    let z = deflate_message(&mut c, &vec![b'a'; 200_000]);
    // Well under the message cap on the wire, 200 times over it inflated.
    assert!(z.len() < limits.max_message, "{}", z.len());
    h.client
        .send(&frame(true, true, Opcode::Text, Some(KEY), &z))
        .await;
    assert_eq!(h.client.close_code().await, 1009);
    assert!(h.log.seen().is_empty());
    assert_eq!(h.end().await, WsEnd::TooBig);
}

#[tokio::test]
async fn stalled_assembly_times_out() {
    let limits = WsLimits {
        idle: Duration::from_millis(200),
        ..WsLimits::default()
    };
    let mut h = start_with(None, limits, true, &[]);
    h.client
        .send(&frame(false, false, Opcode::Text, Some(KEY), b"half"))
        .await;
    assert_eq!(h.client.close_code().await, 1008);
    assert_eq!(h.upstream.close_code().await, 1008);
    assert_eq!(h.log.denied(), vec!["websocket message assembly timed out"]);
    assert_eq!(h.end().await, WsEnd::Protocol(1008));
}
