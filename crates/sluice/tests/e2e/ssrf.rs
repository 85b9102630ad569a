//! The destination validator through both adapters: every destination
//! mode, address class and host spelling. Denied cases never reach the
//! upstream (the recorder proves it).

use std::io::Write;
use std::net::Ipv4Addr;

use crate::harness::{connect, curl, read_response, Sluice};
use sluice_test_support::{recorded, Netns, TempDir};

fn policy(ns_ip: &str, ns_net: &str) -> String {
    let me = std::env::current_exe().unwrap();
    format!(
        r#"version: 1
network_policies:
  exact:
    endpoints:
      - {{ host: exact.test, port: 8080 }}
      - {{ host: exact.test, port: 6443 }}
      - {{ host: "{ns_ip}", port: 8080 }}
      - {{ host: loopback.test, port: 8080 }}
      - {{ host: localhost, port: 8080 }}
      - {{ host: 127.0.0.1, port: 8080 }}
      - {{ host: 169.254.169.254, port: 80 }}
      - {{ host: metadata.google.internal, port: 80 }}
      - {{ host: meta-alias.test, port: 80 }}
      - {{ host: 100.100.100.200, port: 80 }}
      - {{ host: mapped.test, port: 8080 }}
      - {{ host: nat64.test, port: 8080 }}
      - {{ host: sixtofour.test, port: 8080 }}
      - {{ host: teredo.test, port: 8080 }}
      - {{ host: meta6.test, port: 8080 }}
      - {{ host: "64:ff9b::7f00:1", port: 8080 }}
      - {{ host: "2002:a9fe:a9fe::", port: 8080 }}
    binaries: [ {{ path: /usr/bin/curl }}, {{ path: "{me}" }} ]
  wild:
    endpoints:
      - {{ host: "*.wild.test", port: 8080 }}
    binaries: [ {{ path: /usr/bin/curl }}, {{ path: "{me}" }} ]
  ranges:
    endpoints:
      - {{ host: inrange.test, port: 8080, allowed_ips: ["{ns_net}"] }}
      - {{ host: outrange.test, port: 8080, allowed_ips: ["10.255.255.0/24"] }}
    binaries: [ {{ path: /usr/bin/curl }}, {{ path: "{me}" }} ]
"#,
        me = me.display()
    )
}

/// What a case must produce on both adapters.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Want {
    Allow,
    /// `403 ssrf_denied` with this client detail suffix.
    Ssrf(&'static str),
    /// `403 policy_denied`.
    Policy,
}

#[test]
fn ssrf_table_through_both_adapters() {
    let dir = TempDir::new("ssrf");
    let ns = Netns::new();
    let record = dir.path("upstream.jsonl");
    ns.start_upstream(8080, &record);
    let ns_ip: Ipv4Addr = ns.ns_ip.parse().unwrap();
    let ns_net = format!("{}/30", Ipv4Addr::from(u32::from(ns_ip) & !3));
    let hosts = [
        ("exact.test", ns.ns_ip.clone()),
        ("a.wild.test", ns.ns_ip.clone()),
        ("inrange.test", ns.ns_ip.clone()),
        ("outrange.test", ns.ns_ip.clone()),
        ("loopback.test", "127.0.0.1".into()),
        ("localhost", "127.0.0.1".into()),
        ("meta-alias.test", "169.254.169.254".into()),
        ("mapped.test", "::ffff:127.0.0.1".into()),
        ("nat64.test", "64:ff9b::7f00:1".into()),
        ("sixtofour.test", "2002:7f00:1::".into()),
        ("teredo.test", "2001:0:4136:e378:8000:63bf:80ff:fffe".into()),
        ("meta6.test", "fd00:ec2::254".into()),
    ];
    let mut args: Vec<String> = Vec::new();
    for (name, ip) in &hosts {
        args.push("--add-host".into());
        args.push(format!("{name}={ip}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sluice = Sluice::start(&dir, &policy(&ns.ns_ip, &ns_net), &args);
    let proxy = sluice.proxy_url();

    let decimal = u32::from(ns_ip).to_string();
    let hex = format!("0x{:x}", u32::from(ns_ip));
    let cases: Vec<(String, Want)> = vec![
        // Exact declared host may resolve privately; a wildcard may not.
        ("exact.test:8080".into(), Want::Allow),
        ("EXACT.test.:8080".into(), Want::Allow),
        ("a.wild.test:8080".into(), Want::Ssrf("internal address")),
        // allowed_ips in and out of range.
        ("inrange.test:8080".into(), Want::Allow),
        (
            "outrange.test:8080".into(),
            Want::Ssrf("allowed_ips check failed"),
        ),
        // Declared IP literal, and encodings of it judged as the same address.
        (format!("{ns_ip}:8080"), Want::Allow),
        (format!("{decimal}:8080"), Want::Allow),
        (format!("{hex}:8080"), Want::Allow),
        // Control-plane port, even on an exact declared host.
        ("exact.test:6443".into(), Want::Ssrf("control-plane port")),
        // Loopback and localhost in every spelling.
        (
            "loopback.test:8080".into(),
            Want::Ssrf("declared endpoint check failed"),
        ),
        (
            "localhost:8080".into(),
            Want::Ssrf("declared endpoint check failed"),
        ),
        ("127.0.0.1:8080".into(), Want::Ssrf("internal address")),
        ("2130706433:8080".into(), Want::Ssrf("internal address")),
        ("0x7f000001:8080".into(), Want::Ssrf("internal address")),
        ("0177.0.0.1:8080".into(), Want::Ssrf("internal address")),
        ("127.1:8080".into(), Want::Ssrf("internal address")),
        (
            "[::ffff:127.0.0.1]:8080".into(),
            Want::Ssrf("internal address"),
        ),
        // Cloud metadata: literal, name, alias, other providers, IPv6.
        (
            "169.254.169.254:80".into(),
            Want::Ssrf("cloud metadata address"),
        ),
        ("0xa9fea9fe:80".into(), Want::Ssrf("cloud metadata address")),
        (
            "metadata.google.internal:80".into(),
            Want::Ssrf("cloud metadata address"),
        ),
        (
            "meta-alias.test:80".into(),
            Want::Ssrf("cloud metadata address"),
        ),
        (
            "100.100.100.200:80".into(),
            Want::Ssrf("cloud metadata address"),
        ),
        (
            "meta6.test:8080".into(),
            Want::Ssrf("cloud metadata address"),
        ),
        // IPv6 embeddings of loopback / metadata, by name and by literal.
        (
            "mapped.test:8080".into(),
            Want::Ssrf("declared endpoint check failed"),
        ),
        (
            "nat64.test:8080".into(),
            Want::Ssrf("declared endpoint check failed"),
        ),
        (
            "sixtofour.test:8080".into(),
            Want::Ssrf("declared endpoint check failed"),
        ),
        (
            "teredo.test:8080".into(),
            Want::Ssrf("declared endpoint check failed"),
        ),
        (
            "[64:ff9b::7f00:1]:8080".into(),
            Want::Ssrf("internal address"),
        ),
        (
            "[2002:a9fe:a9fe::]:8080".into(),
            Want::Ssrf("cloud metadata address"),
        ),
        // Not in policy at all.
        ("nowhere.test:8080".into(), Want::Policy),
    ];
    let mut allowed_paths = Vec::new();
    for (i, (authority, want)) in cases.iter().enumerate() {
        for tunnel in [false, true] {
            let path = format!("/case-{i}-{}", if tunnel { "connect" } else { "forward" });
            let url = format!("http://{authority}{path}");
            let r = curl(&proxy, &url, tunnel, &["-g"]);
            let status = if tunnel && r.connect_status != 200 {
                r.connect_status
            } else {
                r.status
            };
            match want {
                Want::Allow => {
                    assert_eq!(status, 200, "{authority} tunnel={tunnel}: {r:?}");
                    allowed_paths.push(path);
                }
                Want::Ssrf(_) | Want::Policy => {
                    assert_eq!(status, 403, "{authority} tunnel={tunnel}: {r:?}")
                }
            }
        }
        // The CONNECT refusal body names the rule.
        let mut stream = connect(sluice.addr);
        stream
            .write_all(format!("CONNECT {authority} HTTP/1.1\r\n\r\n").as_bytes())
            .unwrap();
        let (status, head, body) = read_response(&mut stream).unwrap_or_default();
        let resp = format!("{head}{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        match want {
            Want::Allow => assert_eq!(status, 200, "{authority}: {resp}"),
            Want::Ssrf(detail) => {
                assert_eq!(body["error"], "ssrf_denied", "{authority}: {resp}");
                assert!(
                    body["detail"].as_str().unwrap().ends_with(detail),
                    "{authority}: {resp}"
                );
            }
            Want::Policy => assert_eq!(body["error"], "policy_denied", "{authority}: {resp}"),
        }
    }
    let mut reached: Vec<String> = recorded(&record)
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_owned())
        .collect();
    reached.sort();
    allowed_paths.sort();
    assert_eq!(
        reached, allowed_paths,
        "exactly the allowed requests reached the upstream"
    );
    // The audit log explains each SSRF refusal.
    let ev = sluice.wait_event("CONNECT blocked: cloud metadata address for 169.254.169.254:80");
    assert_eq!(ev["firewall_rule"]["type"], "ssrf");
    assert!(ev["status_detail"]
        .as_str()
        .unwrap()
        .contains("cloud metadata"));
}
