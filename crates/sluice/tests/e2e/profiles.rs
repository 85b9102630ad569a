//! Provider profiles end to end: a policy attaches a profile file, the
//! operator binds its credential with `--secret`, and curl's placeholder is
//! swapped for the secret only on the profile's endpoints; the composed
//! entry is what events and `explain` name.

use std::process::Command;

use crate::credentials::header;
use crate::harness::{curl, Sluice};
use sluice_test_support::{recorded, sandbox_python, test_pki, Netns, TempDir};

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

/// One finished `sluice run`.
struct Outcome {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn ctx(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }

    /// `key=value` printed by CMD.
    fn value(&self, key: &str) -> String {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} not printed:\n{}", self.ctx()))
            .to_owned()
    }
}

/// `sluice run FLAGS -- CMD` as nobody with `--identity required`, the
/// test's state dir and audit log, and `env` added to sluice's environment.
fn run_with_profiles(dir: &TempDir, flags: &[&str], cmd: &[&str], env: &[(&str, &str)]) -> Outcome {
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
        .args(flags)
        .arg("--")
        .args(cmd)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("sluice run");
    Outcome {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

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
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "explain",
            "--profile",
            "github",
            "--method",
            "DELETE",
            "--path",
            "/repos/o/r",
        ])
        .args(["api.github.com", "443"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["policy"], "_provider_github", "{json}");
    assert_eq!(
        json["l7"]["verdict"], "deny",
        "the catalog's github API is read-only: {json}"
    );
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
    let svc = dir.path("svc.yaml");
    let host = format!("api.example.test={}", ns.ns_ip);
    let r = run_with_profiles(
        &dir,
        &[
            "--add-host",
            &host,
            "--profile",
            svc.to_str().unwrap(),
            "--secret",
            "EXAMPLE_TOKEN=env:HOST_EXAMPLE_SECRET",
        ],
        &["sh", "-c", script],
        &[("HOST_EXAMPLE_SECRET", SECRET)],
    );
    let (stdout, stderr) = (&r.stdout, &r.stderr);
    assert!(r.ok, "{}", r.ctx());
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

/// The official OpenAI and Anthropic Python SDKs, unmodified and with their
/// default base URLs, inside `sluice run --profile openai --profile
/// anthropic` (the embedded catalog's profiles): the API keys come from
/// `--secret`, the SDKs read placeholders from the environment, and the
/// model servers (stand-ins for api.openai.com and api.anthropic.com in a
/// namespace) see the real keys. A route the profile does not allow
/// (OpenAI's files API) is refused before it leaves.
#[test]
fn official_sdks_work_through_catalog_profiles() {
    const AGENT: &str = r#"
import os, openai, anthropic
def out(k, v): print("%s=%s" % (k, v), flush=True)
out("openai_env", os.environ.get("OPENAI_API_KEY"))
o = openai.OpenAI(max_retries=0)
r = o.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
out("openai_chat", r.choices[0].message.content)
out("openai_models", len(o.models.list().data))
try:
    o.files.list()
    out("openai_files", "allowed")
except openai.APIStatusError as e:
    out("openai_files", e.status_code)
a = anthropic.Anthropic(max_retries=0)
m = a.messages.create(model="claude-test", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
out("anthropic_text", m.content[0].text)
"#;
    const OPENAI_KEY: &str = "sk-real-openai-5b1d";
    const ANTHROPIC_KEY: &str = "sk-ant-real-0c9e";
    let dir = TempDir::new("profiles-sdk");
    let ns = Netns::new();
    let pki = test_pki(&dir, "apis", &["api.openai.com", "api.anthropic.com"]);
    let record = dir.path("llm.jsonl");
    ns.start_tls_server("llm_server.py", 443, &record, &pki.cert, &pki.key);
    let agent = dir.path("agent.py");
    std::fs::write(&agent, AGENT).unwrap();
    let (openai_host, anthropic_host) = (
        format!("api.openai.com={}", ns.ns_ip),
        format!("api.anthropic.com={}", ns.ns_ip),
    );
    let r = run_with_profiles(
        &dir,
        &[
            "--add-host",
            &openai_host,
            "--add-host",
            &anthropic_host,
            "--upstream-ca",
            pki.ca.to_str().unwrap(),
            "--profile",
            "openai",
            "--profile",
            "anthropic",
            "--secret",
            "OPENAI_API_KEY=env:REAL_OPENAI",
            "--secret",
            "ANTHROPIC_API_KEY=env:REAL_ANTHROPIC",
        ],
        &[&sandbox_python(), agent.to_str().unwrap()],
        &[
            ("REAL_OPENAI", OPENAI_KEY),
            ("REAL_ANTHROPIC", ANTHROPIC_KEY),
        ],
    );
    let (stdout, stderr, ctx) = (&r.stdout, &r.stderr, r.ctx());
    let value = |k: &str| r.value(k);
    assert!(r.ok, "{ctx}");
    assert_eq!(value("openai_env"), "sluice:resolve:env:OPENAI_API_KEY");
    assert!(!value("openai_chat").is_empty(), "{ctx}");
    assert!(value("openai_models").parse::<usize>().unwrap() > 0);
    assert_eq!(
        value("openai_files"),
        "403",
        "the profile allows no files API"
    );
    assert!(!value("anthropic_text").is_empty(), "{ctx}");
    let seen = recorded(&record);
    let chat = seen
        .iter()
        .find(|r| r["path"] == "/v1/chat/completions")
        .expect("the chat call reached the server");
    assert_eq!(
        chat["headers"]["authorization"],
        format!("Bearer {OPENAI_KEY}")
    );
    let messages = seen
        .iter()
        .find(|r| r["path"] == "/v1/messages")
        .expect("the messages call reached the server");
    // The SDK puts the key in `x-api-key` or (newer versions) in a bearer
    // `Authorization`; either way the server sees the real key.
    let h = &messages["headers"];
    assert!(
        h["x-api-key"] == ANTHROPIC_KEY || h["authorization"] == format!("Bearer {ANTHROPIC_KEY}"),
        "{messages}"
    );
    assert!(!seen.iter().any(|r| r["path"]
        .as_str()
        .is_some_and(|p| p.starts_with("/v1/files"))));
    assert!(!stdout.contains(OPENAI_KEY) && !stderr.contains(OPENAI_KEY));
}

/// git through the catalog's `github` profile: clone and fetch work with the
/// token header swapped in, a push is refused by the profile's rules before
/// anything is uploaded, and another binary (wget) may not use the profile;
/// pip installs from its default index through the `pypi` profile.
#[test]
fn git_and_pip_through_catalog_profiles() {
    const TOKEN: &str = "ghp_real_token_4e2a";
    let dir = TempDir::new("profiles-git");
    let root = dir.path("www");
    std::fs::create_dir_all(&root).unwrap();
    let ns = Netns::new();
    let pki = test_pki(&dir, "gh", &["github.com", "pypi.org"]);
    let record = dir.path("gh.jsonl");
    ns.start_script(
        "clients_server.py",
        443,
        &record,
        &[&pki.cert, &pki.key, &root],
    );
    let script = format!(
        "T=$(mktemp -d) && cd \"$T\"\n\
        git -c http.extraHeader=\"Authorization: Bearer $GITHUB_TOKEN\" clone -q https://github.com/git/demo.git repo >git.log 2>&1; echo clone_rc=$?; echo readme=$(cat repo/README)\n\
        git -C repo fetch -q origin >>git.log 2>&1; echo fetch_rc=$?\n\
        git -C repo -c user.name=a -c user.email=a@a commit -q --allow-empty -m x >>git.log 2>&1\n\
        git -C repo push -q origin HEAD:main >push.log 2>&1; echo push_rc=$?; grep -q 403 push.log && echo push_403=yes\n\
        wget -q -O /dev/null https://github.com/git/demo.git/HEAD 2>/dev/null; echo wget_rc=$?\n\
        {py} -m pip install -q --no-cache-dir --disable-pip-version-check --target pipt demo-pkg >pip.log 2>&1; echo pip_rc=$?\n\
        PYTHONPATH=pipt {py} -c 'import demo_pkg; print(\"pip_import=\" + demo_pkg.MESSAGE)'\n\
        sed 's/^/log: /' git.log push.log pip.log\n",
        py = sandbox_python()
    );
    let (gh_host, pypi_host) = (
        format!("github.com={}", ns.ns_ip),
        format!("pypi.org={}", ns.ns_ip),
    );
    let r = run_with_profiles(
        &dir,
        &[
            "--add-host",
            &gh_host,
            "--add-host",
            &pypi_host,
            "--upstream-ca",
            pki.ca.to_str().unwrap(),
            "--profile",
            "github",
            "--secret",
            "GITHUB_TOKEN=env:REAL_GH",
            "--profile",
            "pypi",
        ],
        &["sh", "-c", &script],
        &[("REAL_GH", TOKEN)],
    );
    let (stdout, ctx) = (&r.stdout, r.ctx());
    assert!(stdout.contains("clone_rc=0\n"), "{ctx}");
    assert!(
        stdout.contains("readme=demo repository served through sluice\n"),
        "{ctx}"
    );
    assert!(stdout.contains("fetch_rc=0\n"), "{ctx}");
    assert!(
        !stdout.contains("push_rc=0\n") && stdout.contains("push_403=yes"),
        "{ctx}"
    );
    assert!(stdout.contains("pip_rc=0\n"), "{ctx}");
    assert!(stdout.contains("pip_import="), "{ctx}");
    assert!(
        !stdout.contains("wget_rc=0\n"),
        "wget is not a binary of the profile: {ctx}"
    );
    let seen = recorded(&record);
    assert!(
        seen.iter()
            .any(|r| header(r, "authorization") == Some(format!("Bearer {TOKEN}").as_str())),
        "the clone carried the real token: {seen:?}"
    );
    assert!(
        !seen.iter().any(|r| r["path"]
            .as_str()
            .is_some_and(|p| p.contains("git-receive-pack"))),
        "nothing of the push reached the server"
    );
}
