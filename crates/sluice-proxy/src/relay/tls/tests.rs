//! Real-TLS tests for the CA, the leaf cache and the upstream client.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use crate::egress::Host;

use sluice_test_support::TempDir;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

fn name(n: &str) -> Host {
    Host::parse(n).expect("valid host")
}

fn new_ca(dir: &TempDir) -> Arc<SandboxCa> {
    Arc::new(SandboxCa::load_or_create(&dir.path("state")).expect("ca"))
}

/// A rustls client trusting only `ca`.
fn client_trusting(ca: &SandboxCa) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).expect("add ca");
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec(), b"h2".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// Full handshake over an in-memory pipe; returns the client's ALPN.
async fn handshake(
    cache: &LeafCache,
    host: &Host,
    sni: ServerName<'static>,
    ca: &SandboxCa,
) -> Result<Option<Vec<u8>>, std::io::Error> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(cache.server_config(host).expect("server config"));
    let server = async move {
        let mut tls = acceptor.accept(server_io).await?;
        tls.write_all(b"pong").await?;
        tls.shutdown().await?;
        Ok::<_, std::io::Error>(())
    };
    let client = async {
        let mut tls = client_trusting(ca).connect(sni, client_io).await?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await?;
        assert_eq!(buf, b"pong");
        Ok::<_, std::io::Error>(alpn)
    };
    let (server_result, client_result) = tokio::join!(server, client);
    let alpn = client_result?;
    server_result?;
    Ok(alpn)
}

#[test]
fn ca_create_sets_modes_and_reload_is_stable() {
    let tmp = TempDir::new("tls");
    let state = tmp.path("state");
    let ca = SandboxCa::load_or_create(&state).expect("create");
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join(CA_KEY_FILE)), 0o600);
    assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    let key = std::fs::read_to_string(state.join(CA_KEY_FILE)).expect("key");
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "pkcs#8 pem");
    // Only the two files remain (no temp files left behind).
    let mut names: Vec<_> = std::fs::read_dir(&state)
        .expect("list")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    names.sort();
    assert_eq!(names, [CA_KEY_FILE, CA_CERT_FILE]);

    let again = SandboxCa::load_or_create(&state).expect("reload");
    assert_eq!(again.cert_der(), ca.cert_der());
    assert_eq!(again.cert_pem(), ca.cert_pem());

    let bundle = ca.bundle_pem().expect("bundle");
    assert!(bundle.ends_with(ca.cert_pem()));
}

#[test]
fn ca_refuses_group_or_world_accessible_key() {
    let tmp = TempDir::new("tls");
    let state = tmp.path("state");
    SandboxCa::load_or_create(&state).expect("create");
    let key = state.join(CA_KEY_FILE);
    for bad in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(bad)).expect("chmod");
        let err = SandboxCa::load_or_create(&state).expect_err("insecure key accepted");
        assert!(
            matches!(err, CaError::InsecureKeyMode { mode, .. } if mode == bad),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    SandboxCa::load_or_create(&state).expect("0400 is fine");
}

#[test]
fn ca_refuses_half_state_and_foreign_key() {
    let tmp = TempDir::new("tls");
    let a = tmp.path("a");
    let b = tmp.path("b");
    SandboxCa::load_or_create(&a).expect("create a");
    SandboxCa::load_or_create(&b).expect("create b");

    std::fs::copy(b.join(CA_KEY_FILE), a.join(CA_KEY_FILE)).expect("copy key");
    let err = SandboxCa::load_or_create(&a).expect_err("foreign key accepted");
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");

    std::fs::remove_file(b.join(CA_CERT_FILE)).expect("rm cert");
    let err = SandboxCa::load_or_create(&b).expect_err("key without cert accepted");
    assert!(matches!(err, CaError::Incomplete { .. }), "{err}");
    std::fs::remove_file(b.join(CA_KEY_FILE)).expect("rm key");
    SandboxCa::load_or_create(&b).expect("recreated from empty dir");
}

#[tokio::test]
async fn leaf_for_name_and_ips_verifies_against_ca_with_http1_alpn() {
    let tmp = TempDir::new("tls");
    let ca = new_ca(&tmp);
    let cache = LeafCache::new(Arc::clone(&ca), DEFAULT_LEAF_CACHE_CAPACITY);
    let cases = [
        (
            name("api.example.com"),
            ServerName::try_from("api.example.com").expect("sni"),
        ),
        (
            Host::Ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10))),
            ServerName::IpAddress(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)).into()),
        ),
        (
            Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ServerName::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST).into()),
        ),
    ];
    for (host, sni) in cases {
        let alpn = handshake(&cache, &host, sni, &ca).await.expect("handshake");
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]), "{host}");
        let (chain, _) = ca.issue_leaf(&host).expect("leaf");
        assert_eq!(chain.len(), 2);
        assert_eq!(&chain[1], ca.cert_der());
    }
}

#[tokio::test]
async fn leaf_is_refused_for_another_name_or_another_ca() {
    let tmp = TempDir::new("tls");
    let ca = new_ca(&tmp);
    let cache = LeafCache::new(Arc::clone(&ca), 4);
    let host = name("api.example.com");
    let wrong = ServerName::try_from("evil.example.com").expect("sni");
    assert!(handshake(&cache, &host, wrong, &ca).await.is_err());

    let other_tmp = TempDir::new("tls");
    let other = new_ca(&other_tmp);
    let sni = ServerName::try_from("api.example.com").expect("sni");
    assert!(handshake(&cache, &host, sni, &other).await.is_err());
}

#[test]
fn leaf_cache_is_lru_with_counters() {
    let tmp = TempDir::new("tls");
    let cache = LeafCache::new(new_ca(&tmp), 2);
    let (a, b, c) = (name("a.example"), name("b.example"), name("c.example"));

    let first_a = cache.server_config(&a).expect("a");
    cache.server_config(&b).expect("b");
    assert_eq!((cache.hits(), cache.misses()), (0, 2));

    let again_a = cache.server_config(&a).expect("a hit");
    assert!(Arc::ptr_eq(&first_a, &again_a));
    assert_eq!((cache.hits(), cache.misses()), (1, 2));

    // b is now least recently used and goes first.
    cache.server_config(&c).expect("c");
    assert_eq!(cache.len(), 2);
    assert!(cache.contains(&a) && cache.contains(&c) && !cache.contains(&b));
    assert_eq!((cache.hits(), cache.misses()), (1, 3));

    // Bringing b back evicts a (c was touched more recently).
    cache.server_config(&b).expect("b again");
    assert!(cache.contains(&b) && cache.contains(&c) && !cache.contains(&a));
    assert_eq!((cache.hits(), cache.misses()), (1, 4));
    assert!(cache.server_config(&c).is_ok());
    assert_eq!(cache.hits(), 2);
}

#[test]
fn upstream_extra_ca_files_are_checked() {
    let tmp = TempDir::new("tls");
    let missing = tmp.path("missing.pem");
    let err = UpstreamTls::new(std::slice::from_ref(&missing)).expect_err("missing file");
    assert!(err.to_string().contains("missing.pem"), "{err}");

    let empty = tmp.path("empty.pem");
    std::fs::write(&empty, "not a certificate\n").expect("write");
    let err = UpstreamTls::new(std::slice::from_ref(&empty)).expect_err("no cert");
    assert!(matches!(err, TlsConfigError::BadCaFile { .. }), "{err}");
    assert!(err.to_string().contains("empty.pem"), "{err}");

    let base = UpstreamTls::new(&[]).expect("default roots");
    assert!(base.root_count() >= webpki_roots::TLS_SERVER_ROOTS.len());
}

/// A TLS server on 127.0.0.1 presenting a `localhost` leaf from `ca`.
async fn tls_server(ca: Arc<SandboxCa>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let cache = LeafCache::new(ca, 4);
    let acceptor = TlsAcceptor::from(cache.server_config(&name("localhost")).expect("config"));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(b"hello").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

async fn dial(addr: SocketAddr) -> TcpStream {
    #[allow(clippy::disallowed_methods)] // test: dials its own local listener
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp
}

#[tokio::test]
async fn upstream_connect_verifies_against_extra_ca() {
    let tmp = TempDir::new("tls");
    let test_ca = new_ca(&tmp);
    let ca_file = tmp.path("state").join(CA_CERT_FILE);
    let addr = tls_server(test_ca).await;
    let timeout = Duration::from_secs(5);
    let localhost = name("localhost");

    let trusting = UpstreamTls::new(std::slice::from_ref(&ca_file)).expect("upstream tls");
    let mut tls = trusting
        .connect(&localhost, dial(addr).await, timeout)
        .await
        .expect("verified connect");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut buf = Vec::new();
    tls.read_to_end(&mut buf).await.expect("read");
    assert_eq!(buf, b"hello");

    let plain = UpstreamTls::new(&[]).expect("upstream tls");
    let err = plain
        .connect(&localhost, dial(addr).await, timeout)
        .await
        .expect_err("unknown issuer accepted");
    assert!(matches!(err, UpstreamTlsError::Verification(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "upstream certificate verification failed for localhost: UnknownIssuer"
    );

    let wrong = name("api.example.com");
    let err = trusting
        .connect(&wrong, dial(addr).await, timeout)
        .await
        .expect_err("wrong name accepted");
    assert!(matches!(err, UpstreamTlsError::Verification(_)), "{err}");
    assert!(
        err.to_string().contains("api.example.com: NotValidForName"),
        "{err}"
    );

    let ip = Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let err = trusting
        .connect(&ip, dial(addr).await, timeout)
        .await
        .expect_err("ip not in leaf accepted");
    assert!(matches!(err, UpstreamTlsError::Verification(_)), "{err}");
}

#[tokio::test]
async fn upstream_connect_times_out_and_reports_handshake_errors() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let upstream = UpstreamTls::new(&[]).expect("upstream tls");

    // A server that accepts and says nothing.
    let silent = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(tcp);
        let (mut tcp, _) = listener.accept().await.expect("accept");
        // Not TLS: an HTTP response instead of a ServerHello.
        let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
    });
    let err = upstream
        .connect(
            &name("localhost"),
            dial(addr).await,
            Duration::from_millis(100),
        )
        .await
        .expect_err("silent server");
    assert!(matches!(err, UpstreamTlsError::Timeout), "{err}");

    let err = upstream
        .connect(&name("localhost"), dial(addr).await, Duration::from_secs(5))
        .await
        .expect_err("plaintext server");
    assert!(matches!(err, UpstreamTlsError::Handshake(_)), "{err}");
    assert!(err
        .to_string()
        .starts_with("upstream tls handshake failed for localhost: "));
    silent.abort();
}
