//! The sandbox certificate authority: a persistent ECDSA P-256 CA kept in the
//! proxy's state directory, used to mint short-lived leaf certificates for
//! the hosts whose TLS the proxy terminates (facts §5).
//!
//! Unlike the reference implementation the CA survives restarts, so the key
//! file is treated as a secret: created with mode `0600` from the first byte,
//! refused on load when group or others may read it.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::egress::Host;

/// File name of the CA certificate inside the state directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key (PKCS#8 PEM, mode `0600`).
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// Common name of the sandbox CA.
pub const CA_COMMON_NAME: &str = "sluice sandbox CA";
/// Organization of the sandbox CA.
pub const CA_ORGANIZATION: &str = "sluice";

/// System trust bundles, first existing wins (same order as the reference).
pub const SYSTEM_BUNDLE_PATHS: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// CA validity: ten years (with leap days).
const CA_VALIDITY: Duration = Duration::from_secs(3653 * 24 * 60 * 60);
/// Leaf validity: short, leaves are re-minted on every process start anyway.
const LEAF_VALIDITY: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Why the sandbox CA could not be loaded, created or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// A file-system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`read`, `create`, ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The key file is readable or writable by group or others.
    #[error(
        "ca key file {path} has mode {mode:04o}; it must not be accessible by group or others \
         (chmod 600)"
    )]
    InsecureKeyMode {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Only one of the certificate and the key exists.
    #[error("{present} exists but {missing} does not; remove the former to create a new ca")]
    Incomplete {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// A file does not hold the PEM it should.
    #[error("invalid pem in {path}: {reason}")]
    InvalidPem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The stored key does not belong to the stored certificate.
    #[error("ca key {key} does not match ca certificate {cert}: {reason}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// The check that failed.
        reason: String,
    },
    /// Certificate or key generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the material when building a server configuration.
    #[error("tls configuration failed: {0}")]
    Tls(#[from] rustls::Error),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CaError + 'a {
    move |source| CaError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The persistent sandbox CA.
pub struct SandboxCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for SandboxCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("SandboxCa").finish_non_exhaustive()
    }
}

impl SandboxCa {
    /// Load the CA from `state_dir`, or create it there if neither file
    /// exists. The directory is created with mode `0700` when missing.
    ///
    /// # Errors
    /// [`CaError`] when the directory or files cannot be read or written,
    /// when only one of `ca.pem`/`ca-key.pem` exists, when the key file is
    /// accessible by group or others, or when the files do not hold a
    /// matching certificate and key.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, CaError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(io_err("create directory", state_dir))?;
        let cert_path = state_dir.join(CA_CERT_FILE);
        let key_path = state_dir.join(CA_KEY_FILE);
        let cert_exists = exists(&cert_path)?;
        let key_exists = exists(&key_path)?;
        match (cert_exists, key_exists) {
            (true, true) => Self::load(&cert_path, &key_path),
            (false, false) => Self::create(state_dir, &cert_path, &key_path),
            (true, false) => Err(CaError::Incomplete {
                present: cert_path,
                missing: key_path,
            }),
            (false, true) => Err(CaError::Incomplete {
                present: key_path,
                missing: cert_path,
            }),
        }
    }

    fn create(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = ca_params();
        set_validity(&mut params, DAY, CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        // Key first: a crash in between leaves a key without a certificate,
        // which the next start reports instead of silently replacing.
        write_atomic(dir, key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(dir, cert_path, cert_pem.as_bytes(), 0o644)?;
        tracing::info!(path = %cert_path.display(), "created sandbox ca");
        Ok(Self {
            cert_pem,
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<Self, CaError> {
        let key_pem = read_private(key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::InvalidPem {
            path: key_path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let cert_pem = fs::read_to_string(cert_path).map_err(io_err("read", cert_path))?;
        let mut certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes());
        let cert_der = match (certs.next(), certs.next()) {
            (Some(Ok(der)), None) => der,
            (Some(Err(e)), _) | (_, Some(Err(e))) => {
                return Err(CaError::InvalidPem {
                    path: cert_path.to_path_buf(),
                    reason: e.to_string(),
                })
            }
            (None, _) => {
                return Err(CaError::InvalidPem {
                    path: cert_path.to_path_buf(),
                    reason: "no certificate".into(),
                })
            }
            (Some(Ok(_)), Some(Ok(_))) => {
                return Err(CaError::InvalidPem {
                    path: cert_path.to_path_buf(),
                    reason: "more than one certificate".into(),
                })
            }
        };
        let mismatch = |reason: String| CaError::KeyMismatch {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
            reason,
        };
        let signing = rustls::crypto::ring::default_provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                key.serialize_der(),
            )))
            .map_err(|e| mismatch(e.to_string()))?;
        CertifiedKey::new(vec![cert_der.clone()], signing)
            .keys_match()
            .map_err(|e| mismatch(e.to_string()))?;
        // The issuer needs only the subject name, key-id method and key
        // usages, all of which are fixed by `ca_params`.
        Ok(Self {
            cert_pem,
            cert_der,
            issuer: Issuer::new(ca_params(), key),
        })
    }

    /// The CA certificate as PEM (what workloads must trust).
    #[must_use]
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate as DER.
    #[must_use]
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The system trust bundle (first existing of [`SYSTEM_BUNDLE_PATHS`],
    /// empty if none) followed by the CA certificate: a drop-in
    /// `SSL_CERT_FILE` for workloads.
    ///
    /// # Errors
    /// [`CaError::Io`] when an existing system bundle cannot be read.
    pub fn bundle_pem(&self) -> Result<String, CaError> {
        let mut out = match system_bundle_path() {
            Some(path) => fs::read_to_string(&path).map_err(io_err("read", &path))?,
            None => String::new(),
        };
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&self.cert_pem);
        Ok(out)
    }

    /// Mint a leaf certificate for `host` with a fresh P-256 key: SAN and CN
    /// are the host (an IP SAN for IP literals), EKU serverAuth, valid from
    /// one day ago for 30 days. Returns the chain `[leaf, ca]` and the key.
    ///
    /// # Errors
    /// [`CaError::Generate`] when rcgen refuses the name or fails to sign.
    pub fn issue_leaf(
        &self,
        host: &Host,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let (san, cn) = match host {
            Host::Name(name) => (
                SanType::DnsName(name.to_string().try_into()?),
                name.to_string(),
            ),
            Host::Ip(ip) => (SanType::IpAddress(*ip), ip.to_string()),
        };
        params.subject_alt_names = vec![san];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, DAY, LEAF_VALIDITY);
        let leaf = params.signed_by(&key, &self.issuer)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((vec![leaf.der().clone(), self.cert_der.clone()], key_der))
    }
}

/// The fixed CA subject and constraints (validity is set by the caller).
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, CA_ORGANIZATION);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// Set `not_before = now - before` and `not_after = now + after` (rcgen's
/// date type is reached through `date_time_ymd`, so no direct `time` dep).
fn set_validity(params: &mut CertificateParams, before: Duration, after: Duration) {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    params.not_before = now - before;
    params.not_after = now + after;
}

/// The first existing system trust bundle, if any.
pub(crate) fn system_bundle_path() -> Option<PathBuf> {
    SYSTEM_BUNDLE_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

fn exists(path: &Path) -> Result<bool, CaError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("stat", path)(e)),
    }
}

/// Read a secret file, refusing it when group or others have any access.
/// The mode is checked on the opened handle, so a swap cannot slip past.
fn read_private(path: &Path) -> Result<String, CaError> {
    let mut file = fs::File::open(path).map_err(io_err("open", path))?;
    let mode = file
        .metadata()
        .map_err(io_err("stat", path))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CaError::InsecureKeyMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut out = String::new();
    file.read_to_string(&mut out)
        .map_err(io_err("read", path))?;
    Ok(out)
}

/// Write `contents` to a temporary file created with `mode` in `dir`, then
/// rename it over `path`, so readers never see a partial file and a secret
/// is never briefly world-readable.
fn write_atomic(dir: &Path, path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(contents)?;
            f.sync_all()
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("write", &tmp)(e));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("rename into", path)(e));
    }
    // Make the rename durable; failure here is not worth refusing to start.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
