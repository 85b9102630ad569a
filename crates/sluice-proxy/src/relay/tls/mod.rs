//! TLS termination for CONNECT tunnels (facts §5): a persistent sandbox CA
//! ([`SandboxCa`]), per-host leaf server configurations ([`LeafCache`]), the
//! verifying upstream client ([`UpstreamTls`]) and the tunnel protocol
//! classifier that decides whether to terminate at all ([`classify`],
//! [`peek_classify`]).
//!
//! Every rustls configuration here is built with the ring provider passed
//! explicitly; nothing depends on a process-default crypto provider.

mod ca;
mod classify;
mod leaf;
mod trust;
mod upstream;

#[cfg(test)]
mod tests;

pub use ca::{
    CaError, SandboxCa, CA_CERT_FILE, CA_COMMON_NAME, CA_KEY_FILE, CA_ORGANIZATION,
    SYSTEM_BUNDLE_PATHS,
};
pub use classify::{
    classify, peek_classify, TunnelProtocol, DEFAULT_PEEK_WAIT, HTTP1_METHODS, HTTP2_PREFACE,
    PEEK_LIMIT, PEEK_POLL,
};
pub use leaf::{LeafCache, ALPN_H2, ALPN_HTTP1, DEFAULT_LEAF_CACHE_CAPACITY};
pub use trust::{
    java_key_store, subject_hash, write_trust_files, TrustError, TrustFiles,
    JAVA_TRUST_STORE_PASSWORD,
};
pub use upstream::{TlsConfigError, UpstreamTls, UpstreamTlsError};
