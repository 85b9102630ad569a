//! The metadata loopback inside `sluice run`: google-auth and boto3 get their
//! credentials from the GCE and IMDSv2 subsets with nothing but what sluice
//! exports, receive placeholders only, and the real secret reaches only the
//! provider's bound endpoint.

use std::process::Output;

use sluice_test_support::{recorded, sandbox_python, test_pki, Netns, TempDir};

use crate::run::sluice_run;

const GCP_TOKEN: &str = "ya29.e2e-REAL-gcp-access-TOKEN";
const AWS_KEY: &str = "AKIAE2EREALKEYID0000";
const AWS_SECRET: &str = "e2e/REAL/aws+secret+access+KEY";

struct Finished {
    status: Option<i32>,
    stdout: String,
    stderr: String,
    audit: String,
}

impl Finished {
    fn from(out: Output, dir: &TempDir) -> Self {
        Self {
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            audit: std::fs::read_to_string(dir.path("audit.jsonl")).unwrap_or_default(),
        }
    }

    fn value(&self, key: &str) -> String {
        let prefix = format!("{key}=");
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {key}= in:\n{}\n{}", self.stdout, self.stderr))
            .to_owned()
    }

    fn assert_never_leaks(&self, secrets: &[&str]) {
        for s in secrets {
            assert!(!self.stdout.contains(s), "secret in CMD's output");
            assert!(!self.stderr.contains(s), "secret on stderr");
            assert!(!self.audit.contains(s), "secret in the audit log");
        }
    }

    fn messages(&self) -> Vec<String> {
        self.audit
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|e| e["message"].as_str().map(str::to_owned))
            .collect()
    }
}

/// Shared shell lines: print CMD's environment for the leak check (the test
/// asserts the secrets are not in it).
const ENV_DUMP: &str = "env | sed 's/^/env:/'\n";

const GCE_PY: &str = r#"
import os, urllib.request, urllib.error
import google.auth
from google.auth.transport.requests import AuthorizedSession, Request
def out(k, v): print("%s=%s" % (k, v), flush=True)
creds, project = google.auth.default()
out("type", type(creds).__name__)
out("project", project)
creds.refresh(Request())
out("token", creds.token)
out("email", creds.service_account_email)
s = AuthorizedSession(creds)
r = s.get("https://storage.googleapis.test:8443/storage/v1/b/demo/o", timeout=20)
out("bound", r.status_code)
r = s.get("https://other.googleapis.test:9443/x", timeout=20)
out("unbound", r.status_code)
out("unbound_error", r.json().get("error"))
def raw(path, headers, method="GET"):
    url = "http://" + os.environ["GCE_METADATA_HOST"] + path
    req = urllib.request.Request(url, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
tok = "/computeMetadata/v1/instance/service-accounts/default/token"
out("no_flavor", raw(tok, {}))
out("xff", raw(tok, {"Metadata-Flavor": "Google", "X-Forwarded-For": "10.0.0.1"}))
out("post", raw(tok, {"Metadata-Flavor": "Google"}, "POST"))
out("unknown", raw("/computeMetadata/v1/instance/hostname", {"Metadata-Flavor": "Google"}))
"#;

#[test]
fn google_auth_gets_a_placeholder_and_the_bound_endpoint_the_real_token() {
    let py = sandbox_python();
    let dir = TempDir::new("metadata-gce");
    let ns = Netns::new();
    let pki = test_pki(
        &dir,
        "gce",
        &["storage.googleapis.test", "other.googleapis.test"],
    );
    let (bound, other) = (dir.path("bound.jsonl"), dir.path("other.jsonl"));
    ns.start_tls_upstream(8443, &bound, &pki.cert, &pki.key);
    ns.start_tls_upstream(9443, &other, &pki.cert, &pki.key);
    let policy = r#"version: 1
network_policies:
  gcs:
    endpoints:
      - { host: storage.googleapis.test, port: 8443, protocol: rest, enforcement: enforce, access: full }
      - { host: other.googleapis.test, port: 9443, protocol: rest, enforcement: enforce, access: full }
    binaries:
      - { path: "/**" }
providers:
  gcp:
    metadata: gce
    metadata_email: agent@e2e-project.iam.gserviceaccount.com
    metadata_project_id: e2e-project
    credentials:
      GCP_ADC_ACCESS_TOKEN: { env: E2E_GCP_TOKEN }
    endpoints: [ { host: storage.googleapis.test, port: 8443 } ]
"#;
    let script_path = dir.path("gce.py");
    std::fs::write(&script_path, GCE_PY).expect("script");
    let script = format!(
        "{ENV_DUMP}echo gce_host=$GCE_METADATA_HOST gce_ip=$GCE_METADATA_IP detect=$METADATA_SERVER_DETECTION\n\
         {py} {} 2>&1\n",
        script_path.display()
    );
    let hosts = [
        format!("storage.googleapis.test={}", ns.ns_ip),
        format!("other.googleapis.test={}", ns.ns_ip),
    ];
    let ca = pki.ca.to_string_lossy().into_owned();
    let out = sluice_run(
        &dir,
        policy,
        &[
            "--add-host",
            &hosts[0],
            "--add-host",
            &hosts[1],
            "--upstream-ca",
            &ca,
        ],
        &script,
    )
    .env("E2E_GCP_TOKEN", GCP_TOKEN)
    .output()
    .expect("run sluice");
    let r = Finished::from(out, &dir);
    let ctx = format!("{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.status, Some(0), "{ctx}");
    assert_eq!(
        r.value("gce_host"),
        "127.0.0.1:8174 gce_ip=127.0.0.1:8174 detect=assume-present"
    );
    assert_eq!(r.value("type"), "Credentials", "{ctx}");
    assert_eq!(r.value("project"), "e2e-project", "{ctx}");
    assert_eq!(r.value("token"), "sluice:resolve:env:GCP_ADC_ACCESS_TOKEN");
    assert_eq!(
        r.value("email"),
        "agent@e2e-project.iam.gserviceaccount.com"
    );
    assert_eq!(r.value("bound"), "200", "{ctx}");
    assert_eq!(r.value("unbound"), "403", "{ctx}");
    assert_eq!(r.value("unbound_error"), "credential_endpoint_mismatch");
    assert_eq!(r.value("no_flavor"), "403");
    assert_eq!(r.value("xff"), "403");
    assert_eq!(r.value("post"), "405");
    assert_eq!(r.value("unknown"), "404");
    // The bound upstream saw the real token; the other one saw nothing.
    let seen = recorded(&bound);
    assert_eq!(seen.len(), 1, "{seen:#?}");
    let auth: Vec<&str> = seen[0]["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| {
            h[0].as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case("authorization"))
        })
        .filter_map(|h| h[1].as_str())
        .collect();
    assert_eq!(auth, [format!("Bearer {GCP_TOKEN}")]);
    assert!(
        recorded(&other).is_empty(),
        "the unbound upstream was reached"
    );
    r.assert_never_leaks(&[GCP_TOKEN]);
    let msgs = r.messages();
    for want in [
        "METADATA gce GET / -> 200",
        "METADATA gce GET /computeMetadata/v1/instance/service-accounts/default/ -> 200",
        "METADATA gce GET /computeMetadata/v1/instance/service-accounts/default/token -> 200",
        "METADATA gce GET /computeMetadata/v1/project/project-id -> 200",
        "METADATA gce GET /computeMetadata/v1/instance/service-accounts/default/token -> 403",
        "METADATA gce POST /computeMetadata/v1/instance/service-accounts/default/token -> 405",
    ] {
        assert!(msgs.iter().any(|m| m == want), "no `{want}` in {msgs:#?}");
    }
}

const IMDS_PY: &str = r#"
import os, urllib.request, urllib.error
import boto3
def out(k, v): print("%s=%s" % (k, v), flush=True)
c = boto3.Session().get_credentials()
out("method", c.method)
f = c.get_frozen_credentials()
out("access_key", f.access_key)
out("secret_key", f.secret_key)
out("session_token", f.token)
base = os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"].rstrip("/")
def raw(path, headers, method="GET"):
    req = urllib.request.Request(base + path, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
role = "/latest/meta-data/iam/security-credentials/"
out("no_token", raw(role, {})[0])
out("bad_ttl", raw("/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "0"}, "PUT")[0])
out("big_ttl", raw("/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "21601"}, "PUT")[0])
status, token = raw("/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"}, "PUT")
out("token_status", status)
out("role", raw(role, {"X-aws-ec2-metadata-token": token})[1])
out("forged", raw(role, {"X-aws-ec2-metadata-token": "forged"})[0])
out("xff", raw(role, {"X-aws-ec2-metadata-token": token, "X-Forwarded-For": "10.0.0.1"})[0])
"#;

#[test]
fn boto3_gets_placeholder_credentials_from_imdsv2() {
    let py = sandbox_python();
    let dir = TempDir::new("metadata-aws");
    let policy = r#"version: 1
network_policies:
  s3:
    endpoints:
      - { host: s3.amazonaws.test, port: 8443, protocol: rest, enforcement: enforce, access: full }
    binaries:
      - { path: "/**" }
providers:
  aws:
    metadata: aws
    metadata_role: e2e-role
    credentials:
      AWS_ACCESS_KEY_ID: { env: E2E_AWS_KEY }
      AWS_SECRET_ACCESS_KEY: { env: E2E_AWS_SECRET }
    endpoints: [ { host: s3.amazonaws.test, port: 8443 } ]
"#;
    let script_path = dir.path("imds.py");
    std::fs::write(&script_path, IMDS_PY).expect("script");
    let script = format!(
        "{ENV_DUMP}echo endpoint=$AWS_EC2_METADATA_SERVICE_ENDPOINT mode=$AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE\n\
         echo env_key=${{AWS_ACCESS_KEY_ID-unset}}\n\
         AWS_CONFIG_FILE=/nonexistent AWS_SHARED_CREDENTIALS_FILE=/nonexistent {py} {} 2>&1\n",
        script_path.display()
    );
    let out = sluice_run(&dir, policy, &[], &script)
        .env("E2E_AWS_KEY", AWS_KEY)
        .env("E2E_AWS_SECRET", AWS_SECRET)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("run sluice");
    let r = Finished::from(out, &dir);
    let ctx = format!("{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.status, Some(0), "{ctx}");
    assert_eq!(
        r.value("endpoint"),
        "http://127.0.0.1:8175/ mode=IPv4",
        "{ctx}"
    );
    // A metadata provider's placeholders are handed out by the loopback
    // only (as on a cloud instance), so boto3 asks IMDS by itself.
    assert_eq!(r.value("env_key"), "unset");
    assert_eq!(r.value("method"), "iam-role", "{ctx}");
    assert_eq!(
        r.value("access_key"),
        "sluice:resolve:env:AWS_ACCESS_KEY_ID"
    );
    assert_eq!(
        r.value("secret_key"),
        "sluice:resolve:env:AWS_SECRET_ACCESS_KEY"
    );
    assert_eq!(
        r.value("session_token"),
        "sluice:resolve:env:AWS_SESSION_TOKEN"
    );
    assert_eq!(r.value("no_token"), "401");
    assert_eq!(r.value("bad_ttl"), "400");
    assert_eq!(r.value("big_ttl"), "400");
    assert_eq!(r.value("token_status"), "200");
    assert_eq!(r.value("role"), "e2e-role");
    assert_eq!(r.value("forged"), "401");
    assert_eq!(r.value("xff"), "403");
    r.assert_never_leaks(&[AWS_KEY, AWS_SECRET]);
    let msgs = r.messages();
    for want in [
        "METADATA aws PUT /latest/api/token -> 200",
        "METADATA aws GET /latest/meta-data/iam/security-credentials/ -> 200",
        "METADATA aws GET /latest/meta-data/iam/security-credentials/e2e-role -> 200",
        "METADATA aws GET /latest/meta-data/iam/security-credentials/ -> 401",
        "METADATA aws PUT /latest/api/token -> 400",
    ] {
        assert!(msgs.iter().any(|m| m == want), "no `{want}` in {msgs:#?}");
    }
}

/// A policy without `metadata` serves nothing and exports nothing.
#[test]
fn no_metadata_provider_no_loopback() {
    let dir = TempDir::new("metadata-none");
    let policy = r#"version: 1
network_policies: {}
"#;
    let script = "echo gce=${GCE_METADATA_HOST:-unset} aws=${AWS_EC2_METADATA_SERVICE_ENDPOINT:-unset}\n\
                  curl -s -o /dev/null -w 'curl=%{http_code}\\n' --max-time 3 http://127.0.0.1:8174/ || true\n";
    let out = sluice_run(&dir, policy, &[], script)
        .output()
        .expect("run sluice");
    let r = Finished::from(out, &dir);
    assert_eq!(r.value("gce"), "unset aws=unset", "{}", r.stderr);
    assert_eq!(r.value("curl"), "000", "nothing listens: {}", r.stderr);
}

/// The loopback reads the current policy per request: a reload that changes
/// the project id is served at once, and one that removes `metadata` makes
/// the service answer 503.
#[test]
fn metadata_follows_policy_reloads() {
    use std::io::{BufRead as _, BufReader};
    use std::process::Command;
    let dir = TempDir::new("metadata-reload");
    let policy = r#"version: 1
network_policies:
  gcs:
    endpoints:
      - { host: storage.googleapis.test, port: 443, protocol: rest, enforcement: enforce, access: full }
    binaries:
      - { path: "/**" }
providers:
  gcp:
    metadata: gce
    metadata_project_id: first-project
    credentials:
      GCP_ADC_ACCESS_TOKEN: { env: E2E_GCP_TOKEN }
    endpoints: [ { host: storage.googleapis.test, port: 443 } ]
"#;
    let get = |key: &str| {
        format!(
            "echo {key}=$(curl -s -w ' %{{http_code}}' -H 'Metadata-Flavor: Google' \
             http://127.0.0.1:8174/computeMetadata/v1/project/project-id)\n"
        )
    };
    let script = format!(
        "{}echo phase=reload0\nsleep 1.5\n{}echo phase=reload1\nsleep 1.5\n{}echo phase=reload2\nsleep 1.5\n{}",
        get("first"),
        get("zero"),
        get("second"),
        get("third")
    );
    // A reload that adds a metadata kind the run did not start with (aws)
    // cannot be served: refused, located (the capability contract).
    let with_aws = format!(
        "{policy}  aws:\n    metadata: aws\n    credentials:\n      AWS_ACCESS_KEY_ID: {{ env: E2E_AWS_KEY }}\n      AWS_SECRET_ACCESS_KEY: {{ env: E2E_AWS_SECRET }}\n    endpoints: [ {{ host: storage.googleapis.test, port: 443 }} ]\n"
    );
    let mut child = sluice_run(&dir, policy, &[], &script)
        .env("E2E_GCP_TOKEN", GCP_TOKEN)
        .env("E2E_AWS_KEY", "AKIAE2EMETADATARELOAD")
        .env("E2E_AWS_SECRET", "e2e-metadata-reload-secret")
        .spawn()
        .expect("sluice run");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = String::new();
    let reload = |yaml: String| {
        std::fs::write(dir.path("policy.yaml"), yaml).expect("new policy");
        let _ = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status();
    };
    loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).expect("read") == 0 {
            break;
        }
        seen.push_str(&line);
        match line.trim() {
            "phase=reload0" => reload(with_aws.clone()),
            "phase=reload1" => reload(policy.replace("first-project", "second-project")),
            "phase=reload2" => reload(
                policy
                    .replace("    metadata: gce\n", "")
                    .replace("    metadata_project_id: second-project\n", "")
                    .replace("    metadata_project_id: first-project\n", ""),
            ),
            _ => {}
        }
    }
    let status = child.wait().expect("wait");
    let mut stderr = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr);
    let out = format!("{seen}\n{stderr}");
    assert!(status.success(), "{out}");
    assert!(seen.contains("first=first-project 200"), "{out}");
    assert!(
        seen.contains("zero=first-project 200"),
        "refused, kept: {out}"
    );
    let audit = std::fs::read_to_string(dir.path("audit.jsonl")).unwrap_or_default();
    assert!(
        audit.contains("Policy reload rejected")
            && audit.contains("providers.aws.metadata: needs the aws metadata loopback, which `sluice run` cannot enforce"),
        "{audit}"
    );
    assert!(seen.contains("second=second-project 200"), "{out}");
    assert!(seen.contains("third="), "{out}");
    assert!(
        seen.contains(" 503\n"),
        "removed metadata answers 503: {out}"
    );
    assert!(!out.contains(GCP_TOKEN));
}
