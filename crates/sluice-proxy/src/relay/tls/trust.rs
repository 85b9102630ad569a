//! Trust material for workloads: the sandbox CA plus the system roots in every
//! shape a TLS stack of the sandbox may read. `sluice run` writes these and
//! mounts them where system-store clients look (issue 13):
//!
//! - a PEM bundle (OpenSSL, GnuTLS, Go, rustls-native-certs, npm `cafile`);
//! - an OpenSSL hashed directory (`<subject hash>.<n>`, as `c_rehash` makes) for
//!   `SSL_CERT_DIR`/`capath` users;
//! - a Java trust store (JKS; Java 9+ also reads it where PKCS12 is expected).
//!
//! Certificates only; nothing here is secret.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;
use sha1::{Digest as _, Sha1};

/// Password of the Java trust store (integrity only; the JDK's customary one).
pub const JAVA_TRUST_STORE_PASSWORD: &str = "changeit";

/// What [`write_trust_files`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustFiles {
    /// System roots followed by the sandbox CA, PEM.
    pub bundle: PathBuf,
    /// OpenSSL hashed certificate directory.
    pub cert_dir: PathBuf,
    /// Java trust store (JKS).
    pub java_trust_store: PathBuf,
}

/// Errors writing trust files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bundle holds no certificate at all.
    #[error("the trust bundle holds no certificate")]
    Empty,
}

/// Writes `ca-bundle.pem`, `certs/` and `java-cacerts.jks` under `dir` from
/// `bundle_pem` (every certificate of which is trusted). Files are mode 0644.
///
/// # Errors
/// [`TrustError`] naming the file that could not be written.
pub fn write_trust_files(dir: &Path, bundle_pem: &str) -> Result<TrustFiles, TrustError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(bundle_pem.as_bytes())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TrustError::Empty);
    }
    let files = TrustFiles {
        bundle: dir.join("ca-bundle.pem"),
        cert_dir: dir.join("certs"),
        java_trust_store: dir.join("java-cacerts.jks"),
    };
    write_file(&files.bundle, bundle_pem.as_bytes())?;
    std::fs::create_dir_all(&files.cert_dir).map_err(io(&files.cert_dir))?;
    set_mode(&files.cert_dir, 0o755)?;
    let mut used: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
    for cert in &certs {
        let Some(hash) = subject_hash(cert) else {
            continue;
        };
        let n = used.entry(hash).or_insert(0);
        let path = files.cert_dir.join(format!("{hash:08x}.{n}"));
        *n += 1;
        write_file(&path, pem_of(cert).as_bytes())?;
    }
    write_file(
        &files.java_trust_store,
        &java_key_store(&certs, JAVA_TRUST_STORE_PASSWORD),
    )?;
    Ok(files)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrustError + '_ {
    move |source| TrustError::Io {
        path: path.to_owned(),
        source,
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), TrustError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), TrustError> {
    std::fs::write(path, bytes).map_err(io(path))?;
    set_mode(path, 0o644)
}

fn pem_of(cert: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// OpenSSL's subject name hash (`openssl x509 -subject_hash`, the file names of a
/// hashed directory): SHA-1 of the canonical encoding of the subject, first four
/// bytes little-endian. `None` when the certificate does not parse.
#[must_use]
pub fn subject_hash(cert: &CertificateDer<'_>) -> Option<u32> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let mut canon = Vec::new();
    for rdn in parsed.subject().iter() {
        let mut avas: Vec<Vec<u8>> = rdn
            .iter()
            .map(|ava| {
                let mut body = der(0x06, ava.attr_type().as_bytes());
                let value = ava.attr_value();
                let canonical = canonical_string(value.header.tag().0, value.data);
                match canonical {
                    Some(s) => body.extend(der(0x0c, s.as_bytes())),
                    None => body.extend(der(
                        u8::try_from(value.header.tag().0).unwrap_or(0x04),
                        value.data,
                    )),
                }
                der(0x30, &body)
            })
            .collect();
        avas.sort();
        canon.extend(der(0x31, &avas.concat()));
    }
    let digest = Sha1::digest(&canon);
    Some(u32::from_le_bytes([
        digest[0], digest[1], digest[2], digest[3],
    ]))
}

/// DER TLV with a definite length.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend(&bytes[skip..]);
    }
    out.extend(content);
    out
}

/// OpenSSL's canonical form of a directory string: as UTF-8, ASCII lowercased,
/// leading and trailing white space removed, inner runs of it made one space.
/// `None` for tags that are not canonicalized (kept as they are).
fn canonical_string(tag: u32, data: &[u8]) -> Option<String> {
    let text: String = match tag {
        // UTF8String
        12 => String::from_utf8_lossy(data).into_owned(),
        // PrintableString, T61String, IA5String, VisibleString: one byte a character
        19 | 20 | 22 | 26 => data.iter().map(|b| char::from(*b)).collect(),
        // BMPString: UTF-16BE
        30 => {
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        // UniversalString: UTF-32BE
        28 => data
            .chunks_exact(4)
            .filter_map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        _ => return None,
    };
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r');
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.trim_matches(is_space).chars() {
        if is_space(c) {
            pending_space = true;
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(c.to_ascii_lowercase());
    }
    Some(out)
}

/// A JKS key store holding `certs` as trusted-certificate entries (aliases
/// `sluice-0`, `sluice-1`, ...), sealed with `password` as the JDK does: SHA-1
/// over the password (UTF-16BE), "Mighty Aphrodite" and the store's bytes.
#[must_use]
pub fn java_key_store(certs: &[CertificateDer<'_>], password: &str) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(0xfeed_feed_u32.to_be_bytes());
    out.extend(2u32.to_be_bytes());
    out.extend(u32::try_from(certs.len()).unwrap_or(u32::MAX).to_be_bytes());
    let utf = |out: &mut Vec<u8>, s: &str| {
        out.extend(u16::try_from(s.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend(s.as_bytes());
    };
    for (i, cert) in certs.iter().enumerate() {
        out.extend(2u32.to_be_bytes()); // trusted certificate entry
        utf(&mut out, &format!("sluice-{i}"));
        out.extend(0u64.to_be_bytes()); // creation date
        utf(&mut out, "X.509");
        out.extend(u32::try_from(cert.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend(cert.as_ref());
    }
    let mut sha = Sha1::new();
    for unit in password.encode_utf16() {
        sha.update(unit.to_be_bytes());
    }
    sha.update(b"Mighty Aphrodite");
    sha.update(&out);
    out.extend(sha.finalize());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(names: &[(rcgen::DnType, rcgen::DnValue)]) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        for (t, v) in names {
            dn.push(t.clone(), v.clone());
        }
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("self-signed").der().clone()
    }

    #[test]
    fn canonical_strings_follow_openssl() {
        let cases: &[(u32, &[u8], &str)] = &[
            (12, b"  Sluice   Sandbox\tCA ", "sluice sandbox ca"),
            (19, b"US", "us"),
            (22, b"Mixed.CASE@Example.COM", "mixed.case@example.com"),
            (12, "Ünïcode  Name".as_bytes(), "Ünïcode name"),
            (30, &[0, b'A', 0, b' ', 0, b' ', 0, b'B'], "a b"),
            (12, b"   ", ""),
        ];
        for (tag, data, want) in cases {
            assert_eq!(canonical_string(*tag, data).as_deref(), Some(*want));
        }
        assert_eq!(canonical_string(4, b"x"), None, "OCTET STRING kept");
    }

    /// Values computed with `openssl x509 -subject_hash -noout` for the same
    /// subjects (the hash depends on the subject only, not on the key).
    #[test]
    fn subject_hashes_match_openssl() {
        use rcgen::{DnType, DnValue};
        let sluice = cert_with(&[
            (
                DnType::CommonName,
                DnValue::Utf8String("sluice sandbox CA".into()),
            ),
            (
                DnType::OrganizationName,
                DnValue::Utf8String("sluice".into()),
            ),
        ]);
        let messy = cert_with(&[
            (
                DnType::CountryName,
                DnValue::PrintableString("US".try_into().unwrap()),
            ),
            (
                DnType::CommonName,
                DnValue::Utf8String("  Some   ROOT  ca ".into()),
            ),
        ]);
        assert_eq!(subject_hash(&sluice), Some(OPENSSL_SLUICE));
        assert_eq!(subject_hash(&messy), Some(OPENSSL_MESSY));
    }

    const OPENSSL_SLUICE: u32 = 0x5d20_9d26;
    const OPENSSL_MESSY: u32 = 0x3abc_151f;

    /// Every `<hash>.<n>` link of the system's hashed directory (made by
    /// OpenSSL's `c_rehash`/`update-ca-certificates`) names the hash we compute
    /// for the certificate it points at: real root subjects, all string types.
    #[test]
    fn subject_hashes_match_the_system_hashed_directory() {
        let mut compared = 0;
        for entry in std::fs::read_dir("/etc/ssl/certs").expect("/etc/ssl/certs (ca-certificates)")
        {
            let path = entry.expect("entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let Some((hash, n)) = name.split_once('.') else {
                continue;
            };
            let (Ok(want), true) = (
                u32::from_str_radix(hash, 16),
                n.chars().all(|c| c.is_ascii_digit()),
            ) else {
                continue;
            };
            let pem = std::fs::read(&path).expect("read cert");
            let cert = CertificateDer::from_pem_slice(&pem).expect("pem");
            assert_eq!(subject_hash(&cert), Some(want), "{}", path.display());
            compared += 1;
        }
        assert!(compared >= 50, "only {compared} hashed links compared");
    }

    #[test]
    fn jks_layout_and_seal() {
        let certs = [cert_with(&[]), cert_with(&[])];
        let jks = java_key_store(&certs, "changeit");
        assert_eq!(
            &jks[..12],
            &[0xfe, 0xed, 0xfe, 0xed, 0, 0, 0, 2, 0, 0, 0, 2]
        );
        let (body, seal) = jks.split_at(jks.len() - 20);
        let mut sha = Sha1::new();
        for u in "changeit".encode_utf16() {
            sha.update(u.to_be_bytes());
        }
        sha.update(b"Mighty Aphrodite");
        sha.update(body);
        assert_eq!(seal, sha.finalize().as_slice());
        // first entry: tag 2, alias "sluice-0"
        assert_eq!(&jks[12..16], &[0, 0, 0, 2]);
        assert_eq!(&jks[16..26], b"\x00\x08sluice-0");
    }
}
