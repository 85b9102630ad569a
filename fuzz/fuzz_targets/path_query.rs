//! REST path canonicalizer and query parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_policy::request::{canonicalize_path, QueryParams, MAX_QUERY_PARAMS};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(raw) = std::str::from_utf8(rest) else {
        return;
    };
    let allow_encoded_slash = flags & 1 == 1;
    let (path, query) = raw.split_once('?').unwrap_or((raw, ""));
    if let Ok(canon) = canonicalize_path(path, allow_encoded_slash) {
        assert!(canon.len() <= path.len(), "{path:?} grew to {canon:?}");
        assert!(canon.starts_with('/'), "{path:?} -> {canon:?}");
        assert!(!canon.contains("//"), "{path:?} -> {canon:?}");
        assert!(
            !canon.split('/').any(|s| s == "." || s == ".."),
            "{path:?} -> {canon:?}"
        );
        if !allow_encoded_slash {
            assert!(!canon.to_ascii_uppercase().contains("%2F"));
        }
        let again = canonicalize_path(&canon, allow_encoded_slash);
        assert_eq!(
            again.as_deref(),
            Ok(canon.as_str()),
            "not idempotent for {path:?}"
        );
    }
    if let Ok(q) = QueryParams::parse(query) {
        assert!(q.len() <= MAX_QUERY_PARAMS);
        assert_eq!(q.iter().count(), q.len());
        assert_eq!(q.is_empty(), q.len() == 0);
        for (name, _) in q.iter() {
            assert!(q.contains(name));
            assert!(q.values(name).count() >= 1);
        }
    }
});
