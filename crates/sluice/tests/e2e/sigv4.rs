//! SigV4 re-signing (`credential_signing`): boto3 signs with placeholder
//! keys, sluice signs again with the provider's real ones, and an S3 stub
//! verifies every signature with botocore's own signer and the real secret.
//! The real keys never show up in anything sluice writes.

use std::path::PathBuf;

use crate::harness::{sluice_cmd, Sluice};
use sluice_test_support::{recorded, test_pki, Netns, Python, TempDir};

const REAL_KEY_ID: &str = "AKIAREALKEY7EXAMPLE9";
const REAL_SECRET: &str = "rEaL/SeCrEt+kEy/0123456789abcdefGHIJKLMN";
const REAL_TOKEN: &str = "FwoGZXIvYXdzEREAL//session+token=";

fn policy(with_token: bool) -> String {
    let token = if with_token {
        "\n      AWS_SESSION_TOKEN: { env: REAL_AWS_TOKEN }"
    } else {
        ""
    };
    format!(
        r#"version: 1
network_policies:
  s3:
    endpoints:
      - host: s3.test
        port: 443
        protocol: rest
        enforcement: enforce
        access: full
        credential_signing: sigv4
        signing_service: s3
      - host: sts.test
        port: 443
        protocol: rest
        enforcement: enforce
        access: full
        credential_signing: sigv4
        signing_service: sts
        signing_region: us-east-1
      - host: other.test
        port: 443
        protocol: rest
        enforcement: enforce
        access: full
providers:
  aws:
    credentials:
      AWS_ACCESS_KEY_ID: {{ env: REAL_AWS_KEY }}
      AWS_SECRET_ACCESS_KEY: {{ env: REAL_AWS_SECRET }}{token}
    endpoints:
      - {{ host: s3.test, port: 443, path: /bucket }}
      - {{ host: s3.test, port: 443, path: "/bucket/**" }}
      - {{ host: sts.test, port: 443 }}
"#,
    )
}

struct Setup {
    dir: TempDir,
    _ns: Netns,
    sluice: Sluice,
    bundle: PathBuf,
}

fn setup(tag: &str, with_token: bool) -> Setup {
    let dir = TempDir::new(tag);
    let ns = Netns::new();
    let pki = test_pki(&dir, "upstream", &["s3.test", "sts.test", "other.test"]);
    let keys = dir.path("keys.json");
    std::fs::write(
        &keys,
        serde_json::json!({"access_key_id": REAL_KEY_ID, "secret_access_key": REAL_SECRET})
            .to_string(),
    )
    .unwrap();
    ns.start_script(
        "s3_stub.py",
        443,
        &dir.path("s3.jsonl"),
        &[&pki.cert, &pki.key, &keys],
    );
    let mut args: Vec<String> = vec![
        "--identity".into(),
        "endpoint-only".into(),
        "--upstream-ca".into(),
        pki.ca.display().to_string(),
    ];
    for name in ["s3.test", "sts.test", "other.test"] {
        args.extend(["--add-host".to_owned(), format!("{name}={}", ns.ns_ip)]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env = [
        ("REAL_AWS_KEY", REAL_KEY_ID),
        ("REAL_AWS_SECRET", REAL_SECRET),
        ("REAL_AWS_TOKEN", REAL_TOKEN),
    ];
    let sluice = Sluice::start_with_env(&dir, &policy(with_token), &args, &env);
    let bundle = dir.path("bundle.pem");
    let state = dir.path("state");
    std::fs::write(
        &bundle,
        sluice_cmd(&[
            "ca",
            "show",
            "--bundle",
            "--state-dir",
            state.to_str().unwrap(),
        ]),
    )
    .unwrap();
    Setup {
        dir,
        _ns: ns,
        sluice,
        bundle,
    }
}

/// boto3 with placeholder keys: list, put, list again, a presigned GET
/// with `requests`; then the refusals. One line per step.
const CLIENT: &str = r#"
import sys
import boto3, botocore, requests
from botocore.config import Config

proxy, bundle = sys.argv[1], sys.argv[2]

def s3(endpoint, region="eu-west-1"):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        verify=bundle,
        # s3v4: boto3 presigns S3 URLs with SigV2 otherwise (not re-signed).
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                      retries={"max_attempts": 1},
                      proxies={"https": proxy}),
    )

def attempt(name, fn):
    try:
        print(name, "ok", fn())
    except botocore.exceptions.ClientError as e:
        print(name, "error", e.response["ResponseMetadata"]["HTTPStatusCode"],
              e.response.get("Error", {}).get("Code"))

c = s3("https://s3.test")
attempt("list-empty", lambda: c.list_objects_v2(Bucket="bucket").get("KeyCount"))
attempt("put", lambda: c.put_object(Bucket="bucket", Key="dir/hello.txt", Body=b"hello sigv4")["ResponseMetadata"]["HTTPStatusCode"])
attempt("list", lambda: [o["Key"] for o in c.list_objects_v2(Bucket="bucket")["Contents"]])
attempt("get", lambda: c.get_object(Bucket="bucket", Key="dir/hello.txt")["Body"].read().decode())
url = c.generate_presigned_url("get_object", Params={"Bucket": "bucket", "Key": "dir/hello.txt"}, ExpiresIn=300)
r = requests.get(url, proxies={"https": proxy}, verify=bundle)
print("presigned", r.status_code, r.text)
# Another service: a form body without x-amz-content-sha256, hashed by sluice.
sts = boto3.client("sts", endpoint_url="https://sts.test", region_name="us-east-1", verify=bundle,
                   config=Config(retries={"max_attempts": 1}, proxies={"https": proxy}))
attempt("sts", lambda: sts.get_caller_identity()["Account"])
# A bucket the provider is not bound to (path), on the signing endpoint.
attempt("unbound-path", lambda: c.list_objects_v2(Bucket="elsewhere").get("KeyCount"))
# An endpoint that does not sign, where the provider is not bound.
attempt("unbound-host", lambda: s3("https://other.test").list_objects_v2(Bucket="bucket").get("KeyCount"))
# Signed aws-chunked payload: refused before anything is sent.
r = requests.put(
    "https://s3.test/bucket/streamed",
    data=b"5;chunk-signature=00\r\nhello\r\n0;chunk-signature=00\r\n\r\n",
    headers={
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "x-amz-date": "20250101T000000Z",
        "x-amz-decoded-content-length": "5",
        "Content-Encoding": "aws-chunked",
        "Authorization": "AWS4-HMAC-SHA256 Credential=sluice:resolve:env:AWS_ACCESS_KEY_ID/20250101/eu-west-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=00",
    },
    proxies={"https": proxy}, verify=bundle,
)
print("streaming", r.status_code, r.json().get("error"))
"#;

fn run_client(s: &Setup) -> Vec<String> {
    Python::inline(CLIENT)
        .args([s.sluice.proxy_url().as_str(), s.bundle.to_str().unwrap()])
        .env("AWS_ACCESS_KEY_ID", "sluice:resolve:env:AWS_ACCESS_KEY_ID")
        .env(
            "AWS_SECRET_ACCESS_KEY",
            "sluice:resolve:env:AWS_SECRET_ACCESS_KEY",
        )
        .env("AWS_SESSION_TOKEN", "sluice:resolve:env:AWS_SESSION_TOKEN")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .lines()
}

fn check(tag: &str, with_token: bool) {
    let s = setup(tag, with_token);
    let lines = run_client(&s);
    let want = [
        "list-empty ok 0",
        "put ok 200",
        "list ok ['dir/hello.txt']",
        "get ok hello sigv4",
        "presigned 200 hello sigv4",
        "sts ok 123456789012",
        // botocore reads no S3 error code from a JSON body: the status twice.
        "unbound-path error 403 403",
        // A non-signing endpoint gets the generic injection: the key id is
        // bound elsewhere (403); without a real session token its
        // placeholder names no credential at all (500), and boto3 sends
        // X-Amz-Security-Token before Authorization.
        if with_token {
            "unbound-host error 403 403"
        } else {
            "unbound-host error 500 500"
        },
        "streaming 403 sigv4_streaming_unsupported",
    ];
    assert_eq!(lines, want, "{}", s.sluice.stderr());

    // The stub saw only re-signed requests from the signing endpoint, all
    // verified with the real secret, carrying the real key id.
    let seen = recorded(&s.dir.path("s3.jsonl"));
    let methods: Vec<(&str, &str)> = seen
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap_or_default(),
                r["path"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        methods,
        [
            ("GET", "/bucket"),
            ("PUT", "/bucket/dir/hello.txt"),
            ("GET", "/bucket"),
            ("GET", "/bucket/dir/hello.txt"),
            ("GET", "/bucket/dir/hello.txt"),
            ("POST", "/"),
        ],
        "{seen:#?}"
    );
    let token = with_token.then_some(REAL_TOKEN);
    for r in &seen {
        assert_eq!(r["verified"], true, "{r}");
        assert_eq!(r["access_key_id"], REAL_KEY_ID, "{r}");
        assert_eq!(r["session_token"].as_str(), token, "{r}");
    }
    // What payload mode boto3 picked for PutObject was kept and signed.
    let put = &seen[1];
    assert!(
        put["payload"]
            .as_str()
            .is_some_and(|p| !p.starts_with("STREAMING-AWS4")),
        "{put}"
    );
    // STS: the body was hashed into the signature (no payload header sent).
    assert_eq!(seen[5]["payload"], serde_json::Value::Null, "{:?}", seen[5]);
    assert!(
        seen[5]["body_length"].as_u64().unwrap_or(0) > 0,
        "{:?}",
        seen[5]
    );
    // The presigned GET went with its query form.
    assert!(
        seen[4]["query_keys"]
            .as_array()
            .unwrap()
            .contains(&"X-Amz-Signature".into()),
        "{:?}",
        seen[4]
    );

    s.sluice
        .wait_event("Credential signing refused for s3.test:443");
    s.sluice
        .wait_event("Credential use denied: credential is not authorized for other.test:443");
    let events = std::fs::read_to_string(&s.sluice.audit).unwrap();
    assert!(
        events.contains(r#""credential_providers":["aws"]"#),
        "the signing provider is named"
    );
    for secret in [REAL_KEY_ID, REAL_SECRET, REAL_TOKEN] {
        assert!(!events.contains(secret), "secret in the audit log");
        assert!(
            !s.sluice.stderr().contains(secret),
            "secret on sluice's stderr"
        );
    }
}

#[test]
fn sigv4_boto3_without_session_token() {
    check("sigv4-notoken", false);
}

#[test]
fn sigv4_boto3_with_session_token() {
    check("sigv4-token", true);
}

/// The whole cloud-SDK path inside `sluice run`: boto3 finds no keys in its
/// environment, takes placeholder credentials from the IMDSv2 loopback
/// (`metadata: aws`), signs with them, and sluice re-signs with the real
/// ones; the stub verifies each signature with botocore and the real
/// secret. The sandbox never holds a real key.
#[test]
fn boto3_in_sluice_run_lists_a_bucket_with_imds_credentials() {
    let dir = TempDir::new("sigv4-imds");
    let ns = Netns::new();
    let pki = test_pki(&dir, "upstream", &["s3.test"]);
    let keys = dir.path("keys.json");
    std::fs::write(
        &keys,
        serde_json::json!({"access_key_id": REAL_KEY_ID, "secret_access_key": REAL_SECRET})
            .to_string(),
    )
    .unwrap();
    ns.start_script(
        "s3_stub.py",
        443,
        &dir.path("s3.jsonl"),
        &[&pki.cert, &pki.key, &keys],
    );
    let policy = r#"version: 1
network_policies:
  s3:
    endpoints:
      - host: s3.test
        port: 443
        protocol: rest
        enforcement: enforce
        access: full
        credential_signing: sigv4
        signing_service: s3
    binaries: [ { path: "/**" } ]
providers:
  aws:
    metadata: aws
    metadata_region: eu-west-1
    credentials:
      AWS_ACCESS_KEY_ID: { env: REAL_AWS_KEY }
      AWS_SECRET_ACCESS_KEY: { env: REAL_AWS_SECRET }
    endpoints: [ { host: s3.test, port: 443 } ]
"#;
    let agent = dir.path("agent.py");
    std::fs::write(
        &agent,
        r#"
import os, boto3
from botocore.config import Config
print("env_key=%s" % os.environ.get("AWS_ACCESS_KEY_ID", "unset"))
session = boto3.Session()
creds = session.get_credentials()
print("method=%s" % creds.method)
print("sandbox_key=%s" % creds.get_frozen_credentials().access_key)
c = session.client("s3", endpoint_url="https://s3.test", region_name="eu-west-1",
                   config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
c.put_object(Bucket="bucket", Key="from-imds.txt", Body=b"hello from the sandbox")
print("keys=%s" % ",".join(o["Key"] for o in c.list_objects_v2(Bucket="bucket")["Contents"]))
"#,
    )
    .unwrap();
    let add_host = format!("s3.test={}", ns.ns_ip);
    let ca = pki.ca.display().to_string();
    let out = crate::run::sluice_run(
        &dir,
        policy,
        &["--add-host", &add_host, "--upstream-ca", &ca],
        &format!(
            "AWS_CONFIG_FILE=/nonexistent AWS_SHARED_CREDENTIALS_FILE=/nonexistent {} {} 2>&1",
            sluice_test_support::sandbox_python(),
            agent.display()
        ),
    )
    .env("REAL_AWS_KEY", REAL_KEY_ID)
    .env("REAL_AWS_SECRET", REAL_SECRET)
    .env_remove("AWS_ACCESS_KEY_ID")
    .env_remove("AWS_SECRET_ACCESS_KEY")
    .env_remove("AWS_SESSION_TOKEN")
    .env_remove("AWS_PROFILE")
    .output()
    .expect("sluice run");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let ctx = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    let value = |k: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} missing\n{ctx}"))
            .to_owned()
    };
    assert!(out.status.success(), "{ctx}");
    assert_eq!(value("env_key"), "unset");
    assert_eq!(value("method"), "iam-role", "credentials came from IMDSv2");
    assert_eq!(value("sandbox_key"), "sluice:resolve:env:AWS_ACCESS_KEY_ID");
    assert_eq!(value("keys"), "from-imds.txt", "{ctx}");
    let seen = recorded(&dir.path("s3.jsonl"));
    assert_eq!(seen.len(), 2, "{seen:#?}");
    for r in &seen {
        assert_eq!(r["verified"], true, "{r}");
        assert_eq!(r["access_key_id"], REAL_KEY_ID, "{r}");
        assert_eq!(
            r["session_token"],
            serde_json::Value::Null,
            "placeholder token dropped: {r}"
        );
    }
    let log = std::fs::read_to_string(dir.path("audit.jsonl")).expect("audit log");
    for secret in [REAL_KEY_ID, REAL_SECRET] {
        assert!(!log.contains(secret) && !stdout.contains(secret) && !stderr.contains(secret));
    }
}
