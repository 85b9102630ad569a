//! Secret values and where they come from. A [`Secret`] never prints its
//! value: `Debug` and `Display` both render `[REDACTED]`, and it has no
//! `Serialize` impl. Secrets are read when a policy is loaded (and on every
//! reload) through a [`SecretSource`], so tests never touch the process env.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest accepted secret file, in bytes (before the trailing newline is trimmed).
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// A secret value (credential, client secret, assertion).
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a value.
    #[must_use]
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    /// The real value. Only call this where the value is written upstream.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for Secret {}

/// Where secret values are read from at load time.
pub trait SecretSource {
    /// The value of environment variable `name`, `None` if unset (or not UTF-8).
    fn env(&self, name: &str) -> Option<String>;
    /// The contents of the file at `path`. Implementations may stop reading
    /// after [`MAX_SECRET_BYTES`]` + 1` bytes.
    ///
    /// # Errors
    /// Any I/O error opening or reading the file.
    fn file(&self, path: &Path) -> std::io::Result<Vec<u8>>;
}

/// The real process environment and file system (used by `load_file`/`load_str`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl SecretSource for ProcessEnv {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn file(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        let f = std::fs::File::open(path)?;
        let mut out = Vec::new();
        f.take(MAX_SECRET_BYTES as u64 + 1).read_to_end(&mut out)?;
        Ok(out)
    }
}

/// Stand-in values for every secret source: for offline questions about a
/// policy (`sluice explain`, `sluice test`), where decisions do not depend on
/// secret values and the operator's secrets need not be at hand. Every
/// variable is "set" and every file "readable", to a fixed non-secret text.
#[derive(Clone, Copy, Debug, Default)]
pub struct StandInSecrets;

/// What [`StandInSecrets`] answers.
pub const STAND_IN_SECRET: &str = "sluice-stand-in-secret";

impl SecretSource for StandInSecrets {
    fn env(&self, _name: &str) -> Option<String> {
        Some(STAND_IN_SECRET.to_owned())
    }

    fn file(&self, _path: &Path) -> std::io::Result<Vec<u8>> {
        Ok(STAND_IN_SECRET.as_bytes().to_vec())
    }
}

/// Every secret source a policy load read: the environment variables and
/// files it names, and the values it found. `sluice run` uses this to keep
/// every source (not only provider credentials: token grants and whatever
/// later sections name) out of the sandboxed command's reach.
#[derive(Clone, Debug, Default)]
pub struct SecretSources {
    /// Environment variables named as `{env: NAME}` sources, set or not.
    pub env: BTreeSet<String>,
    /// Files named as `{file: PATH}` sources, as written in the policy.
    pub files: BTreeSet<PathBuf>,
    /// The values read (redacted in `Debug`).
    pub values: Vec<Secret>,
}

/// A [`SecretSource`] that records what it is asked for (see [`SecretSources`]).
pub(crate) struct Recording<'a> {
    inner: &'a dyn SecretSource,
    seen: RefCell<SecretSources>,
}

impl<'a> Recording<'a> {
    pub(crate) fn new(inner: &'a dyn SecretSource) -> Self {
        Self {
            inner,
            seen: RefCell::new(SecretSources::default()),
        }
    }

    pub(crate) fn into_sources(self) -> SecretSources {
        self.seen.into_inner()
    }
}

impl SecretSource for Recording<'_> {
    fn env(&self, name: &str) -> Option<String> {
        let value = self.inner.env(name);
        let mut seen = self.seen.borrow_mut();
        seen.env.insert(name.to_owned());
        if let Some(v) = &value {
            seen.values.push(Secret::new(v.as_str()));
        }
        value
    }

    fn file(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        let bytes = self.inner.file(path);
        let mut seen = self.seen.borrow_mut();
        seen.files.insert(path.to_owned());
        if let Ok(b) = &bytes {
            if let Ok(v) = file_value(b.clone()) {
                seen.values.push(Secret::new(v));
            }
        }
        bytes
    }
}

/// An in-memory [`SecretSource`] for tests: fixed env vars and files.
#[derive(Clone, Debug, Default)]
pub struct MemorySecrets {
    env: BTreeMap<String, String>,
    files: BTreeMap<PathBuf, Vec<u8>>,
}

impl MemorySecrets {
    /// An empty source: every env var unset, every file missing.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an environment variable.
    #[must_use]
    pub fn with_env(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.to_owned(), value.to_owned());
        self
    }

    /// Adds a file.
    #[must_use]
    pub fn with_file(mut self, path: impl Into<PathBuf>, contents: impl Into<Vec<u8>>) -> Self {
        self.files.insert(path.into(), contents.into());
        self
    }
}

impl SecretSource for MemorySecrets {
    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }

    fn file(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.files.get(path).cloned().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory")
        })
    }
}

/// Checks a secret value read from an env var or file: not empty, no CR,
/// LF or NUL. Returns the problem (never containing the value).
pub(crate) fn check_value(v: &str) -> Result<(), &'static str> {
    if v.is_empty() {
        return Err("is empty");
    }
    if v.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err("contains CR, LF or NUL");
    }
    Ok(())
}

/// Turns raw file bytes into a secret value: size cap, UTF-8, one trailing
/// newline (`\n` or `\r\n`) trimmed, then [`check_value`].
pub(crate) fn file_value(bytes: Vec<u8>) -> Result<String, String> {
    if bytes.len() > MAX_SECRET_BYTES {
        return Err(format!("is larger than {MAX_SECRET_BYTES} bytes"));
    }
    let mut s = String::from_utf8(bytes).map_err(|_| "is not valid UTF-8".to_owned())?;
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    check_value(&s).map_err(str::to_owned)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "[REDACTED] [REDACTED]");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn file_value_table() {
        let cases: &[(&[u8], Result<&str, &str>)] = &[
            (b"abc\n", Ok("abc")),
            (b"abc\r\n", Ok("abc")),
            (b"abc", Ok("abc")),
            (b"abc\n\n", Err("contains CR, LF or NUL")),
            (b"\n", Err("is empty")),
            (b"", Err("is empty")),
            (b"a\0b", Err("contains CR, LF or NUL")),
            (b"a\rb", Err("contains CR, LF or NUL")),
            (b"\xff", Err("is not valid UTF-8")),
        ];
        for (input, want) in cases {
            let got = file_value(input.to_vec());
            assert_eq!(got.as_deref().map_err(String::as_str), *want, "{input:?}");
        }
        assert!(file_value(vec![b'a'; MAX_SECRET_BYTES]).is_ok());
        assert!(file_value(vec![b'a'; MAX_SECRET_BYTES + 1]).is_err());
    }

    #[test]
    fn memory_source() {
        let m = MemorySecrets::new()
            .with_env("A", "1")
            .with_file("/s", b"x".to_vec());
        assert_eq!(m.env("A").as_deref(), Some("1"));
        assert_eq!(m.env("B"), None);
        assert_eq!(m.file(Path::new("/s")).ok(), Some(b"x".to_vec()));
        assert!(m.file(Path::new("/t")).is_err());
    }
}
