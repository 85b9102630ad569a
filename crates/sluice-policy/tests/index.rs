//! `matching_endpoints` (an index lookup) agrees with a brute-force scan on
//! a generated policy of 10,000 endpoints; binary matching table.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

use sluice_policy::{load_str, HostRef, PolicySnapshot};

struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n
    }
}

const HOSTLESS_PORT_BASE: u16 = 20_000;

fn endpoint_yaml(i: usize, out: &mut String) {
    let d = (i / 10) % 50;
    let line = match i % 10 {
        0..=3 => format!(
            "{{ host: h{i}.d{d}.example.com, ports: [443, {}] }}",
            80 + i % 5
        ),
        4 => format!("{{ host: \"*.d{d}.example.com\", port: 443 }}"),
        5 => format!("{{ host: \"**.z{d}.example.org\", ports: [443, 8443] }}"),
        6 => format!(
            "{{ host: \"*-api.d{d}.example.com\", port: {} }}",
            80 + i % 5
        ),
        7 => format!("{{ host: \"*.s{d}.*.amazonaws.com\", port: 443 }}"),
        8 => format!(
            "{{ host: 10.1.{}.{}, port: 9000 }}",
            (i / 256) % 256,
            i % 256
        ),
        _ => {
            let p = HOSTLESS_PORT_BASE + (i % 20) as u16;
            if i % 20 == 9 {
                format!(
                    "{{ host: h{i}.d{d}.example.com, port: {p}, allowed_ips: [\"10.99.0.0/16\"] }}"
                )
            } else {
                format!("{{ port: {p}, allowed_ips: [\"10.99.0.0/16\"] }}")
            }
        }
    };
    let _ = writeln!(out, "      - {line}");
}

fn generated() -> PolicySnapshot {
    let mut y = String::from("version: 1\nnetwork_policies:\n");
    for p in 0..100 {
        let _ = writeln!(
            y,
            "  p{p:03}:\n    binaries: [{{ path: /usr/bin/curl }}]\n    endpoints:"
        );
        for j in 0..100 {
            endpoint_yaml(p * 100 + j, &mut y);
        }
    }
    match load_str(&y, "generated.yaml", 9) {
        Ok(l) => l.snapshot,
        Err(e) => panic!("generated policy failed:\n{e}"),
    }
}

fn brute(s: &PolicySnapshot, h: HostRef<'_>, port: u16) -> BTreeSet<u32> {
    s.endpoints()
        .iter()
        .filter(|e| e.host.matches(h) && e.ports.contains(&port))
        .map(|e| e.id.0)
        .collect()
}

#[test]
fn index_matches_brute_force_on_10k_endpoints() {
    let s = generated();
    assert_eq!(s.endpoints().len(), 10_000);
    assert_eq!(s.generation(), 9);
    let mut rng = Lcg(42);
    let ports: Vec<u16> = [443, 80, 81, 82, 83, 84, 8443, 9000, 1]
        .into_iter()
        .chain((0..20).map(|k| HOSTLESS_PORT_BASE + k))
        .collect();
    let mut nonempty = 0;
    for q in 0..900 {
        let i = rng.next(10_000);
        let d = rng.next(60);
        let name = match q % 9 {
            0 => format!("h{i}.d{}.example.com", (i / 10) % 50),
            1 => format!("sub.h{i}.d{d}.example.com"),
            2 => format!("x.d{d}.example.com"),
            3 => format!("a.b.z{d}.example.org"),
            4 => format!("z{d}.example.org"),
            5 => format!("svc-api.d{d}.example.com"),
            6 => format!("bucket.s{d}.eu-west-1.amazonaws.com"),
            7 => format!("nothing{i}.invalid"),
            _ => format!("10.1.{}.{}", rng.next(40), rng.next(256)),
        };
        let port = if rng.next(3) == 0 {
            ports[rng.next(ports.len())]
        } else {
            443
        };
        let host = match name.parse::<IpAddr>() {
            Ok(ip) => HostRef::Ip(ip),
            Err(_) => HostRef::Name(&name),
        };
        let got: Vec<u32> = s.matching_endpoints(host, port).map(|e| e.id.0).collect();
        let set: BTreeSet<u32> = got.iter().copied().collect();
        assert_eq!(set.len(), got.len(), "duplicates for {name}:{port}");
        assert_eq!(set, brute(&s, host, port), "{name}:{port}");
        nonempty += usize::from(!set.is_empty());
    }
    assert!(nonempty > 300, "queries should mostly hit: {nonempty}");
}

#[test]
fn binary_matching_table() {
    let src = r#"
version: 1
network_policies:
  a:
    endpoints: [{ host: example.com, port: 443 }]
    binaries:
      - path: /usr/bin/gh
      - path: "/usr/lib/node_modules/**"
      - path: "/sandbox/.venv/bin/python*"
      - path: "**/bin/cargo"
  none:
    endpoints: [{ host: example.com, port: 443 }]
"#;
    let l = match load_str(src, "bin.yaml", 1) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    assert!(l
        .notices
        .iter()
        .any(|n| n.message.contains("has no binaries")));
    let a = &l.snapshot.policies()[0];
    let none = &l.snapshot.policies()[1];
    let cases: &[(&str, &[&str], bool)] = &[
        ("/usr/bin/gh", &[], true),
        ("/usr/bin/ghx", &[], false),
        ("/usr/bin/gh/", &[], false),
        ("/bin/bash", &["/usr/bin/gh"], true),
        (
            "/bin/bash",
            &["/sbin/init", "/usr/lib/node_modules/npm/bin/npm-cli.js"],
            true,
        ),
        ("/usr/lib/node_modules", &[], false),
        ("/sandbox/.venv/bin/python3.12", &[], true),
        ("/sandbox/.venv/bin/x/python3", &[], false),
        ("/home/u/.cargo/bin/cargo", &[], true),
        ("", &[], false),
        ("", &["", "/usr/bin/gh"], true),
        ("", &[""], false),
        ("/bin/bash", &[], false),
    ];
    for (exe, anc, want) in cases {
        assert_eq!(a.binary_allows(exe, anc), *want, "{exe} {anc:?}");
        assert!(!none.binary_allows(exe, anc));
    }
}
