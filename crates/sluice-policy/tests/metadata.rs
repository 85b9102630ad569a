//! `providers.<key>.metadata` (`gce` | `aws`) and its `metadata_*` values:
//! table-driven valid and invalid policies, with FILE:LINE:COL checks.

use sluice_policy::{load_str_with, Loaded, MemorySecrets, Metadata, MetadataKind};

const GCP_TOKEN: &str = "ya29.REAL_gcp_SECRET_token";
const AWS_KEY: &str = "AKIAREALSECRETKEY";
const AWS_SECRET: &str = "aws_REAL_secret_access_SECRET";

fn secrets() -> MemorySecrets {
    MemorySecrets::new()
        .with_env("GCP_TOKEN", GCP_TOKEN)
        .with_env("AWS_KEY", AWS_KEY)
        .with_env("AWS_SECRET", AWS_SECRET)
}

/// A policy with one network endpoint per provider host; `providers` is the
/// YAML of the `providers:` section (indented by two spaces), starting at
/// line 13.
fn policy(providers: &str) -> String {
    format!(
        "version: 1
network_policies:
  cloud:
    endpoints:
      - host: storage.googleapis.com
        port: 443
        protocol: rest
        access: full
      - {{ host: \"*.s3.amazonaws.com\", port: 443, protocol: rest, access: full }}
# padding
    binaries:
      - path: /usr/bin/curl
providers:
{providers}"
    )
}

fn load(providers: &str) -> Result<Loaded, sluice_policy::LoadError> {
    load_str_with(&policy(providers), "m.yaml", 1, &secrets())
}

const GCE: &str = "  gcp:
    metadata: gce
    credentials:
      GCP_ADC_ACCESS_TOKEN: { env: GCP_TOKEN }
    endpoints: [ { host: storage.googleapis.com, port: 443 } ]
";

const AWS: &str = "  aws:
    metadata: aws
    credentials:
      AWS_ACCESS_KEY_ID: { env: AWS_KEY }
      AWS_SECRET_ACCESS_KEY: { env: AWS_SECRET }
    endpoints: [ { host: \"*.s3.amazonaws.com\", port: 443 } ]
";

#[test]
fn valid_metadata_providers() {
    let gce_full = GCE.replace(
        "    metadata: gce\n",
        "    metadata: gce\n    metadata_email: agent@proj.iam.gserviceaccount.com\n    metadata_project_id: proj-123\n",
    );
    let aws_full = AWS.replace(
        "    metadata: aws\n",
        "    metadata: aws\n    metadata_role: agent-role\n    metadata_region: eu-west-1\n",
    );
    let cases: Vec<(String, Vec<Metadata>)> = vec![
        (
            GCE.to_owned(),
            vec![Metadata::Gce {
                email: "sandbox@sluice.invalid".into(),
                project_id: None,
            }],
        ),
        (
            AWS.to_owned(),
            vec![Metadata::Aws {
                role: "sluice".into(),
                region: None,
            }],
        ),
        (
            format!("{aws_full}{gce_full}"),
            vec![
                Metadata::Aws {
                    role: "agent-role".into(),
                    region: Some("eu-west-1".into()),
                },
                Metadata::Gce {
                    email: "agent@proj.iam.gserviceaccount.com".into(),
                    project_id: Some("proj-123".into()),
                },
            ],
        ),
        (
            AWS.replace(
                "      AWS_SECRET_ACCESS_KEY",
                "      AWS_SESSION_TOKEN: { env: AWS_KEY }\n      AWS_SECRET_ACCESS_KEY",
            ),
            vec![Metadata::Aws {
                role: "sluice".into(),
                region: None,
            }],
        ),
    ];
    for (providers, want) in cases {
        let l = match load(&providers) {
            Ok(l) => l,
            Err(e) => panic!("{providers}\n{e}"),
        };
        let got: Vec<Metadata> = l
            .snapshot
            .providers()
            .iter()
            .filter_map(|p| p.metadata.clone())
            .collect();
        assert_eq!(got, want, "{providers}");
        for m in &want {
            let (p, found) = l.snapshot.metadata(m.kind()).expect("served");
            assert_eq!(found, m);
            assert_eq!(p.metadata.as_ref(), Some(m));
        }
    }
    let l = load(GCE).expect("loads");
    assert!(l.snapshot.metadata(MetadataKind::Aws).is_none());
    let plain = load(
        "  gh:
    credentials:
      GH: { env: GCP_TOKEN }
    endpoints: [ { host: storage.googleapis.com, port: 443 } ]
",
    )
    .expect("loads");
    assert!(plain.snapshot.metadata(MetadataKind::Gce).is_none());
}

#[test]
fn invalid_metadata_report_location_and_message() {
    let cases: Vec<(String, &str)> = vec![
        (
            GCE.replace("metadata: gce", "metadata: azure"),
            "m.yaml:15:15: unknown metadata `azure`; expected gce or aws",
        ),
        (
            GCE.replace("GCP_ADC_ACCESS_TOKEN", "GCP_TOKEN_X"),
            "m.yaml:15:15: `metadata: gce` requires credential `GCP_ADC_ACCESS_TOKEN` in provider `gcp`",
        ),
        (
            AWS.replace("      AWS_SECRET_ACCESS_KEY: { env: AWS_SECRET }\n", ""),
            "m.yaml:15:15: `metadata: aws` requires credential `AWS_SECRET_ACCESS_KEY` in provider `aws`",
        ),
        (
            AWS.replace("AWS_ACCESS_KEY_ID", "AWS_KEY_ID"),
            "m.yaml:15:15: `metadata: aws` requires credential `AWS_ACCESS_KEY_ID` in provider `aws`",
        ),
        (
            GCE.replace("    metadata: gce\n", "    metadata: gce\n    metadata_role: admin\n"),
            "m.yaml:16:5: `metadata_role` requires `metadata: aws`",
        ),
        (
            AWS.replace("    metadata: aws\n", "    metadata: aws\n    metadata_email: a@b\n"),
            "m.yaml:16:5: `metadata_email` requires `metadata: gce`",
        ),
        (
            GCE.replace("    metadata: gce\n", "    metadata_project_id: p\n"),
            "m.yaml:15:5: `metadata_project_id` requires `metadata: gce`",
        ),
        (
            GCE.replace("    metadata: gce\n", "    metadata: gce\n    metadata_email: not-an-email\n"),
            "m.yaml:16:21: invalid metadata_email `not-an-email`",
        ),
        (
            GCE.replace("    metadata: gce\n", "    metadata: gce\n    metadata_project_id: \"a/b\"\n"),
            "m.yaml:16:26: invalid metadata_project_id `a/b`",
        ),
        (
            AWS.replace("    metadata: aws\n", "    metadata: aws\n    metadata_role: \"a/../b\"\n"),
            "m.yaml:16:20: invalid metadata_role `a/../b`",
        ),
        (
            AWS.replace("    metadata: aws\n", "    metadata: aws\n    metadata_region: EU\n"),
            "m.yaml:16:22: invalid metadata_region `EU`",
        ),
        (
            GCE.replace("metadata: gce", "metadata: [gce]"),
            "m.yaml:15:15: providers.gcp.metadata: invalid type",
        ),
    ];
    let mut failures = Vec::new();
    for (providers, want) in cases {
        match load(&providers) {
            Ok(_) => failures.push(format!("loaded but should fail:\n{providers}")),
            Err(e) => {
                let text = e.to_string();
                if !text.contains(want) {
                    failures.push(format!("want `{want}`, got:\n{text}\n{providers}"));
                }
                if e.diagnostics.len() != 1 {
                    failures.push(format!("want exactly one error, got:\n{text}"));
                }
                for s in [GCP_TOKEN, AWS_KEY, AWS_SECRET] {
                    assert!(!text.contains(s), "error leaks a secret: {text}");
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Two providers of one kind: credential names are unique across providers, so
/// the second needs differently named credentials and fails on both counts.
#[test]
fn at_most_one_provider_per_kind() {
    let second = "  gcp2:
    metadata: gce
    credentials:
      OTHER: { env: GCP_TOKEN }
    endpoints: [ { host: storage.googleapis.com, port: 443 } ]
";
    let e = load(&format!("{GCE}{second}")).expect_err("fails");
    let text = e.to_string();
    assert!(
        text.contains("m.yaml:20:15: `metadata: gce` is already served for provider `gcp`; at most one provider per kind"),
        "{text}"
    );
}
