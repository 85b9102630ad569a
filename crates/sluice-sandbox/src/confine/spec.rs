//! What the host side tells the init: the target ids, the files to bind in place
//! and the drain. Passed as arguments (`sluice __sandbox-init ... -- CMD`): the
//! parser is strict, since only sluice itself writes these.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// A file of the run bind-mounted read-only over a path of the sandbox's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// The run's file (on the host).
    pub source: PathBuf,
    /// Where CMD sees it (must exist).
    pub target: PathBuf,
    /// When `false`, a missing target is skipped instead of failing the start.
    pub required: bool,
}

/// The init's instructions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitSpec {
    /// CMD's uid.
    pub uid: u32,
    /// CMD's gid.
    pub gid: u32,
    /// CMD's supplementary groups.
    pub groups: Vec<u32>,
    /// Read-only bind mounts, in order.
    pub binds: Vec<BindMount>,
    /// After CMD exits, how long its leftovers may still run.
    pub drain: Duration,
}

impl InitSpec {
    /// The arguments that [`InitSpec::parse`] reads back.
    #[must_use]
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = vec![
            "--uid".into(),
            self.uid.to_string().into(),
            "--gid".into(),
            self.gid.to_string().into(),
            "--groups".into(),
            self.groups
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
                .into(),
            "--drain-ms".into(),
            self.drain.as_millis().to_string().into(),
        ];
        for b in &self.binds {
            out.push(
                if b.required {
                    "--bind"
                } else {
                    "--bind-if-present"
                }
                .into(),
            );
            out.push(b.source.clone().into_os_string());
            out.push(b.target.clone().into_os_string());
        }
        out
    }

    /// Reads the arguments after [`super::INIT_ARG`]: the spec, then `--`, then CMD.
    ///
    /// # Errors
    /// A message naming the unexpected argument.
    pub fn parse(args: &[OsString]) -> Result<(Self, Vec<OsString>), String> {
        let mut spec = Self {
            uid: u32::MAX,
            gid: u32::MAX,
            groups: Vec::new(),
            binds: Vec::new(),
            drain: Duration::ZERO,
        };
        let mut it = args.iter();
        let num = |v: Option<&OsString>, what: &str| -> Result<u32, String> {
            v.and_then(|v| v.to_str())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{what}: expected a number"))
        };
        while let Some(a) = it.next() {
            match a.to_str() {
                Some("--uid") => spec.uid = num(it.next(), "--uid")?,
                Some("--gid") => spec.gid = num(it.next(), "--gid")?,
                Some("--groups") => {
                    let v = it.next().and_then(|v| v.to_str()).ok_or("--groups")?;
                    spec.groups = v
                        .split(',')
                        .filter(|g| !g.is_empty())
                        .map(|g| g.parse().map_err(|_| format!("--groups: bad gid {g}")))
                        .collect::<Result<_, _>>()?;
                }
                Some("--drain-ms") => {
                    spec.drain = Duration::from_millis(u64::from(num(it.next(), "--drain-ms")?));
                }
                Some(flag @ ("--bind" | "--bind-if-present")) => {
                    let (Some(source), Some(target)) = (it.next(), it.next()) else {
                        return Err(format!("{flag} needs SOURCE TARGET"));
                    };
                    spec.binds.push(BindMount {
                        source: source.into(),
                        target: target.into(),
                        required: flag == "--bind",
                    });
                }
                Some("--") => {
                    let cmd: Vec<OsString> = it.cloned().collect();
                    if cmd.is_empty() {
                        return Err("no command after --".into());
                    }
                    if spec.uid == u32::MAX || spec.gid == u32::MAX {
                        return Err("--uid and --gid are required".into());
                    }
                    return Ok((spec, cmd));
                }
                _ => return Err(format!("unexpected argument {a:?}")),
            }
        }
        Err("no command after --".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_junk() {
        let spec = InitSpec {
            uid: 1000,
            gid: 100,
            groups: vec![100, 27],
            binds: vec![
                BindMount {
                    source: "/etc/netns/x/resolv.conf".into(),
                    target: "/etc/resolv.conf".into(),
                    required: true,
                },
                BindMount {
                    source: "/run/b.pem".into(),
                    target: "/etc/ssl/cert.pem".into(),
                    required: false,
                },
            ],
            drain: Duration::from_millis(2000),
        };
        let mut args = spec.to_args();
        args.extend(["--".into(), "sh".into(), "-c".into(), "echo hi".into()]);
        let (back, cmd) = InitSpec::parse(&args).unwrap();
        assert_eq!(back, spec);
        assert_eq!(cmd, ["sh", "-c", "echo hi"]);

        let bad: &[&[&str]] = &[
            &["--uid", "x", "--", "sh"],
            &["--uid", "1", "--gid", "1"],
            &["--uid", "1", "--gid", "1", "--"],
            &["--gid", "1", "--", "sh"],
            &["--bind", "/a", "--", "sh"],
            &["--groups", "1,x", "--uid", "1", "--gid", "1", "--", "sh"],
            &["--what", "--", "sh"],
        ];
        for case in bad {
            let args: Vec<OsString> = case.iter().map(OsString::from).collect();
            assert!(InitSpec::parse(&args).is_err(), "{case:?}");
        }
    }
}
