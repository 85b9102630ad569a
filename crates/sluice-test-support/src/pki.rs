//! A test PKI for upstream TLS.

use std::path::PathBuf;

use crate::TempDir;

/// PEM files written by [`test_pki`].
#[derive(Debug)]
pub struct TestPki {
    /// The CA certificate (what a client or `--upstream-ca` trusts).
    pub ca: PathBuf,
    /// The leaf certificate for the names asked for.
    pub cert: PathBuf,
    /// The leaf's private key.
    pub key: PathBuf,
}

/// A fresh CA and one leaf it signed for `names`, written into `dir` as
/// `{tag}-ca.pem`, `{tag}-cert.pem` and `{tag}-key.pem`.
pub fn test_pki(dir: &TempDir, tag: &str, names: &[&str]) -> TestPki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("e2e test CA {tag}"));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let leaf = CertificateParams::new(names)
        .expect("leaf params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");
    let pki = TestPki {
        ca: dir.path(&format!("{tag}-ca.pem")),
        cert: dir.path(&format!("{tag}-cert.pem")),
        key: dir.path(&format!("{tag}-key.pem")),
    };
    std::fs::write(&pki.ca, ca_cert.pem()).expect("write ca");
    std::fs::write(&pki.cert, leaf.pem()).expect("write cert");
    std::fs::write(&pki.key, leaf_key.serialize_pem()).expect("write key");
    pki
}
