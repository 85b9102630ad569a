//! Which store to open, from the `--store` flag and `--state-dir`.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::sqlite::SQLITE_FILE_NAME;
use crate::store::StoreError;

/// Where proposals live.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreSpec {
    /// An embedded SQLite file (one gateway's own queue).
    Sqlite {
        /// The database file.
        path: PathBuf,
    },
    /// A PostgreSQL database shared by several gateways, over plain TCP
    /// (no TLS yet: `sslmode=require` is refused, see [`crate::PostgresStore`]).
    Postgres {
        /// `postgres://user:password@host:port/db`: holds a secret, so
        /// this type's `Debug` prints no URL.
        url: String,
    },
}

impl StoreSpec {
    /// The store `--store` names: none means SQLite in `state_dir`
    /// ([`SQLITE_FILE_NAME`]); `postgres://...` or `postgresql://...` means
    /// PostgreSQL. Anything else is [`StoreError::Invalid`].
    pub fn parse(store_flag: Option<&str>, state_dir: &Path) -> Result<Self, StoreError> {
        match store_flag {
            None => Ok(Self::Sqlite {
                path: state_dir.join(SQLITE_FILE_NAME),
            }),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Self::Postgres {
                    url: url.to_owned(),
                })
            }
            Some(_) => Err(StoreError::Invalid(
                "--store takes postgres://user:password@host:port/db (or postgresql://...); \
                 leave it out for SQLite in --state-dir"
                    .into(),
            )),
        }
    }
}

impl fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
            Self::Postgres { .. } => f
                .debug_struct("Postgres")
                .field("url", &"<redacted>")
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_store_flag() {
        let dir = Path::new("/var/lib/sluice");
        let cases: &[(Option<&str>, Option<StoreSpec>)] = &[
            (
                None,
                Some(StoreSpec::Sqlite {
                    path: dir.join("proposals.sqlite3"),
                }),
            ),
            (
                Some("postgres://u:p@db:5432/sluice"),
                Some(StoreSpec::Postgres {
                    url: "postgres://u:p@db:5432/sluice".into(),
                }),
            ),
            (
                Some("postgresql://db/sluice"),
                Some(StoreSpec::Postgres {
                    url: "postgresql://db/sluice".into(),
                }),
            ),
            (Some("mysql://db/sluice"), None),
            (Some("/tmp/x.sqlite3"), None),
            (Some(""), None),
        ];
        for (flag, want) in cases {
            let got = StoreSpec::parse(*flag, dir);
            match want {
                Some(want) => assert_eq!(got.as_ref().ok(), Some(want), "{flag:?}"),
                None => {
                    let err = got.expect_err("rejected").to_string();
                    assert!(err.contains("postgres://"), "{flag:?}: {err}");
                }
            }
        }
    }

    #[test]
    fn debug_never_prints_the_url() {
        let spec = StoreSpec::parse(Some("postgres://u:hunter2@db/x"), Path::new("/")).unwrap();
        assert!(!format!("{spec:?}").contains("hunter2"));
    }
}
