//! Postgres wire framing and message bodies: any bytes, any bound. A frame
//! lies within the buffer and the bound, one byte less needs more, more
//! bytes never change a frame or an error; every body reader returns
//! (never panics); startup parameters round-trip through the encoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_proxy::relay::processor::postgres::wire::{
    auth_request, error_fields, frame, parse_body, password_text, query_text, startup_frame,
    startup_message, startup_params, Parse, PROTOCOL_3,
};

fuzz_target!(|data: &[u8]| {
    let Some((&bound, buf)) = data.split_first() else {
        return;
    };
    let max = 5 + usize::from(bound) * 4;
    match frame(buf, max) {
        Parse::Frame(f, used) => {
            assert_eq!(used, f.len());
            assert!(used <= buf.len() && used <= max && used >= 5);
            assert_eq!(frame(&buf[..used - 1], max), Parse::NeedMore);
            let mut longer = buf.to_vec();
            longer.extend_from_slice(&[0u8; 8]);
            assert_eq!(frame(&longer, max), Parse::Frame(f.clone(), used));
            let body = &buf[f.body];
            let _ = query_text(body);
            let _ = parse_body(body);
            let _ = password_text(body);
            let _ = auth_request(body);
            let _ = error_fields(body);
        }
        Parse::NeedMore => {
            for cut in 0..buf.len() {
                assert_eq!(frame(&buf[..cut], max), Parse::NeedMore);
            }
        }
        Parse::Error(e) => {
            let mut longer = buf.to_vec();
            longer.extend_from_slice(&[0u8; 8]);
            assert_eq!(frame(&longer, max), Parse::Error(e));
        }
    }
    if let Parse::Frame(f, used) = startup_frame(buf) {
        assert!(used <= buf.len() && f.payload.end == used);
        if let Ok(params) = startup_params(&buf[f.payload]) {
            let again = startup_message(PROTOCOL_3, &params);
            let Parse::Frame(g, _) = startup_frame(&again) else {
                panic!("an encoded startup message frames");
            };
            assert_eq!(startup_params(&again[g.payload]).ok(), Some(params));
        }
    }
});
