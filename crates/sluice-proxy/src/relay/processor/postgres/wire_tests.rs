use super::*;

/// splitmix64: a deterministic generator for the property tests below.
pub(in crate::relay::processor::postgres) struct Rng(u64);

impl Rng {
    pub(in crate::relay::processor::postgres) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(in crate::relay::processor::postgres) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(in crate::relay::processor::postgres) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub(in crate::relay::processor::postgres) fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn frames_split_at_their_length() {
    let q = query_message(b"select 1");
    let mut two = q.clone();
    two.extend_from_slice(&message(b'S', &[]));
    match frame(&two, 1024) {
        Parse::Frame(f, used) => {
            assert_eq!(f.tag, b'Q');
            assert_eq!(used, q.len());
            assert_eq!(&two[f.body.clone()], b"select 1\0");
            assert_eq!(
                frame(&two[used..], 1024),
                Parse::Frame(
                    Frame {
                        tag: b'S',
                        body: 5..5
                    },
                    5
                )
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn framing_outcomes() {
    let cases: &[(&[u8], usize, &str)] = &[
        (b"", 100, "more"),
        (b"Q\0\0", 100, "more"),
        (b"Q\0\0\0\x04", 100, "frame"),
        (b"Q\0\0\0\x03", 100, "short"),
        (b"Q\0\0\0\0", 100, "short"),
        (b"Q\0\0\0\x09abc", 100, "more"),
        (b"Q\x7f\xff\xff\xff", 100, "large"),
        (b"Q\xff\xff\xff\xff", usize::MAX, "more"),
        (b"Q\0\0\0\x10", 16, "large"),
        (b"Q\0\0\0\x0f", 16, "more"),
    ];
    for (bytes, max, want) in cases {
        let got = match frame(bytes, *max) {
            Parse::Frame(..) => "frame",
            Parse::NeedMore => "more",
            Parse::Error(WireError::TooShort(_)) => "short",
            Parse::Error(WireError::TooLarge { .. }) => "large",
            Parse::Error(_) => "other",
        };
        assert_eq!(got, *want, "{bytes:?} max {max}");
    }
}

#[test]
fn startup_framing_and_params() {
    let params = vec![
        ("user".to_owned(), "agent".to_owned()),
        ("database".to_owned(), "app".to_owned()),
    ];
    let m = startup_message(PROTOCOL_3, &params);
    let Parse::Frame(f, used) = startup_frame(&m) else {
        panic!("frame");
    };
    assert_eq!(used, m.len());
    assert_eq!(f.code, PROTOCOL_3);
    assert_eq!(startup_params(&m[f.payload]).unwrap(), params);
    assert_eq!(
        startup_frame(&ssl_request()),
        Parse::Frame(
            StartupFrame {
                code: SSL_REQUEST,
                payload: 8..8
            },
            8
        )
    );
    assert_eq!(
        startup_frame(b"\0\0\0\x07abcd"),
        Parse::Error(WireError::TooShort(7))
    );
    assert!(matches!(
        startup_frame(b"\0\x01\0\0abcd"),
        Parse::Error(WireError::TooLarge { .. })
    ));
    assert_eq!(startup_frame(b"\0\0\0\x10abcd"), Parse::NeedMore);
    for bad in [
        &b"user\0a"[..],
        b"user\0a\0",
        b"user\0a\0\0x",
        b"user\0a\0user\0b\0\0",
        b"\xff\0a\0\0",
        b"",
    ] {
        assert!(startup_params(bad).is_err(), "{bad:?}");
    }
    assert_eq!(startup_params(b"\0").unwrap(), vec![]);
}

#[test]
fn bodies() {
    assert_eq!(query_text(b"select 1\0").unwrap(), b"select 1");
    assert!(query_text(b"select 1").is_err());
    assert!(query_text(b"a\0b\0").is_err());
    let p = parse_message(b"s1", b"select $1");
    let Parse::Frame(f, _) = frame(&p, 1024) else {
        panic!()
    };
    assert_eq!(
        parse_body(&p[f.body]).unwrap(),
        ParseBody {
            name: b"s1",
            query: b"select $1"
        }
    );
    assert!(
        parse_body(b"s\0q\0\0\x01").is_err(),
        "one type announced, none given"
    );
    assert!(parse_body(b"s\0q\0\0\x01\0\0\0\x17").is_ok());
    assert!(parse_body(b"s\0q\0\0\x01\0\0\0\x17x").is_err());
    assert_eq!(password_text(b"pw\0").unwrap(), b"pw");
    assert!(password_text(b"pw").is_err());
}

#[test]
fn auth_requests() {
    assert_eq!(auth_request(&0u32.to_be_bytes()).unwrap(), AuthRequest::Ok);
    assert_eq!(
        auth_request(&3u32.to_be_bytes()).unwrap(),
        AuthRequest::Cleartext
    );
    assert_eq!(
        auth_request(b"\0\0\0\x05abcd").unwrap(),
        AuthRequest::Md5(*b"abcd")
    );
    assert!(auth_request(b"\0\0\0\x05abc").is_err());
    assert_eq!(
        auth_request(b"\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0").unwrap(),
        AuthRequest::Sasl(vec![&b"SCRAM-SHA-256-PLUS"[..], b"SCRAM-SHA-256"])
    );
    assert!(auth_request(b"\0\0\0\x0a\0").is_err(), "no mechanism");
    assert!(auth_request(b"\0\0\0\x0aSCRAM").is_err());
    assert_eq!(
        auth_request(b"\0\0\0\x0br=abc").unwrap(),
        AuthRequest::SaslContinue(b"r=abc")
    );
    assert_eq!(
        auth_request(&7u32.to_be_bytes()).unwrap(),
        AuthRequest::Unsupported(7)
    );
    assert!(auth_request(b"\0\0").is_err());
    assert!(auth_request(b"\0\0\0\0x").is_err());
}

#[test]
fn error_responses_round_trip() {
    let e = error_response(false, "42501", "sluice: insert not permitted\0by policy");
    let Parse::Frame(f, used) = frame(&e, 1024) else {
        panic!()
    };
    assert_eq!((f.tag, used), (b'E', e.len()));
    let (code, text) = error_fields(&e[f.body]);
    assert_eq!(code, Some(&b"42501"[..]));
    assert_eq!(text, Some(&b"sluice: insert not permitted?by policy"[..]));
    assert_eq!(error_fields(b"Cxx"), (None, None), "unterminated field");
}

/// Property: on any bytes and any bound, framing never panics; a frame
/// lies within the buffer and the bound; the same bytes with one byte
/// less need more; more bytes never change a frame or an error.
#[test]
fn framing_properties() {
    let mut rng = Rng::new(0x5eed);
    for i in 0..20_000 {
        let mut buf = rng.bytes(64);
        if i % 3 == 0 && buf.len() >= 5 {
            // A plausible header more often than chance gives one.
            let len = (rng.below(70) as u32).to_be_bytes();
            buf[1..5].copy_from_slice(&len);
        }
        let max = 1 + rng.below(80);
        match frame(&buf, max) {
            Parse::Frame(f, used) => {
                assert_eq!(used, f.len());
                assert!(used <= buf.len() && used <= max && used >= 5);
                assert_eq!(frame(&buf[..used - 1], max), Parse::NeedMore);
                let mut longer = buf.clone();
                longer.extend_from_slice(&rng.bytes(8));
                assert_eq!(frame(&longer, max), Parse::Frame(f, used));
            }
            Parse::NeedMore => {
                for cut in 0..buf.len() {
                    assert_eq!(frame(&buf[..cut], max), Parse::NeedMore);
                }
            }
            Parse::Error(e) => {
                let mut longer = buf.clone();
                longer.extend_from_slice(&rng.bytes(8));
                assert_eq!(frame(&longer, max), Parse::Error(e));
            }
        }
        let _ = startup_frame(&buf);
        let _ = startup_params(&buf);
        let _ = parse_body(&buf);
        let _ = auth_request(&buf);
        let _ = error_fields(&buf);
    }
}

/// Property: startup messages built from any parameters parse back to them.
#[test]
fn startup_round_trip_property() {
    let mut rng = Rng::new(7);
    for _ in 0..2_000 {
        let n = rng.below(6);
        let params: Vec<(String, String)> = (0..n)
            .map(|i| {
                let v: String = (0..rng.below(12))
                    .map(|_| char::from(b'a' + rng.below(26) as u8))
                    .collect();
                (format!("p{i}"), v)
            })
            .collect();
        let m = startup_message(PROTOCOL_3, &params);
        let Parse::Frame(f, used) = startup_frame(&m) else {
            panic!("frame")
        };
        assert_eq!(used, m.len());
        assert_eq!(startup_params(&m[f.payload]).unwrap(), params);
    }
}
