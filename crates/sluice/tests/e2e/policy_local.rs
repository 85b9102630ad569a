//! `policy.local` (design §6.4) with real clients through `sluice serve`:
//! the agent reads its policy (secret sources redacted) and its denials,
//! proposes a rule (validated like a policy file, located errors), waits,
//! and is released by an operator's decision (`sluice proposals approve`);
//! the rule is then written into the policy file as a marked block and the
//! previously denied request goes through. Two gateways sharing a real
//! PostgreSQL store see each other's proposals and both apply an approval;
//! a store that goes away refuses proposals with 503.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use sluice_test_support::{eventually, start_postgres, Netns, Python, TempDir};

use crate::harness::Sluice;

const SECRET_ENV: &str = "PL_DEMO_SECRET";

fn policy() -> String {
    format!(
        r#"# The team's policy: docs are readable, nothing else.
version: 1
network_policies:
  # Documentation server.
  docs:
    endpoints:
      - host: docs.test
        port: 8080
        protocol: rest
        enforcement: enforce
        rules:
          - allow: {{ method: GET, path: /allowed }}
    binaries: [ {{ path: "/**" }} ]
providers:
  demo:
    credentials:
      DEMO_TOKEN: {{ env: {SECRET_ENV} }}
    endpoints: [ {{ host: docs.test, port: 8080 }} ]
"#
    )
}

/// The agent, with `requests` through the proxy: deny, look, propose (a bad
/// one, then a good one), wait while the operator decides, retry.
const AGENT: &str = r#"
import json, subprocess, sys, threading, time
import requests
proxy, sluice_bin, state = sys.argv[1], sys.argv[2], sys.argv[3]
P = {"http": proxy}
def out(k, v): print("%s=%s" % (k, v), flush=True)
def get(url, **kw): return requests.get(url, proxies=P, timeout=30, **kw)
def post(url, body): return requests.post(url, json=body, proxies=P, timeout=30)
def decide(verb, pid, *extra):
    subprocess.run([sluice_bin, "proposals", verb, pid, "--state-dir", state, *extra], check=True)

out("denied", get("http://api.test:8080/x").status_code)
r = get("http://docs.test:8080/secret")
out("l7_denied", r.status_code)
out("next_steps", ",".join(s["url"] for s in r.json()["next_steps"]))
cur = get("http://policy.local/v1/policy/current").json()
out("generation", cur["generation"])
out("enforces", "%s %s" % (cur["runtime_mode"], ",".join(cur["capabilities"][:1])))
out("redacted", "[redacted]" in cur["policy_yaml"] and "PL_DEMO_SECRET" not in cur["policy_yaml"])
d = get("http://policy.local/v1/denials?last=5").json()
out("denial0", d["denials"][0])
bad = post("http://policy.local/v1/proposals",
           {"operations": [{"addRule": {"ruleName": "api", "rule": {"endpoints": [{"hots": "api.test", "port": 8080}]}}}]})
out("bad", "%d %s" % (bad.status_code, bad.json()["error"]))
out("bad_error", bad.json()["errors"][0])
good = post("http://policy.local/v1/proposals",
            {"intent_summary": "the agent needs api.test",
             "operations": [{"addRule": {"ruleName": "api", "rule": {
                 "endpoints": [{"host": "api.test", "port": 8080}], "binaries": [{"path": "/**"}]}}}]})
out("good", "%d %s" % (good.status_code, good.json()["status"]))
pid = good.json()["id"]
out("id", pid)
waited = {}
def wait():
    waited.update(get("http://policy.local/v1/proposals/%s/wait?timeout=30" % pid).json())
t = threading.Thread(target=wait)
t.start()
time.sleep(1.0)
out("still_waiting", t.is_alive())
decide("approve", pid, "--actor", "alice", "--reason", "ok for the demo")
t.join(40)
out("waited", "%s reloaded=%s timed_out=%s" % (waited.get("status"), waited.get("policy_reloaded"), waited.get("timed_out")))
out("retried", get("http://api.test:8080/x").status_code)
other = post("http://policy.local/v1/proposals",
             {"operations": [{"addRule": {"ruleName": "other", "rule": {
                 "endpoints": [{"host": "other.test", "port": 8080}], "binaries": [{"path": "/**"}]}}}]}).json()["id"]
decide("reject", other, "--reason", "not needed")
w = get("http://policy.local/v1/proposals/%s/wait?timeout=5" % other).json()
out("rejected", "%s %s" % (w["status"], w["rejection_reason"]))
out("unknown", get("http://policy.local/v1/proposals/p-0000000000000000").status_code)
out("port", "%d %s" % ((r := get("http://policy.local:8080/v1/policy/current")).status_code, r.json()["error"]))
"#;

/// `GET https://policy.local/` in absolute form straight to the proxy.
fn https_absolute(proxy: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(proxy).expect("proxy");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.write_all(
        b"GET https://policy.local/v1/policy/current HTTP/1.1\r\nHost: policy.local\r\n\r\n",
    )
    .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn an_agent_proposes_waits_and_is_released_by_approval() {
    let dir = TempDir::new("policy-local");
    let ns = Netns::new();
    let record = dir.path("upstream.jsonl");
    ns.start_upstream(8080, &record);
    let hosts: Vec<String> = ["api.test", "docs.test", "other.test"]
        .iter()
        .map(|h| format!("{h}={}", ns.ns_ip))
        .collect();
    // Identity required (the default): the agent's proposals carry `binaries`.
    let mut args: Vec<&str> = Vec::new();
    for h in &hosts {
        args.extend(["--add-host", h.as_str()]);
    }
    let sluice =
        Sluice::start_with_env(&dir, &policy(), &args, &[(SECRET_ENV, "s3cr3t-value-1234")]);
    let state = dir.path("state");
    let out = Python::inline(AGENT)
        .arg(sluice.proxy_url())
        .arg(env!("CARGO_BIN_EXE_sluice"))
        .arg(&state)
        .lines();
    let get = |k: &str| {
        out.iter()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} missing: {out:#?}\n{}", sluice.stderr()))
            .to_owned()
    };
    assert_eq!(get("denied"), "403");
    assert_eq!(get("l7_denied"), "403");
    assert!(get("next_steps").contains("http://policy.local/v1/proposals"));
    assert_eq!(get("generation"), "1");
    assert_eq!(get("enforces"), "serve process-identity");
    assert_eq!(get("redacted"), "True");
    assert!(
        get("denial0").starts_with("denied GET docs.test:8080/secret"),
        "{out:?}"
    );
    assert_eq!(get("bad"), "400 invalid_proposal");
    assert!(
        get("bad_error").starts_with("proposal.yaml:5:") && get("bad_error").contains("hots"),
        "located in the rendered proposal: {out:?}"
    );
    assert_eq!(get("good"), "202 pending");
    assert_eq!(get("still_waiting"), "True", "wait blocks until a decision");
    assert_eq!(get("waited"), "approved reloaded=True timed_out=False");
    assert_eq!(get("retried"), "200", "the denied request now goes through");
    assert_eq!(get("rejected"), "rejected not needed");
    assert_eq!(get("unknown"), "404");
    assert_eq!(get("port"), "400 invalid_policy_local_scheme");
    assert!(https_absolute(sluice.addr).contains("invalid_policy_local_scheme"));

    // The policy file: the operator's text and comments kept, the rule added
    // as a marked block, and it reloads as it is.
    let text = std::fs::read_to_string(&sluice.policy).expect("policy");
    assert!(text.starts_with("# The team's policy: docs are readable, nothing else.\n"));
    assert!(text.contains("  # Documentation server.\n"));
    let id = get("id");
    assert!(
        text.contains(&format!("# --- added by sluice: proposal {id}")),
        "{text}"
    );
    assert!(
        !text.contains("other.test"),
        "the rejected rule is not applied"
    );
    let check = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("check")
        .arg(&sluice.policy)
        .env(SECRET_ENV, "s3cr3t-value-1234")
        .output()
        .expect("sluice check");
    assert!(
        check.status.success(),
        "the amended file checks: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    // Audited: proposed, applied (the new generation); the secret never.
    sluice.wait_event(&format!("CONFIG PROPOSED proposal {id} (api)"));
    sluice.wait_event(&format!("CONFIG APPLIED proposal {id} (api)"));
    let log = std::fs::read_to_string(&sluice.audit).expect("audit");
    assert!(!log.contains("s3cr3t-value-1234"));
}

/// Two gateways on one PostgreSQL queue; the store going away is a 503.
#[test]
fn two_gateways_share_a_postgres_queue() {
    let dir = TempDir::new("policy-local-pg");
    let ns = Netns::new();
    let pg = start_postgres(&ns, dir.root(), 5432, None);
    pg.psql("postgres", "CREATE ROLE gw LOGIN PASSWORD 'gw-pass-7741'");
    pg.psql("postgres", "CREATE DATABASE proposals OWNER gw");
    let url = format!(
        "postgres://gw:gw-pass-7741@{}:{}/proposals?sslmode=disable",
        pg.host, pg.port
    );
    let record = dir.path("upstream.jsonl");
    ns.start_upstream(8080, &record);
    let host = format!("api.test={}", ns.ns_ip);
    let (dir_a, dir_b) = (TempDir::new("gw-a"), TempDir::new("gw-b"));
    let args = |name: &'static str| -> Vec<String> {
        ["--add-host", &host, "--store", &url, "--gateway-name", name]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    };
    let (args_a, args_b) = (args("gw-a"), args("gw-b"));
    let plain = "version: 1\nnetwork_policies: {}\n";
    let refs_a: Vec<&str> = args_a.iter().map(String::as_str).collect();
    let refs_b: Vec<&str> = args_b.iter().map(String::as_str).collect();
    let a = Sluice::start(&dir_a, plain, &refs_a);
    let b = Sluice::start(&dir_b, plain, &refs_b);
    let client = r#"
import sys, requests
proxy, verb, arg = sys.argv[1], sys.argv[2], sys.argv[3]
P = {"http": proxy}
if verb == "propose":
    r = requests.post("http://policy.local/v1/proposals", proxies=P, timeout=30, json={"operations": [{"addRule": {
        "ruleName": arg, "rule": {"endpoints": [{"host": "api.test", "port": 8080}], "binaries": [{"path": "/**"}]}}}]})
    print("%d %s" % (r.status_code, r.json().get("id") or r.json().get("error")))
elif verb == "show":
    r = requests.get("http://policy.local/v1/proposals/" + arg, proxies=P, timeout=30)
    print("%d %s" % (r.status_code, r.json().get("status")))
else:
    print(requests.get(arg, proxies=P, timeout=30).status_code)
"#;
    let py = |s: &Sluice, verb: &str, arg: &str| {
        Python::inline(client)
            .args([s.proxy_url().as_str(), verb, arg])
            .stdout()
            .trim()
            .to_owned()
    };
    let proposed = py(&a, "propose", "api");
    let id = proposed
        .strip_prefix("202 ")
        .unwrap_or_else(|| panic!("{proposed}"))
        .to_owned();
    assert_eq!(
        py(&b, "show", &id),
        "200 pending",
        "gateway B sees A's proposal"
    );
    assert_eq!(py(&b, "get", "http://api.test:8080/x"), "403");
    let approve = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "proposals",
            "approve",
            &id,
            "--store",
            &url,
            "--actor",
            "bob",
        ])
        .output()
        .expect("approve");
    assert!(
        approve.status.success(),
        "{}",
        String::from_utf8_lossy(&approve.stderr)
    );
    // Both gateways apply it to their own policy file.
    for (name, s) in [("a", &a), ("b", &b)] {
        eventually(&format!("gateway {name} applied the approval"), || {
            std::fs::read_to_string(&s.policy).is_ok_and(|t| t.contains(&id))
        });
        assert_eq!(
            py(s, "get", "http://api.test:8080/x"),
            "200",
            "gateway {name}"
        );
    }
    let shown = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["proposals", "show", &id, "--store", &url])
        .output()
        .expect("show");
    let shown = String::from_utf8_lossy(&shown.stdout);
    for gw in ["gw-a", "gw-b"] {
        assert!(
            shown.contains(&format!("\"actor\": \"{gw}\"")),
            "{gw} recorded: {shown}"
        );
    }
    assert!(!shown.contains("gw-pass-7741"));

    // The store goes away: proposals are refused (503), never silently lost.
    kill_postgres(&ns);
    drop(pg);
    let refused = py(&a, "propose", "later");
    assert_eq!(refused, "503 store_unavailable");
    for s in [&a, &b] {
        assert!(!s.stderr().contains("gw-pass-7741"), "password on stderr");
    }
}

/// Kills the namespace's PostgreSQL processes (a crash of the store).
fn kill_postgres(ns: &Netns) {
    let pids = Command::new("ip")
        .args(["netns", "pids", &ns.name])
        .output()
        .expect("ip netns pids");
    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.starts_with("postgres") {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    eventually("postgres is gone", || {
        let pids = Command::new("ip")
            .args(["netns", "pids", &ns.name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        !pids.split_whitespace().any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("postgres"))
        })
    });
}
