//! Byte-exact bulk transfers through a TLS-terminated, REST-inspected
//! CONNECT tunnel to an HTTPS upstream (`bulk_server.py`), with real curl:
//! a large download and a large upload checked by SHA-256 on both sides,
//! and a bounded stress of repeated `Expect: 100-continue` uploads (issue
//! 13: the tail of a request body could stay in sluice's upstream TLS
//! session, unsent, while the exchange waited for a response head).

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::harness::{sluice_cmd, Sluice};
use sluice_test_support::{patience, test_pki, Netns, TempDir};

const MIB: u64 = 1024 * 1024;

const POLICY: &str = r#"version: 1
network_policies:
  bulk:
    endpoints:
      - host: bulk.test
        port: 8443
        protocol: rest
        enforcement: enforce
        rules:
          - allow: { method: POST, path: "/upload/**" }
          - allow: { method: GET, path: "/download/*" }
"#;

struct Bulk {
    dir: TempDir,
    _ns: Netns,
    sluice: Sluice,
    /// The sandbox CA: the only root curl trusts, so every byte crosses
    /// sluice's TLS termination and REST inspection.
    ca: PathBuf,
}

fn setup(tag: &str) -> Bulk {
    let dir = TempDir::new(tag);
    let ns = Netns::new();
    let pki = test_pki(&dir, "bulk", &["bulk.test"]);
    ns.start_tls_server(
        "bulk_server.py",
        8443,
        &dir.path("unused"),
        &pki.cert,
        &pki.key,
    );
    let host = format!("bulk.test={}", ns.ns_ip);
    let upstream_ca = pki.ca.display().to_string();
    let sluice = Sluice::start(
        &dir,
        POLICY,
        &[
            "--add-host",
            &host,
            "--identity",
            "endpoint-only",
            "--upstream-ca",
            &upstream_ca,
        ],
    );
    let state = dir.path("state");
    let ca = dir.path("sluice-ca.pem");
    std::fs::write(
        &ca,
        sluice_cmd(&["ca", "show", "--state-dir", state.to_str().unwrap()]),
    )
    .unwrap();
    Bulk {
        dir,
        _ns: ns,
        sluice,
        ca,
    }
}

/// Feed `n` bytes of the counter pattern (block i of 8 bytes is `i` as a
/// little-endian u64, truncated to `n`; the same as `bulk_server.py`) to `sink`.
fn pattern(n: u64, mut sink: impl FnMut(&[u8])) {
    let mut block = Vec::with_capacity(64 * 1024);
    let mut i = 0u64;
    let mut left = n;
    while left > 0 {
        block.clear();
        while block.len() < 64 * 1024 && left > 0 {
            let bytes = i.to_le_bytes();
            let take = left.min(8) as usize;
            block.extend_from_slice(&bytes[..take]);
            left -= take as u64;
            i += 1;
        }
        sink(&block);
    }
}

fn pattern_sha256(n: u64) -> String {
    let mut h = Sha256::new();
    pattern(n, |b| h.update(b));
    hex(&h.finalize())
}

fn write_pattern(path: &Path, n: u64) {
    let mut f = BufWriter::new(std::fs::File::create(path).expect("create upload file"));
    pattern(n, |b| f.write_all(b).expect("write upload file"));
    f.flush().expect("flush upload file");
}

fn file_sha256(path: &Path) -> (u64, String) {
    let mut f = std::fs::File::open(path).expect("open");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            return (total, hex(&h.finalize()));
        }
        total += n as u64;
        h.update(&buf[..n]);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One curl run through sluice: status, stdout, curl's error, wall time.
struct Run {
    status: u16,
    out: String,
    error: String,
    took: Duration,
}

fn curl(b: &Bulk, path: &str, args: &[&str], max_time: Duration) -> Run {
    let start = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "--max-time"])
        .arg(max_time.as_secs().max(1).to_string())
        .args(["-x", &b.sluice.proxy_url(), "--cacert"])
        .arg(&b.ca)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .arg(format!("https://bulk.test:8443{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Run {
        status: code.trim().parse().unwrap_or(0),
        out: body.to_owned(),
        error: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        took: start.elapsed(),
    }
}

/// POST `file` with `--data-binary` and the `extra` curl arguments; the
/// upstream's `(bytes, sha256)` of what it received.
fn upload(b: &Bulk, file: &Path, path: &str, extra: &[&str], max_time: Duration) -> Run {
    let data = format!("@{}", file.display());
    let mut args = vec![
        "--data-binary",
        &data,
        "-H",
        "Content-Type: application/octet-stream",
    ];
    args.extend_from_slice(extra);
    curl(b, path, &args, max_time)
}

/// What the upstream reports it received: `(bytes, sha256)`.
fn received(run: &Run) -> Option<(u64, String)> {
    let v: serde_json::Value = serde_json::from_str(&run.out).ok()?;
    Some((v["bytes"].as_u64()?, v["sha256"].as_str()?.to_owned()))
}

/// The `Expect` header the upstream saw, if any.
fn expect_seen(run: &Run) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(&run.out).ok()?;
    v["expect"].as_str().map(str::to_owned)
}

#[test]
fn large_download_through_inspected_tls_is_byte_exact() {
    let b = setup("bulk-down");
    let size = 100 * MIB;
    let file = b.dir.path("download.bin");
    let headers = b.dir.path("headers.txt");
    let (o, d) = (file.to_str().unwrap(), headers.to_str().unwrap());
    let run = curl(
        &b,
        &format!("/download/{size}"),
        &["-o", o, "-D", d],
        Duration::from_secs(120),
    );
    assert_eq!(run.status, 200, "curl: {} ({:?})", run.error, run.took);
    let head = std::fs::read_to_string(&headers).unwrap();
    let sent = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-sha256")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no X-Sha256 from the upstream: {head}"));
    let (len, got) = file_sha256(&file);
    assert_eq!(len, size, "downloaded length");
    assert_eq!(sent, pattern_sha256(size), "the upstream sent the pattern");
    assert_eq!(got, sent, "client received exactly what the upstream sent");
}

#[test]
fn large_upload_through_inspected_tls_is_byte_exact() {
    let b = setup("bulk-up");
    let size = 50 * MIB;
    let file = b.dir.path("upload.bin");
    write_pattern(&file, size);
    let (_, want) = file_sha256(&file);
    // curl's defaults over HTTP/1.1: `Expect: 100-continue` for a body this
    // large (HTTP/2 has no `Expect`; its uploads are in tests/e2e/h2.rs).
    let run = upload(
        &b,
        &file,
        "/upload/big",
        &["--http1.1"],
        Duration::from_secs(120),
    );
    assert_eq!(run.status, 200, "curl: {} ({:?})", run.error, run.took);
    assert_eq!(
        received(&run),
        Some((size, want.clone())),
        "upstream received every byte"
    );
    assert_eq!(expect_seen(&run).as_deref(), Some("100-continue"));
    // The same without Expect.
    let run = upload(
        &b,
        &file,
        "/upload/big-no-expect",
        &["--http1.1", "-H", "Expect:"],
        Duration::from_secs(120),
    );
    assert_eq!(run.status, 200, "curl: {} ({:?})", run.error, run.took);
    assert_eq!(received(&run), Some((size, want)));
    assert_eq!(expect_seen(&run), None);
    // The tunnel is inspected: a method the rules do not allow is refused.
    let run = curl(
        &b,
        "/upload/put",
        &["-X", "PUT", "--data-binary", "x"],
        patience(),
    );
    assert_eq!(run.status, 403, "{}", run.out);
}

/// Uploads of `file` (`size` bytes) with `Expect: 100-continue` to
/// `path`, one curl (one tunnel, one upstream connection) each; every one
/// must arrive byte-exact within `patience()` (a stalled body makes curl
/// time out). Returns the failures; stops after three, since each stall
/// costs `patience()`.
fn uploads(b: &Bulk, file: &Path, size: u64, reps: usize, path: &str) -> Vec<String> {
    let (_, want) = file_sha256(file);
    let mut failures = Vec::new();
    for i in 0..reps {
        let run = upload(
            b,
            file,
            path,
            &["--http1.1", "-H", "Expect: 100-continue"],
            patience(),
        );
        let got = received(&run);
        if run.status != 200 || got.as_ref() != Some(&(size, want.clone())) {
            failures.push(format!(
                "{size}-byte upload {i}: status {} after {:?}, upstream received {got:?}, curl: {}",
                run.status, run.took, run.error
            ));
            if failures.len() >= 3 {
                break;
            }
        }
    }
    failures
}

/// Issue 13's shape: repeated `Expect: 100-continue` uploads through the
/// inspected TLS tunnel to an upstream that reads at full speed. Before the
/// fix about 3 in 100 of these 8 MiB uploads stalled (the body's last
/// records stayed in sluice's upstream TLS session); 150 runs miss a 1-in-40
/// event with probability under 3 %.
#[test]
fn repeated_expect_continue_uploads_never_stall() {
    let b = setup("bulk-stress");
    let size = 8 * MIB;
    let file = b.dir.path("stress.bin");
    write_pattern(&file, size);
    let start = Instant::now();
    let failures = uploads(&b, &file, size, 150, "/upload/stress");
    eprintln!("150 uploads of {size} bytes in {:?}", start.elapsed());
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The same failure, deterministic: the upstream reads the body only after
/// a pause, so sluice's socket to it is full while the body arrives and the
/// body's end is written into the TLS session while the socket takes
/// nothing. For sizes where the whole remainder fits the session's buffer
/// (a window of up to 64 KiB past what the kernel buffers hold), the last
/// bytes were never sent before the fix: with Linux's default buffer
/// sizes, 112-160 KiB and 416-464 KiB stalled here. The sweep in 16 KiB
/// steps crosses such a window as long as the kernel holds less than about
/// 450 KiB.
#[test]
fn uploads_to_an_upstream_that_reads_late_never_stall() {
    let b = setup("bulk-late");
    let mut failures = Vec::new();
    let start = Instant::now();
    for kib in (32..=512).step_by(16) {
        let size = kib * 1024;
        let file = b.dir.path(&format!("late-{kib}.bin"));
        write_pattern(&file, size);
        failures.extend(uploads(&b, &file, size, 1, "/upload/late"));
        if failures.len() >= 3 {
            break;
        }
    }
    eprintln!("late-reader sweep in {:?}", start.elapsed());
    assert!(failures.is_empty(), "{failures:#?}");
}
