//! `sluice run -- CMD`: the real binary creates a sandbox namespace, the command
//! inside reaches upstreams (in a second namespace the test creates) only through
//! sluice; direct connections and DNS fail fast and are reported; everything is
//! removed afterwards, whatever way the run ends.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_test_support::{eventually, patience, recorded, test_pki, Netns, TempDir};

/// Upstreams in the test's namespace; only curl may use them (python3 is denied).
const POLICY: &str = r#"version: 1
network_policies:
  demo:
    endpoints:
      - { host: api.demo.internal, port: 8080 }
      - { host: secure.demo.internal, port: 8443, protocol: rest, enforcement: enforce, access: read-only }
    binaries:
      - { path: /usr/bin/curl }
"#;

/// One finished `sluice run`.
pub(crate) struct RunOutcome {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) events: Vec<serde_json::Value>,
    pub(crate) netns: String,
}

impl RunOutcome {
    /// `key=value` printed by the script.
    pub(crate) fn value(&self, key: &str) -> String {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} not printed:\n{}\n{}", self.stdout, self.stderr))
            .trim()
            .to_owned()
    }

    pub(crate) fn ms(&self, key: &str) -> u64 {
        self.value(key).parse().expect("milliseconds")
    }

    fn bypass_events(&self) -> Vec<&serde_json::Value> {
        self.events
            .iter()
            .filter(|e| {
                e["class_uid"] == 4001
                    && e["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("BYPASS_DETECT"))
            })
            .collect()
    }
}

/// The sluice command line for `run`, with the test's state dir and audit log.
/// CMD runs as `nobody` unless `extra` names a `--user`.
pub(crate) fn sluice_run(
    dir: &TempDir,
    policy_yaml: &str,
    extra: &[&str],
    script: &str,
) -> Command {
    let user = (!extra.contains(&"--user")).then_some("nobody");
    sluice_run_as(dir, policy_yaml, user, extra, script)
}

/// [`sluice_run`] with `--user` set only when `user` is given.
pub(crate) fn sluice_run_as(
    dir: &TempDir,
    policy_yaml: &str,
    user: Option<&str>,
    extra: &[&str],
    script: &str,
) -> Command {
    let policy = dir.path("policy.yaml");
    std::fs::write(&policy, policy_yaml).expect("write policy");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(["run", "--no-system-dns", "--policy"])
        .arg(&policy)
        .arg("--audit-log")
        .arg(dir.path("audit.jsonl"))
        .arg("--state-dir")
        .arg(dir.path("state"));
    if let Some(user) = user {
        cmd.args(["--user", user]);
    }
    cmd.args(extra)
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The namespace name sluice reports on stderr.
fn netns_name(stderr: &str) -> String {
    stderr
        .split("in namespace ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no namespace line in:\n{stderr}"))
        .to_owned()
}

pub(crate) fn run_to_end(
    dir: &TempDir,
    policy_yaml: &str,
    extra: &[&str],
    script: &str,
) -> RunOutcome {
    let out = sluice_run(dir, policy_yaml, extra, script)
        .output()
        .expect("run sluice");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    RunOutcome {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        netns: netns_name(&stderr),
        stderr,
        events: recorded(&dir.path("audit.jsonl")),
    }
}

/// Nothing of the run named `netns` is left: namespace, veth, /etc/netns view, table.
pub(crate) fn assert_cleaned_up(netns: &str) {
    let id = netns.strip_prefix("sluice-").expect("sluice-<id>");
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        !list.split_whitespace().any(|n| n == netns),
        "namespace {netns} leaked: {list}"
    );
    let link = Command::new("ip")
        .args(["link", "show", "dev", &format!("slh-{id}")])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(!link.status.success(), "veth slh-{id} leaked");
    assert!(
        !std::path::Path::new(&format!("/etc/netns/{netns}")).exists(),
        "/etc/netns/{netns} leaked"
    );
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    let tables = String::from_utf8_lossy(&tables.stdout);
    assert!(
        !tables.contains(&format!("sluice_{id}")),
        "table leaked: {tables}"
    );
}

/// Prints `KEY_rc=` and `KEY_ms=` for a command.
pub(crate) fn timed(key: &str, command: &str) -> String {
    format!(
        "s=$(date +%s%N); {command} >/dev/null 2>&1; rc=$?; \
         echo {key}_rc=$rc; echo {key}_ms=$(( ($(date +%s%N) - s) / 1000000 ))\n"
    )
}

/// A finished `sluice run --identity required` of the script `script`
/// makes from the namespace address, with the echo upstream in that
/// namespace as `api.demo.internal:8080`. Returns the paths it recorded.
fn run_with_upstream(
    tag: &str,
    script: impl FnOnce(&str) -> String,
) -> (RunOutcome, Vec<String>, String) {
    let dir = TempDir::new(tag);
    let ns = Netns::new();
    ns.start_upstream(8080, &dir.path("up.jsonl"));
    let host = format!("api.demo.internal={}", ns.ns_ip);
    let r = run_to_end(
        &dir,
        POLICY,
        &["--identity", "required", "--add-host", &host],
        &script(&ns.ns_ip),
    );
    let paths = recorded(&dir.path("up.jsonl"))
        .iter()
        .filter_map(|e| e["path"].as_str().map(str::to_owned))
        .collect();
    (r, paths, ns.ns_ip.clone())
}

/// CMD reaches an allowed upstream through the proxy its environment names;
/// a host off policy and a binary off `binaries` (python3) get 403; the
/// exit status is CMD's; allowed events carry the sandbox pid.
#[test]
fn run_routes_cmd_through_the_proxy_and_exits_with_its_status() {
    let py = "python3 -c \"import urllib.request as u, urllib.error as e\ntry: u.urlopen('http://api.demo.internal:8080/py', timeout=5); print('python=200')\nexcept e.HTTPError as x: print('python=%d' % x.code)\"";
    let (r, paths, _) = run_with_upstream("run-a", |_| {
        format!(
            "curl -s -o /dev/null -w 'allowed=%{{http_code}}\\n' http://api.demo.internal:8080/ok\n\
             curl -s -o /dev/null -w 'denied=%{{http_code}}\\n' http://denied.example:8080/\n\
             {py}\n\
             echo proxy=$HTTPS_PROXY\n\
             echo no_proxy=$NO_PROXY\n\
             exit 7"
        )
    });
    assert_eq!(
        r.status.code(),
        Some(7),
        "exit status is CMD's: {}",
        r.stderr
    );
    assert_eq!(r.value("allowed"), "200", "{}", r.stderr);
    assert_eq!(r.value("denied"), "403");
    assert_eq!(r.value("python"), "403", "python3 is not in binaries");
    assert_eq!(r.value("no_proxy"), "127.0.0.1,localhost,::1");
    assert!(
        r.value("proxy").starts_with("http://10."),
        "{}",
        r.value("proxy")
    );
    assert!(paths.iter().any(|p| p == "/ok"), "{paths:?}");
    assert!(!paths.iter().any(|p| p == "/py"), "{paths:?}");
    assert!(
        r.events
            .iter()
            .any(|e| e["actor"]["process"]["file"]["path"] == "/usr/bin/curl"
                && e["unmapped"]["sandbox_pid"].as_u64().is_some_and(|p| p > 1)
                && e["disposition"] == "Allowed"),
        "allowed events carry the sandbox pid"
    );
    assert_cleaned_up(&r.netns);
}

/// A direct connection (no proxy) fails at once, never reaches the
/// upstream, and is reported: a bypass event naming curl, with the sandbox
/// pid as evidence and a hint, and a bypass finding.
#[test]
fn run_refuses_a_direct_connection_fast_and_names_the_binary() {
    let (r, paths, ns_ip) = run_with_upstream("run-direct", |ns_ip| {
        timed(
            "direct",
            &format!("curl --noproxy '*' -sS -m 5 http://{ns_ip}:8080/direct"),
        )
    });
    assert_eq!(r.status.code(), Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_ne!(r.value("direct_rc"), "0", "direct connection must fail");
    assert!(
        r.ms("direct_ms") < 1000,
        "direct connect took {} ms",
        r.ms("direct_ms")
    );
    assert!(!paths.iter().any(|p| p == "/direct"), "{paths:?}");

    let bypass = r.bypass_events();
    let direct = bypass
        .iter()
        .find(|e| e["dst_endpoint"]["ip"] == ns_ip.as_str() && e["dst_endpoint"]["port"] == 8080)
        .unwrap_or_else(|| panic!("no bypass event for the direct connect: {bypass:#?}"));
    assert_eq!(direct["actor"]["process"]["file"]["path"], "/usr/bin/curl");
    assert_eq!(direct["activity_name"], "Refuse");
    // Host pid for the lookup, the sandbox's own pid (CMD's PID namespace) as evidence.
    let sandbox_pid = direct["unmapped"]["sandbox_pid"].as_u64().unwrap_or(0);
    assert!(
        sandbox_pid > 1 && Some(sandbox_pid) != direct["actor"]["process"]["pid"].as_u64(),
        "{direct:#}"
    );
    assert!(direct["unmapped"]["hint"]
        .as_str()
        .is_some_and(|h| h.contains("HTTP_PROXY")));
    assert!(
        r.events.iter().any(|e| e["class_uid"] == 2004
            && e["finding_info"]["uid"] == "bypass-detect"
            && e["evidences"][0]["data"]["binary"] == "/usr/bin/curl"),
        "no bypass finding naming curl"
    );
    assert_cleaned_up(&r.netns);
}

/// DNS from inside fails at once and is reported: policy DNS refused the
/// query while the resolver's socket was open, so the sender (python3) is
/// named, and so is the name it asked for.
#[test]
fn run_refuses_dns_fast_and_attributes_the_query() {
    let dir = TempDir::new("run-dns");
    let script = timed(
        "dns",
        "python3 -c \"import socket; socket.getaddrinfo('example.com', 80)\"",
    );
    let r = run_to_end(&dir, POLICY, &["--identity", "required"], &script);
    assert_eq!(r.status.code(), Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_ne!(r.value("dns_rc"), "0", "DNS must fail");
    assert!(
        r.ms("dns_ms") < 1000,
        "DNS failure took {} ms",
        r.ms("dns_ms")
    );
    let bypass = r.bypass_events();
    assert!(
        bypass.iter().any(|e| e["dst_endpoint"]["port"] == 53
            && e["unmapped"]["hint"]
                .as_str()
                .is_some_and(|h| h.contains("DNS"))),
        "no DNS bypass event: {bypass:#?}"
    );
    assert!(
        bypass.iter().any(|e| e["dst_endpoint"]["port"] == 53
            && e["unmapped"]["dns_query"] == "example.com"
            && e["actor"]["process"]["file"]["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/usr/bin/python3"))),
        "the DNS query is attributed to python3: {bypass:#?}"
    );
    assert!(
        r.stderr
            .contains("sluice: denied DNS query for example.com (python3"),
        "{}",
        r.stderr
    );
    assert_cleaned_up(&r.netns);
}

#[test]
fn run_https_via_connect_trusts_the_exported_ca_bundle() {
    let dir = TempDir::new("run-b");
    let ns = Netns::new();
    let pki = test_pki(&dir, "upstream", &["secure.demo.internal"]);
    ns.start_tls_upstream(8443, &dir.path("tls.jsonl"), &pki.cert, &pki.key);
    let host = format!("secure.demo.internal={}", ns.ns_ip);
    let ca = pki.ca.to_string_lossy().into_owned();
    // No -k and no --cacert: curl must trust the bundle through CURL_CA_BUNDLE.
    let script = "curl -sS -o /dev/null -w 'get=%{http_code}\\n' https://secure.demo.internal:8443/repos/x\n\
                  curl -sS -o /dev/null -w 'delete=%{http_code}\\n' -X DELETE https://secure.demo.internal:8443/repos/x\n\
                  echo bundle=$SSL_CERT_FILE\n\
                  [ \"$SSL_CERT_FILE\" = \"$REQUESTS_CA_BUNDLE\" ] && [ \"$SSL_CERT_FILE\" = \"$NODE_EXTRA_CA_CERTS\" ] && echo same=yes";
    let r = run_to_end(
        &dir,
        POLICY,
        &["--add-host", &host, "--upstream-ca", &ca],
        script,
    );
    assert_eq!(r.status.code(), Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.value("get"), "200", "{}", r.stderr);
    assert_eq!(r.value("delete"), "403", "read-only REST rule inside TLS");
    assert_eq!(r.value("same"), "yes");
    let bundle = r.value("bundle");
    assert!(
        bundle.starts_with("/run/sluice/sluice-") && bundle.ends_with("/ca-bundle.pem"),
        "{bundle}"
    );
    assert!(
        !std::path::Path::new(&bundle).exists(),
        "the run's files are removed at exit"
    );
    let methods: Vec<String> = recorded(&dir.path("tls.jsonl"))
        .iter()
        .filter_map(|e| e["method"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(methods, ["GET"], "only the GET reached the upstream");
    assert_cleaned_up(&r.netns);
}

#[test]
fn run_cleans_up_after_child_crash() {
    let dir = TempDir::new("run-crash");
    let r = run_to_end(&dir, POLICY, &[], "kill -SEGV $$");
    assert_eq!(r.status.code(), Some(128 + 11), "{}", r.stderr);
    assert_cleaned_up(&r.netns);
}

#[test]
fn run_cleans_up_after_normal_exit_with_background_leftovers() {
    let dir = TempDir::new("run-exit");
    let r = run_to_end(&dir, POLICY, &[], "sleep 60 & exit 0");
    assert_eq!(r.status.code(), Some(0), "{}", r.stderr);
    assert_cleaned_up(&r.netns);
}

#[test]
fn run_forwards_sigterm_and_cleans_up() {
    let dir = TempDir::new("run-term");
    let mut child = sluice_run(&dir, POLICY, &[], "echo started; sleep 60")
        .spawn()
        .expect("start sluice run");
    let stderr = Arc::new(Mutex::new(String::new()));
    let reader = BufReader::new(child.stderr.take().expect("stderr"));
    let sink = Arc::clone(&stderr);
    let pump = std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&line);
            sink.lock().unwrap().push('\n');
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("started line");
    assert_eq!(line.trim(), "started", "{}", stderr.lock().unwrap());
    let netns = netns_name(&stderr.lock().unwrap());
    let started = Instant::now();
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
    let mut status = None;
    eventually("sluice run exits after SIGTERM", || {
        status = child.try_wait().expect("wait");
        status.is_some()
    });
    assert!(started.elapsed() < patience().min(Duration::from_secs(8)));
    let _ = pump.join();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(128 + 15),
        "CMD was terminated by the forwarded SIGTERM: {}",
        stderr.lock().unwrap()
    );
    assert_cleaned_up(&netns);
}
