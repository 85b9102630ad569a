//! Provider profiles: the file format (located errors), the embedded
//! catalog, OpenShell's catalog files, and composition into a policy.

use std::path::{Path, PathBuf};

use sluice_policy::profile::{catalog, parse_profile, ProfileOptions, ProfileRef, SecretBinding};
use sluice_policy::{load_str_with_profiles, Capabilities, MemorySecrets, RuntimeMode};

/// A profile exercising every field sluice honours.
const EXAMPLE: &str = r#"id: example-svc
display_name: Example Service
description: Read the example API; write nothing.
category: data
inference_capable: false
credentials:
  - name: api_token
    description: A personal token.
    env_vars: [EXAMPLE_TOKEN, EXAMPLE_TOKEN_ALT]
    required: true
    auth_style: bearer
    header_name: authorization
  - name: extra_key
    env_vars: [EXAMPLE_EXTRA]
    required: false
    auth_style: header
    header_name: x-extra
endpoints:
  - host: api.example.test
    port: 443
    protocol: rest
    enforcement: enforce
    rules:
      - allow: { method: GET, path: "/v1/**" }
    deny_rules:
      - { method: GET, path: "/v1/admin/**" }
  - host: uploads.example.test
    ports: [443, 8443]
    path: "/files/**"
    protocol: rest
    access: read-only
binaries:
  - path: /usr/bin/curl
  - path: /usr/local/bin/*
discovery:
  credentials: [api_token]
"#;

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sluice-profiles-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn lines(e: &sluice_policy::LoadError) -> Vec<String> {
    e.diagnostics.iter().map(ToString::to_string).collect()
}

#[test]
fn the_example_profile_parses_with_every_field() {
    let p = parse_profile(EXAMPLE, "example.yaml").expect("valid");
    assert_eq!(p.id, "example-svc");
    assert_eq!(p.entry_key(), "_provider_example_svc");
    assert_eq!(p.category.as_deref(), Some("data"));
    assert_eq!(p.credentials.len(), 2);
    assert_eq!(
        p.credentials[0].env_vars,
        ["EXAMPLE_TOKEN", "EXAMPLE_TOKEN_ALT"]
    );
    assert!(p.credentials[0].required && !p.credentials[1].required);
    assert_eq!(p.endpoints.len(), 2);
    assert_eq!(p.endpoints[1].ports, [443, 8443]);
    assert_eq!((p.endpoints[0].rules, p.endpoints[0].deny_rules), (1, 1));
    assert_eq!(p.binaries, ["/usr/bin/curl", "/usr/local/bin/*"]);
    assert_eq!(p.discovery, ["api_token"]);
}

/// Every problem of a profile file, located in it; what sluice cannot
/// honour (a refresh strategy, a token grant) is named, never ignored.
#[test]
fn profile_errors_are_located() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown field",
            "id: x\nhomepage: https://x.test\n",
            &["bad.yaml:2:1: unknown field `homepage`, expected one of `id`, `display_name`, `description`, `category`, `credentials`, `endpoints`, `binaries`, `discovery`, `inference_capable`"],
        ),
        (
            "id, category and credentials",
            "id: Bad Id\ncategory: games\ncredentials:\n  - name: t\n    env_vars: [A-B, TOKEN, TOKEN]\n    auth_style: bearer\n  - name: t\n    auth_style: carrier-pigeon\n",
            &[
                "bad.yaml:1:5: invalid profile id `Bad Id`; expected [a-z0-9][a-z0-9_-]* (at most 64 bytes)",
                "bad.yaml:2:11: unknown category `games`; expected one of other, inference, agent, source_control, messaging, data, knowledge",
                "bad.yaml:5:16: invalid environment variable name `A-B`; expected [A-Za-z0-9_]+",
                "bad.yaml:5:28: environment variable `TOKEN` is listed twice in this profile",
                "bad.yaml:6:17: auth_style `bearer`/`header` needs `header_name`",
                "bad.yaml:7:11: duplicate credential name `t`",
                "bad.yaml:8:17: unknown auth_style `carrier-pigeon`; expected one of basic, bearer, header, query, path",
            ],
        ),
        (
            "refresh and token grant are named",
            "id: x\ncredentials:\n  - name: key\n    env_vars: [KEY]\n    refresh:\n      strategy: aws_sts_assume_role\n  - name: tok\n    env_vars: [TOK]\n    token_grant:\n      token_endpoint: https://auth.test/token\n",
            &[
                "bad.yaml:6:7: credential `key` asks for refresh strategy `aws_sts_assume_role`, which sluice does not perform (it never mints or renews credentials); remove `refresh` and bind a secret you rotate",
                "bad.yaml:10:7: credential `tok` asks for a profile token grant, which sluice does not perform; use a policy `providers` entry with `token_grant` instead",
            ],
        ),
        (
            "endpoints, discovery and binaries",
            "id: x\ncredentials:\n  - name: key\n    env_vars: [KEY]\nendpoints:\n  - host: raw.test\n    port: 443\n  - host: api.test\n    port: 70000\n    protocol: rest\n  - host: b.test\n    port: 443\n    protocol: rest\n    access: full\n    credential_binding: { provider: mine }\nbinaries:\n  - path: curl\ndiscovery:\n  credentials: [nope]\n",
            &[
                "bad.yaml:6:5: endpoint raw.test:443 of a profile with credentials is L4 only; give it an l7 `protocol` or set `allow_uninspected_credentials: true`",
            ],
        ),
    ];
    for (name, src, want) in cases {
        let e = parse_profile(src, "bad.yaml").expect_err(name);
        let got = lines(&e);
        for w in *want {
            assert!(
                got.iter().any(|g| g == w),
                "{name}: missing\n  {w}\nin\n  {}",
                got.join("\n  ")
            );
        }
    }
    // The last case reports each of its problems (the exact texts of the
    // shared endpoint checks are the policy's, tested there).
    let e = parse_profile(cases[3].1, "bad.yaml").unwrap_err();
    let got = lines(&e).join("\n");
    for needle in [
        "bad.yaml:9:11:",
        "bad.yaml:15:25: `credential_binding` names a provider of one policy",
        "bad.yaml:17:11: binary path `curl` must be absolute",
        "bad.yaml:19:17: discovery names `nope`, which is not a credential of this profile",
    ] {
        assert!(got.contains(needle), "missing {needle} in\n{got}");
    }
}

/// The embedded catalog: every profile is valid, its id is its file's, and
/// it attaches to an empty policy (credentials bound) under `run`'s
/// capabilities. This is the catalog's lint in CI.
#[test]
fn every_catalog_profile_lints_and_attaches() {
    let all = catalog();
    assert!(all.len() >= 24, "the catalog has {} profiles", all.len());
    let mut ids: Vec<&str> = all.iter().map(|e| e.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all.len(), "duplicate ids");
    for required in [
        "github",
        "pypi",
        "npm",
        "crates-io",
        "go-modules",
        "docker-hub",
        "ghcr",
        "huggingface",
        "openai",
        "anthropic",
        "gemini",
        "claude-code",
        "codex",
        "copilot",
        "cursor",
        "aws",
        "aws-s3",
        "aws-bedrock",
        "google-cloud",
        "google-vertex-ai",
        "nvidia",
        "deepinfra",
    ] {
        assert!(ids.contains(&required), "catalog lacks {required}");
    }
    for entry in all {
        let p = parse_profile(entry.source, &entry.origin())
            .unwrap_or_else(|e| panic!("catalog profile {} is invalid:\n{e}", entry.id));
        assert_eq!(
            p.id, entry.id,
            "{}: id differs from the file name",
            entry.id
        );
        assert!(
            p.description.is_some() && p.display_name.is_some(),
            "{}: needs a name and a description",
            p.id
        );
        let mut secrets = MemorySecrets::new();
        let mut bindings = Vec::new();
        for c in &p.credentials {
            let var = format!(
                "TEST_{}",
                c.env_vars.first().unwrap_or(&c.name).to_ascii_uppercase()
            );
            secrets = secrets.with_env(&var, "dummy-secret-value-1234");
            bindings.push(SecretBinding {
                name: c.env_vars.first().unwrap_or(&c.name).clone(),
                source: sluice_policy::profile::SecretBindingSource::Env(var),
            });
        }
        let opts = ProfileOptions {
            profiles: vec![ProfileRef::Catalog(p.id.clone())],
            secrets: bindings,
            policy_dir: None,
        };
        let loaded = load_str_with_profiles("version: 1\n", "empty.yaml", 1, &secrets, &opts)
            .unwrap_or_else(|e| panic!("catalog profile {} does not attach:\n{e}", p.id));
        let snap = &loaded.snapshot;
        assert!(
            snap.policies().iter().any(|x| *x.key == p.entry_key()),
            "{}",
            p.id
        );
        let caps = Capabilities {
            process_identity: true,
            transparent_capture: true,
            ..Capabilities::new(RuntimeMode::Run)
        };
        caps.check(snap.requirements())
            .unwrap_or_else(|e| panic!("{} needs more than `run` offers:\n{e}", p.id));
    }
}

/// The whole catalog attaches at once (no ambiguity between its profiles;
/// variables several profiles use are shared), and the README's headline
/// pair works from the operator's environment alone.
#[test]
fn the_catalog_attaches_together_and_the_headline_pair_from_the_environment() {
    // The operator's environment holds one variable per credential (the
    // last name each credential lists), as a shell usually does.
    let mut discovered = MemorySecrets::new();
    for entry in catalog() {
        let p = parse_profile(entry.source, &entry.origin()).unwrap();
        for c in &p.credentials {
            if let Some(var) = c.env_vars.last() {
                discovered = discovered.with_env(var, "dummy-secret-value-1234");
            }
        }
    }
    let opts = ProfileOptions {
        profiles: catalog()
            .iter()
            .map(|e| ProfileRef::Catalog(e.id.to_owned()))
            .collect(),
        secrets: Vec::new(),
        policy_dir: None,
    };
    let loaded = load_str_with_profiles("version: 1\n", "all.yaml", 1, &discovered, &opts)
        .unwrap_or_else(|e| panic!("the catalog does not attach as a whole:\n{e}"));
    assert_eq!(
        loaded.snapshot.policies().len(),
        catalog().len(),
        "one entry per profile"
    );
    assert!(loaded
        .snapshot
        .providers()
        .iter()
        .any(|p| &*p.key == "_provider_shared_anthropic_api_key"));

    // `sluice run --profile claude-code --profile github` with the keys in
    // the operator's environment.
    let env = MemorySecrets::new()
        .with_env("ANTHROPIC_API_KEY", "sk-ant-dummy-123456")
        .with_env("GITHUB_TOKEN", "ghp_dummy_123456");
    let opts = ProfileOptions {
        profiles: vec![
            ProfileRef::Catalog("claude-code".into()),
            ProfileRef::Catalog("github".into()),
        ],
        secrets: Vec::new(),
        policy_dir: None,
    };
    let loaded = load_str_with_profiles("version: 1\n", "(profiles)", 1, &env, &opts)
        .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = loaded
        .snapshot
        .providers()
        .iter()
        .flat_map(|p| p.credentials.iter().map(|c| &*c.name))
        .collect();
    assert_eq!(names, ["ANTHROPIC_API_KEY", "GH_TOKEN", "GITHUB_TOKEN"]);
    assert!(loaded.secret_sources.env.contains("ANTHROPIC_API_KEY"));
}

/// OpenShell's own provider files (Apache-2.0, kept unchanged as fixtures):
/// each loads, or is refused only for what sluice does not perform
/// (credential refresh, token grants), named in the message.
#[test]
fn openshell_catalog_files_load() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openshell-providers");
    let mut loaded = Vec::new();
    let mut refused = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&fixtures)
        .expect("fixtures")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 13, "{} fixture files", files.len());
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        match parse_profile(&text, &f.display().to_string()) {
            Ok(p) => loaded.push(p.id),
            Err(e) => {
                for d in &e.diagnostics {
                    eprintln!("refused: {d}");
                    assert!(
                        d.message.contains("which sluice does not perform")
                            || d.message.contains("unknown credential_signing `oci`"),
                        "{}: refused for something sluice could honour: {d}",
                        f.display()
                    );
                }
                refused.push(f.file_stem().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    for id in [
        "github",
        "pypi",
        "claude-code",
        "codex",
        "copilot",
        "cursor",
        "nvidia",
        "deepinfra",
        "aws-bedrock",
        "openai",
        "anthropic",
    ] {
        assert!(
            loaded.iter().any(|l| l == id),
            "{id} did not load (loaded: {loaded:?}, refused: {refused:?})"
        );
    }
}

fn example_dir(tag: &str) -> PathBuf {
    let d = dir(tag);
    std::fs::write(d.join("svc.yaml"), EXAMPLE).unwrap();
    d
}

/// A policy attaching the example profile by file, binding its token in
/// the entry; the composed entry and provider carry the profile's key, and
/// every env var name gets the secret.
#[test]
fn a_policy_attaches_a_profile_file_and_binds_its_credentials() {
    let d = example_dir("attach");
    let policy = "version: 1\nprofiles:\n  - file: svc.yaml\n    credentials:\n      EXAMPLE_TOKEN: { env: HOST_TOKEN }\n";
    let origin = d.join("policy.yaml").display().to_string();
    let secrets = MemorySecrets::new().with_env("HOST_TOKEN", "tok-123456789");
    let loaded = load_str_with_profiles(policy, &origin, 1, &secrets, &ProfileOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let snap = &loaded.snapshot;
    let entry = snap
        .policies()
        .iter()
        .find(|p| &*p.key == "_provider_example_svc")
        .expect("entry");
    assert_eq!(entry.endpoints.len(), 2);
    assert_eq!(entry.binaries.len(), 2);
    let provider = &snap.providers()[0];
    assert_eq!(&*provider.key, "_provider_example_svc");
    let names: Vec<&str> = provider.credentials.iter().map(|c| &*c.name).collect();
    assert_eq!(
        names,
        ["EXAMPLE_TOKEN", "EXAMPLE_TOKEN_ALT"],
        "the optional credential is unbound"
    );
    assert!(provider
        .credentials
        .iter()
        .all(|c| c.value.expose() == "tok-123456789"));
    assert!(loaded.secret_sources.env.contains("HOST_TOKEN"));
}

/// Discovery: an unbound credential listed in `discovery` is taken from the
/// operator's environment under one of its env var names; a required one
/// found nowhere is an error with the flag to use.
#[test]
fn discovery_and_missing_required_credentials() {
    let d = example_dir("discover");
    let origin = d.join("policy.yaml").display().to_string();
    let policy = "version: 1\nprofiles: [{file: svc.yaml}]\n";
    let found = MemorySecrets::new().with_env("EXAMPLE_TOKEN_ALT", "from-the-env-1234");
    let loaded = load_str_with_profiles(policy, &origin, 1, &found, &ProfileOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.snapshot.providers()[0]
        .credentials
        .iter()
        .all(|c| c.value.expose() == "from-the-env-1234"));
    let e = load_str_with_profiles(
        policy,
        &origin,
        1,
        &MemorySecrets::new(),
        &ProfileOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        lines(&e),
        [format!("{origin}:2:12: profile `example-svc` needs credential `api_token`: bind it with `--secret EXAMPLE_TOKEN=env:VAR` (or `=file:PATH`), or set EXAMPLE_TOKEN or EXAMPLE_TOKEN_ALT in sluice's environment")]
    );
    // From the command line: --profile FILE --secret NAME=file:PATH.
    let opts = ProfileOptions {
        profiles: vec![ProfileRef::File(d.join("svc.yaml"))],
        secrets: vec!["EXAMPLE_TOKEN_ALT=file:/run/token".parse().unwrap()],
        policy_dir: None,
    };
    let secrets = MemorySecrets::new().with_file("/run/token", "file-token-98765");
    let loaded = load_str_with_profiles("version: 1\n", &origin, 1, &secrets, &opts)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.snapshot.providers()[0]
        .credentials
        .iter()
        .all(|c| c.value.expose() == "file-token-98765"));
    // Bound twice (entry and --secret), and too many attachments.
    std::fs::write(d.join("twice.yaml"), "version: 1\nprofiles:\n  - file: svc.yaml\n    credentials: { EXAMPLE_TOKEN: { env: A } }\n").unwrap();
    let twice = ProfileOptions {
        profiles: Vec::new(),
        secrets: vec!["EXAMPLE_TOKEN=env:B".parse().unwrap()],
        policy_dir: None,
    };
    let both = MemorySecrets::new()
        .with_env("A", "value-a-12345")
        .with_env("B", "value-b-12345");
    let e = sluice_policy::load_file_with_profiles(&d.join("twice.yaml"), 1, &both, &twice)
        .unwrap_err();
    assert!(lines(&e).iter().any(|l| l.ends_with("credential `api_token` of profile `example-svc` is bound twice: by the policy entry (`EXAMPLE_TOKEN`) and by `--secret EXAMPLE_TOKEN`; keep one")), "{e}");
    let many = ProfileOptions {
        profiles: vec![ProfileRef::Catalog("github".into()); 65],
        secrets: Vec::new(),
        policy_dir: None,
    };
    let e = load_str_with_profiles("version: 1\n", &origin, 1, &both, &many).unwrap_err();
    assert_eq!(
        lines(&e),
        ["command line: 65 profiles attached; at most 64 are accepted"]
    );
    let stray = ProfileOptions {
        secrets: vec!["NOPE=env:X".parse().unwrap()],
        ..opts
    };
    let e = load_str_with_profiles("version: 1\n", &origin, 1, &secrets, &stray).unwrap_err();
    assert!(lines(&e).iter().any(|l| l.contains("--secret NOPE: no attached profile has a credential by that name")), "{e}");
}

/// The composed policy is checked like a hand-written one: an overlap with
/// different TLS handling is an error naming both entries and both files;
/// two profiles handing out the same env var name collide, named.
#[test]
fn composition_conflicts_are_named() {
    let d = example_dir("overlap");
    let origin = d.join("policy.yaml").display().to_string();
    let policy = "version: 1\nnetwork_policies:\n  mine:\n    endpoints:\n      - { host: api.example.test, port: 443, tls: skip }\nprofiles: [{file: svc.yaml}]\n";
    let secrets = MemorySecrets::new().with_env("EXAMPLE_TOKEN", "tok-123456789");
    let e = load_str_with_profiles(policy, &origin, 1, &secrets, &ProfileOptions::default())
        .unwrap_err();
    let text = e.to_string();
    let profile_file = d.join("svc.yaml").display().to_string();
    assert!(
        text.contains("network_policies._provider_example_svc.endpoints[0]")
            && text.contains("network_policies.mine.endpoints[0]")
            && text.contains("with different tls")
            && text.contains(&format!("{profile_file}:19:5")),
        "{text}"
    );
    // Same env var names from two profiles, from the same source: one shared
    // provider per variable, bound to both profiles' endpoints.
    let twin = EXAMPLE
        .replace("id: example-svc", "id: example-twin")
        .replace("api.example.test", "api.twin.test")
        .replace("uploads.example.test", "uploads.twin.test");
    std::fs::write(d.join("twin.yaml"), twin).unwrap();
    let policy = "version: 1\nprofiles: [{file: svc.yaml}, {file: twin.yaml}]\n";
    let loaded = load_str_with_profiles(policy, &origin, 1, &secrets, &ProfileOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<&str> = loaded
        .snapshot
        .providers()
        .iter()
        .map(|p| &*p.key)
        .collect();
    assert_eq!(keys, ["_provider_shared_example_token"]);
    let shared = &loaded.snapshot.providers()[0];
    let names: Vec<&str> = shared.credentials.iter().map(|c| &*c.name).collect();
    assert_eq!(names, ["EXAMPLE_TOKEN", "EXAMPLE_TOKEN_ALT"]);
    assert_eq!(shared.endpoints.len(), 4, "both profiles' endpoints");
    // From different sources: an error naming both profiles.
    let policy = "version: 1\nprofiles:\n  - file: svc.yaml\n  - file: twin.yaml\n    credentials: { EXAMPLE_TOKEN: { env: OTHER_TOKEN } }\n";
    let both = MemorySecrets::new()
        .with_env("EXAMPLE_TOKEN", "tok-123456789")
        .with_env("OTHER_TOKEN", "tok-987654321");
    let e =
        load_str_with_profiles(policy, &origin, 1, &both, &ProfileOptions::default()).unwrap_err();
    assert!(
        lines(&e).contains(&format!("{origin}:4:5: profiles `example-svc` and `example-twin` both hand out EXAMPLE_TOKEN, from different sources; bind it once (`--secret EXAMPLE_TOKEN=...`) or attach one of them")),
        "{e}"
    );
    // A policy provider handing out a profile's variable: named.
    let policy = "version: 1\nprofiles: [{file: svc.yaml}]\nproviders:\n  mine:\n    credentials: { EXAMPLE_TOKEN: { env: OTHER_TOKEN } }\n    endpoints: [{ host: mine.test, port: 443 }]\n";
    let e =
        load_str_with_profiles(policy, &origin, 1, &both, &ProfileOptions::default()).unwrap_err();
    assert!(
        e.to_string().contains(
            "credential `EXAMPLE_TOKEN` is already defined by provider `_provider_example_svc`"
        ),
        "{e}"
    );
    // Attached twice, and the reserved prefix stays reserved.
    let policy = "version: 1\nprofiles: [{file: svc.yaml}, {file: svc.yaml}]\nnetwork_policies:\n  _provider_mine: { endpoints: [] }\n";
    let e = load_str_with_profiles(policy, &origin, 1, &secrets, &ProfileOptions::default())
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(":2:30: profile `example-svc` is attached twice"),
        "{text}"
    );
    let policy = "version: 1\nprofiles: [{file: svc.yaml}]\nnetwork_policies:\n  _provider_example_svc: { endpoints: [{ host: evil.test, port: 443 }] }\n";
    let e = load_str_with_profiles(policy, &origin, 1, &secrets, &ProfileOptions::default())
        .unwrap_err();
    let got = e.to_string();
    assert!(got.contains(":2:12: profile `example-svc` attaches as `_provider_example_svc`, a key the policy already uses"), "{got}");
    assert!(
        got.contains(
            ":4:3: policy key `_provider_example_svc` uses the reserved `_provider_` prefix"
        ),
        "{got}"
    );
    assert!(
        text.contains("policy key `_provider_mine` uses the reserved `_provider_` prefix"),
        "{text}"
    );
}
