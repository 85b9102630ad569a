//! CONNECT target / host normalizer: the normal form is a fixed point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_proxy::egress::{Host, Target};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(host) = Host::parse(raw) {
        let shown = host.to_string();
        assert_eq!(
            Host::parse(&shown).as_ref(),
            Ok(&host),
            "host {raw:?} -> {shown:?}"
        );
        if let Host::Name(n) = &host {
            assert!(n.len() <= 253 && !n.ends_with('.'));
            assert!(n.bytes().all(|b| !b.is_ascii_uppercase()));
            assert!(n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'));
        }
    }
    for parsed in [
        Target::parse_authority(raw),
        Target::parse_authority_with_default(raw, 443),
    ] {
        let Ok(t) = parsed else { continue };
        assert_ne!(t.port, 0);
        let shown = t.to_string();
        assert_eq!(
            Target::parse_authority(&shown).as_ref(),
            Ok(&t),
            "target {raw:?} -> {shown:?}"
        );
        assert_eq!(
            Target::parse_authority_with_default(&shown, 80).as_ref(),
            Ok(&t)
        );
    }
});
