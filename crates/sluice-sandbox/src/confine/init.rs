//! The init: PID 1 of the sandbox's PID namespace (see the module docs of
//! [`super`]). It runs as root only until [`super::privileges::drop_all`]; CMD
//! and everything after never had a capability.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::process::Command;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::spec::InitSpec;

/// Exit status when the sandbox could not be set up (CMD never started).
const SETUP_FAILED: i32 = 125;

/// Signals passed on to CMD.
const FORWARDED: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Runs the init with the arguments after [`super::INIT_ARG`]; returns the
/// process exit status (CMD's, 128 + signal, 125 when setup failed, 126/127
/// when CMD could not be executed / found).
#[must_use]
pub fn init_main(args: &[OsString]) -> i32 {
    let (spec, cmd) = match InitSpec::parse(args) {
        Ok(v) => v,
        Err(e) => return fail(&format!("bad init arguments: {e}")),
    };
    // Die with the sluice thread that started us (and so with sluice).
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        return fail(&format!("PR_SET_PDEATHSIG: {e}"));
    }
    if nix::unistd::getpid().as_raw() != 1 {
        return fail("the init must be PID 1 of its own PID namespace");
    }
    if let Err(e) = mounts(&spec) {
        return fail(&e);
    }
    let mut signals = SigSet::empty();
    for s in FORWARDED {
        signals.add(s);
    }
    signals.add(Signal::SIGCHLD);
    signals.add(Signal::SIGALRM);
    if let Err(e) = signals.thread_block() {
        return fail(&format!("blocking signals: {e}"));
    }
    if let Err(e) = super::privileges::drop_all(spec.uid, spec.gid, &spec.groups)
        .and_then(|()| super::seccomp::deny_user_namespaces())
    {
        return fail(&e);
    }
    // std resets the signal mask and dispositions of the child before exec.
    let child = match Command::new(&cmd[0]).args(&cmd[1..]).spawn() {
        Ok(c) => c,
        Err(e) => {
            let name = cmd[0].to_string_lossy();
            eprintln!("sluice: cannot run {name}: {e}");
            return match e.kind() {
                ErrorKind::NotFound => 127,
                _ => 126,
            };
        }
    };
    let cmd_pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    supervise(&signals, cmd_pid, &spec)
}

fn fail(msg: &str) -> i32 {
    eprintln!("sluice: sandbox setup failed, CMD not started: {msg}");
    SETUP_FAILED
}

/// A private mount namespace, a `/proc` of this PID namespace, and the run's
/// read-only bind mounts.
fn mounts(spec: &InitSpec) -> Result<(), String> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making mounts private: {e}"))?;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| format!("mounting a fresh /proc: {e}"))?;
    for b in &spec.binds {
        if !b.required && std::fs::metadata(&b.target).is_err() {
            continue;
        }
        mount(
            Some(&b.source),
            &b.target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| {
            format!(
                "bind-mounting {} on {}: {e}",
                b.source.display(),
                b.target.display()
            )
        })?;
        mount(
            None::<&str>,
            &b.target,
            None::<&str>,
            MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV,
            None::<&str>,
        )
        .map_err(|e| format!("making {} read-only: {e}", b.target.display()))?;
    }
    Ok(())
}

/// Forwards signals to CMD and reaps every child until CMD has exited and its
/// leftovers are gone (or the drain ran out).
fn supervise(signals: &SigSet, cmd_pid: Pid, spec: &InitSpec) -> i32 {
    let mut cmd_status: Option<i32> = None;
    loop {
        let Ok(sig) = signals.wait() else { continue };
        match sig {
            Signal::SIGCHLD => loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) if pid == cmd_pid => {
                        cmd_status = Some(code);
                        start_drain(spec);
                    }
                    Ok(WaitStatus::Signaled(pid, s, _)) if pid == cmd_pid => {
                        cmd_status = Some(128 + s as i32);
                        start_drain(spec);
                    }
                    Ok(WaitStatus::StillAlive) => break,
                    Ok(_) => {}
                    Err(_) => {
                        // ECHILD: nobody is left.
                        if let Some(code) = cmd_status {
                            return code;
                        }
                        break;
                    }
                }
            },
            Signal::SIGALRM => {
                if let Some(code) = cmd_status {
                    // Leftovers are killed by the kernel when PID 1 exits.
                    return code;
                }
            }
            other => {
                if cmd_status.is_none() {
                    let _ = kill(cmd_pid, other);
                }
            }
        }
    }
}

fn start_drain(spec: &InitSpec) {
    let secs = u32::try_from(spec.drain.as_millis().div_ceil(1000))
        .unwrap_or(u32::MAX)
        .max(1);
    nix::unistd::alarm::set(secs);
}
