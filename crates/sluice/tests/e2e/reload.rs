//! Reload: a new generation flips verdicts on both adapters, reaches live
//! keep-alive connections at their next request, closes raw tunnels it no
//! longer allows, and a broken file keeps the last good policy.

use std::io::{Read, Write};
use std::time::Duration;

use crate::adapters::{add_hosts, basic_policy};
use crate::harness::{connect, curl, read_response, Sluice};
use sluice_test_support::{eventually, Netns, Python, TempDir};

fn deny_policy() -> String {
    basic_policy().replace("host: exact.test", "host: something-else.test")
}

#[test]
fn reload_flips_both_adapters_and_live_connections() {
    let dir = TempDir::new("reload");
    let ns = Netns::new();
    ns.start_upstream(8080, &dir.path("upstream.jsonl"));
    ns.start_recorder(9000, &dir.path("raw.bin"));
    let args = add_hosts(&ns);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sluice = Sluice::start(&dir, &basic_policy(), &args);
    let proxy = sluice.proxy_url();
    assert_eq!(
        curl(&proxy, "http://exact.test:8080/a", false, &[]).status,
        200
    );
    assert_eq!(
        curl(&proxy, "http://exact.test:8080/a", true, &[]).status,
        200
    );

    // A keep-alive forward connection, an HTTP tunnel and a raw (non-HTTP)
    // tunnel, all open across the reload.
    let mut keep = connect(sluice.addr);
    keep.write_all(b"GET http://exact.test:8080/k1 HTTP/1.1\r\nHost: exact.test:8080\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut keep).unwrap().0, 200);
    let mut tunnel = connect(sluice.addr);
    tunnel
        .write_all(b"CONNECT exact.test:8080 HTTP/1.1\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut tunnel).unwrap().0, 200);
    tunnel
        .write_all(b"GET /t1 HTTP/1.1\r\nHost: exact.test:8080\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut tunnel).unwrap().0, 200);
    let mut raw = connect(sluice.addr);
    raw.write_all(b"CONNECT exact.test:9000 HTTP/1.1\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut raw).unwrap().0, 200);
    raw.write_all(b"\x00\x01 opaque bytes").unwrap();
    eventually("raw bytes relayed", || {
        std::fs::read(dir.path("raw.bin"))
            .unwrap_or_default()
            .ends_with(b"opaque bytes")
    });

    // A broken file is refused and the last good policy stays in force.
    std::fs::write(&sluice.policy, "version: 1\nnetwork_policies: [oops\n").unwrap();
    let ev = sluice.wait_event("Policy reload rejected");
    assert_eq!(ev["status"], "Failure");
    assert!(
        ev["status_detail"]
            .as_str()
            .unwrap()
            .contains("policy.yaml:2:"),
        "{ev}"
    );
    assert_eq!(
        curl(&proxy, "http://exact.test:8080/still", false, &[]).status,
        200
    );

    // allow → deny.
    sluice.replace_policy(&deny_policy(), 2);
    assert_eq!(
        curl(&proxy, "http://exact.test:8080/b", false, &[]).status,
        403
    );
    assert_eq!(
        curl(&proxy, "http://exact.test:8080/b", true, &[]).connect_status,
        403
    );

    // The live keep-alive connection gets the new verdict on its next request.
    keep.write_all(b"GET http://exact.test:8080/k2 HTTP/1.1\r\nHost: exact.test:8080\r\n\r\n")
        .unwrap();
    let (status, _, body) = read_response(&mut keep).unwrap();
    assert_eq!(status, 403, "{body}");

    // The HTTP tunnel re-checks at its next request boundary.
    tunnel
        .write_all(b"GET /t2 HTTP/1.1\r\nHost: exact.test:8080\r\n\r\n")
        .unwrap();
    let (status, _, body) = read_response(&mut tunnel).unwrap();
    assert_eq!(status, 403, "{body}");

    // The raw tunnel the new policy no longer allows was closed.
    let mut buf = [0u8; 16];
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(
        raw.read(&mut buf).unwrap_or(0),
        0,
        "raw tunnel must be closed"
    );
    let ev = sluice.wait_event("tunnel closed after policy reload");
    assert_eq!(ev["unmapped"]["policy_generation"], 2);

    // deny → allow again.
    sluice.replace_policy(&basic_policy(), 3);
    assert_eq!(
        curl(&proxy, "http://exact.test:8080/c", false, &[]).status,
        200
    );
}

#[test]
fn sighup_reloads() {
    let dir = TempDir::new("sighup");
    let ns = Netns::new();
    ns.start_upstream(8080, &dir.path("upstream.jsonl"));
    let mut args = add_hosts(&ns);
    // Make the file watcher effectively idle so only SIGHUP can reload.
    args.extend(["--policy-poll-ms".to_owned(), "3600000".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sluice = Sluice::start(&dir, &basic_policy(), &args);
    assert_eq!(
        curl(&sluice.proxy_url(), "http://exact.test:8080/", false, &[]).status,
        200
    );
    std::fs::write(&sluice.policy, deny_policy()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        curl(&sluice.proxy_url(), "http://exact.test:8080/", false, &[]).status,
        200
    );
    sluice.signal("HUP");
    sluice.wait_event("generation 2");
    eventually("deny after SIGHUP", || {
        curl(&sluice.proxy_url(), "http://exact.test:8080/", false, &[]).status == 403
    });
}

/// A WebSocket session outlives its upgrade request: a reload that no
/// longer allows it closes it with 1012, and an event says why (the same
/// revocation ends a raw copy after another `101`).
#[test]
fn reload_closes_upgraded_websocket_sessions() {
    let dir = TempDir::new("reload-ws");
    let ns = Netns::new();
    ns.start_server("ws_server.py", 8765, &dir.path("ws.jsonl"));
    let args = add_hosts(&ns);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let policy = basic_policy().replace(
        "      - { host: exact.test, port: 9000 }",
        "      - { host: exact.test, port: 9000 }\n      - { host: exact.test, port: 8765 }",
    );
    assert!(policy.contains("port: 8765"));
    let sluice = Sluice::start(&dir, &policy, &args);
    let script = r#"
import asyncio, sys
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

async def main(proxy):
    async with connect("ws://exact.test:8765/tunnel", proxy=proxy) as tunnelled:
        await tunnelled.send("before")
        print("echo", await tunnelled.recv(), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        try:
            await asyncio.wait_for(tunnelled.recv(), 10)
            print("after", "message")
        except (asyncio.TimeoutError, TimeoutError):
            print("after", "still open")
        except ConnectionClosed as e:
            print("after", "closed", getattr(e.rcvd, "code", None))

asyncio.run(main(sys.argv[1]))
"#;
    let mut child = Python::inline(script).arg(sluice.proxy_url()).spawn();
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "echo before");
    sluice.replace_policy(&deny_policy(), 2);
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "after closed 1012");
    assert!(child.wait().unwrap().success());
    let ev = sluice.wait_event("tunnel closed after policy reload");
    assert_eq!(ev["unmapped"]["policy_generation"], 2);
}
