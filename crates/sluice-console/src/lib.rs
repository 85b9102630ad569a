//! The operator console (design §6.5): a small web page served by sluice
//! for the people who decide what agents may reach.
//!
//! Access: the token printed at start (or read from a file) opens a
//! session (an `HttpOnly`, `SameSite=Strict` cookie); every state change
//! also needs the session's CSRF token and, when the browser sends one,
//! this console's own `Origin`. Everything the page shows is inserted as
//! text; the policy is shown with its secret sources redacted.
#![forbid(unsafe_code)]

mod api;
mod auth;
mod events;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use sluice_proxy::proposals::ProposalService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

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
    let token = auth::load_token(config.token_file.as_deref())?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| ConsoleError::Start(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ConsoleError::Start(format!("no local address: {e}")))?;
    let url = if config.token_file.is_some() {
        format!("http://{addr}/")
    } else {
        format!("http://{addr}/?token={token}")
    };
    let state = Arc::new(server::State {
        service,
        token,
        sessions: Arc::new(auth::Sessions::default()),
        addr,
        // Cookies are not kept apart by port: two consoles on one host
        // (two gateways) must not overwrite each other's session.
        cookie_name: format!("sluice_console_{}", addr.port()),
        streams: Arc::new(Semaphore::new(server::MAX_STREAMS)),
    });
    tokio::spawn(server::serve(listener, state));
    Ok(Console { addr, url })
}
