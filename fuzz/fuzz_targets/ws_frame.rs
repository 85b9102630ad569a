//! WebSocket frame parser: a returned frame is complete and consistent with
//! the rules; a prefix never yields a different frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_proxy::relay::websocket::frame::{parse, FrameError, Masking, Parse, Rules};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, buf)) = data.split_first() else {
        return;
    };
    let rules = Rules {
        masking: if flags & 1 == 1 {
            Masking::Required
        } else {
            Masking::Forbidden
        },
        rsv1_allowed: flags & 2 == 2,
        max_payload: if flags & 4 == 4 { 1 << 20 } else { 125 },
    };
    match parse(buf, &rules) {
        Parse::Frame(h) => {
            assert!(h.frame_len() <= buf.len());
            assert!(h.payload_len <= rules.max_payload);
            assert!((2..=14).contains(&h.header_len));
            assert_eq!(h.mask.is_some(), matches!(rules.masking, Masking::Required));
            if h.rsv1 {
                assert!(rules.rsv1_allowed);
            }
            if h.opcode.is_control() {
                assert!(h.fin && h.payload_len <= 125);
            }
            // Exactly the frame's bytes parse to the same frame; one byte less needs more.
            assert_eq!(parse(&buf[..h.frame_len()], &rules), Parse::Frame(h));
            assert_eq!(parse(&buf[..h.frame_len() - 1], &rules), Parse::NeedMore);
        }
        Parse::NeedMore => {
            // More bytes may complete it, never turn it into a different prefix error
            // that was visible already.
            for cut in 0..buf.len() {
                assert_eq!(parse(&buf[..cut], &rules), Parse::NeedMore);
            }
        }
        Parse::Error(e) => {
            // Appending bytes never turns an error into a frame.
            let mut longer = buf.to_vec();
            longer.extend_from_slice(&[0u8; 16]);
            assert!(matches!(parse(&longer, &rules), Parse::Error(_)));
            let _ = matches!(e, FrameError::TooLarge);
        }
    }
});
