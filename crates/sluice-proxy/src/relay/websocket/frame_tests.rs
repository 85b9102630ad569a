use super::*;

const CLIENT: Rules = Rules {
    masking: Masking::Required,
    rsv1_allowed: false,
    max_payload: 1 << 20,
};
const SERVER: Rules = Rules {
    masking: Masking::Forbidden,
    rsv1_allowed: false,
    max_payload: 1 << 20,
};
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn enc(fin: bool, rsv1: bool, op: Opcode, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(&mut out, fin, rsv1, op, mask, payload);
    out.to_vec()
}

fn payload_of(buf: &[u8], h: &Header) -> Vec<u8> {
    let mut p = buf[h.header_len..h.frame_len()].to_vec();
    if let Some(k) = h.mask {
        apply_mask(&mut p, k, 0);
    }
    p
}

#[test]
fn rfc_examples() {
    // RFC 6455 §5.7: unmasked and masked "Hello".
    let unmasked = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    let Parse::Frame(h) = parse(&unmasked, &SERVER) else {
        panic!("unmasked Hello");
    };
    assert_eq!(
        (h.fin, h.opcode, h.header_len, h.payload_len),
        (true, Opcode::Text, 2, 5)
    );
    assert_eq!(payload_of(&unmasked, &h), b"Hello");
    assert_eq!(enc(true, false, Opcode::Text, None, b"Hello"), unmasked);

    let masked = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let Parse::Frame(h) = parse(&masked, &CLIENT) else {
        panic!("masked Hello");
    };
    assert_eq!((h.mask, h.header_len), (Some(KEY), 6));
    assert_eq!(payload_of(&masked, &h), b"Hello");
    assert_eq!(enc(true, false, Opcode::Text, Some(KEY), b"Hello"), masked);

    // Fragmented unmasked text: "Hel" + "lo".
    let Parse::Frame(h) = parse(&[0x01, 0x03, 0x48, 0x65, 0x6c], &SERVER) else {
        panic!("first fragment");
    };
    assert!(!h.fin);
    let Parse::Frame(h) = parse(&[0x80, 0x02, 0x6c, 0x6f], &SERVER) else {
        panic!("last fragment");
    };
    assert_eq!((h.fin, h.opcode), (true, Opcode::Continuation));
}

#[test]
fn length_encodings() {
    for (len, header) in [
        (0usize, 2usize),
        (125, 2),
        (126, 4),
        (65535, 4),
        (65536, 10),
        (200_000, 10),
    ] {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        for (rules, mask) in [(SERVER, None), (CLIENT, Some(KEY))] {
            let wire = enc(true, false, Opcode::Binary, mask, &data);
            let extra = if mask.is_some() { 4 } else { 0 };
            let Parse::Frame(h) = parse(&wire, &rules) else {
                panic!("len {len}");
            };
            assert_eq!((h.header_len, h.payload_len), (header + extra, len));
            assert_eq!(h.frame_len(), wire.len());
            assert_eq!(payload_of(&wire, &h), data);
        }
    }
    // A 16-bit or 64-bit length field decodes as written (non-minimal too).
    let wire = [0x82, 0x7E, 0x00, 0x03, 1, 2, 3];
    assert!(matches!(parse(&wire, &SERVER), Parse::Frame(h) if h.payload_len == 3));
    let wire = [0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0, 1, 9];
    assert!(matches!(parse(&wire, &SERVER), Parse::Frame(h) if h.payload_len == 1));
}

#[test]
fn need_more_on_every_prefix() {
    let frames = [
        enc(true, false, Opcode::Text, Some(KEY), b"hello world"),
        enc(true, false, Opcode::Binary, Some(KEY), &[7; 300]),
        enc(true, false, Opcode::Binary, Some(KEY), &[7; 70_000]),
        enc(
            true,
            false,
            Opcode::Close,
            Some(KEY),
            &close_payload(1000, "bye"),
        ),
        enc(false, false, Opcode::Text, Some(KEY), b""),
    ];
    for wire in &frames {
        for cut in 0..wire.len() {
            assert_eq!(
                parse(&wire[..cut], &CLIENT),
                Parse::NeedMore,
                "cut {cut} of {}",
                wire.len()
            );
        }
        assert!(matches!(parse(wire, &CLIENT), Parse::Frame(h) if h.frame_len() == wire.len()));
        // Trailing bytes of a next frame are not consumed.
        let mut two = wire.clone();
        two.extend_from_slice(wire);
        assert!(matches!(parse(&two, &CLIENT), Parse::Frame(h) if h.frame_len() == wire.len()));
    }
}

#[test]
fn errors() {
    let big_ping = enc(true, false, Opcode::Ping, Some(KEY), &[0; 126]);
    let cases: Vec<(Vec<u8>, Rules, FrameError)> = vec![
        (vec![0x83, 0x80], CLIENT, FrameError::ReservedOpcode(3)),
        (vec![0x8B, 0x80], CLIENT, FrameError::ReservedOpcode(0xB)),
        (vec![0xA1, 0x80], CLIENT, FrameError::ReservedBits),
        (vec![0x91, 0x80], CLIENT, FrameError::ReservedBits),
        (vec![0xC1, 0x80], CLIENT, FrameError::ReservedBits),
        (vec![0x09, 0x80], CLIENT, FrameError::FragmentedControl),
        (vec![0x08, 0x80], CLIENT, FrameError::FragmentedControl),
        (big_ping, CLIENT, FrameError::ControlTooLong),
        (vec![0x88, 0xFE], CLIENT, FrameError::ControlTooLong),
        (vec![0x81, 0x05], CLIENT, FrameError::MaskRequired),
        (vec![0x81, 0x85], SERVER, FrameError::MaskForbidden),
        (
            vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0],
            CLIENT,
            FrameError::LengthOverflow,
        ),
        (
            vec![0x82, 0xFF, 0, 0, 0, 0, 0, 0x10, 0, 1],
            CLIENT,
            FrameError::TooLarge,
        ),
    ];
    for (wire, rules, want) in cases {
        assert_eq!(parse(&wire, &rules), Parse::Error(want), "{wire:02x?}");
    }
}

#[test]
fn rsv1_only_where_deflate_allows() {
    let deflate = Rules {
        rsv1_allowed: true,
        ..CLIENT
    };
    let first = enc(false, true, Opcode::Text, Some(KEY), b"x");
    assert!(matches!(parse(&first, &deflate), Parse::Frame(h) if h.rsv1));
    assert_eq!(
        parse(&first, &CLIENT),
        Parse::Error(FrameError::ReservedBits)
    );
    for op in [Opcode::Continuation, Opcode::Ping, Opcode::Close] {
        let wire = enc(true, true, op, Some(KEY), b"");
        assert_eq!(
            parse(&wire, &deflate),
            Parse::Error(FrameError::ReservedBits),
            "{op:?}"
        );
    }
}

#[test]
fn close_payloads() {
    assert_eq!(close_payload(1008, "no"), vec![0x03, 0xF0, b'n', b'o']);
    let long = "é".repeat(100);
    let p = close_payload(1000, &long);
    assert!(p.len() <= 125 && std::str::from_utf8(&p[2..]).is_ok());
    assert_eq!(check_close_payload(&[]), Ok(()));
    assert_eq!(check_close_payload(&[0x03]), Err(1002));
    assert_eq!(check_close_payload(&close_payload(1000, "ok")), Ok(()));
    assert_eq!(check_close_payload(&close_payload(4000, "")), Ok(()));
    for bad in [999, 1004, 1005, 1006, 1015, 2000, 5000] {
        assert_eq!(
            check_close_payload(&close_payload(bad, "")),
            Err(1002),
            "{bad}"
        );
    }
    assert_eq!(check_close_payload(&[0x03, 0xE8, 0xFF]), Err(1007));
}
