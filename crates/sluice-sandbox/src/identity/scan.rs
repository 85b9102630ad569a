//! Finding every process that holds a given socket inode.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::dir::Dir;
use nix::fcntl::{readlinkat, OFlag};
use nix::sys::stat::Mode;

use super::error::IdentityError;
use super::exe::read_ppid;
use super::parse::{parse_pid_list, parse_socket_inode};

/// At most this many processes are examined per lookup (BFS and full scan together).
pub(crate) const MAX_PIDS: usize = 65_536;
/// At most this many descriptors are examined per process.
pub(crate) const MAX_FDS_PER_PROCESS: usize = 65_536;
/// At most this many threads are examined per process when walking `task/*/children`.
const MAX_TASKS_PER_PROCESS: usize = 65_536;
/// Upper bound on directory entries read from the `/proc` root (pids plus other entries).
const MAX_PROC_ENTRIES: usize = MAX_PIDS + 4_096;
/// `children` files are small; cap the read anyway.
const MAX_CHILDREN_BYTES: u64 = 1 << 20;

struct Scan<'a> {
    proc_root: &'a Path,
    inode: u64,
    visited: HashSet<u32>,
    owners: BTreeSet<u32>,
}

impl Scan<'_> {
    /// Marks `pid` visited and checks its descriptors. Returns false if already visited.
    fn visit(&mut self, pid: u32) -> Result<bool, IdentityError> {
        if self.visited.contains(&pid) {
            return Ok(false);
        }
        if self.visited.len() >= MAX_PIDS {
            return Err(IdentityError::ScanLimitExceeded {
                what: "pids".to_owned(),
                limit: MAX_PIDS,
            });
        }
        self.visited.insert(pid);
        if holds_inode(self.proc_root, pid, self.inode)? {
            self.owners.insert(pid);
        }
        Ok(true)
    }
}

/// All pids with an fd pointing at `socket:[inode]`, ascending.
///
/// With an anchor, its descendants are visited first (breadth-first over
/// `task/<tid>/children`); then every process in `proc_root` is scanned, so owners outside
/// the anchor's tree are found too. Processes that vanish or cannot be inspected are
/// skipped. Hitting a scan bound is an error: a truncated scan could hide an owner.
///
/// `skip` is never examined (the proxy itself: see
/// [`ProcfsIdentity::skip_process`](super::ProcfsIdentity::skip_process)).
/// `tree_is_complete`: the anchor is a PID namespace's init, so owners found
/// in its tree are every owner in that namespace and the host-wide scan is
/// skipped ([`ProcfsIdentity::namespace_init`](super::ProcfsIdentity::namespace_init)).
pub(crate) fn find_owners(
    proc_root: &Path,
    inode: u64,
    anchor: Option<u32>,
    skip: Option<u32>,
    tree_is_complete: bool,
) -> Result<Vec<u32>, IdentityError> {
    let mut scan = Scan {
        proc_root,
        inode,
        visited: HashSet::new(),
        owners: BTreeSet::new(),
    };
    if let Some(pid) = skip {
        scan.visited.insert(pid);
    }
    if let Some(anchor) = anchor {
        let mut queue = VecDeque::from([anchor]);
        // Every loop iteration visits a new pid or skips a seen one; `visit` caps new
        // pids at MAX_PIDS, and the queue only receives pids read from bounded files.
        while let Some(pid) = queue.pop_front() {
            if !scan.visit(pid)? {
                continue;
            }
            for child in children_of(proc_root, pid) {
                if !scan.visited.contains(&child) && queue.len() < MAX_PIDS {
                    queue.push_back(child);
                }
            }
        }
        if tree_is_complete && !scan.owners.is_empty() {
            return Ok(scan.owners.into_iter().collect());
        }
    }
    let entries = read_dir(proc_root)?;
    for entry in entries.take(MAX_PROC_ENTRIES) {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(parse_pid_name) else {
            continue;
        };
        scan.visit(pid)?;
    }
    Ok(scan.owners.into_iter().collect())
}

/// The owners of `inode` found from `connector`, the process that called
/// `connect(2)` on it (the connect-time map's answer): `None` when the
/// connector no longer holds the socket (the caller then runs
/// [`find_owners`]).
///
/// The socket can have reached other processes only by fork inheritance
/// (or descriptor passing, not followed here): from the connector, walk up
/// its parents while they still hold the socket (it was created before a
/// fork and connected by the child), stopping at `stop` (the anchor) or PID 1,
/// then visit every descendant of the topmost holder breadth-first. The cost
/// follows that process tree, not the host's process count. `skip` is never
/// examined, as in [`find_owners`].
pub(crate) fn find_owners_from_connector(
    proc_root: &Path,
    inode: u64,
    connector: u32,
    stop: Option<u32>,
    skip: Option<u32>,
) -> Result<Option<Vec<u32>>, IdentityError> {
    if Some(connector) == skip || !holds_inode(proc_root, connector, inode)? {
        return Ok(None);
    }
    // The connector and the parents above it seen holding the socket: not
    // read again below, only their children are.
    let mut chain = vec![connector];
    let mut top = connector;
    for _ in 0..super::MAX_ANCESTOR_DEPTH {
        if Some(top) == stop || top <= 1 {
            break;
        }
        let Ok(parent) = read_ppid(proc_root, top) else {
            break;
        };
        if parent <= 1
            || Some(parent) == skip
            || chain.contains(&parent)
            || !holds_inode(proc_root, parent, inode)?
        {
            break;
        }
        chain.push(parent);
        top = parent;
    }
    let mut scan = Scan {
        proc_root,
        inode,
        visited: chain.iter().copied().collect(),
        owners: chain.iter().copied().collect(),
    };
    if let Some(pid) = skip {
        scan.visited.insert(pid);
    }
    let mut expanded = HashSet::new();
    let mut queue = VecDeque::from([top]);
    while let Some(pid) = queue.pop_front() {
        let fresh = if chain.contains(&pid) {
            expanded.insert(pid)
        } else {
            scan.visit(pid)?
        };
        if !fresh {
            continue;
        }
        for child in children_of(proc_root, pid) {
            let pending = !scan.visited.contains(&child) || chain.contains(&child);
            if pending && queue.len() < MAX_PIDS {
                queue.push_back(child);
            }
        }
    }
    Ok(Some(scan.owners.into_iter().collect()))
}

fn read_dir(path: &Path) -> Result<fs::ReadDir, IdentityError> {
    fs::read_dir(path).map_err(|source| IdentityError::ReadProc {
        path: path.to_path_buf(),
        source,
    })
}

/// A `/proc` entry name that is a pid (all digits, no sign).
fn parse_pid_name(name: &str) -> Option<u32> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// Direct children of `pid` across all its threads (empty if unavailable).
fn children_of(proc_root: &Path, pid: u32) -> Vec<u32> {
    let task_dir = proc_root.join(pid.to_string()).join("task");
    let Ok(tasks) = fs::read_dir(&task_dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.take(MAX_TASKS_PER_PROCESS) {
        let Ok(task) = task else { continue };
        let path = task.path().join("children");
        match read_capped(&path, MAX_CHILDREN_BYTES) {
            Ok(text) => out.extend(parse_pid_list(&text)),
            Err(err) => tracing::trace!(path = %path.display(), %err, "skipping children file"),
        }
        if out.len() >= MAX_PIDS {
            break;
        }
    }
    out
}

fn read_capped(path: &Path, cap: u64) -> io::Result<String> {
    use std::io::Read as _;
    let mut text = String::new();
    fs::File::open(path)?.take(cap).read_to_string(&mut text)?;
    Ok(text)
}

/// Whether `pid` has a descriptor for `socket:[inode]`. A process that vanished or whose
/// fd table cannot be read (no CAP_SYS_PTRACE over it) counts as "no".
fn holds_inode(proc_root: &Path, pid: u32, inode: u64) -> Result<bool, IdentityError> {
    let fd_dir = proc_root.join(pid.to_string()).join("fd");
    // Links are read relative to the open directory (readlinkat): the path
    // walk through /proc/<pid>/fd happens once per process, not per fd.
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut dir = match Dir::open(&fd_dir, flags, Mode::empty()) {
        Ok(dir) => dir,
        Err(err) => {
            tracing::trace!(pid, %err, "skipping process whose fd table is unreadable");
            return Ok(false);
        }
    };
    let dir_fd = dir.as_raw_fd();
    let mut count = 0;
    for fd in dir.iter() {
        let Ok(fd) = fd else { continue };
        let name = fd.file_name();
        if name.to_bytes().starts_with(b".") {
            continue;
        }
        count += 1;
        if count > MAX_FDS_PER_PROCESS {
            return Err(IdentityError::ScanLimitExceeded {
                what: format!("fds in pid {pid}"),
                limit: MAX_FDS_PER_PROCESS,
            });
        }
        // The fd may have been closed since the directory was listed: skip it.
        let Ok(target) = readlinkat(Some(dir_fd), name) else {
            continue;
        };
        if target.to_str().and_then(parse_socket_inode) == Some(inode) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_names() {
        assert_eq!(parse_pid_name("1"), Some(1));
        assert_eq!(parse_pid_name("4194304"), Some(4_194_304));
        assert_eq!(parse_pid_name("self"), None);
        assert_eq!(parse_pid_name("+5"), None);
        assert_eq!(parse_pid_name(""), None);
        assert_eq!(parse_pid_name("99999999999"), None);
    }

    #[test]
    fn missing_proc_root_is_an_error() {
        let err = find_owners(Path::new("/nonexistent-proc-root"), 1, None, None, false)
            .expect_err("missing root must fail");
        assert!(matches!(err, IdentityError::ReadProc { .. }), "{err}");
    }

    /// One fake process: pid, its `children` file, its (fd, socket inode) links.
    type FakeProcess = (u32, &'static str, &'static [(u32, u64)]);

    /// A procfs-shaped tree: the anchor 10 with child 11 (holds socket 777),
    /// and 99 outside the anchor's tree (holds 777 and 888).
    fn fake_proc() -> std::path::PathBuf {
        use std::os::unix::fs::symlink;
        let root = std::env::temp_dir().join(format!(
            "sluice-scan-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&root);
        let tree: [FakeProcess; 3] = [
            (10, "11", &[]),
            (11, "", &[(3, 777)]),
            (99, "", &[(4, 777), (5, 888)]),
        ];
        for (pid, children, fds) in tree {
            let task = root.join(format!("{pid}/task/{pid}"));
            fs::create_dir_all(&task).expect("task dir");
            fs::write(task.join("children"), children).expect("children");
            let fd_dir = root.join(format!("{pid}/fd"));
            fs::create_dir_all(&fd_dir).expect("fd dir");
            for (fd, inode) in fds {
                symlink(format!("socket:[{inode}]"), fd_dir.join(fd.to_string())).expect("fd link");
            }
        }
        root
    }

    #[test]
    fn a_namespace_init_tree_is_searched_alone_when_it_has_the_owner() {
        let root = fake_proc();
        // (inode, tree_is_complete, owners found)
        let cases: [(u64, bool, &[u32]); 4] = [
            // Found in the sandbox's tree: the host is not scanned.
            (777, true, &[11]),
            // The old, host-wide answer: both holders.
            (777, false, &[11, 99]),
            // Nothing in the tree: the host scan still finds a holder that
            // entered the namespace from outside.
            (888, true, &[99]),
            (888, false, &[99]),
        ];
        for (inode, complete, want) in cases {
            let got = find_owners(&root, inode, Some(10), None, complete).expect("scan");
            assert_eq!(got, want, "inode {inode}, tree_is_complete {complete}");
        }
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn a_connector_tree_is_searched_from_its_topmost_holding_parent() {
        use std::os::unix::fs::symlink;
        let root = std::env::temp_dir().join(format!("sluice-scan-conn-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        // (pid, ppid, children, sockets held): 20 a shell; 21 created socket
        // 555 and forked 22 (which connected it) and 24; 23 is 22's child;
        // 30 is unrelated and also holds 555 (received over SCM_RIGHTS, say).
        let tree: [(u32, u32, &str, &[u64]); 6] = [
            (20, 1, "21", &[]),
            (21, 20, "22 24", &[555]),
            (22, 21, "23", &[555, 666]),
            (23, 22, "", &[555]),
            (24, 21, "", &[555]),
            (30, 1, "", &[555]),
        ];
        for (pid, ppid, children, sockets) in tree {
            let task = root.join(format!("{pid}/task/{pid}"));
            fs::create_dir_all(&task).expect("task dir");
            fs::write(task.join("children"), children).expect("children");
            fs::write(
                root.join(format!("{pid}/status")),
                format!("Name:\tx\nPPid:\t{ppid}\n"),
            )
            .expect("status");
            let fd_dir = root.join(format!("{pid}/fd"));
            fs::create_dir_all(&fd_dir).expect("fd dir");
            for (fd, inode) in sockets.iter().enumerate() {
                symlink(format!("socket:[{inode}]"), fd_dir.join(fd.to_string())).expect("link");
            }
        }
        // (inode, connector, stop, skip, owners)
        type Case = (u64, u32, Option<u32>, Option<u32>, Option<&'static [u32]>);
        let cases: [Case; 6] = [
            // Up to 21 (20 does not hold it), then 21's whole tree; not 30.
            (555, 22, None, None, Some(&[21, 22, 23, 24])),
            // The walk stops at the anchor.
            (555, 22, Some(22), None, Some(&[22, 23])),
            // The skipped process is neither a root nor an owner.
            (555, 22, None, Some(21), Some(&[22, 23])),
            (666, 22, None, None, Some(&[22])),
            // The connector no longer holds it: the caller scans.
            (666, 23, None, None, None),
            (555, 22, None, Some(22), None),
        ];
        for (inode, connector, stop, skip, want) in cases {
            let got =
                find_owners_from_connector(&root, inode, connector, stop, skip).expect("scan");
            assert_eq!(
                got.as_deref(),
                want,
                "inode {inode} connector {connector} stop {stop:?} skip {skip:?}"
            );
        }
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn own_stdin_pipe_is_not_a_socket_owner() {
        // Inode 0 is never a real socket inode.
        let owners = find_owners(Path::new("/proc"), 0, Some(std::process::id()), None, false)
            .expect("scan of real /proc");
        assert!(owners.is_empty(), "{owners:?}");
    }
}
