//! Python clients (inline scripts or files in `py/`) run to completion, and
//! where the server and client scripts live.

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The interpreter the test process itself runs clients and servers with
/// (`scripts/test` installs `requests`, `mcp` and `websockets` for it).
pub const PYTHON3: &str = "python3";

/// A script in this crate's `py/` directory (test servers and clients),
/// located through this crate's own manifest dir, whoever uses it.
pub fn py_script(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("py").join(name);
    assert!(path.is_file(), "no test script {}", path.display());
    path
}

/// A Python with `requests`, `httpx`, `websockets` and `redis` that an unprivileged
/// user can execute, for clients inside `sluice run` (`$SLUICE_E2E_PYTHON`;
/// `scripts/test` makes the default: a venv of the system interpreter).
pub fn sandbox_python() -> String {
    let py = std::env::var("SLUICE_E2E_PYTHON")
        .unwrap_or_else(|_| "/opt/sluice-e2e/venv/bin/python".to_owned());
    assert!(
        Path::new(&py).exists(),
        "{py} is missing: scripts/test creates it (venv with requests, httpx, websockets, redis)"
    );
    py
}

/// One Python client run: `python3 -c SOURCE ARGS...` or `python3 FILE ARGS...`.
///
/// `NO_PROXY`/`no_proxy` are removed from its environment, so a client
/// given a proxy uses it for every address, loopback included.
#[derive(Debug)]
pub struct Python {
    cmd: Command,
    what: String,
}

impl Python {
    /// An inline script (`python3 -c SOURCE`); `sys.argv[1:]` are the [`Self::arg`]s.
    pub fn inline(source: &str) -> Self {
        let mut cmd = Self::base();
        cmd.arg("-c").arg(source);
        let first = source.trim().lines().next().unwrap_or_default();
        Self {
            cmd,
            what: format!("inline script ({first}...)"),
        }
    }

    /// A script from this crate's `py/` directory (see [`py_script`]).
    pub fn file(name: &str) -> Self {
        let mut cmd = Self::base();
        cmd.arg(py_script(name));
        Self {
            cmd,
            what: name.to_owned(),
        }
    }

    fn base() -> Command {
        let mut cmd = Command::new(PYTHON3);
        cmd.env_remove("NO_PROXY").env_remove("no_proxy");
        cmd
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn envs<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.cmd.envs(vars);
        self
    }

    /// Runs it to the end, whatever its exit status (stdin is empty).
    pub fn output(mut self) -> Output {
        self.cmd
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {PYTHON3} ({}): {e}", self.what))
    }

    /// Runs it to the end with `input` on stdin, whatever its exit status.
    pub fn output_with_stdin(mut self, input: &[u8]) -> Output {
        let mut child = self
            .cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {PYTHON3} ({}): {e}", self.what));
        let mut stdin = child.stdin.take().expect("stdin");
        // Written from a thread: a client that answers while it reads
        // must not block on a full stdout pipe nobody drains.
        let input = input.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().expect("wait for python");
        let written = writer.join().expect("stdin writer");
        assert!(
            written.is_ok() || !out.status.success(),
            "python {} exited 0 without reading its input: {written:?}",
            self.what
        );
        out
    }

    /// Runs it to the end and returns its stdout; panics (with both
    /// outputs) unless it exits 0.
    #[track_caller]
    pub fn stdout(self) -> String {
        let what = self.what.clone();
        let out = self.output();
        assert!(
            out.status.success(),
            "python {what} failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// [`Self::stdout`], as lines.
    #[track_caller]
    pub fn lines(self) -> Vec<String> {
        self.stdout().lines().map(str::to_owned).collect()
    }

    /// Starts it with stdin and stdout piped (stderr inherited), for a
    /// conversation; the caller waits for it.
    pub fn spawn(mut self) -> Child {
        self.cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PYTHON3} ({}): {e}", self.what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_script_gets_its_arguments_and_environment() {
        let lines =
            Python::inline("import os, sys\nprint(sys.argv[1:])\nprint(os.environ.get('X'))")
                .args(["a", "b c"])
                .env("X", "y")
                .lines();
        assert_eq!(lines, ["['a', 'b c']", "y"]);
    }

    /// Run again as a child whose environment has both spellings set: the
    /// client started from there must see neither.
    #[test]
    fn clients_never_inherit_no_proxy() {
        const INNER: &str = "SLUICE_TEST_SUPPORT_INNER";
        if std::env::var_os(INNER).is_some() {
            let got = Python::inline(
                "import os; print(os.environ.get('NO_PROXY'), os.environ.get('no_proxy'))",
            )
            .stdout();
            assert_eq!(got.trim(), "None None");
            return;
        }
        let out = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "python::tests::clients_never_inherit_no_proxy"])
            .env(INNER, "1")
            .env("NO_PROXY", "*")
            .env("no_proxy", "*")
            .output()
            .expect("run the test binary");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("1 passed"),
            "the inner run ran the test: {text}"
        );
    }

    #[test]
    fn a_failing_script_panics_with_its_stderr() {
        let err =
            std::panic::catch_unwind(|| Python::inline("import sys; sys.exit('boom')").stdout())
                .expect_err("exit 1");
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("boom"), "{msg}");
    }

    #[test]
    fn scripts_are_found_from_any_crate() {
        for name in ["upstream.py", "recorder.py", "tunnel_client.py"] {
            assert!(py_script(name).is_file());
        }
    }
}
