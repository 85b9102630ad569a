//! Who CMD runs as, and whether that user could read a given file.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};

/// CMD's identity: never root by accident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxUser {
    /// Login name, when the uid has a passwd entry.
    pub name: Option<String>,
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary groups (including `gid`).
    pub groups: Vec<u32>,
    /// Home directory from passwd, if any.
    pub home: Option<PathBuf>,
}

/// Why CMD's user could not be decided.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum UserError {
    /// Root without sudo and without `--user`.
    #[error(
        "sluice run would start CMD as root: pass --user USER[:GROUP] to choose who it runs as \
         (run through sudo to default to the invoking user; --user root keeps uid 0 but still \
         without any capability)"
    )]
    RootWithoutUser,
    /// A user or group that does not exist.
    #[error("{0}")]
    Unknown(String),
}

impl SandboxUser {
    /// Decides CMD's user: `--user USER[:GROUP]` when given; otherwise the user
    /// who invoked sudo (`SUDO_UID`/`SUDO_GID`) when sluice runs as root; otherwise
    /// sluice's own uid if that is not root; otherwise an error.
    ///
    /// # Errors
    /// [`UserError`] naming what is missing.
    pub fn resolve(
        user_flag: Option<&str>,
        sudo_uid: Option<&str>,
        sudo_gid: Option<&str>,
    ) -> Result<Self, UserError> {
        if let Some(spec) = user_flag {
            let (u, g) = match spec.split_once(':') {
                Some((u, g)) => (u, Some(g)),
                None => (spec, None),
            };
            return Self::lookup(u, g);
        }
        let own = Uid::current().as_raw();
        if own == 0 {
            if let Some(uid) = sudo_uid.filter(|u| !u.is_empty() && *u != "0") {
                return Self::lookup(uid, sudo_gid.filter(|g| !g.is_empty()));
            }
            return Err(UserError::RootWithoutUser);
        }
        Self::lookup(&own.to_string(), Some(&Gid::current().as_raw().to_string()))
    }

    /// `user` and `group` as names or numbers.
    fn lookup(user: &str, group: Option<&str>) -> Result<Self, UserError> {
        let entry =
            match user.parse::<u32>() {
                Ok(uid) => User::from_uid(Uid::from_raw(uid)).ok().flatten(),
                Err(_) => Some(User::from_name(user).ok().flatten().ok_or_else(|| {
                    UserError::Unknown(format!("--user: no user named `{user}`"))
                })?),
            };
        let uid = entry
            .as_ref()
            .map(|e| e.uid.as_raw())
            .or_else(|| user.parse().ok())
            .ok_or_else(|| UserError::Unknown(format!("--user: no user `{user}`")))?;
        let gid = match group {
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => Group::from_name(g)
                    .ok()
                    .flatten()
                    .ok_or_else(|| UserError::Unknown(format!("--user: no group named `{g}`")))?
                    .gid
                    .as_raw(),
            },
            None => entry.as_ref().map(|e| e.gid.as_raw()).ok_or_else(|| {
                UserError::Unknown(format!(
                    "uid {uid} has no passwd entry: give its group too (--user {uid}:GID)"
                ))
            })?,
        };
        let mut groups = vec![gid];
        if let Some(e) = &entry {
            if let Ok(name) = std::ffi::CString::new(e.name.as_str()) {
                if let Ok(list) = nix::unistd::getgrouplist(&name, Gid::from_raw(gid)) {
                    groups.extend(list.iter().map(|g| g.as_raw()));
                }
            }
        }
        groups.sort_unstable();
        groups.dedup();
        Ok(Self {
            name: entry.as_ref().map(|e| e.name.clone()),
            uid,
            gid,
            groups,
            home: entry.map(|e| e.dir),
        })
    }

    /// `uid:gid` with the name when known, for messages.
    #[must_use]
    pub fn describe(&self) -> String {
        match &self.name {
            Some(n) => format!("{n} (uid {}, gid {})", self.uid, self.gid),
            None => format!("uid {}, gid {}", self.uid, self.gid),
        }
    }
}

/// Whether a process with `uid` and `groups` and **no capabilities** (as CMD runs)
/// could open `path` for reading: every directory on the way searchable, the file
/// readable, by owner/group/other mode bits (POSIX ACLs are not consulted, so a
/// file an ACL opens up is not reported). Symlinks are followed.
///
/// # Errors
/// The path cannot be resolved or examined.
pub fn readable_by(path: &Path, uid: u32, groups: &[u32]) -> std::io::Result<bool> {
    let real = std::fs::canonicalize(path)?;
    let allowed = |meta: &std::fs::Metadata, bit: u32| {
        let mode = meta.mode();
        let shift = if meta.uid() == uid {
            6
        } else if groups.contains(&meta.gid()) {
            3
        } else {
            0
        };
        mode & (bit << shift) != 0
    };
    for dir in real.ancestors().skip(1) {
        if !allowed(&std::fs::metadata(dir)?, 0o1) {
            return Ok(false);
        }
    }
    Ok(allowed(&std::fs::metadata(&real)?, 0o4))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn readability_follows_mode_bits_and_directories() {
        let tmp = sluice_test_support::TempDir::new("readable");
        let dir = tmp.root();
        std::fs::create_dir_all(dir.join("closed")).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "x").unwrap();
        let meta = std::fs::metadata(&file).unwrap();
        let (owner, group) = (meta.uid(), meta.gid());
        let stranger = owner.wrapping_add(4242);
        let set =
            |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        set(dir, 0o755).unwrap();
        // (mode, uid, groups, readable)
        let cases: &[(u32, u32, &[u32], bool)] = &[
            (0o600, owner, &[], true),
            (0o600, stranger, &[], false),
            (0o640, stranger, &[group], true),
            (0o604, stranger, &[group], false), // group bits apply to group members
            (0o604, stranger, &[], true),
            (0o044, owner, &[group], false), // owner bits apply to the owner
            (0o000, owner, &[], false),
        ];
        for &(mode, uid, groups, want) in cases {
            set(&file, mode).unwrap();
            assert_eq!(
                readable_by(&file, uid, groups).unwrap(),
                want,
                "{mode:o} {uid}"
            );
        }
        let inner = dir.join("closed").join("s");
        std::fs::write(&inner, "x").unwrap();
        set(&inner, 0o644).unwrap();
        set(&dir.join("closed"), 0o700).unwrap();
        assert!(
            !readable_by(&inner, stranger, &[]).unwrap(),
            "directory not searchable"
        );
        set(&dir.join("closed"), 0o711).unwrap();
        assert!(readable_by(&inner, stranger, &[]).unwrap());
        let link = dir.join("link");
        std::os::unix::fs::symlink(&inner, &link).unwrap();
        assert!(
            readable_by(&link, stranger, &[]).unwrap(),
            "follows symlinks"
        );
    }

    #[test]
    fn resolves_names_numbers_and_sudo() {
        let root = SandboxUser::resolve(Some("root"), None, None).unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        let nobody = SandboxUser::resolve(Some("65534"), None, None).unwrap();
        assert_eq!(nobody.uid, 65534);
        assert!(nobody.groups.contains(&nobody.gid));
        let explicit = SandboxUser::resolve(Some("nobody:0"), None, None).unwrap();
        assert_eq!((explicit.uid, explicit.gid), (65534, 0));
        assert!(SandboxUser::resolve(Some("no-such-user-x"), None, None).is_err());
        assert!(SandboxUser::resolve(Some("nobody:no-such-group-x"), None, None).is_err());
        assert!(matches!(
            SandboxUser::resolve(Some("4000000"), None, None),
            Err(UserError::Unknown(_))
        ));
        assert_eq!(
            SandboxUser::resolve(Some("4000000:5"), None, None).map(|u| (u.uid, u.gid)),
            Ok((4_000_000, 5))
        );
        if Uid::current().is_root() {
            assert_eq!(
                SandboxUser::resolve(None, None, None),
                Err(UserError::RootWithoutUser)
            );
            assert_eq!(
                SandboxUser::resolve(None, Some("0"), None),
                Err(UserError::RootWithoutUser),
                "sudo from root is still root"
            );
            let sudo = SandboxUser::resolve(None, Some("65534"), Some("65534")).unwrap();
            assert_eq!((sudo.uid, sudo.gid), (65534, 65534));
        }
    }
}
