//! `sluice ca init [--export DIR]|show [--bundle]`

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use sluice_proxy::relay::tls::{write_trust_files, SandboxCa, CA_CERT_FILE};

use crate::cli::{default_state_dir, CaAction, CaArgs};

pub(crate) fn run(args: &CaArgs) -> anyhow::Result<ExitCode> {
    let dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    let ca = SandboxCa::load_or_create(&dir)
        .with_context(|| format!("sandbox CA in {}", dir.display()))?;
    match &args.action {
        CaAction::Init { export } => {
            println!("{}", dir.join(CA_CERT_FILE).display());
            if let Some(out) = export {
                export_trust(&ca, out)?;
            }
        }
        CaAction::Show { bundle: false } => print!("{}", ca.cert_pem()),
        CaAction::Show { bundle: true } => {
            print!("{}", ca.bundle_pem().context("building the CA bundle")?)
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The public trust files of the CA in `out` (created 0755, files 0644): what a
/// workload outside `sluice run` (a Kubernetes pod's) mounts read-only. The key
/// never leaves the state directory.
fn export_trust(ca: &SandboxCa, out: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(out)
        .with_context(|| format!("creating {}", out.display()))?;
    let bundle = ca.bundle_pem().context("building the CA bundle")?;
    if bundle.len() == ca.cert_pem().len() {
        eprintln!(
            "sluice: warning: no system trust bundle here; {} holds only the sandbox CA \
             (install ca-certificates in sluice's image)",
            out.join("ca-bundle.pem").display()
        );
    }
    let files = write_trust_files(out, &bundle)
        .with_context(|| format!("writing trust files to {}", out.display()))?;
    let cert = out.join(CA_CERT_FILE);
    std::fs::write(&cert, ca.cert_pem()).with_context(|| format!("writing {}", cert.display()))?;
    std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("chmod {}", cert.display()))?;
    println!("{}", cert.display());
    println!("{}", files.bundle.display());
    println!("{}", files.java_trust_store.display());
    Ok(())
}
