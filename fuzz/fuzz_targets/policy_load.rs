//! Policy loader: never panics; a loaded policy is stable under reload.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    match sluice_policy::load_str(src, "fuzz.yaml", 7) {
        Ok(loaded) => {
            let snap = &loaded.snapshot;
            assert_eq!(snap.generation(), 7);
            // Loading the same text again gives the same shape.
            let again =
                sluice_policy::load_str(src, "fuzz.yaml", 8).expect("reload of a valid policy");
            assert_eq!(again.snapshot.policies().len(), snap.policies().len());
            assert_eq!(again.snapshot.endpoints().len(), snap.endpoints().len());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
