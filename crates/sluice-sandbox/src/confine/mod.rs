//! Confinement of the command `sluice run` starts (CMD): it must not be able to
//! remove the fence, see sluice, or read a secret source.
//!
//! The sandboxed side is a tiny init (`sluice __sandbox-init`, the sluice binary
//! re-executed through `/proc/self/exe`) that:
//!
//! 1. is started by a dedicated host thread that has joined the sandbox network
//!    namespace and unshared a PID namespace for its children, so the init is
//!    PID 1 of a fresh PID namespace: sluice's processes have no PID there;
//! 2. unshares a mount namespace (mounts made private), mounts a fresh `/proc`
//!    for that PID namespace (`/proc/<sluice pid>` does not exist for CMD), and
//!    bind-mounts the run's files (e.g. `resolv.conf`) read-only in place;
//! 3. drops privileges for good: supplementary groups, gid and uid of the target
//!    user, every capability set emptied (bounding, ambient, inheritable,
//!    permitted, effective), `no_new_privs` set (setuid binaries gain nothing),
//!    not dumpable — and verifies all of it from `/proc/self/status`, refusing to
//!    start CMD if anything is left; then a seccomp filter refuses the creation
//!    of user namespaces (which would give CMD capabilities of its own);
//! 4. starts CMD, forwards the signals it receives to it, reaps every orphan, and
//!    when CMD exits waits a bounded drain for what is left, then exits with CMD's
//!    status (128 + signal when CMD was killed). Its exit kills whatever is left
//!    in the PID namespace.
//!
//! [`spawn`] is the host side; [`init_main`] runs in the init. Everything here
//! uses safe wrappers (`nix`, `caps`); no `unsafe`.

mod init;
mod privileges;
mod seccomp;
mod spec;
mod user;

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use nix::sched::{setns, unshare, CloneFlags};

pub use init::init_main;
pub use privileges::{capability_sets, CapabilitySets};
pub use spec::{BindMount, InitSpec};
pub use user::{readable_by, SandboxUser, UserError};

use crate::tools::SandboxError;

/// The hidden first argument that turns the sluice binary into the init.
pub const INIT_ARG: &str = "__sandbox-init";

/// Starts the init (and through it CMD) in the network namespace at `ns_path`,
/// in a new PID namespace. `env` is CMD's complete environment (the init passes
/// it on unchanged). Returns the init's host pid; `on_exit` is called with its
/// exit status from the thread that spawned it (a parent-death signal ties the
/// init to that thread, so if sluice dies the whole sandbox dies with it).
///
/// # Errors
/// Entering the namespace, unsharing the PID namespace or spawning failed.
pub fn spawn(
    ns_path: &Path,
    spec: &InitSpec,
    cmd: &[String],
    env: Vec<(OsString, OsString)>,
    on_exit: impl FnOnce(io::Result<ExitStatus>) + Send + 'static,
) -> Result<u32, SandboxError> {
    let ns = std::fs::File::open(ns_path)
        .map_err(|e| SandboxError::Other(format!("opening {}: {e}", ns_path.display())))?;
    let mut command = Command::new("/proc/self/exe");
    command
        .arg(INIT_ARG)
        .args(spec.to_args())
        .arg("--")
        .args(cmd)
        .env_clear()
        .envs(env)
        .stdin(Stdio::inherit());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("sluice-sandbox".into())
        .spawn(move || {
            // Namespaces are per thread: this thread's network namespace and the PID
            // namespace of its children change; the rest of sluice is untouched.
            let started = setns(&ns, CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns into the sandbox network namespace: {e}"))
                .and_then(|()| {
                    unshare(CloneFlags::CLONE_NEWPID)
                        .map_err(|e| format!("unshare(CLONE_NEWPID): {e}"))
                })
                .and_then(|()| {
                    command
                        .spawn()
                        .map_err(|e| format!("starting the sandbox init: {e}"))
                });
            match started {
                Ok(mut child) => {
                    let _ = tx.send(Ok(child.id()));
                    on_exit(child.wait());
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })
        .map_err(|e| SandboxError::Other(format!("sandbox thread: {e}")))?;
    rx.recv()
        .map_err(|_| SandboxError::Other("sandbox thread ended early".into()))?
        .map_err(SandboxError::Other)
}
