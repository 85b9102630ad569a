//! The operator console (design §6.5): a small web page served by sluice
//! for the people who decide what agents may reach.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use sluice_proxy::proposals::ProposalService;

/// How the console is started (`--console ADDR`, `--console-token-file FILE`).
#[derive(Clone, Debug)]
pub struct ConsoleConfig {
    pub listen: SocketAddr,
    /// A file holding the access token; `None`: a random token is made.
    pub token_file: Option<PathBuf>,
}

/// A running console.
#[derive(Clone, Debug)]
pub struct Console {
    pub addr: SocketAddr,
    /// What to print: `http://ADDR/?token=TOKEN`, or `http://ADDR/` when the
    /// token came from a file.
    pub url: String,
}

/// Why the console did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsoleError {
    #[error("console: {0}")]
    Start(String),
}

/// Starts the console on the current tokio runtime.
///
/// # Errors
/// [`ConsoleError`] when it cannot listen or read its token.
pub async fn start(
    config: ConsoleConfig,
    service: Arc<ProposalService>,
) -> Result<Console, ConsoleError> {
    let _ = service;
    Err(ConsoleError::Start(format!(
        "the console on {} is being built (issue 19)",
        config.listen
    )))
}
