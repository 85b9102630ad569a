//! Pipelining and keep-alive on the forward adapter: every request is
//! authorized on its own, and no byte of a later request reaches an
//! upstream before that request was admitted.

use std::io::Write;
use std::time::Duration;

use crate::adapters::{basic_policy, with_upstream};
use crate::harness::{connect, raw_exchange, read_response};
use sluice_test_support::recorded;

#[test]
fn pipelined_denied_request_is_answered_403_and_never_forwarded() {
    let up = with_upstream("pipeline", &basic_policy());
    let (record, sluice) = (&up.record, &up.sluice);

    // Three allowed requests in one write: three answers, in order, on one connection.
    let mut s = connect(sluice.addr);
    s.write_all(
        b"GET http://exact.test:8080/p1 HTTP/1.1\r\nHost: exact.test:8080\r\n\r\n\
          POST http://exact.test:8080/p2 HTTP/1.1\r\nHost: exact.test:8080\r\nContent-Length: 3\r\n\r\nabc\
          GET http://exact.test:8080/p3 HTTP/1.1\r\nHost: exact.test:8080\r\n\r\n",
    )
    .unwrap();
    for want in ["/p1", "/p2", "/p3"] {
        let (status, _, body) = read_response(&mut s).unwrap();
        assert_eq!(status, 200);
        let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(seen["path"], want);
    }

    // Allowed then denied (other.test resolves to the same upstream): 200, then 403.
    let resp = raw_exchange(
        sluice.addr,
        b"GET http://exact.test:8080/ok HTTP/1.1\r\nHost: exact.test:8080\r\n\r\n\
          GET http://other.test:8080/smuggled HTTP/1.1\r\nHost: other.test:8080\r\n\r\n",
        Duration::from_secs(5),
    );
    let first = resp.find("HTTP/1.1 200 ").expect("first answered 200");
    let second = resp.find("HTTP/1.1 403 ").expect("second answered 403");
    assert!(first < second, "{resp}");
    assert!(
        resp.contains("GET other.test:8080/smuggled not permitted by policy"),
        "{resp}"
    );

    // Denied first: the allowed request behind it is never read, never forwarded.
    let resp = raw_exchange(
        sluice.addr,
        b"GET http://other.test:8080/denied-first HTTP/1.1\r\nHost: other.test:8080\r\n\r\n\
          GET http://exact.test:8080/behind-denied HTTP/1.1\r\nHost: exact.test:8080\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(resp.starts_with("HTTP/1.1 403 "), "{resp}");
    assert_eq!(resp.matches("HTTP/1.1").count(), 1, "{resp}");

    let paths: Vec<String> = recorded(record)
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paths, ["/p1", "/p2", "/p3", "/ok"]);
    let bodies: Vec<String> = recorded(record)
        .iter()
        .map(|r| r["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(bodies[1], "abc");
}
