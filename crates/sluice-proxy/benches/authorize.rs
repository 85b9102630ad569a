//! `authorize()` cost against generated policies of 100, 1,000 and 10,000
//! endpoints: an exact-host hit, a `*.domain` glob hit and a miss, with
//! identity required and a resolved caller (`/usr/bin/curl`, two ancestors).
//!
//! Run: `cargo bench -p sluice-proxy --bench authorize`. Sample counts are
//! small so the whole run stays under a minute; criterion writes the median
//! of each benchmark to `target/criterion/authorize/<id>/new/estimates.json`.

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sluice_proxy::egress::{authorize, AuthorizeContext, IdentityMode};

fn bench_authorize(c: &mut Criterion) {
    let ctx = AuthorizeContext {
        identity_mode: IdentityMode::Required,
        trusted_gateway: None,
    };
    let mut group = c.benchmark_group("authorize");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1200));
    for n in [100usize, 1_000, 10_000] {
        let snap = common::snapshot(n);
        for (name, host, port, allowed) in common::cases(n) {
            let it = common::intent(&format!("{host}:{port}"));
            assert_eq!(
                authorize(&snap, it.clone(), &ctx).is_ok(),
                allowed,
                "{name} at {n}"
            );
            group.bench_with_input(BenchmarkId::new(name, n), &it, |b, it| {
                b.iter(|| black_box(authorize(&snap, black_box(it).clone(), &ctx)));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_authorize);
criterion_main!(benches);
