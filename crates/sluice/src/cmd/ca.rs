//! `sluice ca init|show [--bundle]`

use std::process::ExitCode;

use anyhow::Context as _;
use sluice_proxy::relay::tls::{SandboxCa, CA_CERT_FILE};

use crate::cli::{default_state_dir, CaAction, CaArgs};

pub(crate) fn run(args: &CaArgs) -> anyhow::Result<ExitCode> {
    let dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    let ca = SandboxCa::load_or_create(&dir)
        .with_context(|| format!("sandbox CA in {}", dir.display()))?;
    match args.action {
        CaAction::Init => println!("{}", dir.join(CA_CERT_FILE).display()),
        CaAction::Show { bundle: false } => print!("{}", ca.cert_pem()),
        CaAction::Show { bundle: true } => {
            print!("{}", ca.bundle_pem().context("building the CA bundle")?)
        }
    }
    Ok(ExitCode::SUCCESS)
}
