//! The `providers` section: valid and invalid fixtures (with a fake
//! `SecretSource`), redaction, binding and token-grant lookups.

use std::path::PathBuf;

use sluice_policy::{
    load_file_with, load_str_with, GrantKind, HostRef, Loaded, MemorySecrets, NoticeLevel,
    ProviderId, TokenStyle,
};

const GH_SECRET: &str = "ghp_env_SECRET_value_123";
const FILE_SECRET: &str = "gh_file_SECRET_value_456";
const CLIENT_SECRET: &str = "client_SECRET_789";
const JWT: &str = "eyJhbGciOi.SECRET.jwt";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn secrets() -> MemorySecrets {
    MemorySecrets::new()
        .with_env("HOST_GITHUB_TOKEN", GH_SECRET)
        .with_env("LEGACY_PASSWORD", "legacy_SECRET_pw")
        .with_env("MODEL_KEY", "model_SECRET_key")
        .with_env("CLIENT_ID", "client-id-1")
        .with_env("CLIENT_SECRET", CLIENT_SECRET)
        .with_env("EMPTY_VAR", "")
        .with_env("MULTILINE", "line1\nline2")
        .with_file("/run/secrets/gh", format!("{FILE_SECRET}\n"))
        .with_file("/run/secrets/jwt", format!("{JWT}\r\n"))
        .with_file("/run/secrets/empty", "\n")
        .with_file("/run/secrets/big", vec![b'a'; 64 * 1024 + 1])
}

fn load(name: &str) -> Result<Loaded, sluice_policy::LoadError> {
    load_file_with(&fixture(name), 1, &secrets())
}

/// (fixture, expected "LINE:COL: message" substring).
const CASES: &[(&str, &str)] = &[
    ("invalid-providers-no-endpoints.yaml", "13:3: provider `github` has no endpoints; credentials must be bound to at least one endpoint"),
    ("invalid-providers-nothing.yaml", "13:3: provider `github` has neither `credentials` nor `token_grant`"),
    ("invalid-providers-env-missing.yaml", "15:28: environment variable `NOT_SET_ANYWHERE` is not set"),
    ("invalid-providers-env-empty.yaml", "15:28: environment variable `EMPTY_VAR` is empty"),
    ("invalid-providers-file-unreadable.yaml", "15:29: cannot read secret file `/run/secrets/missing`: "),
    ("invalid-providers-file-empty.yaml", "15:29: secret file `/run/secrets/empty` is empty"),
    ("invalid-providers-file-too-large.yaml", "15:29: secret file `/run/secrets/big` is larger than 65536 bytes"),
    ("invalid-providers-secret-newline.yaml", "15:28: environment variable `MULTILINE` contains CR, LF or NUL"),
    ("invalid-providers-source-both.yaml", "15:21: a secret source must be exactly one of `env` or `file`"),
    ("invalid-providers-bad-key.yaml", "13:3: invalid provider key `_github`"),
    ("invalid-providers-bad-name.yaml", "15:7: invalid credential name `GITHUB-TOKEN`; expected [A-Za-z0-9_]+"),
    ("invalid-providers-duplicate-name.yaml", "20:7: credential `GITHUB_TOKEN` is already defined by provider `aaa`"),
    ("invalid-providers-http-endpoint.yaml", "17:23: token_endpoint `http://auth.example.com/oauth2/token` must use https (http is allowed only for loopback hosts)"),
    ("invalid-providers-relative-url.yaml", "17:23: token_endpoint `/oauth2/token` must be an absolute http(s) URL"),
    ("invalid-providers-client-credentials.yaml", "18:14: `grant: client_credentials` requires `client_secret`"),
    ("invalid-providers-jwt-no-assertion.yaml", "18:14: `grant: jwt_bearer` requires `assertion`"),
    ("invalid-providers-grant-kind.yaml", "18:14: unknown grant `password`; expected client_credentials or jwt_bearer"),
    ("invalid-providers-style.yaml", "20:14: unknown style `basic`; expected bearer or raw"),
    ("invalid-providers-header-host.yaml", "20:15: header `Host` cannot carry a token"),
    ("invalid-providers-header-token.yaml", "20:15: header `X Token` is not a valid HTTP header name"),
    ("invalid-providers-timeout.yaml", "20:24: timeout_seconds 120 is out of range 1..=60"),
    ("invalid-providers-scope.yaml", "20:22: invalid scope `read org`"),
    ("invalid-providers-endpoint-no-port.yaml", "17:9: provider endpoint has no port"),
    ("invalid-providers-endpoint-bad-path.yaml", "17:50: path `repos/{a,b}` must start with `/`"),
    ("invalid-providers-unknown-field.yaml", "22:7: providers.github.token_grant: unknown field `scope`"),
    (
        "invalid-providers-uninspected-l4.yaml",
        "13:9: provider `github` endpoint providers.github.endpoints[0] (api.github.com:443) overlaps network_policies.gh.endpoints[0] (*.github.com:443, ",
    ),
    ("invalid-providers-uninspected-l4.yaml", "invalid-providers-uninspected-l4.yaml:5:9) which is l4-only (no `protocol`), so credentials would pass uninspected; use an l7 `protocol` there or set `allow_uninspected_credentials: true` on it"),
    (
        "invalid-providers-uninspected-tls-skip.yaml",
        "13:9: provider `github` endpoint providers.github.endpoints[0] (**.github.com:8443) overlaps network_policies.gh.endpoints[0] (api.github.com:443,8443, ",
    ),
    ("invalid-providers-uninspected-tls-skip.yaml", ") which is `tls: skip`, so credentials would pass uninspected"),
    (
        "invalid-providers-uninspected-tcp.yaml",
        "13:9: provider `pg` endpoint providers.pg.endpoints[0] (db.internal.example:5432) overlaps network_policies.db.endpoints[0] (db.internal.example:5432, ",
    ),
    ("invalid-providers-uninspected-tcp.yaml", ") which is `protocol: tcp`"),
];

const ALL_SECRETS: [&str; 5] = [GH_SECRET, FILE_SECRET, CLIENT_SECRET, JWT, "line1"];

#[test]
fn invalid_provider_fixtures_report_location_and_message() {
    let mut failures = Vec::new();
    for (name, want) in CASES {
        match load(name) {
            Ok(_) => failures.push(format!("{name}: loaded but should fail")),
            Err(e) => {
                let text = e.to_string();
                if !text.contains(want) {
                    failures.push(format!("{name}: want `{want}`, got:\n{text}"));
                }
                if e.diagnostics.len() != 1 {
                    failures.push(format!("{name}: want exactly one error, got:\n{text}"));
                }
                assert!(
                    e.diagnostics.iter().all(|d| d.line > 0 && d.col > 0),
                    "{name}: {text}"
                );
                for s in ALL_SECRETS {
                    assert!(!text.contains(s), "{name}: error leaks a secret: {text}");
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_invalid_provider_fixture_is_in_the_table() {
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(fixture(""))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("invalid-providers-") && !CASES.iter().any(|(n, _)| *n == name) {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "untested fixtures: {missing:?}");
}

fn valid() -> Loaded {
    match load("valid-providers.yaml") {
        Ok(l) => l,
        Err(e) => panic!("valid-providers.yaml failed to load:\n{e}"),
    }
}

#[test]
fn valid_fixture_shapes() {
    let l = valid();
    let s = &l.snapshot;
    let keys: Vec<&str> = s.providers().iter().map(|p| &*p.key).collect();
    assert_eq!(keys, ["github", "legacy", "models", "zlocal"]);
    for (i, p) in s.providers().iter().enumerate() {
        assert_eq!(p.id, ProviderId(u32::try_from(i).unwrap_or(u32::MAX)));
        assert_eq!(s.provider(p.id).key, p.key);
        assert!(!p.endpoints.is_empty());
    }

    let gh = &s.providers()[0];
    let names: Vec<&str> = gh.credentials.iter().map(|c| &*c.name).collect();
    assert_eq!(names, ["GH_FILE_TOKEN", "GITHUB_TOKEN"], "sorted by name");
    assert_eq!(
        gh.credentials[0].value.expose(),
        FILE_SECRET,
        "trailing newline trimmed"
    );
    assert_eq!(gh.credentials[1].value.expose(), GH_SECRET);
    assert!(gh.token_grant.is_none());
    assert_eq!(&*gh.endpoints[0].ports, &[443]);
    assert_eq!(
        gh.endpoints[0].path.as_ref().map(|g| &*g.pattern),
        Some("/repos/**")
    );
    assert_eq!(gh.endpoints[1].path, None);

    let models = &s.providers()[2];
    let tg = models
        .token_grant
        .as_deref()
        .expect("models has a token grant");
    assert_eq!(&*tg.token_endpoint, "https://auth.example.com/oauth2/token");
    assert_eq!(tg.grant, GrantKind::ClientCredentials);
    assert_eq!(
        tg.client_id.as_ref().map(|v| v.expose()),
        Some("client-id-1")
    );
    assert_eq!(
        tg.client_secret.as_ref().map(|v| v.expose()),
        Some(CLIENT_SECRET)
    );
    assert!(tg.assertion.is_none());
    let scopes: Vec<&str> = tg.scopes.iter().map(|s| &**s).collect();
    assert_eq!(scopes, ["repo", "read:org"]);
    assert_eq!(
        tg.audience.as_deref(),
        Some("https://api.models.example.com")
    );
    assert_eq!(&*tg.header, "X-Model-Token");
    assert_eq!(tg.style, TokenStyle::Raw);
    assert_eq!(tg.timeout, std::time::Duration::from_secs(30));
    assert_eq!(&*models.endpoints[0].ports, &[443, 8443]);

    let local = s.providers()[3]
        .token_grant
        .as_deref()
        .expect("zlocal grant");
    assert_eq!(local.grant, GrantKind::JwtBearer);
    assert_eq!(
        local.assertion.as_ref().map(|v| v.expose()),
        Some(JWT),
        "CRLF trimmed"
    );
    assert_eq!(
        &*local.assertion_type,
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(&*local.header, "Authorization");
    assert_eq!(local.style, TokenStyle::Bearer);
    assert_eq!(local.timeout, std::time::Duration::from_secs(10));
    assert!(local.scopes.is_empty() && local.audience.is_none() && local.client_id.is_none());
    assert!(s.providers()[3].credentials.is_empty());

    // exactly one warning: the provider endpoint that overlaps no network endpoint
    let warnings: Vec<String> = l
        .notices
        .iter()
        .filter(|n| n.level == NoticeLevel::Warning)
        .map(|n| format!("{}:{}: {}", n.line, n.col, n.message))
        .collect();
    assert_eq!(
        warnings,
        ["52:9: provider `legacy` endpoint nowhere.example.net:443 overlaps no network endpoint; its credentials can never be used there"]
    );
}

#[test]
fn credential_lookup() {
    let s = valid().snapshot;
    assert!(s.has_credentials());
    let c = s.credential("GITHUB_TOKEN").expect("defined");
    assert_eq!(c.provider, ProviderId(0));
    assert_eq!(c.value.expose(), GH_SECRET);
    assert_eq!(
        s.credential("LEGACY_PASSWORD").map(|c| c.provider),
        Some(ProviderId(1))
    );
    assert_eq!(
        s.credential("MODEL_KEY").map(|c| c.provider),
        Some(ProviderId(2))
    );
    assert!(s.credential("github_token").is_none(), "case-sensitive");
    assert!(s.credential("NOPE").is_none());
    assert!(s.credential("").is_none());
}

#[test]
fn has_credentials_false_without_static_credentials() {
    let src = "version: 1
network_policies:
  m:
    endpoints:
      - { host: api.example.com, port: 443, protocol: rest, enforcement: enforce, access: full }
    binaries: [{ path: /usr/bin/curl }]
providers:
  only_grant:
    endpoints:
      - { host: api.example.com, port: 443 }
    token_grant:
      token_endpoint: \"http://[::1]:9000/token\"
      grant: jwt_bearer
      assertion: { env: CLIENT_SECRET }
";
    let l = load_str_with(src, "inline.yaml", 3, &secrets()).expect("loads");
    assert!(!l.snapshot.has_credentials());
    assert_eq!(l.snapshot.providers().len(), 1);
    assert_eq!(
        l.snapshot
            .token_grants_for(HostRef::Name("api.example.com"), 443, "/x")
            .count(),
        1
    );
    // no providers at all
    let empty = sluice_policy::PolicySnapshot::empty(1);
    assert!(!empty.has_credentials() && empty.providers().is_empty());
    assert!(empty.credential("X").is_none());
    assert!(!empty.provider_binds(ProviderId(0), HostRef::Name("a.b"), 443, "/"));
}

#[test]
fn debug_never_prints_secret_values() {
    let l = valid();
    let s = &l.snapshot;
    let texts = [
        format!("{l:?}"),
        format!("{l:#?}"),
        format!("{:?}", s.providers()),
        format!("{:#?}", s.providers()),
        format!("{:?}", s.credential("GITHUB_TOKEN")),
        format!("{}", s.providers()[0].credentials[0].value),
    ];
    for t in &texts {
        for secret in [
            GH_SECRET,
            FILE_SECRET,
            CLIENT_SECRET,
            JWT,
            "client-id-1",
            "model_SECRET_key",
            "legacy_SECRET_pw",
        ] {
            assert!(!t.contains(secret), "leaked {secret} in {t}");
        }
    }
    assert!(texts[2].contains("[REDACTED]"), "{}", texts[2]);
    assert!(texts[2].contains("GITHUB_TOKEN"), "names are not secret");
}

#[test]
fn provider_binds_host_port_path() {
    let s = valid().snapshot;
    let gh = ProviderId(0);
    let models = ProviderId(2);
    let n = HostRef::Name;
    let cases: &[(ProviderId, HostRef<'_>, u16, &str, bool)] = &[
        (gh, n("api.github.com"), 443, "/repos/o/r/issues", true),
        (gh, n("api.github.com"), 443, "/repos/", true),
        (gh, n("api.github.com"), 443, "/repos/o?x=1", true),
        (gh, n("api.github.com"), 443, "/repos", false),
        (gh, n("api.github.com"), 443, "/user", false),
        (gh, n("api.github.com"), 443, "/user?p=/repos/x", false),
        (gh, n("api.github.com"), 8443, "/repos/o", false),
        (gh, n("API.GitHub.com"), 443, "/repos/o", true),
        (gh, n("evil.api.github.com"), 443, "/repos/o", false),
        (gh, n("uploads.github.com"), 443, "/anything/at/all", true),
        (gh, n("uploads.github.com"), 80, "/", false),
        (
            gh,
            HostRef::Ip(
                "140.82.112.6"
                    .parse()
                    .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
            ),
            443,
            "/repos/o",
            false,
        ),
        (models, n("eu.models.example.com"), 443, "/v1/chat", true),
        (models, n("a.b.models.example.com"), 8443, "/v1/embed", true),
        (models, n("models.example.com"), 443, "/v1/chat", false),
        (
            models,
            n("eu.models.example.com"),
            443,
            "/v1/chat/completions",
            false,
        ),
        (models, n("eu.models.example.com"), 443, "/v2/chat", false),
        (models, n("eu.models.example.com"), 444, "/v1/chat", false),
        (ProviderId(99), n("api.github.com"), 443, "/repos/o", false),
    ];
    for (p, h, port, path, want) in cases {
        assert_eq!(
            s.provider_binds(*p, *h, *port, path),
            *want,
            "{p:?} {h:?}:{port}{path}"
        );
    }
}

#[test]
fn token_grants_for_in_key_order() {
    let s = valid().snapshot;
    let keys = |h: &str, port: u16, path: &str| -> Vec<String> {
        s.token_grants_for(HostRef::Name(h), port, path)
            .map(|p| p.key.to_string())
            .collect()
    };
    assert_eq!(
        keys("gpu.models.example.com", 443, "/v1/x"),
        ["models", "zlocal"]
    );
    assert_eq!(keys("gpu.models.example.com", 443, "/v2/x"), ["zlocal"]);
    assert_eq!(
        keys("gpu.models.example.com", 8443, "/v2/x"),
        Vec::<String>::new()
    );
    assert_eq!(keys("eu.models.example.com", 8443, "/v1/x"), ["models"]);
    assert_eq!(
        keys("api.github.com", 443, "/repos/x"),
        Vec::<String>::new(),
        "no grant"
    );
}

#[test]
fn reload_reads_secrets_again() {
    let src = std::fs::read_to_string(fixture("valid-providers.yaml")).unwrap_or_default();
    let rotated = secrets().with_env("HOST_GITHUB_TOKEN", "rotated_value");
    let a = load_str_with(&src, "p.yaml", 1, &secrets()).expect("loads");
    let b = load_str_with(&src, "p.yaml", 2, &rotated).expect("loads");
    let v = |l: &Loaded| {
        l.snapshot
            .credential("GITHUB_TOKEN")
            .map(|c| c.value.expose().to_owned())
    };
    assert_eq!(v(&a).as_deref(), Some(GH_SECRET));
    assert_eq!(v(&b).as_deref(), Some("rotated_value"));
    // and a removed secret fails the reload
    let gone = MemorySecrets::new();
    assert!(load_str_with(&src, "p.yaml", 3, &gone).is_err());
}

#[test]
fn opted_in_uninspected_endpoint_and_l7_overlap_are_accepted() {
    let s = valid().snapshot;
    assert!(s.provider_binds(
        ProviderId(1),
        HostRef::Name("legacy.example.org"),
        8080,
        "/"
    ));
    let ep = s
        .endpoints()
        .iter()
        .find(|e| e.host.display() == "legacy.example.org")
        .expect("endpoint");
    assert!(ep.allow_uninspected_credentials);
}

fn inject_levels(doc: &serde_yaml::Value) -> Vec<Vec<serde_yaml::Value>> {
    use serde_yaml::Value;
    let mut out = Vec::new();
    let Some(provs) = doc.get("providers").and_then(Value::as_mapping) else {
        return out;
    };
    for (k, p) in provs {
        let base = vec![Value::from("providers"), k.clone()];
        out.push(base.clone());
        for (c, _) in p
            .get("credentials")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
        {
            out.push([base.clone(), vec![Value::from("credentials"), c.clone()]].concat());
        }
        let eps = p
            .get("endpoints")
            .and_then(Value::as_sequence)
            .map_or(0, Vec::len);
        for i in 0..eps {
            out.push([base.clone(), vec![Value::from("endpoints"), Value::from(i)]].concat());
        }
        if let Some(tg) = p.get("token_grant") {
            let t = [base.clone(), vec![Value::from("token_grant")]].concat();
            out.push(t.clone());
            for f in ["client_id", "client_secret", "assertion"] {
                if tg.get(f).is_some() {
                    out.push([t.clone(), vec![Value::from(f)]].concat());
                }
            }
        }
    }
    out
}

#[test]
fn unknown_keys_rejected_at_every_provider_level() {
    use serde_yaml::Value;
    let src = std::fs::read_to_string(fixture("valid-providers.yaml")).unwrap_or_default();
    let doc: Value = serde_yaml::from_str(&src).expect("yaml");
    let levels = inject_levels(&doc);
    assert!(levels.len() >= 12, "{}", levels.len());
    for path in levels {
        let mut d = doc.clone();
        let mut cur = &mut d;
        for seg in &path {
            cur = match seg {
                Value::Number(n) => {
                    let i = usize::try_from(n.as_u64().unwrap_or(0)).unwrap_or(0);
                    &mut cur.as_sequence_mut().expect("seq")[i]
                }
                k => cur.get_mut(k).expect("key"),
            };
        }
        cur.as_mapping_mut()
            .expect("mapping")
            .insert(Value::from("sluice_unknown_key"), Value::from(1));
        let text = serde_yaml::to_string(&d).expect("yaml");
        let e = load_str_with(&text, "x.yaml", 1, &secrets()).err();
        let msg = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("unknown field `sluice_unknown_key`") && !msg.contains("x.yaml: "),
            "{path:?}: {msg}"
        );
    }
}

/// Every secret source the policy names is recorded, whatever section names it
/// (credentials, token grant client id/secret, assertion files); `sluice run`
/// keeps these out of the sandbox.
#[test]
fn every_secret_source_is_recorded() {
    let l = valid();
    let env: Vec<&str> = l.secret_sources.env.iter().map(String::as_str).collect();
    assert_eq!(
        env,
        [
            "CLIENT_ID",
            "CLIENT_SECRET",
            "HOST_GITHUB_TOKEN",
            "LEGACY_PASSWORD",
            "MODEL_KEY"
        ]
    );
    let files: Vec<String> = l
        .secret_sources
        .files
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(files, ["/run/secrets/gh", "/run/secrets/jwt"]);
    let values: Vec<&str> = l.secret_sources.values.iter().map(|s| s.expose()).collect();
    for v in [GH_SECRET, FILE_SECRET, CLIENT_SECRET, JWT] {
        assert!(values.contains(&v), "value of a source not recorded");
    }
    assert!(!format!("{:?}", l.secret_sources).contains(GH_SECRET));
}

/// `credential_signing` needs a provider holding AWS_ACCESS_KEY_ID and
/// AWS_SECRET_ACCESS_KEY bound to the endpoint: an error (with its location)
/// in a file with providers, a warning in one without (an OpenShell policy).
#[test]
fn signing_endpoints_need_an_aws_provider() {
    let policy = |signing_protocol: &str, providers: &str| {
        format!(
            r#"version: 1
network_policies:
  s3:
    endpoints:
      - host: "*.s3.test"
        port: 443
        protocol: {signing_protocol}
        access: full
        credential_signing: sigv4
        signing_service: s3
    binaries: [ {{ path: /usr/bin/aws }} ]
{providers}"#
        )
    };
    let aws = MemorySecrets::new()
        .with_env("KEY", "AKIDEXAMPLE")
        .with_env("SECRET", "aws_SECRET_key");
    let bound = r#"providers:
  aws:
    credentials:
      AWS_ACCESS_KEY_ID: { env: KEY }
      AWS_SECRET_ACCESS_KEY: { env: SECRET }
    endpoints: [ { host: bucket.s3.test, port: 443 } ]
"#;
    let l = load_str_with(&policy("rest", bound), "s.yaml", 1, &aws).expect("loads");
    assert!(
        !l.notices
            .iter()
            .any(|n| n.message.contains("credential_signing")),
        "{:?}",
        l.notices
    );
    // A provider without the secret key, or bound elsewhere: an error at the field.
    for providers in [
        bound.replace("      AWS_SECRET_ACCESS_KEY: { env: SECRET }\n", ""),
        bound.replace("bucket.s3.test", "other.test"),
    ] {
        let e = load_str_with(&policy("rest", &providers), "s.yaml", 1, &aws)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("s.yaml:9:29: `credential_signing` needs a provider with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY bound to this endpoint"),
            "{e}"
        );
        assert!(!e.contains("aws_SECRET_key"), "{e}");
    }
    // No providers section: loads, with a warning.
    let l = load_str_with(&policy("rest", ""), "s.yaml", 1, &aws).expect("loads");
    assert!(l.notices.iter().any(|n| n.level == NoticeLevel::Warning
        && n.message
            .contains("`credential_signing` has no provider in this file")));
    // Body-inspecting protocols do not sign.
    let e = load_str_with(&policy("graphql", bound), "s.yaml", 1, &aws)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("`credential_signing` requires `protocol: rest` or `websocket`"),
        "{e}"
    );
}
