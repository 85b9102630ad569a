//! Fixtures shared by sluice's test suites (a dev-dependency only).
//!
//! * [`TempDir`]: a scratch directory removed on drop;
//! * [`Netns`]: a network namespace joined to the host by a veth pair, with
//!   upstream servers (the Python scripts in this crate's `py/`) inside it;
//! * [`test_pki`]: a CA and a leaf for upstream TLS;
//! * [`start_postgres`]: a throwaway PostgreSQL cluster in a namespace;
//! * [`Python`]: a Python client run to completion (inline or from `py/`);
//! * [`middleware`]: a test supervisor middleware gRPC service, in process
//!   ([`middleware::spawn_test_middleware`]) or as the `sluice-test-middleware`
//!   binary ([`middleware::start_test_middleware`]);
//! * [`patience`], [`eventually`], [`recorded`]: waiting for and reading
//!   what an upstream recorded;
//! * [`skip_or_fail`]: the one way a test may decline to run.

pub mod middleware;
mod netns;
mod pki;
mod postgres;
mod python;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use netns::{Netns, PodNetns};
pub use pki::{test_pki, TestPki};
pub use postgres::{postgres_bin, start_postgres, PgServer, PgTls, PG_SUPERUSER_PASSWORD};
pub use python::{py_script, sandbox_python, Python, PYTHON3};

/// Numbers scratch directories and namespaces apart within one process.
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn next_id() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// The environment variable that lets [`skip_or_fail`] skip. `scripts/test`
/// (CI) never sets it: there every test runs its subject or fails.
pub const ALLOW_SKIP_VAR: &str = "SLUICE_ALLOW_SKIP";

/// Whether skipping was explicitly allowed (`SLUICE_ALLOW_SKIP=1`).
pub fn skip_allowed() -> bool {
    std::env::var(ALLOW_SKIP_VAR).is_ok_and(|v| v == "1")
}

/// Call where a test cannot run its subject (a missing tool, no IPv6, ...),
/// then return from the test: it fails here unless `SLUICE_ALLOW_SKIP=1`,
/// and with it prints `skipping: {reason}`. A test that silently passes
/// without testing anything is never an option.
///
/// ```no_run
/// # use std::net::TcpListener;
/// # use sluice_test_support::skip_or_fail;
/// # fn dual_stack_test() {
/// let Ok(listener) = TcpListener::bind("[::]:0") else {
///     return skip_or_fail("cannot bind [::]");
/// };
/// # drop(listener);
/// # }
/// ```
#[track_caller]
pub fn skip_or_fail(reason: &str) {
    if skip_allowed() {
        eprintln!("skipping: {reason}");
        return;
    }
    panic!("cannot run this test: {reason} (set {ALLOW_SKIP_VAR}=1 to skip it instead)");
}

/// Whether this process runs as root (uid 0), as CI does.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// How long to wait for asynchronous effects (`SLUICE_TEST_PATIENCE_MS`,
/// default 10 s).
pub fn patience() -> Duration {
    let ms = std::env::var("SLUICE_TEST_PATIENCE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    Duration::from_millis(ms)
}

/// Retry `cond` every 50 ms until it holds; panics naming `what` when
/// [`patience`] runs out.
#[track_caller]
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience();
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for: {what}");
}

/// The JSON lines in `record` (what an upstream recorded, an audit log);
/// lines that are not JSON (a partial last line) are left out, a missing
/// file is empty.
pub fn recorded(record: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A scratch directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh, empty directory named after `tag`, this process and a counter.
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "sluice-test-{tag}-{}-{}",
            std::process::id(),
            next_id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.0
    }

    /// `name` inside the directory (not created).
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_dirs_are_distinct_and_removed_on_drop() {
        let a = TempDir::new("support");
        let b = TempDir::new("support");
        assert_ne!(a.root(), b.root());
        assert!(a.root().is_dir() && b.root().is_dir());
        std::fs::write(a.path("f"), "x").unwrap();
        let gone = a.root().to_owned();
        drop(a);
        assert!(!gone.exists());
    }

    #[test]
    fn recorded_reads_json_lines_and_skips_the_rest() {
        let dir = TempDir::new("support-rec");
        let f = dir.path("r.jsonl");
        assert!(recorded(&f).is_empty());
        std::fs::write(&f, "{\"a\":1}\nnot json\n{\"a\":2}\n{\"a\":").unwrap();
        let got: Vec<i64> = recorded(&f)
            .iter()
            .map(|v| v["a"].as_i64().unwrap())
            .collect();
        assert_eq!(got, [1, 2]);
    }

    #[test]
    fn skip_or_fail_fails_unless_skipping_is_allowed() {
        let skipped = std::panic::catch_unwind(|| skip_or_fail("the subject is missing")).is_ok();
        assert_eq!(skipped, skip_allowed());
    }

    #[test]
    fn eventually_returns_once_the_condition_holds() {
        let mut n = 0;
        eventually("the third try", || {
            n += 1;
            n == 3
        });
        assert_eq!(n, 3);
    }
}
