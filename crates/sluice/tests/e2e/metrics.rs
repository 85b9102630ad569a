//! `--metrics ADDR`: real traffic through sluice (curl and raw sockets),
//! then exact counter values scraped from `/metrics`, the probes, and the
//! whole exposition read by the reference Python parser
//! (`prometheus_client`), so a format error fails here.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::harness::{connect, curl, read_response, Sluice};
use sluice_test_support::{eventually, Netns, Python, TempDir};

/// The test's policy (for `--identity endpoint-only`, which cannot enforce
/// `binaries`: it has none).
fn policy(extra: &str) -> String {
    format!(
        r#"version: 1
network_policies:
  demo:
    endpoints:
      - {{ host: exact.test, port: 8080 }}
      - host: plain.test
        port: 8080
        protocol: rest
        enforcement: enforce
        rules:
          - allow: {{ method: GET, path: "/allowed/**" }}
{extra}"#
    )
}

/// `GET path` on the metrics endpoint: status, head, body.
fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the answer");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// Every sample as `name{labels}` → value (labels as written).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    #[track_caller]
    fn get(&self, series: &str) -> f64 {
        *self
            .0
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in {:#?}", self.0))
    }
}

fn scrape(addr: SocketAddr) -> (Scrape, String) {
    let (status, head, body) = get(addr, "GET", "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    (Scrape(samples(&body)), body)
}

/// The exposition as the reference parser reads it: one line per family
/// (`name type`) and per sample (`sample labels value`).
fn parse_with_prometheus_client(text: &str) -> String {
    let out = Python::inline(
        r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
for f in text_string_to_metric_families(sys.stdin.read()):
    print("family", f.name, f.type)
    for s in f.samples:
        print("sample", s.name, json.dumps(s.labels, sort_keys=True, separators=(",", ":")), s.value)
"#,
    )
    .output_with_stdin(text.as_bytes());
    assert!(
        out.status.success(),
        "prometheus_client could not parse the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn metrics_count_real_traffic_and_parse() {
    let dir = TempDir::new("metrics");
    let ns = Netns::new();
    ns.start_upstream(8080, &dir.path("upstream.jsonl"));
    let mut args: Vec<String> = vec![
        "--metrics".into(),
        "127.0.0.1:0".into(),
        "--identity".into(),
        "endpoint-only".into(),
    ];
    for name in ["exact.test", "plain.test"] {
        args.push("--add-host".into());
        args.push(format!("{name}={}", ns.ns_ip));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sluice = Sluice::start(&dir, &policy(""), &args);
    let mut url = String::new();
    eventually("the metrics line on stderr", || {
        url = sluice
            .stderr()
            .lines()
            .find_map(|l| l.strip_prefix("metrics: "))
            .unwrap_or_default()
            .to_owned();
        !url.is_empty()
    });
    let addr: SocketAddr = url
        .strip_prefix("http://")
        .and_then(|u| u.strip_suffix("/metrics"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("metrics URL: {url}"));

    // Probes: live, and ready (the "listening" line came after both).
    let (status, _, body) = get(addr, "GET", "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _, body) = get(addr, "GET", "/readyz");
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    assert_eq!(get(addr, "POST", "/metrics").0, 405);
    assert_eq!(get(addr, "GET", "/other").0, 404);
    let (m, _) = scrape(addr);
    assert_eq!(m.get("sluice_ready"), 1.0);
    assert_eq!(m.get("sluice_policy_generation"), 1.0);
    assert_eq!(
        m.get("sluice_decisions_total{surface=\"connect\",outcome=\"allow\"}"),
        0.0
    );

    // Traffic: 3 allowed CONNECT (HTTP inside), 2 denied CONNECT, one
    // allowed and one denied forward request, and on the inspected endpoint
    // one request its rules allow and one they deny (forward proxy).
    let proxy = sluice.proxy_url();
    for i in 0..3 {
        let r = curl(&proxy, &format!("http://exact.test:8080/t{i}"), true, &[]);
        assert_eq!((r.connect_status, r.status), (200, 200), "{r:?}");
    }
    for _ in 0..2 {
        let r = curl(&proxy, "http://denied.test:8080/", true, &[]);
        assert_eq!(r.connect_status, 403, "{r:?}");
    }
    assert_eq!(
        curl(&proxy, "http://exact.test:8080/fwd", false, &[]).status,
        200
    );
    assert_eq!(
        curl(&proxy, "http://denied.test:8080/fwd", false, &[]).status,
        403
    );
    assert_eq!(
        curl(&proxy, "http://plain.test:8080/allowed/a", false, &[]).status,
        200
    );
    assert_eq!(
        curl(&proxy, "http://plain.test:8080/other", false, &[]).status,
        403
    );

    // A tunnel held open shows in both gauges; they go back down when it closes.
    let mut held = connect(sluice.addr);
    held.write_all(b"CONNECT exact.test:8080 HTTP/1.1\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut held).unwrap().0, 200);
    held.write_all(b"GET /held HTTP/1.1\r\nHost: exact.test:8080\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut held).unwrap().0, 200);
    let (m, _) = scrape(addr);
    assert_eq!(m.get("sluice_open_tunnels{surface=\"connect\"}"), 1.0);
    assert_eq!(
        m.get("sluice_open_connections{surface=\"http_proxy\"}"),
        1.0
    );
    drop(held);
    eventually("open tunnels and connections back to 0", || {
        let (m, _) = scrape(addr);
        m.get("sluice_open_tunnels{surface=\"connect\"}") == 0.0
            && m.get("sluice_open_connections{surface=\"http_proxy\"}") == 0.0
    });

    let (m, text) = scrape(addr);
    let d = |surface: &str, outcome: &str| {
        m.get(&format!(
            "sluice_decisions_total{{surface=\"{surface}\",outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!(d("connect", "allow"), 4.0, "{text}");
    assert_eq!(d("connect", "deny"), 2.0, "{text}");
    // The L7-denied request was allowed at the endpoint.
    assert_eq!(d("forward_http", "allow"), 3.0, "{text}");
    assert_eq!(d("forward_http", "deny"), 1.0, "{text}");
    assert_eq!(d("transparent", "allow") + d("transparent", "deny"), 0.0);
    // Every one of them was timed.
    assert_eq!(m.get("sluice_decision_duration_seconds_count"), 10.0);
    assert_eq!(
        m.get("sluice_decision_duration_seconds_bucket{le=\"+Inf\"}"),
        10.0
    );
    assert!(m.get("sluice_decision_duration_seconds_sum") > 0.0);
    assert_eq!(
        m.get("sluice_l7_verdicts_total{protocol=\"rest\",verdict=\"allow\"}"),
        1.0
    );
    assert_eq!(
        m.get("sluice_l7_verdicts_total{protocol=\"rest\",verdict=\"deny\"}"),
        1.0
    );
    // 6 exchanges completed upstream (4 in tunnels, 2 forward).
    let up = m.get("sluice_relayed_bytes_total{direction=\"to_upstream\"}");
    let down = m.get("sluice_relayed_bytes_total{direction=\"to_client\"}");
    assert!(up > 6.0 * 40.0, "{up}");
    assert!(down > up, "{down} <= {up}");
    assert_eq!(
        m.get("sluice_policy_reloads_total{outcome=\"applied\"}"),
        0.0
    );

    // A broken file is a refused reload; a good one the next generation.
    std::fs::write(&sluice.policy, "version: 1\nnetwork_policies: [oops\n").unwrap();
    sluice.wait_event("Policy reload rejected");
    sluice.replace_policy(&policy("      - { host: more.test, port: 80 }\n"), 2);
    let (m, text) = scrape(addr);
    assert_eq!(
        m.get("sluice_policy_reloads_total{outcome=\"refused\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        m.get("sluice_policy_reloads_total{outcome=\"applied\"}"),
        1.0
    );
    assert_eq!(m.get("sluice_policy_generation"), 2.0);

    // No label value comes from traffic: no host name, no path.
    for needle in [
        "exact.test",
        "denied.test",
        "plain.test",
        "/allowed",
        "/fwd",
    ] {
        assert!(!text.contains(needle), "{needle} in {text}");
    }

    // The reference parser reads all of it, with every family typed.
    let parsed = parse_with_prometheus_client(&text);
    let families: Vec<&str> = parsed
        .lines()
        .filter_map(|l| l.strip_prefix("family "))
        .collect();
    for want in [
        "sluice_build_info gauge",
        "sluice_decisions counter",
        "sluice_decision_duration_seconds histogram",
        "sluice_open_connections gauge",
        "sluice_open_tunnels gauge",
        "sluice_relayed_bytes counter",
        "sluice_l7_verdicts counter",
        "sluice_dns_queries counter",
        "sluice_middleware_duration_seconds histogram",
        "sluice_token_grant_refreshes counter",
        "sluice_policy_reloads counter",
        "sluice_policy_generation gauge",
        "sluice_ready gauge",
    ] {
        assert!(families.contains(&want), "{want} not in {families:?}");
    }
    assert_eq!(families.len(), 13, "{families:?}");
    // As the parser read them (values are floats or ints by version).
    let parsed_value = |prefix: &str| -> f64 {
        parsed
            .lines()
            .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{prefix} not in {parsed}"))
    };
    assert_eq!(
        parsed_value(
            "sample sluice_decisions_total {\"outcome\":\"allow\",\"surface\":\"connect\"}"
        ),
        4.0
    );
    assert_eq!(
        parsed_value("sample sluice_decision_duration_seconds_bucket {\"le\":\"+Inf\"}"),
        10.0
    );
}

/// `sluice run --metrics`: policy DNS answers and refusals, and a captured
/// (transparent) connection, counted while CMD runs.
#[test]
fn run_counts_policy_dns_and_transparent_connections() {
    use std::io::BufRead as _;
    let dir = TempDir::new("metrics-run");
    let ns = Netns::new();
    ns.start_redis(6379);
    // Endpoint-only identity: no `binaries` (they could not be enforced).
    let policy = "version: 1\nnetwork_policies:\n  cache:\n    endpoints:\n      - { host: cache.demo.internal, port: 6379, protocol: tcp }\n";
    let host = format!("cache.demo.internal={}", ns.ns_ip);
    // One A query answered, one refused, one captured connection; then CMD
    // stays a while so the test can scrape.
    let script = "unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy\n\
        ip=$(dig +short +tries=1 +time=2 cache.demo.internal A)\n\
        echo refused=$(dig +tries=1 +time=2 exfil.attacker.example A | grep -o 'status: [A-Z]*')\n\
        echo ping=$(redis-cli -h $ip -p 6379 PING)\n\
        sleep 6\n";
    let mut child = crate::run::sluice_run(
        &dir,
        policy,
        &[
            "--identity",
            "endpoint-only",
            "--add-host",
            &host,
            "--metrics",
            "127.0.0.1:0",
        ],
        script,
    )
    .spawn()
    .expect("start sluice run");
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let sink = std::sync::Arc::clone(&stderr);
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    let mut addr: Option<SocketAddr> = None;
    eventually("the metrics line on stderr", || {
        addr = stderr.lock().unwrap().lines().find_map(|l| {
            l.strip_prefix("metrics: http://")?
                .strip_suffix("/metrics")?
                .parse()
                .ok()
        });
        addr.is_some()
    });
    let addr = addr.unwrap();
    eventually("DNS and the captured connection counted", || {
        let (m, _) = scrape(addr);
        m.get("sluice_decisions_total{surface=\"transparent\",outcome=\"allow\"}") == 1.0
            && m.get("sluice_open_tunnels{surface=\"transparent\"}") == 0.0
            && m.get("sluice_open_connections{surface=\"transparent\"}") == 0.0
    });
    let (m, text) = scrape(addr);
    assert_eq!(
        m.get("sluice_dns_queries_total{answer=\"answered\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(m.get("sluice_dns_queries_total{answer=\"refused\"}"), 1.0);
    assert_eq!(
        m.get("sluice_decisions_total{surface=\"transparent\",outcome=\"deny\"}"),
        0.0
    );
    assert!(m.get("sluice_relayed_bytes_total{direction=\"to_client\"}") >= 7.0);
    assert_eq!(get(addr, "GET", "/readyz").0, 200);
    parse_with_prometheus_client(&text);
    let out = child.wait_with_output().expect("wait for sluice run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", stderr.lock().unwrap());
    assert!(stdout.contains("refused=status: REFUSED"), "{stdout}");
    assert!(stdout.contains("ping=PONG"), "{stdout}");
}
