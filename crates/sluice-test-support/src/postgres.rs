//! A throwaway PostgreSQL cluster inside a test's network namespace: the
//! Debian package's `initdb`/`postgres` (PostgreSQL refuses to run as
//! root, so the cluster belongs to the `postgres` system user, or `nobody`),
//! tuned to start in well under a second and to cost nothing durable.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::netns::Netns;

/// The superuser's password (SCRAM, for `psql` over TCP); the unix socket
/// in the data directory trusts local connections.
pub const PG_SUPERUSER_PASSWORD: &str = "superuser-secret";

/// A running cluster (stopped with its namespace).
#[derive(Debug)]
pub struct PgServer {
    /// The namespace address it listens on.
    pub host: String,
    pub port: u16,
    /// The data directory, which also holds the unix socket.
    pub data: PathBuf,
    /// `psql`, `pgbench` and friends of the same version.
    pub bin: PathBuf,
}

/// Optional server TLS: certificate and key (PEM).
#[derive(Clone, Copy, Debug)]
pub struct PgTls<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// The newest `/usr/lib/postgresql/*/bin` with `initdb` and `postgres`.
pub fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file()).then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

/// The unprivileged account the cluster runs as.
fn owner() -> &'static str {
    let known = |u: &str| {
        Command::new("id")
            .arg(u)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if known("postgres") {
        "postgres"
    } else {
        "nobody"
    }
}

fn run_as(user: &str, program: &Path, args: &[&str]) -> Output {
    let out = Command::new("runuser")
        .args(["-u", user, "--"])
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Starts a cluster in `ns` on `port` under `dir` (a scratch directory),
/// with `password_encryption = scram-sha-256`, `pg_hba` asking SCRAM of
/// every TCP user except `md5user` (md5), and optionally TLS. Returns once
/// it accepts connections. Panics when PostgreSQL is not installed (see
/// [`postgres_bin`] to check first).
pub fn start_postgres(ns: &Netns, dir: &Path, port: u16, tls: Option<PgTls<'_>>) -> PgServer {
    let bin = postgres_bin().expect("PostgreSQL server binaries (Debian package postgresql)");
    let user = owner();
    let root = dir.join("pg");
    std::fs::create_dir_all(&root).expect("pg dir");
    let chown = |p: &Path| {
        let ok = Command::new("chown")
            .args(["-R", user])
            .arg(p)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown {}", p.display());
    };
    let pwfile = root.join("pw");
    std::fs::write(&pwfile, PG_SUPERUSER_PASSWORD).expect("pwfile");
    chown(&root);
    let data = root.join("data");
    let data_s = data.to_string_lossy().into_owned();
    run_as(
        user,
        &bin.join("initdb"),
        &[
            "-D",
            &data_s,
            "-U",
            "postgres",
            "-A",
            "scram-sha-256",
            &format!("--pwfile={}", pwfile.display()),
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ],
    );
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\n\
         host all md5user 0.0.0.0/0 md5\n\
         host all all 0.0.0.0/0 scram-sha-256\n\
         host all all ::/0 scram-sha-256\n",
    )
    .expect("pg_hba.conf");
    let mut conf = format!(
        "listen_addresses = '{ip}'\nport = {port}\nunix_socket_directories = '{data_s}'\n\
         password_encryption = scram-sha-256\nshared_buffers = 16MB\nmax_connections = 40\n\
         fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
         logging_collector = off\nlog_min_messages = fatal\n",
        ip = ns.ns_ip
    );
    if let Some(t) = tls {
        for (src, name) in [(t.cert, "server.crt"), (t.key, "server.key")] {
            std::fs::copy(src, data.join(name)).expect("copy tls file");
        }
        conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
    }
    let auto = data.join("postgresql.auto.conf");
    let mut existing = std::fs::read_to_string(&auto).unwrap_or_default();
    existing.push_str(&conf);
    std::fs::write(&auto, existing).expect("postgresql.auto.conf");
    chown(&data);
    let _ = Command::new("chmod")
        .arg("600")
        .arg(data.join("server.key"))
        .status();
    let script = format!(
        "{postgres} -D {data_s} >/dev/null 2>&1 & \
         for i in $(seq 1 200); do \
           {isready} -q -h {data_s} -p {port} && break; sleep 0.05; \
         done; echo ready; wait",
        postgres = bin.join("postgres").display(),
        isready = bin.join("pg_isready").display(),
    );
    ns.start_process(
        "postgres",
        &["runuser", "-u", user, "--", "sh", "-c", &script],
    );
    PgServer {
        host: ns.ns_ip.clone(),
        port,
        data,
        bin,
    }
}

impl PgServer {
    /// `psql` as the superuser over the unix socket: runs `sql` in `db`
    /// and returns the unaligned, tuples-only output (panics on error).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
            ])
            .arg("-h")
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
            .env_remove("PGPASSWORD")
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}
