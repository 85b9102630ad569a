//! Access to the console: the start token, the sessions it opens (a cookie)
//! and each session's CSRF token.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::ConsoleError;

/// Most sessions kept; the oldest is dropped to make room.
pub(crate) const MAX_SESSIONS: usize = 64;
/// How long a session lasts.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// Shortest token accepted from `--console-token-file`.
pub(crate) const MIN_TOKEN_FILE_CHARS: usize = 16;
/// Largest token file read.
const MAX_TOKEN_FILE: u64 = 4096;

/// `n` random bytes from the OS, as lowercase hex.
pub(crate) fn random_hex(n: usize) -> Result<String, getrandom::Error> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Equality whose time does not depend on where the inputs differ (only
/// on their lengths).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The access token: read from `file` (trimmed, at least 16 characters,
/// one line), or 32 random bytes in hex. The error never quotes the file.
pub(crate) fn load_token(file: Option<&Path>) -> Result<String, ConsoleError> {
    let Some(path) = file else {
        return random_hex(32)
            .map_err(|e| ConsoleError::Start(format!("no randomness for the token: {e}")));
    };
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| ConsoleError::Start(format!("--console-token-file {shown}: {e}")))?;
    if meta.len() > MAX_TOKEN_FILE {
        return Err(ConsoleError::Start(format!(
            "--console-token-file {shown}: larger than {MAX_TOKEN_FILE} bytes"
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConsoleError::Start(format!("--console-token-file {shown}: {e}")))?;
    let token = text.trim();
    if token.chars().count() < MIN_TOKEN_FILE_CHARS {
        return Err(ConsoleError::Start(format!(
            "--console-token-file {shown}: the token must have at least {MIN_TOKEN_FILE_CHARS} characters"
        )));
    }
    if token.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ConsoleError::Start(format!(
            "--console-token-file {shown}: the token must be one word (no spaces or control characters)"
        )));
    }
    Ok(token.to_owned())
}

/// One signed-in browser.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub(crate) csrf: String,
    created: Instant,
}

/// The sessions opened with the token (bounded, expiring).
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    inner: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Opens a session: `(cookie value, csrf token)`.
    pub(crate) fn open(&self) -> Result<(String, String), getrandom::Error> {
        let id = random_hex(32)?;
        let csrf = random_hex(32)?;
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, s| s.created.elapsed() < SESSION_TTL);
        while map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                created: Instant::now(),
            },
        );
        Ok((id, csrf))
    }

    /// The live session with this cookie value.
    pub(crate) fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let found = map
            .iter()
            .find(|(k, _)| ct_eq(k.as_bytes(), id.as_bytes()))
            .map(|(k, s)| (k.clone(), s.clone()));
        let (key, session) = found?;
        if session.created.elapsed() >= SESSION_TTL {
            map.remove(&key);
            return None;
        }
        Some(session)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub(crate) fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_bounded() {
        let s = Sessions::default();
        let (first, _) = s.open().unwrap();
        for _ in 0..MAX_SESSIONS {
            s.open().unwrap();
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.get(&first).is_none(), "the oldest was evicted");
        assert!(s.get("nope").is_none());
    }

    #[test]
    fn token_file_rules() {
        let dir = sluice_test_support::TempDir::new("console-token");
        let short = dir.path("short");
        std::fs::write(&short, "abc\n").unwrap();
        assert!(load_token(Some(&short)).is_err());
        let good = dir.path("good");
        std::fs::write(&good, "  0123456789abcdefXYZ\n").unwrap();
        assert_eq!(load_token(Some(&good)).unwrap(), "0123456789abcdefXYZ");
        let random = load_token(None).unwrap();
        assert_eq!(random.len(), 64);
        assert!(load_token(Some(&dir.path("missing"))).is_err());
    }

    #[test]
    fn cookie_and_ct_eq() {
        assert_eq!(cookie("a=1; b=2", "b"), Some("2"));
        assert_eq!(cookie("a=1; b=2", "c"), None);
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
