//! Real-process identity tests: real sockets, real children, real `/proc`.
//! They need to see other processes' fd tables, which CI has (tests run as root).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sluice_sandbox::{IdentityError, ProcfsIdentity};
use sluice_test_support::skip_or_fail;

const PROXY_VARS: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "all_proxy",
];

fn sha256_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read binary");
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn canonical(path: impl AsRef<Path>) -> PathBuf {
    std::fs::canonicalize(path).expect("canonicalize")
}

/// Accepts one connection, failing after `timeout` instead of hanging.
fn accept_within(listener: &TcpListener, child: &mut Child, timeout: Duration) -> TcpStream {
    listener.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).expect("blocking stream");
                return stream;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("client exited before connecting: {status}");
                }
                assert!(
                    Instant::now() < deadline,
                    "no connection within {timeout:?}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// A spawned client and its binary (known up front for curl; for python3 it is read from
/// `/proc` once connected, because `python3` may be a shim that execs the interpreter).
struct Client {
    child: Child,
    exe: Option<PathBuf>,
}

impl Client {
    fn exe(&self) -> PathBuf {
        self.exe
            .clone()
            .unwrap_or_else(|| canonical(format!("/proc/{}/exe", self.child.id())))
    }
}

/// Spawns a process that connects to `addr` and then waits, using curl if present
/// (blocking on the HTTP response), else python3.
fn spawn_client(addr: SocketAddr) -> Client {
    let curl = Path::new("/usr/bin/curl");
    if curl.exists() {
        let mut cmd = Command::new(curl);
        cmd.args(["--silent", "--output", "/dev/null", "--noproxy", "*"])
            .args(["--max-time", "5"])
            .arg(format!("http://{addr}/"));
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        let child = cmd.stdin(Stdio::null()).spawn().expect("spawn curl");
        return Client {
            child,
            exe: Some(canonical(curl)),
        };
    }
    let script = format!(
        "import socket,time; s=socket.create_connection(('{}',{})); time.sleep(5)",
        addr.ip(),
        addr.port()
    );
    let child = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn python3");
    Client { child, exe: None }
}

fn finish(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn own_exe() -> PathBuf {
    canonical(std::env::current_exe().expect("current exe"))
}

fn check_child_identity(listener: &TcpListener, ident: &ProcfsIdentity) {
    let mut client = spawn_client(listener.local_addr().expect("local addr"));
    let stream = accept_within(listener, &mut client.child, Duration::from_secs(10));
    let child_exe = client.exe();
    let child = client.child;
    let peer = stream.peer_addr().expect("peer");
    let local = stream.local_addr().expect("local");

    let resolved = ident.resolve(peer, local);
    let child_pid = child.id();
    drop(stream);
    finish(child);
    let id = resolved.expect("resolve child identity");

    assert_eq!(id.pid, child_pid);
    assert_eq!(id.owners, vec![child_pid]);
    assert_eq!(Path::new(&id.exe), child_exe);
    assert_eq!(id.exe_sha256, sha256_hex(&child_exe));
    assert_eq!(id.exe_sha256.len(), 64);
    let me = own_exe();
    assert_eq!(id.ancestors.first().map(PathBuf::from), Some(me.clone()));
    assert_eq!(id.ancestor_pids.first(), Some(&std::process::id()));
    assert_eq!(id.ancestor_sha256.first(), Some(&sha256_hex(&me)));
    assert_eq!(id.ancestors.len(), id.ancestor_pids.len());
    assert_eq!(id.ancestors.len(), id.ancestor_sha256.len());
    assert!(!id.cmdline_paths.contains(&id.exe));
}

/// The resolver both ways: step 1 from `/proc/net/tcp`, and by sock_diag.
fn both_lookups(anchor: Option<u32>) -> [ProcfsIdentity; 2] {
    [
        ProcfsIdentity::new("/proc", anchor),
        ProcfsIdentity::new("/proc", anchor).with_socket_diag(),
    ]
}

#[test]
fn resolves_real_child_process() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    for ident in both_lookups(None) {
        check_child_identity(&listener, &ident);
        // Second lookup of a fresh connection exercises the hash cache.
        check_child_identity(&listener, &ident);
    }
}

#[test]
fn anchor_stops_ancestor_walk_and_selects_netns_view() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let me = std::process::id();
    for ident in both_lookups(Some(me)) {
        anchored_lookup(&listener, &ident, me);
    }
}

fn anchored_lookup(listener: &TcpListener, ident: &ProcfsIdentity, me: u32) {
    let mut client = spawn_client(listener.local_addr().expect("local addr"));
    let stream = accept_within(listener, &mut client.child, Duration::from_secs(10));
    let child_exe = client.exe();
    let child = client.child;
    let resolved = ident.resolve(
        stream.peer_addr().expect("peer"),
        stream.local_addr().expect("local"),
    );
    let child_pid = child.id();
    drop(stream);
    finish(child);
    let id = resolved.expect("resolve with anchor");
    assert_eq!(id.pid, child_pid);
    assert_eq!(Path::new(&id.exe), child_exe);
    assert_eq!(id.ancestor_pids, vec![me]);
    assert_eq!(id.ancestors, vec![own_exe().to_string_lossy().into_owned()]);
}

#[test]
fn dual_stack_listener_matches_ipv4_client() {
    // An IPv4 client of a [::] listener is seen as ::ffff:127.0.0.1; its own socket is an
    // IPv4 row in /proc/net/tcp. Needs IPv6 (skippable only when allowed).
    let Ok(listener) = TcpListener::bind("[::]:0") else {
        return skip_or_fail("cannot bind [::]");
    };
    for ident in both_lookups(None) {
        dual_stack_lookup(&listener, &ident);
    }
}

fn dual_stack_lookup(listener: &TcpListener, ident: &ProcfsIdentity) {
    let port = listener.local_addr().expect("local addr").port();
    let mut client = spawn_client(SocketAddr::from(([127, 0, 0, 1], port)));
    let stream = accept_within(listener, &mut client.child, Duration::from_secs(10));
    let child_exe = client.exe();
    let child = client.child;
    let peer = stream.peer_addr().expect("peer");
    let local = stream.local_addr().expect("local");
    let resolved = ident.resolve(peer, local);
    let child_pid = child.id();
    drop(stream);
    finish(child);
    if !peer.is_ipv6() {
        // An IPv4 peer means no v4-mapped address: not the case under test.
        return skip_or_fail(&format!("listener is not dual-stack (peer {peer})"));
    }
    let id = resolved.expect("resolve through dual-stack listener");
    assert_eq!(id.pid, child_pid);
    assert_eq!(Path::new(&id.exe), child_exe);
}

/// Spawns a client whose socket is shared with a `sleep` child that has a different exe.
/// The client prints `ready <sleep pid>` once the child holds the socket, and kills the
/// child when its stdin is written to or closed.
fn spawn_shared_socket_client(addr: SocketAddr) -> Option<Child> {
    let script = format!(
        "import socket,subprocess,sys\n\
         s=socket.create_connection(('{}',{}))\n\
         p=subprocess.Popen(['/bin/sleep','30'],pass_fds=[s.fileno()])\n\
         print('ready',p.pid,flush=True)\n\
         sys.stdin.read()\n\
         p.kill()\n\
         p.wait()\n",
        addr.ip(),
        addr.port()
    );
    if let Ok(child) = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        return Some(child);
    }
    // Fallback without python: bash keeps fd 3 and its `sleep` child inherits it.
    let script = format!(
        "exec 3<>/dev/tcp/{}/{}; sleep 30 & echo ready $!; read -r _; kill $!",
        addr.ip(),
        addr.port()
    );
    Command::new("bash")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()
}

#[test]
fn shared_socket_with_different_exes_is_ambiguous() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let Some(mut child) = spawn_shared_socket_client(listener.local_addr().expect("addr")) else {
        return skip_or_fail("neither python3 nor bash available");
    };
    let stream = accept_within(&listener, &mut child, Duration::from_secs(10));
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let sleep_pid: u32 = line
        .trim()
        .strip_prefix("ready ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected ready line {line:?}"));

    let resolved = ProcfsIdentity::new("/proc", None).resolve(
        stream.peer_addr().expect("peer"),
        stream.local_addr().expect("local"),
    );
    let holder_pid = child.id();
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"done\n");
    }
    drop(stream);
    let _ = child.wait();

    match resolved {
        Err(IdentityError::Ambiguous { inode, pids }) => {
            assert!(inode > 0);
            assert!(
                pids.contains(&sleep_pid),
                "{pids:?} lacks sleep {sleep_pid}"
            );
            assert!(pids.contains(&holder_pid), "{pids:?} lacks {holder_pid}");
            let msg = IdentityError::Ambiguous { inode, pids }.to_string();
            assert!(
                msg.starts_with("ambiguous shared socket ownership: inode "),
                "{msg}"
            );
            assert!(msg.ends_with("with different policy identities"), "{msg}");
        }
        other => panic!("expected Ambiguous, got {other:?}"),
    }
}

#[test]
fn unknown_connection_is_not_found() {
    let peer: SocketAddr = "127.0.0.1:1".parse().expect("addr");
    let local: SocketAddr = "127.0.0.1:2".parse().expect("addr");
    for ident in both_lookups(None) {
        not_found(&ident, peer, local);
    }
}

fn not_found(ident: &ProcfsIdentity, peer: SocketAddr, local: SocketAddr) {
    let err = ident
        .resolve(peer, local)
        .expect_err("nothing uses this pair");
    assert!(
        matches!(err, IdentityError::SocketNotFound { peer: p, local: l } if p == peer && l == local),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "no established socket for 127.0.0.1:1 -> 127.0.0.1:2 in /proc/net/tcp"
    );
}

#[test]
fn listener_socket_itself_is_not_a_client() {
    // The proxy's own listening socket is not ESTABLISHED and must never be returned.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    for ident in both_lookups(None) {
        let err = ident
            .resolve(addr, "0.0.0.0:0".parse().expect("addr"))
            .expect_err("listener is not a connection");
        assert!(
            matches!(err, IdentityError::SocketNotFound { .. }),
            "{err:?}"
        );
    }
}

#[test]
#[allow(clippy::disallowed_methods)] // test: dials its own local listener
fn skipped_process_is_never_an_owner() {
    // This test process holds both ends. Resolving the client end finds this
    // process; skipping it (as sluice skips itself) leaves no owner: deny.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    let (peer, local) = (
        server.peer_addr().expect("peer"),
        server.local_addr().expect("local"),
    );
    let me = std::process::id();
    for ident in both_lookups(None) {
        let id = ident.resolve(peer, local).expect("own socket resolves");
        assert_eq!(id.owners, vec![me]);
        let err = ident
            .skip_process(me)
            .resolve(peer, local)
            .expect_err("skipped owner");
        assert!(matches!(err, IdentityError::NoOwner { .. }), "{err:?}");
    }
    drop(client);
}
