//! A seccomp filter that keeps CMD from creating user namespaces: `clone` and
//! `unshare` with `CLONE_NEWUSER` fail with `EPERM`, and `clone3` (whose flags
//! live in memory a filter cannot read) fails with `ENOSYS`, so C libraries fall
//! back to `clone`. A user namespace would hand CMD a full capability set of its
//! own (no way out of the sandbox, but a far larger kernel surface).
//! Installed by the init after `no_new_privs`; inherited by everything CMD starts.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

const CLONE_NEWUSER: u64 = 0x1000_0000;

fn filter(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    errno: i32,
    arch: TargetArch,
) -> Result<BpfProgram, String> {
    let errno = u32::try_from(errno).map_err(|_| "errno out of range".to_owned())?;
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno),
        arch,
    )
    .and_then(BpfProgram::try_from)
    .map_err(|e| format!("building the seccomp filter: {e}"))
}

/// Installs the filters on the calling thread (and so its future children).
pub(crate) fn deny_user_namespaces() -> Result<(), String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("seccomp: unsupported architecture: {e}"))?;
    let newuser = || {
        SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(CLONE_NEWUSER),
            CLONE_NEWUSER,
        )
        .and_then(|c| SeccompRule::new(vec![c]))
        .map_err(|e| format!("seccomp rule: {e}"))
    };
    let eperm = filter(
        BTreeMap::from([
            (libc::SYS_clone, vec![newuser()?]),
            (libc::SYS_unshare, vec![newuser()?]),
        ]),
        libc::EPERM,
        arch,
    )?;
    let enosys = filter(
        BTreeMap::from([(libc::SYS_clone3, vec![])]),
        libc::ENOSYS,
        arch,
    )?;
    for prog in [&eperm, &enosys] {
        seccompiler::apply_filter(prog).map_err(|e| format!("installing seccomp filter: {e}"))?;
    }
    Ok(())
}
