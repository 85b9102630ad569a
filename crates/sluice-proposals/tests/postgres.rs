//! The PostgreSQL store against a real cluster in a network namespace:
//! two stores ("gateways") sharing one queue, racing decisions, and the
//! server going away and coming back. Needs root (the namespace) and the
//! Debian `postgresql` package; CI has both and never skips.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_proposals::{
    Action, NewProposal, Origin, PostgresStore, PostgresTimeouts, ProposalStore, Status, StoreError,
};
use sluice_test_support::{
    is_root, postgres_bin, skip_or_fail, start_postgres, Netns, PgServer, TempDir,
};

const PORT: u16 = 5432;
const GATEWAY_PASSWORD: &str = "gw-s3cret-5512";

/// A cluster with a `sluice` database owned by the `gateway` role.
struct Db {
    pg: PgServer,
    ns: Netns,
    _dir: TempDir,
}

impl Db {
    fn start(tag: &str) -> Option<Self> {
        if !is_root() {
            skip_or_fail("the PostgreSQL store tests need root for a network namespace");
            return None;
        }
        if postgres_bin().is_none() {
            skip_or_fail("PostgreSQL is not installed (Debian package postgresql)");
            return None;
        }
        let dir = TempDir::new(tag);
        let ns = Netns::new();
        let pg = start_postgres(&ns, dir.root(), PORT, None);
        pg.psql(
            "postgres",
            &format!("CREATE ROLE gateway LOGIN PASSWORD '{GATEWAY_PASSWORD}'"),
        );
        pg.psql("postgres", "CREATE DATABASE sluice OWNER gateway");
        // The helper's cluster trades durability for speed; a commit must
        // reach the kernel before it returns, so a killed server keeps it.
        pg.psql("postgres", "ALTER SYSTEM SET synchronous_commit = on");
        pg.psql("postgres", "SELECT pg_reload_conf()");
        Some(Self { pg, ns, _dir: dir })
    }

    fn url(&self) -> String {
        format!(
            "postgres://gateway:{GATEWAY_PASSWORD}@{}:{}/sluice?sslmode=disable",
            self.pg.host, self.pg.port
        )
    }

    async fn store(&self, timeouts: PostgresTimeouts) -> Arc<PostgresStore> {
        Arc::new(
            PostgresStore::connect(&self.url(), timeouts)
                .await
                .expect("connect"),
        )
    }

    /// Kills every process in the namespace (the postmaster and its
    /// backends, as a crash would) and waits until they are gone. A killed
    /// postmaster may linger as a zombie until init reaps it, which would
    /// make its lock files look live: once every process is dead, the
    /// stale lock files go, as an operator would remove them after a crash.
    fn kill_server(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut killed = Vec::new();
        loop {
            let pids = self.ns_pids();
            killed.extend(pids.iter().cloned());
            if pids.is_empty() && killed.iter().all(|pid| dead(pid)) {
                break;
            }
            assert!(Instant::now() < deadline, "postgres survives: {pids:?}");
            for pid in &pids {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let socket_lock = format!(".s.PGSQL.{}.lock", self.pg.port);
        for stale in ["postmaster.pid", socket_lock.as_str()] {
            let _ = std::fs::remove_file(self.pg.data.join(stale));
        }
    }

    /// Starts the server again on the same data directory (its settings
    /// live in `postgresql.auto.conf` there), once it accepts connections.
    fn restart_server(&self) {
        let owner = Command::new("stat")
            .args(["-c", "%U"])
            .arg(&self.pg.data)
            .output()
            .expect("stat the data dir");
        let owner = String::from_utf8_lossy(&owner.stdout).trim().to_owned();
        let data = self.pg.data.display();
        let log = self.pg.data.with_file_name("restart.log");
        let script = format!(
            "{postgres} -D {data} >{log} 2>&1 & \
             for i in $(seq 1 200); do \
               {isready} -q -h {data} -p {port} && break; sleep 0.05; \
             done; echo ready; wait",
            postgres = self.pg.bin.join("postgres").display(),
            isready = self.pg.bin.join("pg_isready").display(),
            port = self.pg.port,
            log = log.display(),
        );
        self.ns.start_process(
            "postgres (restart)",
            &["runuser", "-u", &owner, "--", "sh", "-c", &script],
        );
        let ready = Command::new(self.pg.bin.join("pg_isready"))
            .arg("-q")
            .arg("-h")
            .arg(&self.pg.data)
            .args(["-p", &self.pg.port.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ready,
            "postgres did not come back: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn ns_pids(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.ns.name])
            .output()
            .expect("ip netns pids");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }
}

/// Whether process `pid` has exited (gone, or a zombie not yet reaped).
fn dead(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        // "pid (comm) S ...": the state follows the last ')'.
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
    })
}

fn proposal(n: u32) -> NewProposal {
    NewProposal {
        intent_summary: Some(format!("needs rule {n}")),
        operations: json!([{"addRule": {"ruleName": format!("r{n}"), "rule": {
            "endpoints": [{"host": "pypi.org", "port": 443, "access": "read-only"}],
            "binaries": [{"path": "/usr/bin/pip"}]}}}]),
        change_yaml: format!(
            "network_policies:\n  r{n}:\n    endpoints:\n      - host: pypi.org\n"
        ),
        rule_name: Some(format!("r{n}")),
        denial: Some(format!(
            "OCSF NET:OPEN [MED] DENIED /usr/bin/pip -> pypi.org:443 #{n}"
        )),
        origin: Origin {
            sandbox: "sandbox-a".into(),
            binary: Some("/usr/bin/pip".into()),
            pid: Some(1000 + n),
        },
        base_policy_hash: "sha256:0011".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_queue() {
    let Some(db) = Db::start("proposals-pg-share") else {
        return;
    };
    // Both start at once: the advisory lock serializes their migrations.
    let url = db.url();
    let (a, b) = tokio::join!(
        PostgresStore::connect(&url, PostgresTimeouts::default()),
        PostgresStore::connect(&url, PostgresTimeouts::default())
    );
    let (a, b) = (a.expect("gateway a"), b.expect("gateway b"));
    assert_eq!(
        db.pg
            .psql("sluice", "SELECT count(*) FROM sluice_schema_migrations"),
        "1"
    );

    let rev0 = b.revision().await.unwrap();
    let new = proposal(1);
    let p = a.submit(new.clone()).await.unwrap();
    assert_eq!(b.get(&p.id).await.unwrap(), Some(p.clone()), "b sees a's");
    assert_eq!(p.operations, new.operations, "operations kept as submitted");
    assert!(
        b.revision().await.unwrap() > rev0,
        "b sees the change count"
    );

    let q = b.submit(proposal(2)).await.unwrap();
    let ids: Vec<_> = a
        .list(Some(Status::Pending), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(ids, [q.id.clone(), p.id.clone()], "newest first");

    let rev1 = a.revision().await.unwrap();
    let decided = b
        .decide(&p.id, "operator@b".into(), true, Some("fine".into()))
        .await
        .unwrap();
    assert_eq!(decided.status, Status::Approved);
    assert!(a.revision().await.unwrap() > rev1);
    let applied = a
        .record(&p.id, "gateway-a".into(), Action::Applied, None)
        .await
        .unwrap();
    let steps: Vec<_> = applied
        .history
        .iter()
        .map(|h| (h.action, h.actor.as_str()))
        .collect();
    assert_eq!(
        steps,
        [
            (Action::Proposed, "sandbox-a"),
            (Action::Approved, "operator@b"),
            (Action::Applied, "gateway-a"),
        ]
    );
    assert_eq!(b.get(&p.id).await.unwrap(), Some(applied));
    assert_eq!(
        a.list(Some(Status::Approved), 10).await.unwrap().len(),
        1,
        "filter by status"
    );
    let err = a
        .record(&q.id, "gateway-a".into(), Action::Applied, None)
        .await;
    assert_eq!(
        err,
        Err(StoreError::Conflict {
            status: Status::Pending
        })
    );
    let missing = "p-ffffffffffffffff".parse().unwrap();
    assert_eq!(a.get(&missing).await.unwrap(), None);
    assert_eq!(
        a.decide(&missing, "op".into(), true, None).await,
        Err(StoreError::NotFound)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_decisions_have_exactly_one_winner() {
    let Some(db) = Db::start("proposals-pg-race") else {
        return;
    };
    let gateways = [
        db.store(PostgresTimeouts::default()).await,
        db.store(PostgresTimeouts::default()).await,
        db.store(PostgresTimeouts::default()).await,
    ];
    for round in 0..10 {
        let p = gateways[0].submit(proposal(round)).await.unwrap();
        let tasks: Vec<_> = gateways
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let (g, id) = (Arc::clone(g), p.id.clone());
                tokio::spawn(async move { g.decide(&id, format!("op{i}"), i % 2 == 0, None).await })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        let stored = gateways[1].get(&p.id).await.unwrap().unwrap();
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        assert_eq!(winners[0], &stored);
        for r in &results {
            if let Err(e) = r {
                assert_eq!(
                    e,
                    &StoreError::Conflict {
                        status: stored.status
                    }
                );
            }
        }
        assert_eq!(stored.history.len(), 2, "one decision recorded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_server_refuses_calls_then_the_store_reconnects_with_nothing_lost() {
    let Some(db) = Db::start("proposals-pg-loss") else {
        return;
    };
    let timeouts = PostgresTimeouts {
        connect: Duration::from_secs(2),
        call: Duration::from_secs(5),
    };
    let store: Arc<dyn ProposalStore> = db.store(timeouts).await;
    let mut committed = Vec::new();
    for n in 0..5 {
        committed.push(store.submit(proposal(n)).await.unwrap());
    }
    let decided = store
        .decide(&committed[0].id, "op".into(), false, Some("no".into()))
        .await
        .unwrap();
    committed[0] = decided;
    let revision = store.revision().await.unwrap();

    db.kill_server();
    for attempt in 0..3 {
        let started = Instant::now();
        let err = store.submit(proposal(100 + attempt)).await;
        let took = started.elapsed();
        let Err(StoreError::Unavailable(why)) = err else {
            panic!("submit while the server is down: {err:?}");
        };
        assert!(
            took < timeouts.connect + Duration::from_secs(1),
            "refused after {took:?}"
        );
        assert!(!why.contains(GATEWAY_PASSWORD), "{why}");
        assert!(why.contains("/sluice"), "names host and database: {why}");
    }
    assert!(matches!(
        store.get(&committed[1].id).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.revision().await,
        Err(StoreError::Unavailable(_))
    ));

    db.restart_server();
    let after = store.submit(proposal(200)).await.expect("reconnected");
    for p in &committed {
        assert_eq!(store.get(&p.id).await.unwrap().as_ref(), Some(p));
    }
    assert!(store.revision().await.unwrap() > revision);
    let all = store.list(None, 100).await.unwrap();
    assert_eq!(
        all.len(),
        committed.len() + 1,
        "refused submits left nothing"
    );
    assert_eq!(all[0].id, after.id);
}

#[tokio::test]
async fn urls_are_checked_before_connecting_and_never_echoed() {
    let cases = [
        ("postgres://u:pw-9931@db/x?sslmode=require", "TLS"),
        ("postgres://u:pw-9931@db/x?sslmode=bogus", "valid"),
        ("postgres://u:pw-9931@db:notaport/x", "valid"),
    ];
    for (url, says) in cases {
        let err = PostgresStore::connect(url, PostgresTimeouts::default())
            .await
            .expect_err(url);
        let text = err.to_string();
        assert!(matches!(err, StoreError::Invalid(_)), "{url}: {text}");
        assert!(text.contains(says), "{url}: {text}");
        assert!(!text.contains("pw-9931"), "{url}: {text}");
    }
}
