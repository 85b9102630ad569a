//! GraphQL request extraction and operation classifier.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_policy::request::graphql::{classify, items_from_http};

const CONTENT_TYPES: [Option<&str>; 4] = [
    Some("application/json"),
    Some("application/graphql"),
    Some("application/x-www-form-urlencoded"),
    None,
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    // Raw document path: classification is deterministic.
    if let Ok(doc) = std::str::from_utf8(rest) {
        let (doc, name) = match doc.split_once('\u{0}') {
            Some((d, n)) => (d, Some(n)),
            None => (doc, None),
        };
        let a = classify(doc, name);
        let b = classify(doc, name);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }
    // HTTP path: every extracted document is classified (or refused) without panicking.
    let method = if sel & 1 == 1 { "GET" } else { "POST" };
    let ct = CONTENT_TYPES[usize::from((sel >> 1) & 3)];
    let (query, body) = if method == "GET" {
        (std::str::from_utf8(rest).ok(), &[][..])
    } else {
        (None, rest)
    };
    if let Ok(items) = items_from_http(method, ct, query, body) {
        assert!(!items.is_empty());
        for item in &items {
            if let Some(q) = item.query.as_deref() {
                let _ = classify(q, item.operation_name.as_deref());
            }
        }
    }
});
