//! Policy DNS: any bytes as a query. The handler never panics, and an answer
//! record only ever names the one eligible name.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use sluice_policy::EndpointId;
use sluice_proxy::adapter::policy_dns::answer::{answer, Answer, Eligibility};
use sluice_proxy::adapter::policy_dns::synthetic::{MappingTable, DEFAULT_POOL_V4, DEFAULT_POOL_V6};

struct OnlyCache;

impl Eligibility for OnlyCache {
    fn eligible(&self, name: &str) -> Option<(EndpointId, Arc<[u16]>, u64)> {
        (name == "cache.internal").then(|| (EndpointId(1), Arc::from(&[6379u16][..]), 1))
    }
}

fn table() -> &'static MappingTable {
    static TABLE: OnceLock<MappingTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        MappingTable::new(
            DEFAULT_POOL_V4.parse().expect("v4 pool"),
            DEFAULT_POOL_V6.parse().expect("v6 pool"),
            Duration::from_secs(30),
            1024,
        )
    })
}

fuzz_target!(|data: &[u8]| {
    if let Answer::Synthetic { wire, .. } = answer(data, &OnlyCache, table(), Instant::now()) {
        let reply = Message::from_vec(&wire).expect("our answers parse");
        for r in reply.answers() {
            let name = r.name().to_ascii();
            assert_eq!(name.trim_end_matches('.').to_ascii_lowercase(), "cache.internal");
        }
    }
});
