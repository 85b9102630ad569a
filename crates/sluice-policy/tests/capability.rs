//! The capability contract: located requirements recorded at load, and
//! each mode's refusal of what it cannot enforce.

use sluice_policy::{load_str_with, Capabilities, MemorySecrets, MetadataKind, Need, RuntimeMode};

/// One node of each kind that needs something from the runtime; the line of
/// each is asserted below.
const POLICY: &str = "version: 1
network_policies:
  tools:
    endpoints:
      - { host: api.example.com, port: 443, protocol: rest, access: read-only }
      - host: cache.example.com
        port: 6379
        protocol: tcp
      - { host: kv.example.com, port: 6380, protocol: redis, rules: [ { allow: { command: GET } } ] }
      - { host: db.example.com, port: 5432, protocol: postgres, rules: [ { allow: { statement: select } } ] }
    binaries:
      - path: /usr/bin/curl
  open:
    endpoints:
      - { host: docs.example.com, port: 443 }
network_middlewares:
  redact:
    middleware: acme/dlp
    order: 10
    endpoints: { include: [api.example.com] }
providers:
  gcp:
    metadata: gce
    credentials:
      GCP_ADC_ACCESS_TOKEN: { env: GCP_TOKEN }
    endpoints: [ { host: api.example.com, port: 443 } ]
";

fn snapshot(src: &str) -> sluice_policy::PolicySnapshot {
    let secrets = MemorySecrets::new().with_env("GCP_TOKEN", "ya29.SECRET");
    load_str_with(src, "caps.yaml", 1, &secrets)
        .unwrap_or_else(|e| panic!("loads: {e}"))
        .snapshot
}

#[test]
fn requirements_are_recorded_with_their_locations() {
    let s = snapshot(POLICY);
    let got: Vec<(Need, &str, usize)> = s
        .requirements()
        .iter()
        .map(|r| (r.need.clone(), r.path.as_str(), r.line))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                Need::TransparentCapture,
                "network_policies.tools.endpoints[1].protocol",
                8
            ),
            (
                Need::Processor("redis"),
                "network_policies.tools.endpoints[2].protocol",
                9
            ),
            (
                Need::Processor("postgres"),
                "network_policies.tools.endpoints[3].protocol",
                10
            ),
            (Need::ProcessIdentity, "network_policies.tools.binaries", 11),
            (
                Need::Middleware("acme/dlp".into()),
                "network_middlewares.redact.middleware",
                18
            ),
            (
                Need::MetadataLoopback(MetadataKind::Gce),
                "providers.gcp.metadata",
                23
            ),
        ]
    );
}

#[test]
fn each_mode_refuses_what_it_cannot_enforce() {
    let s = snapshot(POLICY);
    let everything = Capabilities {
        process_identity: true,
        transparent_capture: true,
        metadata_loopback: vec![MetadataKind::Gce, MetadataKind::Aws],
        middleware: vec!["acme/dlp".into()],
        ..Capabilities::new(RuntimeMode::Run)
    };
    assert!(everything.check(s.requirements()).is_ok());

    // (capabilities, the lines refused, a phrase of the first message)
    let cases: Vec<(Capabilities, Vec<usize>, &str)> = vec![
        (
            Capabilities {
                process_identity: false,
                ..everything.clone()
            },
            vec![11],
            "caps.yaml:11:5: network_policies.tools.binaries: needs process identity, which `sluice run` cannot enforce (run with `--identity required`, or remove `binaries`)",
        ),
        (
            Capabilities {
                mode: RuntimeMode::Serve,
                transparent_capture: false,
                metadata_loopback: Vec::new(),
                ..everything.clone()
            },
            vec![8, 23],
            "caps.yaml:8:19: network_policies.tools.endpoints[1].protocol: needs transparent capture, which `sluice serve` cannot enforce (use `sluice run`, or the sidecar listeners",
        ),
        (
            Capabilities {
                middleware: vec!["sluice/regex".into()],
                ..everything.clone()
            },
            vec![18],
            "needs middleware `acme/dlp`, which `sluice run` cannot enforce (register it with `--middleware acme/dlp=URL`; available: sluice/regex)",
        ),
        (
            Capabilities {
                metadata_loopback: vec![MetadataKind::Aws],
                ..everything.clone()
            },
            vec![23],
            "providers.gcp.metadata: needs the gce metadata loopback, which `sluice run` cannot enforce (`sluice run` starts the metadata services its policy names at start: restart it to add one)",
        ),
        (
            Capabilities {
                processors: vec!["redis"],
                ..everything.clone()
            },
            vec![10],
            "needs the postgres processor",
        ),
        (
            Capabilities {
                mode: RuntimeMode::Library,
                process_identity: false,
                ..everything.clone()
            },
            vec![11],
            "give the gateway an identity provider",
        ),
    ];
    for (caps, lines, phrase) in cases {
        let err = caps
            .check(s.requirements())
            .expect_err("an unmet requirement is refused");
        let got: Vec<usize> = err.diagnostics.iter().map(|d| d.line).collect();
        assert_eq!(got, lines, "{caps:?}");
        assert!(
            err.to_string().contains(phrase),
            "{caps:?}: {err} lacks {phrase}"
        );
    }
}

#[test]
fn a_policy_without_needs_passes_everywhere() {
    let s = snapshot(
        "version: 1\nnetwork_policies:\n  open:\n    endpoints:\n      - { host: docs.example.com, port: 443 }\n",
    );
    assert!(s.requirements().is_empty());
    let bare = Capabilities {
        processors: Vec::new(),
        ..Capabilities::new(RuntimeMode::Library)
    };
    assert!(bare.check(s.requirements()).is_ok());
}

#[test]
fn capability_names_describe_the_mode() {
    let caps = Capabilities {
        process_identity: true,
        middleware: vec!["sluice/regex".into(), "acme/dlp".into()],
        ..Capabilities::new(RuntimeMode::Serve)
    };
    assert_eq!(
        caps.names(),
        vec![
            "process-identity",
            "processors:redis,postgres",
            "middleware:sluice/regex,acme/dlp"
        ]
    );
}
