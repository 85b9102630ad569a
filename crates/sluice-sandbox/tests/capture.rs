//! Transparent capture end to end, in real sandbox namespaces: the ruleset redirects
//! TCP to the synthetic pools to the transparent listener inside the namespace, and
//! `original_dst` recovers what the client dialled; without capture the fence holds;
//! hard-coded DNS resolvers are answered by policy DNS. Clients are python3 inside
//! the namespace (`ip netns exec`). Needs root (CI runs as root and never skips).
//!
//! All traffic stays inside the namespace or goes to the host side of its veth.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sluice_sandbox::netns::{SandboxNetns, SubnetPool};
use sluice_sandbox::nft::{Capture, Ruleset};
use sluice_sandbox::tools::Tools;
use sluice_sandbox::transparent::{bind_in_netns, original_dst};
use sluice_test_support::{is_root, skip_or_fail, PYTHON3};

const V4_POOL: &str = "198.18.0.0/15";
const V6_POOL: &str = "fd23:6f70:656e::/48";
/// NFLOG group of the fence; nothing reads it in these tests.
const LOG_GROUP: u16 = 7;

/// A sandbox namespace and its tools, or `None` after `skip_or_fail` (not root, no
/// `ip`/`nft`).
fn sandbox() -> Option<(Tools, SandboxNetns)> {
    if !is_root() {
        skip_or_fail("capture tests create network namespaces: run as root (sudo scripts/test)");
        return None;
    }
    let tools = match Tools::find() {
        Ok(t) => t,
        Err(e) => {
            skip_or_fail(&e.to_string());
            return None;
        }
    };
    let netns = SandboxNetns::create(&tools, SubnetPool::default()).expect("sandbox namespace");
    Some((tools, netns))
}

fn ruleset(netns: &SandboxNetns, dns_port: Option<u16>, capture: Option<Capture>) -> Ruleset {
    Ruleset {
        id: netns.id.clone(),
        proxy_ip: netns.host_ip,
        // Nothing listens there: these tests never use the proxy.
        proxy_port: 9,
        log_group: LOG_GROUP,
        dns_port,
        capture,
    }
}

/// `python3 -c SCRIPT` inside the namespace, stdout piped.
fn spawn_in(netns: &SandboxNetns, script: &str) -> Child {
    let prefix = netns.exec_prefix();
    Command::new(&prefix[0])
        .args(&prefix[1..])
        .args([PYTHON3, "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3 in the namespace")
}

/// Waits for `child` (killing it after `timeout`) and returns its output.
fn finish(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("client output")
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Accepts one connection from the non-blocking `listener` within `timeout`, failing
/// early if `client` exits first.
fn accept_within(listener: &TcpListener, client: &mut Child, timeout: Duration) -> TcpStream {
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).expect("blocking stream");
                stream
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .expect("read timeout");
                return stream;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Ok(Some(status)) = client.try_wait() {
                    let mut err = String::new();
                    if let Some(mut pipe) = client.stderr.take() {
                        let _ = pipe.read_to_string(&mut err);
                    }
                    panic!("client exited ({status}) before connecting:\n{err}");
                }
                assert!(
                    Instant::now() < deadline,
                    "no connection within {timeout:?}"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Reads `expected.len()` bytes and compares them, then answers `reply`.
fn exchange(stream: &mut TcpStream, expected: &[u8], reply: &[u8]) {
    let mut got = vec![0; expected.len()];
    stream.read_exact(&mut got).expect("read from client");
    assert_eq!(got, expected);
    stream.write_all(reply).expect("write to client");
}

/// The client: for each `host port tag` argument, connect, send `ask-<tag>`, print the
/// reply. Exits non-zero on the first failure.
const CONNECT_EACH: &str = r"
import socket, sys
args = sys.argv[1:]
for host, port, tag in zip(args[0::3], args[1::3], args[2::3]):
    s = socket.create_connection((host, int(port)), 2)
    s.settimeout(2)
    s.sendall(('ask-' + tag).encode())
    want = len('tell-' + tag)
    got = b''
    while len(got) < want:
        chunk = s.recv(want - len(got))
        if not chunk:
            break
        got += chunk
    print(tag, got.decode(), s.getpeername()[0], flush=True)
    s.close()
";

#[test]
fn capture_redirects_pool_connections_to_the_listener() {
    let Some((tools, netns)) = sandbox() else {
        return;
    };
    if let Err(e) = netns.route_local_v6(V6_POOL.parse().unwrap()) {
        return skip_or_fail(&format!("no IPv6 in the sandbox namespace: {e}"));
    }
    let ns_path = netns.ns_path();
    let l4 = bind_in_netns(&ns_path, (Ipv4Addr::LOCALHOST, 0).into()).expect("bind 127.0.0.1");
    let listen4 = l4.local_addr().expect("local addr");
    let port = listen4.port();
    let l6 = bind_in_netns(&ns_path, (Ipv6Addr::LOCALHOST, port).into()).expect("bind [::1]");
    assert_eq!(
        l6.local_addr().unwrap(),
        SocketAddr::from((Ipv6Addr::LOCALHOST, port))
    );
    let capture = Capture {
        v4: V4_POOL.parse().unwrap(),
        v6: Some(V6_POOL.parse().unwrap()),
        port,
    };
    ruleset(&netns, None, Some(capture))
        .install(&netns, &tools.nft)
        .expect("install the ruleset");

    let started = Instant::now();
    let mut client = {
        let prefix = netns.exec_prefix();
        Command::new(&prefix[0])
            .args(&prefix[1..])
            .args([PYTHON3, "-c", CONNECT_EACH])
            .args(["198.18.0.7", "6379", "v4"])
            .args(["fd23:6f70:656e::7", "443", "v6"])
            .args(["127.0.0.1", &port.to_string(), "direct"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn python3 in the namespace")
    };
    let wait = Duration::from_secs(3);

    let mut s = accept_within(&l4, &mut client, wait);
    assert_eq!(
        original_dst(&s).expect("original_dst v4"),
        "198.18.0.7:6379".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        s.peer_addr().unwrap().ip(),
        IpAddr::V4(netns.ns_ip),
        "the v4 client's source is its veth address"
    );
    exchange(&mut s, b"ask-v4", b"tell-v4");
    drop(s);

    let mut s = accept_within(&l6, &mut client, wait);
    assert_eq!(
        original_dst(&s).expect("original_dst v6"),
        "[fd23:6f70:656e::7]:443".parse::<SocketAddr>().unwrap()
    );
    exchange(&mut s, b"ask-v6", b"tell-v6");
    drop(s);

    // Dialled straight at the listener: not NATed, so the original destination is the
    // listener itself, outside the pools (callers refuse such connections).
    let mut s = accept_within(&l4, &mut client, wait);
    let direct = original_dst(&s).expect("original_dst direct");
    assert_eq!(direct, listen4);
    assert!(!capture.v4.contains(&Ipv4Addr::LOCALHOST));
    exchange(&mut s, b"ask-direct", b"tell-direct");
    drop(s);

    let out = finish(client, wait);
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "v4 tell-v4 198.18.0.7",
            "v6 tell-v6 fd23:6f70:656e::7",
            "direct tell-direct 127.0.0.1"
        ],
        "{}",
        describe(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn without_capture_the_fence_holds_pool_connections() {
    let Some((tools, netns)) = sandbox() else {
        return;
    };
    let ns_path = netns.ns_path();
    // A listener where capture would send the connection: it must see nothing.
    let l4 = bind_in_netns(&ns_path, (Ipv4Addr::LOCALHOST, 0).into()).expect("bind 127.0.0.1");
    ruleset(&netns, None, None)
        .install(&netns, &tools.nft)
        .expect("install the ruleset");
    // No bypass monitor runs, so the SYN is dropped unanswered: the connect times out.
    let client = spawn_in(
        &netns,
        r"
import socket
try:
    socket.create_connection(('198.18.0.7', 6379), 1.0)
    print('connected')
except OSError as e:
    print('refused', type(e).__name__)
",
    );
    let out = finish(client, Duration::from_secs(4));
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("refused"), "{}", describe(&out));
    match l4.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the listener got a connection without capture: {other:?}"),
    }
}

/// UDP and TCP sockets on the same port of `ip` (the host side of the veth).
fn dns_sockets(ip: Ipv4Addr) -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind((ip, 0)).expect("bind udp");
        let port = udp.local_addr().unwrap().port();
        if let Ok(tcp) = TcpListener::bind((ip, port)) {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP on {ip}");
}

#[test]
fn hard_coded_resolvers_reach_policy_dns() {
    let Some((tools, netns)) = sandbox() else {
        return;
    };
    let (udp, tcp) = dns_sockets(netns.host_ip);
    let dns_port = udp.local_addr().unwrap().port();
    ruleset(&netns, Some(dns_port), None)
        .install(&netns, &tools.nft)
        .expect("install the ruleset");
    udp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    tcp.set_nonblocking(true).unwrap();

    // A resolver "hard-coded" at the sandbox's own address (so nothing could leave the
    // namespace even without the rule), policy DNS itself, then loopback, which the
    // DNAT leaves alone (nothing listens there: refused).
    let script = format!(
        r"
import socket
for host, port in (('{ns}', 53), ('{host}', {dns_port})):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(2)
    u.sendto(b'q-udp', (host, port))
    data, src = u.recvfrom(100)
    print('udp', data.decode(), src[0], src[1], flush=True)
s = socket.create_connection(('{ns}', 53), 2)
s.settimeout(2)
s.sendall(b'q-tcp')
print('tcp', s.recv(100).decode(), s.getpeername()[1], flush=True)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(1)
u.connect(('127.0.0.1', 53))
u.send(b'q-lo')
try:
    u.recv(100)
    print('lo answered')
except ConnectionRefusedError:
    print('lo refused')
",
        ns = netns.ns_ip,
        host = netns.host_ip,
    );
    let mut client = spawn_in(&netns, &script);
    let mut buf = [0u8; 100];
    for want in ["udp via DNAT", "udp direct"] {
        let (n, from) = udp.recv_from(&mut buf).expect(want);
        assert_eq!(&buf[..n], b"q-udp", "{want}");
        assert_eq!(from.ip(), IpAddr::V4(netns.ns_ip), "{want}");
        udp.send_to(b"a-udp", from).expect("answer");
    }
    let mut s = accept_within(&tcp, &mut client, Duration::from_secs(3));
    exchange(&mut s, b"q-tcp", b"a-tcp");
    drop(s);
    let out = finish(client, Duration::from_secs(3));
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let dnat = format!("udp a-udp {} 53", netns.ns_ip);
    let direct = format!("udp a-udp {} {dns_port}", netns.host_ip);
    assert_eq!(
        lines,
        [dnat.as_str(), direct.as_str(), "tcp a-tcp 53", "lo refused"],
        "{}",
        describe(&out)
    );
}

#[test]
fn route_local_v6_names_disabled_ipv6() {
    let Some((_tools, netns)) = sandbox() else {
        return;
    };
    let prefix = netns.exec_prefix();
    let status = Command::new(&prefix[0])
        .args(&prefix[1..])
        .args([
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv6/conf/lo/disable_ipv6",
        ])
        .status()
        .expect("run sh in the namespace");
    if !status.success() {
        return skip_or_fail("cannot disable IPv6 on lo in the namespace");
    }
    let err = netns
        .route_local_v6(V6_POOL.parse().unwrap())
        .expect_err("no route without IPv6")
        .to_string();
    assert!(err.contains("IPv6 is disabled"), "{err}");
}
