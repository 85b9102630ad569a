//! `sluice-test-middleware`: the test supervisor middleware service as a
//! process (see `sluice_test_support::middleware`). Prints `ready ADDR` as
//! its first stdout line once it listens.
//!
//! Flags: `--listen ADDR` (default `127.0.0.1:0`), `--record FILE`,
//! `--http-only`, `--binding OP:PHASE:MAX[:TIMEOUT]` (repeatable),
//! `--describe-delay-ms N`, `--tls-cert FILE --tls-key FILE`.

use std::io::Write as _;

use sluice_test_support::middleware::{serve_test_middleware, TestMiddlewareOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (opts, listen) = match TestMiddlewareOptions::from_args(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("sluice-test-middleware: {e}");
            std::process::exit(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sluice-test-middleware: bind {listen}: {e}");
            std::process::exit(1);
        }
    };
    let addr = listener.local_addr().expect("bound address");
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready {addr}");
    let _ = out.flush();
    if let Err(e) = serve_test_middleware(listener, opts).await {
        eprintln!("sluice-test-middleware: {e}");
        std::process::exit(1);
    }
}
