//! TLS for the benchmark: a throwaway CA and server certificate, and the
//! rustls configurations of the upstream and of the load generator (ring
//! provider, chosen explicitly).

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// ALPN offered and accepted: HTTP/1.1 only.
const ALPN_HTTP1: &[u8] = b"http/1.1";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Write `ca.pem`, `cert.pem` (leaf for `name`, then the CA) and `key.pem`
/// into `dir`. The CA exists only for this benchmark run.
pub(crate) fn gen_cert(dir: &Path, name: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sluice-bench throwaway CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf_params = CertificateParams::new(vec![name.to_owned()])?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, name);
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;

    let write = |file: &str, contents: String| {
        let p = dir.join(file);
        std::fs::write(&p, contents).with_context(|| format!("write {}", p.display()))
    };
    write("ca.pem", ca_cert.pem())?;
    write("cert.pem", format!("{}{}", leaf.pem(), ca_cert.pem()))?;
    write("key.pem", leaf_key.serialize_pem())?;
    Ok(())
}

/// Server configuration from a PEM chain and a PEM private key.
pub(crate) fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("read {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parse {}", cert.display()))?;
    if chain.is_empty() {
        bail!("{}: no certificate", cert.display());
    }
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("read {}", key.display()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// Client configuration trusting only the certificates in `ca` (PEM).
pub(crate) fn client_config(ca: &Path) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).with_context(|| format!("read {}", ca.display()))? {
        roots.add(c.with_context(|| format!("parse {}", ca.display()))?)?;
    }
    if roots.is_empty() {
        bail!("{}: no certificate", ca.display());
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// `name` as a TLS server name (SNI and the name verified).
pub(crate) fn server_name(name: &str) -> anyhow::Result<ServerName<'static>> {
    ServerName::try_from(name.to_owned()).with_context(|| format!("invalid TLS name {name:?}"))
}
