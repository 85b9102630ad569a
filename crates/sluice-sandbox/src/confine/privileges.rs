//! Dropping every privilege for good, then checking that nothing is left.

use caps::CapSet;
use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};

/// The five capability sets of a process, as `/proc/<pid>/status` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapabilitySets {
    /// `CapInh`.
    pub inheritable: u64,
    /// `CapPrm`.
    pub permitted: u64,
    /// `CapEff`.
    pub effective: u64,
    /// `CapBnd`.
    pub bounding: u64,
    /// `CapAmb`.
    pub ambient: u64,
}

impl CapabilitySets {
    /// Whether every set is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Parses the `Cap*:` lines of `/proc/<pid>/status` text (missing lines read as
/// not empty, so a parse failure never passes for "no capabilities").
#[must_use]
pub fn capability_sets(status: &str) -> CapabilitySets {
    let get = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(u64::MAX)
    };
    CapabilitySets {
        inheritable: get("CapInh:"),
        permitted: get("CapPrm:"),
        effective: get("CapEff:"),
        bounding: get("CapBnd:"),
        ambient: get("CapAmb:"),
    }
}

/// Becomes `uid`/`gid`/`groups` with no capability in any set, `no_new_privs`
/// set and not dumpable. Order matters: the bounding set can only be emptied
/// while CAP_SETPCAP is still held, and groups/gid only while CAP_SETGID is.
pub(crate) fn drop_all(uid: u32, gid: u32, groups: &[u32]) -> Result<(), String> {
    caps::clear(None, CapSet::Bounding).map_err(|e| format!("emptying the bounding set: {e}"))?;
    // Ambient capabilities need Linux 4.3; a kernel without them has none to clear.
    if caps::runtime::ambient_set_supported().is_ok() {
        caps::clear(None, CapSet::Ambient).map_err(|e| format!("emptying the ambient set: {e}"))?;
    }
    caps::clear(None, CapSet::Inheritable)
        .map_err(|e| format!("emptying the inheritable set: {e}"))?;
    let gids: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
    setgroups(&gids).map_err(|e| format!("setgroups: {e}"))?;
    let g = Gid::from_raw(gid);
    setresgid(g, g, g).map_err(|e| format!("setresgid({gid}): {e}"))?;
    let u = Uid::from_raw(uid);
    setresuid(u, u, u).map_err(|e| format!("setresuid({uid}): {e}"))?;
    // A non-root uid already lost permitted and effective; uid 0 keeps them until here.
    caps::clear(None, CapSet::Effective).map_err(|e| format!("emptying the effective set: {e}"))?;
    caps::clear(None, CapSet::Permitted).map_err(|e| format!("emptying the permitted set: {e}"))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("PR_SET_DUMPABLE: {e}"))?;
    verify(uid, gid)
}

/// Reads back what the kernel says about this process.
fn verify(uid: u32, gid: u32) -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("reading /proc/self/status: {e}"))?;
    let sets = capability_sets(&status);
    if !sets.is_empty() {
        return Err(format!("capabilities left after dropping them: {sets:?}"));
    }
    let ids = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let want_u = vec![uid.to_string(); 4];
    let want_g = vec![gid.to_string(); 4];
    if ids("Uid:") != want_u || ids("Gid:") != want_g {
        return Err(format!(
            "ids after the switch are Uid {:?} Gid {:?}, expected {uid}/{gid}",
            ids("Uid:"),
            ids("Gid:")
        ));
    }
    if ids("NoNewPrivs:") != ["1"] {
        return Err("no_new_privs is not set".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_lines_parse_and_fail_closed() {
        let full = "CapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n";
        let s = capability_sets(full);
        assert_eq!(s.permitted, 0x1ff_ffff_ffff);
        assert!(!s.is_empty());
        let none = full.replace("000001ffffffffff", "0000000000000000");
        assert!(capability_sets(&none).is_empty());
        let missing = none.replace("CapAmb:\t0000000000000000\n", "");
        assert!(
            !capability_sets(&missing).is_empty(),
            "a missing line is not empty"
        );
    }
}
