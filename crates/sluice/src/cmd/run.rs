//! `sluice run -- CMD`: (being written)

use std::process::ExitCode;

use crate::cli::RunArgs;

pub(crate) fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let _ = args;
    anyhow::bail!("sluice run is not available in this build yet")
}
