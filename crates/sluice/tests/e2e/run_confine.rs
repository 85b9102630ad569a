//! `sluice run` against the command it runs (issue 11): CMD is unprivileged, has
//! no capability (a setuid binary does not give one back), cannot change the
//! namespace's network or firewall, sees neither sluice nor any secret source.

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};

use crate::run::{assert_cleaned_up, run_to_end, sluice_run, sluice_run_as, timed, RunOutcome};
use sluice_test_support::{recorded, Netns, TempDir};

const POLICY: &str = r#"version: 1
network_policies:
  demo:
    endpoints:
      - { host: api.demo.internal, port: 8080 }
    binaries:
      - { path: /usr/bin/curl }
"#;

/// Everything a hostile CMD tries against the fence, then proof that the fence and
/// the proxy still work. `suid` holds setuid-root copies of `id` and `nft`.
fn fence_script(ns_ip: &str, suid: &str) -> String {
    format!(
        "try() {{ key=$1; shift; out=$(\"$@\" 2>&1); echo ${{key}}_rc=$?; \
           case \"$out\" in *ermitted*) echo ${{key}}_why=eperm;; *) echo ${{key}}_why=\"$out\";; esac; }}\n\
         echo uid=$(id -u)\n\
         try nft nft flush ruleset\n\
         try nft_list nft list ruleset\n\
         dev=$(ip -o link show | awk -F': ' '$2 != \"lo\" {{sub(/@.*/, \"\", $2); print $2; exit}}')\n\
         try link ip link set \"$dev\" down\n\
         try addr ip addr add 10.99.0.1/24 dev lo\n\
         try route ip route add blackhole 10.99.1.0/24\n\
         try raw python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)'\n\
         try unshare unshare -n true\n\
         try userns unshare -Ur true\n\
         try suid_nft {suid}/nft flush ruleset\n\
         python3 -c 'import threading as t; x = t.Thread(target=print); x.start(); x.join()' >/dev/null 2>&1; echo threads_rc=$?\n\
         echo suid_euid=$({suid}/id -u)\n\
         grep -E '^Cap(Prm|Eff|Bnd|Amb):' /proc/self/status | sed -E 's/^(Cap[A-Za-z]+):[[:space:]]*/cap_\\1=/'\n\
         {direct}\
         curl -s -o /dev/null -w 'allowed=%{{http_code}}\\n' http://api.demo.internal:8080/after\n",
        direct = timed(
            "direct",
            &format!("curl --noproxy '*' -sS -m 5 http://{ns_ip}:8080/direct")
        ),
    )
}

/// Setuid-root copies of `id` and `nft` in `dir/suid`, checked to really give
/// euid 0 to an unprivileged caller outside the sandbox (so the test can fail).
fn setuid_helpers(dir: &TempDir) -> String {
    let suid = dir.path("suid");
    std::fs::create_dir_all(&suid).expect("suid dir");
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for (src, name) in [("/usr/bin/id", "id"), ("/usr/sbin/nft", "nft")] {
        let dst = suid.join(name);
        std::fs::copy(src, &dst).expect("copy helper");
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o4755)).expect("setuid");
    }
    let control = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(suid.join("id"))
        .arg("-u")
        .output()
        .expect("setpriv");
    assert_eq!(
        String::from_utf8_lossy(&control.stdout).trim(),
        "0",
        "control: outside the sandbox the setuid copy gives euid 0 ({})",
        String::from_utf8_lossy(&control.stderr)
    );
    suid.to_string_lossy().into_owned()
}

fn assert_fence_held(r: &RunOutcome, uid: &str) {
    assert_eq!(r.status.code(), Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.value("uid"), uid);
    for key in [
        "nft", "nft_list", "link", "addr", "route", "raw", "unshare", "userns", "suid_nft",
    ] {
        assert_ne!(
            r.value(&format!("{key}_rc")),
            "0",
            "{key}: CMD managed it\n{}",
            r.stdout
        );
        assert_eq!(
            r.value(&format!("{key}_why")),
            "eperm",
            "{key} failed for another reason than a missing privilege"
        );
    }
    assert_eq!(
        r.value("threads_rc"),
        "0",
        "threads still start (clone3 falls back)"
    );
    assert_eq!(r.value("suid_euid"), uid, "setuid gave nothing back");
    for set in ["CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(r.value(&format!("cap_{set}")), "0000000000000000", "{set}");
    }
    assert_ne!(
        r.value("direct_rc"),
        "0",
        "the fence still refuses a direct connect"
    );
    assert!(
        r.ms("direct_ms") < 1000,
        "refused fast: {} ms",
        r.ms("direct_ms")
    );
    assert_eq!(
        r.value("allowed"),
        "200",
        "the proxy still works: {}",
        r.stderr
    );
}

#[test]
fn run_cmd_cannot_remove_the_fence_even_as_root() {
    let dir = TempDir::new("confine-fence");
    let ns = Netns::new();
    ns.start_upstream(8080, &dir.path("up.jsonl"));
    let host = format!("api.demo.internal={}", ns.ns_ip);
    let script = fence_script(&ns.ns_ip, &setuid_helpers(&dir));
    for (user, uid) in [("nobody", "65534"), ("root", "0")] {
        let r = run_to_end(
            &dir,
            POLICY,
            &["--user", user, "--add-host", &host],
            &script,
        );
        assert_fence_held(&r, uid);
        assert!(
            r.stderr.contains(&format!("as {user} (uid {uid}")),
            "{}",
            r.stderr
        );
        assert_cleaned_up(&r.netns);
    }
    let paths: Vec<String> = recorded(&dir.path("up.jsonl"))
        .iter()
        .filter_map(|e| e["path"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(paths, ["/after", "/after"], "nothing direct arrived");
}

const SECRET_ENV: &str = "ghp_envSECRET_1f6c0d2a9b";
const SECRET_FILE: &str = "file_SECRET_77aa10b3c4";

fn provider_policy(secret_file: &std::path::Path) -> String {
    format!(
        r#"version: 1
network_policies:
  demo:
    endpoints:
      - {{ host: api.demo.internal, port: 8080, protocol: rest, enforcement: enforce, access: read-only }}
    binaries:
      - {{ path: /usr/bin/curl }}
providers:
  gh:
    credentials:
      GITHUB_TOKEN: {{ env: HOST_GH_SECRET }}
      FILE_TOKEN: {{ file: {} }}
    endpoints: [ {{ host: api.demo.internal, port: 8080 }} ]
"#,
        secret_file.display()
    )
}

fn secret_file(dir: &TempDir, mode: u32) -> std::path::PathBuf {
    let path = dir.path("secret.txt");
    std::fs::write(&path, format!("{SECRET_FILE}\n")).expect("secret file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

#[test]
fn run_keeps_secret_sources_and_sluice_out_of_reach() {
    let dir = TempDir::new("confine-secrets");
    let file = secret_file(&dir, 0o600);
    let pid_file = dir.path("sluice.pid");
    let script = format!(
        "env | sed 's/^/env:/'\n\
         for p in /proc/[0-9]*; do echo \"proc:${{p#/proc/}}:$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)\"; done\n\
         while [ ! -s {pid} ]; do sleep 0.05; done\n\
         host_pid=$(cat {pid})\n\
         cat /proc/$host_pid/environ >/dev/null 2>&1; echo environ_rc=$?\n\
         tr '\\0' '\\n' < /proc/$host_pid/environ 2>/dev/null | sed 's/^/environ:/'\n\
         cat /proc/1/environ >/dev/null 2>&1; echo init_environ_rc=$?\n\
         cat {file} >/dev/null 2>&1; echo file_rc=$?\n\
         echo token=$GITHUB_TOKEN\n",
        pid = pid_file.display(),
        file = file.display(),
    );
    let mut cmd = sluice_run(&dir, &provider_policy(&file), &[], &script);
    cmd.env("HOST_GH_SECRET", SECRET_ENV)
        .env("COPY_OF_IT", format!("x{SECRET_ENV}x"))
        .env("HARMLESS", "kept");
    let child = cmd.spawn().expect("start sluice run");
    std::fs::write(&pid_file, child.id().to_string()).expect("pid file");
    let out = child.wait_with_output().expect("sluice run");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for secret in [SECRET_ENV, SECRET_FILE] {
        assert!(!stdout.contains(secret), "a secret reached CMD:\n{stdout}");
    }
    let env: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("env:"))
        .collect();
    assert!(env.contains(&"HARMLESS=kept"), "{env:?}");
    assert!(
        env.contains(&"GITHUB_TOKEN=sluice:resolve:env:GITHUB_TOKEN"),
        "{env:?}"
    );
    assert!(
        env.contains(&"FILE_TOKEN=sluice:resolve:env:FILE_TOKEN"),
        "{env:?}"
    );
    assert!(
        env.contains(&"USER=nobody") && env.contains(&"HOME=/nonexistent"),
        "{env:?}"
    );
    for gone in ["HOST_GH_SECRET=", "COPY_OF_IT="] {
        assert!(
            !env.iter().any(|l| l.starts_with(gone)),
            "{gone} passed: {env:?}"
        );
    }
    let procs: Vec<&str> = stdout.lines().filter(|l| l.starts_with("proc:")).collect();
    assert!(procs.iter().any(|l| l.starts_with("proc:1:")), "{procs:?}");
    assert!(
        !procs.iter().any(|l| l.contains("--policy")),
        "sluice itself is visible in CMD's /proc: {procs:?}"
    );
    assert!(
        procs.len() < 20,
        "CMD sees only its own PID namespace: {procs:?}"
    );
    // sluice's host pid does not exist in CMD's PID namespace (were the number
    // taken there, it would be one of CMD's own processes: still no secret).
    assert!(
        value(&stdout, "environ_rc") != "0"
            || !stdout
                .lines()
                .any(|l| l.starts_with("environ:HOST_GH_SECRET")),
        "{stdout}"
    );
    assert_ne!(
        value(&stdout, "init_environ_rc"),
        "0",
        "the init is not dumpable"
    );
    assert_ne!(
        value(&stdout, "file_rc"),
        "0",
        "the secret file is unreadable"
    );
    assert!(
        stderr.contains("HOST_GH_SECRET"),
        "the removal is reported: {stderr}"
    );
}

fn value(stdout: &str, key: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} not printed:\n{stdout}"))
        .to_owned()
}

#[test]
fn run_refuses_a_secret_file_cmd_could_read() {
    let dir = TempDir::new("confine-file");
    let file = secret_file(&dir, 0o644);
    let policy = provider_policy(&file);
    let start = |extra: &[&str]| {
        let mut cmd = sluice_run(&dir, &policy, extra, "echo started");
        cmd.env("HOST_GH_SECRET", SECRET_ENV);
        cmd.output().expect("sluice run")
    };
    let refused = start(&[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&file.display().to_string())
            && stderr.contains("mode 0644")
            && stderr.contains("--allow-readable-secret-files"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&refused.stdout).contains("started"));
    assert!(!stderr.contains(SECRET_FILE) && !stderr.contains(SECRET_ENV));

    let allowed = start(&["--allow-readable-secret-files"]);
    assert!(
        String::from_utf8_lossy(&allowed.stdout).contains("started"),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let private = start(&[]);
    assert!(
        String::from_utf8_lossy(&private.stdout).contains("started"),
        "{}",
        String::from_utf8_lossy(&private.stderr)
    );
    // uid 0 without capabilities still reads root's 0600 file: refused for --user root.
    let as_root = start(&["--user", "root"]);
    assert_eq!(as_root.status.code(), Some(2));
}

#[test]
fn run_picks_the_sudo_caller_and_refuses_plain_root() {
    let dir = TempDir::new("confine-user");
    let plain = sluice_run_as(&dir, POLICY, None, &[], "echo started")
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID")
        .output()
        .expect("sluice run");
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert_eq!(plain.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--user USER[:GROUP]"), "{stderr}");
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("started"));

    let sudo = sluice_run_as(&dir, POLICY, None, &[], "echo ids=$(id -u):$(id -g)")
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534")
        .stdin(Stdio::null())
        .output()
        .expect("sluice run");
    assert_eq!(
        value(&String::from_utf8_lossy(&sudo.stdout), "ids"),
        "65534:65534",
        "{}",
        String::from_utf8_lossy(&sudo.stderr)
    );
}
