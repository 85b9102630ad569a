//! The Kubernetes deployment files (`deploy/`) stay valid: `deploy/validate`
//! checks every manifest against the Kubernetes schemas offline, the policies
//! they carry with `sluice check`, and the Helm chart (Chart.yaml, values
//! against values.schema.json, `helm lint` by the Helm library).

use std::path::Path;
use std::process::Command;

use sluice_test_support::skip_or_fail;

#[test]
fn manifests_and_chart_validate_offline() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("python3")
        .arg(root.join("deploy/validate"))
        .env("SLUICE_BIN", env!("CARGO_BIN_EXE_sluice"))
        .output()
        .expect("run python3 deploy/validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => assert!(text.contains("all valid"), "{text}"),
        Some(77) => skip_or_fail(&format!("deploy/validate lacks a prerequisite:\n{text}")),
        _ => panic!("deploy/validate found problems:\n{text}"),
    }
}
