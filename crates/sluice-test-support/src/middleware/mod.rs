//! A test supervisor middleware service (`openshell.middleware.v1.SupervisorMiddleware`,
//! generated from the same `.proto` as sluice-proxy) whose answers are chosen
//! by the policy `config` of each call, so a test picks a behaviour per
//! middleware entry without restarting anything.
//!
//! Config keys (HTTP `EvaluateHttpRequest` and WebSocket `message`):
//!
//! | `behavior` | answer |
//! |---|---|
//! | `allow` (or absent) | ALLOW, unchanged |
//! | `deny` | DENY with `reason_code` (config, default `test_denied`) |
//! | `mutate_header` | ALLOW + write `x-openshell-middleware-test: 1` (OVERWRITE); WebSocket: ALLOW |
//! | `replace_body` | ALLOW, body (WebSocket: text) := config `body` |
//! | `sleep` | wait config `ms`, then ALLOW |
//! | `error` | gRPC status UNAVAILABLE |
//! | `bad_result` | decision UNSPECIFIED |
//! | `redact` | every config `pattern` in the body / text becomes `[REDACTED]` |
//! | `deny_if` | DENY (`reason_code`) when the body / text contains config `pattern` |
//! | `wrong_sequence` | WebSocket only: a result whose `sequence` is the input's + 1 |
//!
//! WebSocket preflight: config `preflight` = `inspect` (default) | `skip` |
//! `deny` | `unspecified`. `ValidateConfig` rejects `reject: true` (reason
//! `rejected by test server`) and an unknown `behavior`.
//!
//! Every call is appended to the `record` file as one JSON line: the RPC,
//! `middleware_name`, target host/path, header *names* and payload length;
//! never payload content or header values, so a test can assert what the
//! service saw (no credential, no `authorization` header).

mod server;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use server::serve_test_middleware;

/// The generated wire types and server trait (package `openshell.middleware.v1`).
#[allow(
    missing_docs,
    unreachable_pub,
    unused_qualifications,
    clippy::all,
    clippy::pedantic,
    clippy::use_self,
    clippy::manual_let_else
)]
pub mod proto {
    tonic::include_proto!("openshell.middleware.v1");
}

/// The environment variable naming the `sluice-test-middleware` binary;
/// without it, the binary is looked up next to the running test executable
/// (`target/<profile>/`).
pub const TEST_MIDDLEWARE_BIN_VAR: &str = "SLUICE_TEST_MIDDLEWARE_BIN";

/// The payload limit the test service advertises by default (1 MiB).
pub const DEFAULT_MAX_PAYLOAD: u64 = 1024 * 1024;

/// How the test service describes itself and where it records.
#[derive(Clone, Debug, Default)]
pub struct TestMiddlewareOptions {
    /// The JSON-lines file every call is appended to.
    pub record: Option<PathBuf>,
    /// Describe advertises only `HTTP_REQUEST/PRE_CREDENTIALS`.
    pub http_only: bool,
    /// Bindings to advertise instead of the defaults (to produce bad
    /// manifests: duplicates, `PRE_RETURN`, no payload limit, ...).
    pub bindings: Vec<TestBinding>,
    /// Delay before answering `Describe`.
    pub describe_delay: Option<Duration>,
    /// Serve TLS with this certificate chain and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// One advertised binding (raw enum numbers, so invalid ones can be sent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestBinding {
    pub operation: i32,
    pub phase: i32,
    pub max_payload_bytes: u64,
    pub timeout: String,
}

impl TestBinding {
    /// `OP:PHASE:MAX[:TIMEOUT]`: OP `http_request` | `websocket_message` |
    /// `http_response` | `unspecified` | a number; PHASE `pre_credentials` |
    /// `pre_return` | `unspecified` | a number.
    ///
    /// # Errors
    /// A malformed spec.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut parts = spec.splitn(4, ':');
        let (Some(op), Some(phase), Some(max)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("binding `{spec}`: expected OP:PHASE:MAX[:TIMEOUT]"));
        };
        let operation = match op {
            "http_request" => 1,
            "websocket_message" => 2,
            "http_response" => 3,
            "unspecified" => 0,
            n => n
                .parse()
                .map_err(|_| format!("binding `{spec}`: unknown operation `{op}`"))?,
        };
        let phase = match phase {
            "pre_credentials" => 1,
            "pre_return" => 2,
            "unspecified" => 0,
            n => n
                .parse()
                .map_err(|_| format!("binding `{spec}`: unknown phase `{phase}`"))?,
        };
        let max_payload_bytes = max
            .parse()
            .map_err(|_| format!("binding `{spec}`: bad max_payload_bytes `{max}`"))?;
        Ok(Self {
            operation,
            phase,
            max_payload_bytes,
            timeout: parts.next().unwrap_or_default().to_owned(),
        })
    }
}

impl TestMiddlewareOptions {
    /// Parses the binary's flags: `--listen ADDR` (default `127.0.0.1:0`),
    /// `--record FILE`, `--http-only`, `--binding OP:PHASE:MAX[:TIMEOUT]`
    /// (repeatable; replaces the default bindings), `--describe-delay-ms N`,
    /// `--tls-cert FILE --tls-key FILE`.
    ///
    /// # Errors
    /// An unknown flag or a bad value.
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<(Self, SocketAddr), String> {
        let mut opts = Self::default();
        let mut listen: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
        let (mut cert, mut key) = (None, None);
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--listen" => {
                    let v = value()?;
                    listen = v.parse().map_err(|e| format!("--listen {v}: {e}"))?;
                }
                "--record" => opts.record = Some(PathBuf::from(value()?)),
                "--http-only" => opts.http_only = true,
                "--binding" => opts.bindings.push(TestBinding::parse(&value()?)?),
                "--describe-delay-ms" => {
                    let v = value()?;
                    let ms = v
                        .parse()
                        .map_err(|e| format!("--describe-delay-ms {v}: {e}"))?;
                    opts.describe_delay = Some(Duration::from_millis(ms));
                }
                "--tls-cert" => cert = Some(PathBuf::from(value()?)),
                "--tls-key" => key = Some(PathBuf::from(value()?)),
                other => return Err(format!("unknown flag `{other}`")),
            }
        }
        opts.tls = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err("--tls-cert and --tls-key go together".into()),
        };
        Ok((opts, listen))
    }

    /// What `Describe` advertises.
    pub(crate) fn advertised(&self) -> Vec<TestBinding> {
        if !self.bindings.is_empty() {
            return self.bindings.clone();
        }
        let mut out = vec![TestBinding {
            operation: 1,
            phase: 1,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD,
            timeout: String::new(),
        }];
        if !self.http_only {
            out.push(TestBinding {
                operation: 2,
                ..out[0].clone()
            });
        }
        out
    }
}

/// The test service served in this process (on the current tokio runtime)
/// until [`stop`](Self::stop)ped or dropped.
#[derive(Debug)]
pub struct InProcessMiddleware {
    /// Where it listens (`127.0.0.1:PORT`).
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl InProcessMiddleware {
    /// Stops accepting, closes every connection once its calls are done,
    /// and returns when the service is gone.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for InProcessMiddleware {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts the test service on `127.0.0.1:0` in this process.
///
/// # Panics
/// When it cannot bind.
pub async fn spawn_test_middleware(opts: TestMiddlewareOptions) -> InProcessMiddleware {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the test middleware");
    let addr = listener.local_addr().expect("test middleware address");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = rx.await;
        };
        if let Err(e) = server::serve_until(listener, opts, shutdown).await {
            eprintln!("test middleware: {e}");
        }
    });
    InProcessMiddleware {
        addr,
        shutdown: Some(tx),
        task: Some(task),
    }
}

/// The `sluice-test-middleware` process, killed on drop.
#[derive(Debug)]
pub struct TestMiddlewareChild(Child);

impl TestMiddlewareChild {
    /// The process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for TestMiddlewareChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `sluice-test-middleware` binary: `$SLUICE_TEST_MIDDLEWARE_BIN`, or
/// the one cargo built next to the running test executable.
///
/// # Panics
/// When neither exists (build it with `cargo build -p sluice-test-support`;
/// `cargo test --workspace` builds it for this crate's own tests).
pub fn test_middleware_bin() -> PathBuf {
    if let Some(p) = std::env::var_os(TEST_MIDDLEWARE_BIN_VAR) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/sluice-test-middleware
    let candidates = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("sluice-test-middleware"))
        .collect::<Vec<_>>();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no sluice-test-middleware binary near {} (build it: cargo build -p sluice-test-support --bin sluice-test-middleware, or set {TEST_MIDDLEWARE_BIN_VAR})",
                exe.display()
            )
        })
}

/// Runs `sluice-test-middleware --record RECORD EXTRA_ARGS...` and waits
/// for its `ready ADDR` line.
///
/// # Panics
/// When the binary is missing, fails to start or does not get ready within
/// [`crate::patience`].
pub fn start_test_middleware(
    record: &Path,
    extra_args: &[&str],
) -> (TestMiddlewareChild, SocketAddr) {
    let bin = test_middleware_bin();
    let mut child = Command::new(&bin)
        .arg("--record")
        .arg(record)
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let guard = TestMiddlewareChild(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(crate::patience())
        .expect("sluice-test-middleware did not print its ready line");
    let addr = line
        .trim()
        .strip_prefix("ready ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("sluice-test-middleware: unexpected first line {line:?}"));
    (guard, addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_specs() {
        let b = TestBinding::parse("websocket_message:pre_return:10:2s").unwrap();
        assert_eq!(
            b,
            TestBinding {
                operation: 2,
                phase: 2,
                max_payload_bytes: 10,
                timeout: "2s".into()
            }
        );
        assert_eq!(TestBinding::parse("7:0:0").unwrap().operation, 7);
        assert!(TestBinding::parse("http_request:pre_credentials").is_err());
        assert!(TestBinding::parse("nope:pre_credentials:1").is_err());
    }

    #[test]
    fn flags() {
        let args = [
            "--http-only",
            "--record",
            "/tmp/r",
            "--listen",
            "127.0.0.1:9",
        ];
        let (o, listen) =
            TestMiddlewareOptions::from_args(args.iter().map(|s| (*s).to_owned())).unwrap();
        assert!(o.http_only);
        assert_eq!(o.advertised().len(), 1);
        assert_eq!(listen.port(), 9);
        assert!(TestMiddlewareOptions::from_args(["--tls-cert".to_owned(), "c".into()]).is_err());
        assert!(TestMiddlewareOptions::from_args(["--bogus".to_owned()]).is_err());
    }
}
