//! `sluice run` at a terminal (issue 24): stdout and stderr are CMD's; sluice
//! adds one start line, one line per denial and, at exit, a summary whose
//! snippet turns the denial into an allow; the audit log goes to a file unless
//! `--audit-log -` asks for JSON on stdout.

use std::process::{Command, Stdio};

use sluice_test_support::{recorded, test_pki, Netns, TempDir};

/// `network_policies` is the last section, so a printed snippet can be appended.
const POLICY: &str = r#"version: 1
network_policies:
  demo:
    endpoints:
      - { host: api.demo.internal, port: 8080, enforcement: enforce }
    binaries:
      - { path: /usr/bin/curl }
"#;

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `sluice run` with the test's state dir and no `--audit-log` (the default).
fn run(dir: &TempDir, policy: &str, extra: &[&str], script: &str) -> Outcome {
    std::fs::write(dir.path("policy.yaml"), policy).expect("policy");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--no-system-dns", "--user", "nobody", "--policy"])
        .arg(dir.path("policy.yaml"))
        .arg("--state-dir")
        .arg(dir.path("state"))
        .args(extra)
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .expect("sluice run");
    Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn run_output_belongs_to_cmd() {
    let dir = TempDir::new("term-out");
    let o = run(&dir, POLICY, &[], "echo out; echo err >&2");
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(o.stdout, "out\n", "stdout is CMD's alone");
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "the start line and CMD's err: {lines:?}");
    assert!(
        lines[0].starts_with("sluice: running ") && lines[0].contains("audit log: "),
        "{lines:?}"
    );
    assert!(lines[0].ends_with("audit.jsonl"), "{lines:?}");
    assert_eq!(lines[1], "err");
    assert!(!o.stderr.contains('{'), "no JSON on stderr");
    let audit = recorded(&dir.path("state").join("audit.jsonl"));
    assert!(
        audit.iter().any(|e| e["class_uid"] == 5019),
        "the audit file holds the events: {audit:?}"
    );

    // --audit-log - : JSON lines on stdout, nothing else there.
    let o = run(&dir, POLICY, &["--audit-log", "-"], "echo err >&2");
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(!o.stdout.is_empty());
    for line in o.stdout.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
    }
}

#[test]
fn run_denial_line_and_snippet_that_allows_it() {
    let dir = TempDir::new("term-deny");
    let ns = Netns::new();
    ns.start_upstream(9090, &dir.path("up.jsonl"));
    let host = format!("other.demo.internal={}", ns.ns_ip);
    let script = "curl -s -w '\\nstatus=%{http_code}\\n' http://other.demo.internal:9090/x";
    let first = run(&dir, POLICY, &["--add-host", &host], script);
    assert!(first.stdout.ends_with("\nstatus=403\n"), "{}", first.stderr);
    let body: serde_json::Value =
        serde_json::from_str(first.stdout.lines().next().unwrap_or_default()).expect("403 body");
    let denials: Vec<&str> = first
        .stderr
        .lines()
        .filter(|l| l.starts_with("sluice: denied "))
        .collect();
    assert_eq!(denials.len(), 1, "{}", first.stderr);
    assert!(
        denials[0].starts_with("sluice: denied GET other.demo.internal:9090/x (curl, pid "),
        "{denials:?}"
    );
    assert_eq!(
        body["hint"]
            .as_str()
            .map(|h| format!("sluice: {h}"))
            .as_deref(),
        Some(denials[0]),
        "the denial body carries the terminal line"
    );
    assert_eq!(body["error"], "policy_denied", "the body keeps its shape");
    assert!(
        first
            .stderr
            .contains("sluice: summary: 0 allowed, 1 denied"),
        "{}",
        first.stderr
    );
    // The snippet: the indented lines after the "to allow" line.
    let snippet: String = first
        .stderr
        .lines()
        .skip_while(|l| !l.starts_with("sluice: to allow the denied destinations"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(snippet.contains("other.demo.internal"), "{}", first.stderr);

    let second = run(
        &dir,
        &format!("{POLICY}{snippet}"),
        &["--add-host", &host],
        script,
    );
    assert!(
        second.stdout.ends_with("\nstatus=200\n"),
        "{}",
        second.stderr
    );
    assert!(
        !second.stderr.contains("sluice: denied"),
        "{}",
        second.stderr
    );
    let paths: Vec<String> = recorded(&dir.path("up.jsonl"))
        .iter()
        .filter_map(|e| e["path"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(paths, ["/x"], "only the second, allowed request arrived");

    // -q: nothing from sluice but the start line; -v: allows too.
    let quiet = run(&dir, POLICY, &["-q", "--add-host", &host], script);
    assert_eq!(quiet.stderr.lines().count(), 1, "{}", quiet.stderr);
    let verbose = run(
        &dir,
        &format!("{POLICY}{snippet}"),
        &["-v", "--add-host", &host],
        script,
    );
    assert!(
        verbose
            .stderr
            .contains("sluice: allowed GET other.demo.internal:9090/x (curl, pid "),
        "{}",
        verbose.stderr
    );
}

#[test]
fn suggest_policy_writes_a_policy_that_allows_an_l7_denial() {
    let dir = TempDir::new("term-suggest");
    let ns = Netns::new();
    let pki = test_pki(&dir, "up", &["secure.demo.internal"]);
    ns.start_tls_upstream(8443, &dir.path("tls.jsonl"), &pki.cert, &pki.key);
    let host = format!("secure.demo.internal={}", ns.ns_ip);
    let ca = pki.ca.to_string_lossy().into_owned();
    let policy = r#"version: 1
network_policies:
  demo:
    endpoints:
      - { host: secure.demo.internal, port: 8443, protocol: rest, enforcement: enforce, access: read-only }
    binaries:
      - { path: /usr/bin/curl }
"#;
    let suggested = dir.path("suggested.yaml");
    let suggested_arg = suggested.to_string_lossy().into_owned();
    let script = "curl -s -w '\\nstatus=%{http_code}\\n' -X DELETE https://secure.demo.internal:8443/repos/x";
    let args = [
        "--add-host",
        &host,
        "--upstream-ca",
        &ca,
        "--suggest-policy",
        &suggested_arg,
    ];
    let first = run(&dir, policy, &args, script);
    assert!(first.stdout.ends_with("\nstatus=403\n"), "{}", first.stderr);
    let body: serde_json::Value =
        serde_json::from_str(first.stdout.lines().next().unwrap_or_default()).expect("403 body");
    let hint = body["hint"].as_str().expect("hint in the L7 denial body");
    assert!(
        first.stderr.lines().any(|l| l == format!("sluice: {hint}")),
        "the same line on the terminal: {hint}\n{}",
        first.stderr
    );
    assert!(
        first
            .stderr
            .contains("sluice: denied DELETE secure.demo.internal:8443/repos/x (curl, pid "),
        "{}",
        first.stderr
    );
    assert!(
        first
            .stderr
            .contains("- allow: { method: DELETE, path: \"/repos/x\" }"),
        "{}",
        first.stderr
    );
    assert!(
        first
            .stderr
            .contains("wrote the policy with 1 suggestion(s)"),
        "{}",
        first.stderr
    );
    let merged = std::fs::read_to_string(&suggested).expect("suggested policy");
    let second = run(&dir, &merged, &args[..4], script);
    assert!(
        second.stdout.ends_with("\nstatus=200\n"),
        "{}\n{merged}",
        second.stderr
    );
    let methods: Vec<String> = recorded(&dir.path("tls.jsonl"))
        .iter()
        .filter_map(|e| e["method"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(methods, ["DELETE"], "only the allowed DELETE arrived");
}

/// `serve --log-format pretty --audit-log -`: one human line per event on stdout.
#[test]
fn serve_pretty_log_is_one_human_line_per_event() {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let dir = TempDir::new("term-pretty");
    // Endpoint-only identity cannot enforce `binaries`: the policy has none.
    let policy = POLICY.replace("    binaries:\n      - { path: /usr/bin/curl }\n", "");
    std::fs::write(dir.path("policy.yaml"), policy).expect("policy");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--listen", "127.0.0.1:0", "--audit-log", "-"])
        .args([
            "--log-format",
            "pretty",
            "--identity",
            "endpoint-only",
            "--policy",
        ])
        .arg(dir.path("policy.yaml"))
        .arg("--state-dir")
        .arg(dir.path("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice serve");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("listening line");
    let addr: std::net::SocketAddr = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(b"CONNECT blocked.test:443 HTTP/1.1\r\nHost: blocked.test:443\r\n\r\n")
        .expect("send");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // SIGTERM: serve flushes its audit log before exiting.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("stdout");
    let status = child.wait().expect("wait");
    assert!(status.success(), "serve exits cleanly on SIGTERM: {status}");
    let deny = out
        .lines()
        .find(|l| l.contains("CONNECT denied blocked.test:443"))
        .unwrap_or_else(|| panic!("no pretty deny line in:\n{out}"));
    let (time, rest) = deny.split_at(8);
    assert!(
        time.bytes().enumerate().all(|(i, b)| if i == 2 || i == 5 {
            b == b':'
        } else {
            b.is_ascii_digit()
        }),
        "{deny}"
    );
    assert!(
        rest.starts_with(" DENY  CONNECT denied blocked.test:443"),
        "{deny}"
    );
    assert!(
        !out.contains('{') && !out.contains('\x1b'),
        "no JSON, no colour off a terminal:\n{out}"
    );
}
