//! What CMD must never reach: the secret sources of the policy in force. Checked
//! at start and on every reload (a reload that names a variable CMD already
//! holds, or a file CMD's user can read, is refused; the last good policy stays).

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt as _;

use sluice_policy::SecretSources;
use sluice_sandbox::confine::{readable_by, SandboxUser};

use super::env::carries_secret;

/// The facts a policy's secret sources are checked against.
pub(super) struct SecretGuard {
    pub(super) user: SandboxUser,
    pub(super) allow_readable_files: bool,
    /// CMD's inherited environment (fixed when CMD starts).
    pub(super) visible: Vec<(OsString, OsString)>,
}

impl SecretGuard {
    /// `Ok` when no source of `sources` is within CMD's reach; otherwise the first
    /// problem, naming the variable or file (never a value).
    pub(super) fn check(&self, sources: &SecretSources) -> Result<(), String> {
        for name in &sources.env {
            if self.visible.iter().any(|(k, _)| k.to_str() == Some(name)) {
                return Err(format!(
                    "environment variable {name} is a secret source, but the sandboxed command \
                     already holds it (it was in sluice run's environment when CMD started); \
                     restart sluice run to use it"
                ));
            }
        }
        if let Some((k, _)) = self
            .visible
            .iter()
            .find(|(_, v)| carries_secret(v, sources))
        {
            return Err(format!(
                "environment variable {} of the sandboxed command carries a secret value the \
                 policy reads; restart sluice run to use it",
                k.to_string_lossy()
            ));
        }
        for file in &sources.files {
            let shown = file.display();
            match readable_by(file, self.user.uid, &self.user.groups) {
                Ok(false) => {}
                Ok(true) if self.allow_readable_files => {
                    tracing::warn!(file = %shown, user = %self.user.describe(),
                        "Secret file is readable by CMD's user (--allow-readable-secret-files)");
                }
                Ok(true) => {
                    let how = std::fs::metadata(file).map_or_else(
                        |_| String::new(),
                        |m| {
                            format!(
                                " (mode {:04o}, owner {}:{})",
                                m.mode() & 0o7777,
                                m.uid(),
                                m.gid()
                            )
                        },
                    );
                    return Err(format!(
                        "secret file {shown}{how} is readable by CMD's user {}: make it \
                         unreadable to that user (e.g. owned by root, mode 0600) or pass \
                         --allow-readable-secret-files",
                        self.user.describe()
                    ));
                }
                Err(e) => {
                    return Err(format!(
                        "cannot tell whether secret file {shown} is readable by CMD's user: {e}"
                    ))
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use sluice_policy::Secret;

    use super::*;

    #[test]
    fn reloads_that_reach_cmd_are_refused() {
        let tmp = sluice_test_support::TempDir::new("guard");
        let dir = tmp.root();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.join("s");
        std::fs::write(&file, "v").unwrap();
        let guard = |allow| SecretGuard {
            user: SandboxUser {
                name: None,
                uid: 4_000_000,
                gid: 4_000_000,
                groups: vec![4_000_000],
                home: None,
            },
            allow_readable_files: allow,
            visible: vec![
                ("PATH".into(), "/usr/bin".into()),
                ("OLD_TOKEN".into(), "tok_0123456789".into()),
            ],
        };
        let mut sources = SecretSources::default();
        sources.env.insert("NOT_VISIBLE".into());
        assert_eq!(guard(false).check(&sources), Ok(()));

        let mut named = sources.clone();
        named.env.insert("OLD_TOKEN".into());
        let err = guard(false).check(&named).unwrap_err();
        assert!(
            err.contains("OLD_TOKEN") && !err.contains("tok_0123456789"),
            "{err}"
        );

        let mut valued = sources.clone();
        valued.values.push(Secret::new("tok_0123456789"));
        let err = guard(false).check(&valued).unwrap_err();
        assert!(
            err.contains("OLD_TOKEN") && !err.contains("tok_0123456789"),
            "{err}"
        );

        let mut filed = sources.clone();
        filed.files.insert(file.clone());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = guard(false).check(&filed).unwrap_err();
        assert!(
            err.contains("mode 0644") && err.contains("uid 4000000"),
            "{err}"
        );
        assert_eq!(guard(true).check(&filed), Ok(()));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(guard(false).check(&filed), Ok(()));
        filed.files.insert(dir.join("missing"));
        assert!(guard(false)
            .check(&filed)
            .unwrap_err()
            .contains("cannot tell"));
    }
}
