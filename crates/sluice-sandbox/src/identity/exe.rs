//! Per-process facts: executable path and hash, parent pid, command line.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

use super::error::IdentityError;
use super::parse::{parse_ppid, parse_stat_ppid, strip_deleted_suffix, to_hex, DELETED_SUFFIX};

/// Binaries larger than this are not hashed (fail closed).
const MAX_EXE_BYTES: u64 = 4 << 30;
/// Cache entries before the cache is cleared.
const CACHE_CAPACITY: usize = 4_096;
/// `/proc/<pid>/status` is a few KiB; cap the read anyway.
const MAX_STATUS_BYTES: u64 = 64 << 10;
/// `/proc/<pid>/stat` is one line of about 300 bytes.
const MAX_STAT_BYTES: u64 = 4 << 10;
/// Command lines are capped by the kernel's ARG_MAX; cap the read anyway.
const MAX_CMDLINE_BYTES: u64 = 1 << 20;
const HASH_CHUNK: usize = 64 << 10;

/// The binary a process is running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExeInfo {
    pub(crate) path: String,
    pub(crate) sha256: String,
}

/// Identity of file contents as far as the kernel reports it without reading them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
}

impl FileKey {
    fn of(meta: &fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }
}

/// Bounded SHA-256 cache keyed by (dev, ino, size, mtime, ctime) of the running binary.
/// Any write to the file changes mtime/ctime, so a modified binary is re-hashed.
/// One hash per binary at a time: lookups that miss on a binary being hashed
/// wait for that hash instead of reading the file again (a burst of new
/// connections from one program would otherwise hash it once per connection).
#[derive(Debug, Default)]
pub(crate) struct HashCache {
    entries: Mutex<HashMap<FileKey, Arc<Mutex<Option<String>>>>>,
}

impl HashCache {
    /// The digest for `key`, computed by `hash` unless known (or being
    /// computed by another thread, whose answer is then taken). A failed
    /// hash is not remembered.
    fn get_or_hash(
        &self,
        key: FileKey,
        hash: impl FnOnce() -> io::Result<String>,
    ) -> io::Result<String> {
        let slot = {
            // A poisoned lock only means another thread panicked mid-insert of a plain map.
            let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            if map.len() >= CACHE_CAPACITY && !map.contains_key(&key) {
                map.clear();
            }
            Arc::clone(map.entry(key).or_default())
        };
        let mut digest = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(d) = digest.as_ref() {
            return Ok(d.clone());
        }
        let d = hash()?;
        *digest = Some(d.clone());
        Ok(d)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

fn pid_path(proc_root: &Path, pid: u32, leaf: &str) -> std::path::PathBuf {
    proc_root.join(pid.to_string()).join(leaf)
}

/// Whether `/proc/<pid>` still exists (used to tell "vanished" from "unreadable").
pub(crate) fn process_exists(proc_root: &Path, pid: u32) -> bool {
    proc_root.join(pid.to_string()).exists()
}

/// Resolves and hashes the executable of `pid` via `/proc/<pid>/exe`.
///
/// The bytes hashed are those of the mapped binary (the magic link opens it even when it
/// was unlinked or replaced on disk), not of whatever now sits at the displayed path.
pub(crate) fn read_exe(proc_root: &Path, pid: u32, cache: &HashCache) -> io::Result<ExeInfo> {
    let link = pid_path(proc_root, pid, "exe");
    let target = fs::read_link(&link)?;
    let target = target
        .into_os_string()
        .into_string()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "exe path is not valid UTF-8"))?;
    if target.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "empty exe path"));
    }
    let file = File::open(&link)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "exe is not a regular file",
        ));
    }
    let key = FileKey::of(&meta);
    let literal_is_target = target.ends_with(DELETED_SUFFIX)
        && fs::metadata(&target)
            .map(|m| m.dev() == meta.dev() && m.ino() == meta.ino())
            .unwrap_or(false);
    let path = strip_deleted_suffix(&target, literal_is_target).to_owned();

    let sha256 = cache.get_or_hash(key, || hash_file(file, meta.size()))?;
    Ok(ExeInfo { path, sha256 })
}

/// Streams `file` through SHA-256, refusing files that change size or metadata meanwhile.
fn hash_file(mut file: File, expected_len: u64) -> io::Result<String> {
    if expected_len > MAX_EXE_BYTES {
        return Err(io::Error::other("binary too large to hash"));
    }
    let before = FileKey::of(&file.metadata()?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_CHUNK];
    let mut total: u64 = 0;
    // Bounded: each iteration consumes >= 1 byte and `total` is capped below.
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total = total.saturating_add(n as u64);
        if total > expected_len || total > MAX_EXE_BYTES {
            return Err(io::Error::other("binary grew while hashing"));
        }
        hasher.update(buf.get(..n).unwrap_or_default());
    }
    if total != expected_len || FileKey::of(&file.metadata()?) != before {
        return Err(io::Error::other("binary changed while hashing"));
    }
    Ok(to_hex(&hasher.finalize()))
}

/// Reads the parent pid of `pid` from `/proc/<pid>/stat` (the kernel renders
/// it far more cheaply than `status`, and ancestry walks read it per
/// ancestor on every new connection); `status`'s `PPid:` when `stat` does
/// not parse.
pub(crate) fn read_ppid(proc_root: &Path, pid: u32) -> Result<u32, IdentityError> {
    let stat = pid_path(proc_root, pid, "stat");
    if let Some(ppid) = read_capped(&stat, MAX_STAT_BYTES)
        .ok()
        .and_then(|text| parse_stat_ppid(&text))
    {
        return Ok(ppid);
    }
    let path = pid_path(proc_root, pid, "status");
    let text = read_capped(&path, MAX_STATUS_BYTES).map_err(|source| IdentityError::ReadProc {
        path: path.clone(),
        source,
    })?;
    parse_ppid(&text).ok_or(IdentityError::Malformed { path, line: 0 })
}

/// The pid of `pid` inside its own PID namespace (the last `NSpid:` field), when
/// the process lives in a nested one (e.g. under `sluice run`); evidence only.
pub(crate) fn read_ns_pid(proc_root: &Path, pid: u32) -> Option<u32> {
    let text = read_capped(&pid_path(proc_root, pid, "status"), MAX_STATUS_BYTES).ok()?;
    parse_ns_pid(&text)
}

fn parse_ns_pid(status: &str) -> Option<u32> {
    let fields: Vec<&str> = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .collect();
    match fields.as_slice() {
        [_, .., last] => last.parse().ok(),
        _ => None,
    }
}

/// Raw `/proc/<pid>/cmdline`; empty if unreadable (it is evidence only).
pub(crate) fn read_cmdline(proc_root: &Path, pid: u32) -> Vec<u8> {
    let path = pid_path(proc_root, pid, "cmdline");
    let mut raw = Vec::new();
    let res = File::open(&path).and_then(|f| f.take(MAX_CMDLINE_BYTES).read_to_end(&mut raw));
    if let Err(err) = res {
        tracing::debug!(pid, %err, "cmdline unreadable");
        raw.clear();
    }
    raw
}

fn read_capped(path: &Path, cap: u64) -> io::Result<String> {
    let mut text = String::new();
    File::open(path)?.take(cap).read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_pid_only_for_nested_namespaces() {
        assert_eq!(parse_ns_pid("Name:\tsh\nNSpid:\t4242\t7\n"), Some(7));
        assert_eq!(parse_ns_pid("NSpid:\t4242\t99\t3\n"), Some(3));
        assert_eq!(parse_ns_pid("NSpid:\t4242\n"), None, "host namespace");
        assert_eq!(parse_ns_pid("Pid:\t1\n"), None);
        assert_eq!(parse_ns_pid("NSpid:\t4242\tx\n"), None);
    }

    #[test]
    fn own_exe_is_hashed_and_cached() {
        let cache = HashCache::default();
        let pid = std::process::id();
        let first = read_exe(Path::new("/proc"), pid, &cache).expect("own exe");
        let expected = std::env::current_exe()
            .and_then(fs::canonicalize)
            .expect("current exe");
        assert_eq!(Path::new(&first.path), expected);
        let bytes = fs::read(&expected).expect("read own binary");
        assert_eq!(first.sha256, to_hex(&Sha256::digest(&bytes)));
        assert_eq!(cache.len(), 1);
        let second = read_exe(Path::new("/proc"), pid, &cache).expect("own exe again");
        assert_eq!(first, second);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn own_ppid_matches_status() {
        let ppid = read_ppid(Path::new("/proc"), std::process::id()).expect("own ppid");
        assert!(ppid > 0);
    }

    #[test]
    fn missing_process_errors() {
        let cache = HashCache::default();
        let root = Path::new("/nonexistent-proc-root");
        assert!(read_exe(root, 1, &cache).is_err());
        assert!(matches!(
            read_ppid(root, 1),
            Err(IdentityError::ReadProc { .. })
        ));
        assert!(read_cmdline(root, 1).is_empty());
        assert!(!process_exists(root, 1));
    }

    #[test]
    fn cache_is_bounded() {
        let cache = HashCache::default();
        for i in 0..(CACHE_CAPACITY as u64 + 10) {
            let key = FileKey {
                dev: 1,
                ino: i,
                size: 0,
                mtime: 0,
                mtime_nsec: 0,
                ctime: 0,
                ctime_nsec: 0,
            };
            cache.get_or_hash(key, || Ok(String::new())).expect("hash");
        }
        assert!(cache.len() <= CACHE_CAPACITY);
    }

    #[test]
    fn concurrent_misses_hash_a_binary_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let cache = Arc::new(HashCache::default());
        let hashed = Arc::new(AtomicUsize::new(0));
        let key = FileKey {
            dev: 1,
            ino: 2,
            size: 3,
            mtime: 0,
            mtime_nsec: 0,
            ctime: 0,
            ctime_nsec: 0,
        };
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cache, hashed) = (Arc::clone(&cache), Arc::clone(&hashed));
                std::thread::spawn(move || {
                    cache
                        .get_or_hash(key, || {
                            hashed.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            Ok("digest".to_owned())
                        })
                        .expect("hash")
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().expect("thread"), "digest");
        }
        assert_eq!(hashed.load(Ordering::SeqCst), 1);
        // A failure is not remembered.
        let other = FileKey { ino: 9, ..key };
        assert!(cache
            .get_or_hash(other, || Err(io::Error::other("gone")))
            .is_err());
        assert_eq!(
            cache
                .get_or_hash(other, || Ok("later".to_owned()))
                .expect("hash"),
            "later"
        );
    }
}
