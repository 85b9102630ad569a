//! Provider profiles end to end: a policy attaches a profile file, the
//! operator binds its credential with `--secret`, and curl's placeholder is
//! swapped for the secret only on the profile's endpoints; the composed
//! entry is what events and `explain` name.

use std::process::Command;

use crate::credentials::header;
use crate::harness::{curl, Sluice};
use sluice_test_support::{recorded, Netns, TempDir};

const SECRET: &str = "prof1le-s3cret-77aa";

/// Hand-written (every field sluice honours; no binaries: `serve` runs
/// endpoint-only here).
const PROFILE: &str = r#"id: example-svc
display_name: Example Service
description: Read the example API.
category: data
credentials:
  - name: api_token
    env_vars: [EXAMPLE_TOKEN, EXAMPLE_TOKEN_ALT]
    required: true
    auth_style: bearer
    header_name: authorization
endpoints:
  - host: api.example.test
    port: 8080
    protocol: rest
    enforcement: enforce
    rules:
      - allow: { method: GET, path: "/v1/**" }
discovery:
  credentials: [api_token]
"#;

const POLICY: &str = r"version: 1
network_policies:
  other:
    endpoints:
      - { host: other.test, port: 8080, protocol: rest, enforcement: enforce, access: full }
profiles:
  - file: svc.yaml
";

#[test]
fn a_profile_binds_its_credential_only_on_its_endpoints() {
    let dir = TempDir::new("profiles-e2e");
    std::fs::write(dir.path("svc.yaml"), PROFILE).unwrap();
    let ns = Netns::new();
    let record = dir.path("up.jsonl");
    ns.start_upstream(8080, &record);
    let hosts = [
        format!("api.example.test={}", ns.ns_ip),
        format!("other.test={}", ns.ns_ip),
    ];
    let args = [
        "--identity",
        "endpoint-only",
        "--add-host",
        &hosts[0],
        "--add-host",
        &hosts[1],
        "--secret",
        "EXAMPLE_TOKEN=env:HOST_EXAMPLE_SECRET",
    ];
    let sluice = Sluice::start_with_env(&dir, POLICY, &args, &[("HOST_EXAMPLE_SECRET", SECRET)]);
    let proxy = sluice.proxy_url();

    // On the profile's endpoint: both env var names resolve.
    let r = curl(
        &proxy,
        "http://api.example.test:8080/v1/repos",
        false,
        &[
            "-H",
            "Authorization: Bearer sluice:resolve:env:EXAMPLE_TOKEN",
            "-H",
            "X-Alt: sluice:resolve:env:EXAMPLE_TOKEN_ALT",
        ],
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", sluice.stderr());
    let seen = recorded(&record)
        .pop()
        .expect("the upstream saw the request");
    assert_eq!(
        header(&seen, "authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    assert_eq!(header(&seen, "x-alt"), Some(SECRET));

    // The profile's rules apply (GET only), and nothing reaches the upstream.
    let before = recorded(&record).len();
    let r = curl(
        &proxy,
        "http://api.example.test:8080/v1/repos",
        false,
        &["-X", "DELETE"],
    );
    assert_eq!(r.status, 403, "{r:?}");
    // Elsewhere the placeholder is refused, never swapped.
    let r = curl(
        &proxy,
        "http://other.test:8080/leak",
        false,
        &["-H", "X-Key: sluice:resolve:env:EXAMPLE_TOKEN"],
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("credential_endpoint_mismatch"), "{r:?}");
    assert_eq!(
        recorded(&record).len(),
        before,
        "a denied request reached the upstream"
    );

    // Events name the composed entry; nothing sluice wrote holds the secret.
    sluice.signal("TERM");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let audit = std::fs::read_to_string(&sluice.audit).unwrap();
    assert!(audit.contains("_provider_example_svc"), "{audit}");
    assert!(!audit.contains(SECRET) && !sluice.stderr().contains(SECRET));

    // `explain` shows the same entry (the secret found by discovery in
    // explain's own environment).
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["explain", "--policy"])
        .arg(&sluice.policy)
        .args([
            "--method",
            "GET",
            "--path",
            "/v1/x",
            "api.example.test",
            "8080",
        ])
        .env("EXAMPLE_TOKEN", "any-value-1234")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"policy\": \"_provider_example_svc\""),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sluice profiles lint` locates errors and exits 1; `list` and `show`
/// print the catalog, as a table and as JSON.
#[test]
fn profiles_command_lists_shows_and_lints() {
    let dir = TempDir::new("profiles-cmd");
    let bad = dir.path("bad.yaml");
    std::fs::write(&bad, "id: bad\ncategory: games\ncredentials:\n  - name: k\n    env_vars: [K]\n    refresh: { strategy: oauth2_refresh_token }\n").unwrap();
    let good = dir.path("good.yaml");
    std::fs::write(&good, PROFILE).unwrap();
    let sluice = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = sluice(&[
        "profiles",
        "lint",
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "{}: ok (profile example-svc, 1 endpoints, 1 credentials)",
            good.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}:2:11: unknown category `games`", bad.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{}:6:14: credential `k` asks for refresh strategy `oauth2_refresh_token`",
            bad.display()
        )),
        "{text}"
    );
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_slice(&sluice(args).stdout).unwrap()
    };
    let json_bad = json(&[
        "profiles",
        "lint",
        "--format",
        "json",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(json_bad[0]["ok"], false);
    assert_eq!(json_bad[0]["diagnostics"][0]["line"], 2);

    let out = sluice(&["profiles", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.lines()
            .any(|l| l.starts_with("github ") && l.contains("GITHUB_TOKEN")),
        "{text}"
    );
    let listed = json(&["profiles", "list", "--format", "json"]);
    assert!(listed.as_array().unwrap().len() >= 24);
    let out = sluice(&["profiles", "show", "claude-code"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("policy key:  _provider_claude_code")
            && text.contains("api.anthropic.com:443"),
        "{text}"
    );
    let shown = json(&[
        "profiles",
        "show",
        "--format",
        "json",
        good.to_str().unwrap(),
    ]);
    assert_eq!(shown["credentials"][0]["env_vars"][1], "EXAMPLE_TOKEN_ALT");
    let out = sluice(&["profiles", "show", "no-such-profile"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("no profile `no-such-profile` in the catalog"));
}

/// The headline shape: `sluice run --profile FILE --secret NAME=env:VAR --
/// CMD` with no policy file. CMD holds placeholders under every `env_vars`
/// name and not the secret's source; curl (a binary of the profile) reaches
/// the profile's endpoint with the real token swapped in.
#[test]
fn run_with_a_profile_and_no_policy_file() {
    let dir = TempDir::new("profiles-run");
    let profile = PROFILE.replace("discovery:", "binaries:\n  - /usr/bin/curl\ndiscovery:");
    std::fs::write(dir.path("svc.yaml"), profile).unwrap();
    let ns = Netns::new();
    let record = dir.path("up.jsonl");
    ns.start_upstream(8080, &record);
    let script = "echo tok=$EXAMPLE_TOKEN; echo alt=$EXAMPLE_TOKEN_ALT; echo host=${HOST_EXAMPLE_SECRET:-unset}; \
                  curl -s -o /dev/null -w 'code=%{http_code}\\n' -H \"Authorization: Bearer $EXAMPLE_TOKEN\" http://api.example.test:8080/v1/x; \
                  echo local=$(curl -s http://policy.local/v1/policy/current | grep -o 'policy_key.:._provider_example_svc' | wc -l)";
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "run",
            "--no-system-dns",
            "--user",
            "nobody",
            "--identity",
            "required",
        ])
        .arg("--audit-log")
        .arg(dir.path("audit.jsonl"))
        .arg("--state-dir")
        .arg(dir.path("state"))
        .args(["--add-host", &format!("api.example.test={}", ns.ns_ip)])
        .arg("--profile")
        .arg(dir.path("svc.yaml"))
        .args(["--secret", "EXAMPLE_TOKEN=env:HOST_EXAMPLE_SECRET"])
        .args(["--", "sh", "-c", script])
        .env("HOST_EXAMPLE_SECRET", SECRET)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("tok=sluice:resolve:env:EXAMPLE_TOKEN\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("alt=sluice:resolve:env:EXAMPLE_TOKEN_ALT\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("host=unset\n"),
        "the secret's source is kept from CMD: {stdout}"
    );
    assert!(stdout.contains("code=200\n"), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("local=1\n"),
        "policy.local shows the entry: {stdout}"
    );
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET));
    let seen = recorded(&record)
        .pop()
        .expect("the upstream saw the request");
    assert_eq!(
        header(&seen, "authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
}
