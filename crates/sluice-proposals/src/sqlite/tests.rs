use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use serde_json::json;
use sluice_test_support::TempDir;

use super::*;
use crate::model::Origin;
use crate::{open, StoreSpec, MAX_CHANGE_YAML, MAX_INTENT_SUMMARY, MAX_REASON};

fn proposal(n: u32) -> NewProposal {
    NewProposal {
        intent_summary: Some(format!("fetch release notes {n}")),
        operations: json!([{"addRule": {"ruleName": format!("r{n}"), "rule": {
            "endpoints": [{"host": "api.github.com", "port": 443}],
            "binaries": [{"path": "/usr/bin/curl"}]}}}]),
        change_yaml: format!("network_policies:\n  r{n}:\n    endpoints: []\n"),
        rule_name: Some(format!("r{n}")),
        denial: Some("OCSF NET:OPEN [MED] DENIED /usr/bin/curl -> api.github.com:443".into()),
        origin: Origin {
            sandbox: "agent-1".into(),
            binary: Some("/usr/bin/python3".into()),
            pid: Some(4242),
        },
        base_policy_hash: "sha256:abc".into(),
    }
}

fn store(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path(SQLITE_FILE_NAME)).expect("open")
}

#[tokio::test]
async fn submit_then_get_keeps_every_field() {
    let dir = TempDir::new("proposals-submit");
    let s = store(&dir);
    let new = proposal(1);
    let p = s.submit(new.clone()).await.unwrap();
    let id = p.id.as_str();
    assert!(id.starts_with("p-") && id.len() == 18, "{id}");
    assert!(id[2..].bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert_eq!(p.status, Status::Pending);
    assert_eq!(p.operations, new.operations);
    assert_eq!(p.change_yaml, new.change_yaml);
    assert_eq!(p.denial, new.denial);
    assert_eq!(p.origin, new.origin);
    assert_eq!(p.base_policy_hash, new.base_policy_hash);
    assert_eq!(p.history.len(), 1);
    assert_eq!(p.history[0].action, Action::Proposed);
    assert_eq!(p.history[0].actor, "agent-1");
    assert_eq!(p.created_at_ms, p.updated_at_ms);
    assert_eq!(s.get(&p.id).await.unwrap(), Some(p.clone()));
    let other: ProposalId = "p-0000000000000000".parse().unwrap();
    assert_eq!(s.get(&other).await.unwrap(), None);
}

#[tokio::test]
async fn list_is_newest_first_filtered_and_limited() {
    let dir = TempDir::new("proposals-list");
    let s = store(&dir);
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(s.submit(proposal(n)).await.unwrap().id);
    }
    s.decide(&ids[1], "ops".into(), true, None).await.unwrap();
    s.decide(&ids[3], "ops".into(), false, Some("no".into()))
        .await
        .unwrap();
    let listed = |ps: Vec<Proposal>| ps.into_iter().map(|p| p.id).collect::<Vec<_>>();
    let newest_first: Vec<_> = ids.iter().rev().cloned().collect();
    let cases: &[(Option<Status>, usize, Vec<ProposalId>)] = &[
        (None, 100, newest_first.clone()),
        (None, 2, newest_first[..2].to_vec()),
        (None, 0, newest_first[..1].to_vec()),
        (
            Some(Status::Pending),
            100,
            vec![ids[4].clone(), ids[2].clone(), ids[0].clone()],
        ),
        (Some(Status::Approved), 100, vec![ids[1].clone()]),
        (Some(Status::Rejected), 100, vec![ids[3].clone()]),
    ];
    for (status, limit, want) in cases {
        let got = listed(s.list(*status, *limit).await.unwrap());
        assert_eq!(&got, want, "{status:?} limit {limit}");
    }
}

#[tokio::test]
async fn decide_is_a_compare_and_set_from_pending() {
    let dir = TempDir::new("proposals-decide");
    let s = store(&dir);
    for (approve, status, action) in [
        (true, Status::Approved, Action::Approved),
        (false, Status::Rejected, Action::Rejected),
    ] {
        let p = s.submit(proposal(1)).await.unwrap();
        let reason = Some("looked at it".to_owned());
        let d = s
            .decide(&p.id, "operator".into(), approve, reason.clone())
            .await
            .unwrap();
        assert_eq!(d.status, status);
        let last = d.history.last().unwrap();
        assert_eq!(
            (last.action, last.actor.as_str(), &last.reason),
            (action, "operator", &reason)
        );
        assert!(d.updated_at_ms >= d.created_at_ms);
        assert_eq!(s.get(&p.id).await.unwrap(), Some(d));
        for again in [true, false] {
            let err = s.decide(&p.id, "other".into(), again, None).await;
            assert_eq!(err, Err(StoreError::Conflict { status }));
        }
    }
    let missing: ProposalId = "p-ffffffffffffffff".parse().unwrap();
    let err = s.decide(&missing, "operator".into(), true, None).await;
    assert_eq!(err, Err(StoreError::NotFound));
}

#[tokio::test]
async fn racing_deciders_on_one_file_have_exactly_one_winner() {
    let dir = TempDir::new("proposals-race");
    let a = Arc::new(store(&dir));
    let b = Arc::new(store(&dir));
    for round in 0..5 {
        let p = a.submit(proposal(round)).await.unwrap();
        let (ra, rb) = tokio::join!(
            a.decide(&p.id, "a".into(), true, None),
            b.decide(&p.id, "b".into(), false, None)
        );
        let winners = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "{ra:?} {rb:?}");
        let stored = b.get(&p.id).await.unwrap().unwrap();
        let loser = if ra.is_ok() { rb } else { ra };
        assert_eq!(
            loser,
            Err(StoreError::Conflict {
                status: stored.status
            })
        );
        assert_eq!(stored.history.len(), 2);
    }
}

#[tokio::test]
async fn record_appends_apply_outcomes_to_approved_proposals() {
    let dir = TempDir::new("proposals-record");
    let s = store(&dir);
    let p = s.submit(proposal(1)).await.unwrap();
    let early = s.record(&p.id, "gw".into(), Action::Applied, None).await;
    assert_eq!(
        early,
        Err(StoreError::Conflict {
            status: Status::Pending
        })
    );
    s.decide(&p.id, "operator".into(), true, None)
        .await
        .unwrap();
    for wrong in [Action::Proposed, Action::Approved, Action::Rejected] {
        let err = s.record(&p.id, "gw".into(), wrong, None).await;
        assert!(matches!(err, Err(StoreError::Invalid(_))), "{wrong:?}");
    }
    s.record(
        &p.id,
        "gw-1".into(),
        Action::ApplyFailed,
        Some("disk full".into()),
    )
    .await
    .unwrap();
    let applied = s
        .record(&p.id, "gw-1".into(), Action::Applied, None)
        .await
        .unwrap();
    let actions: Vec<_> = applied.history.iter().map(|h| h.action).collect();
    assert_eq!(
        actions,
        [
            Action::Proposed,
            Action::Approved,
            Action::ApplyFailed,
            Action::Applied
        ]
    );
    assert_eq!(applied.history[2].reason.as_deref(), Some("disk full"));
    assert_eq!(applied.status, Status::Approved);
    let missing: ProposalId = "p-ffffffffffffffff".parse().unwrap();
    let err = s.record(&missing, "gw".into(), Action::Applied, None).await;
    assert_eq!(err, Err(StoreError::NotFound));
}

#[tokio::test]
async fn revision_grows_with_every_committed_change_only() {
    let dir = TempDir::new("proposals-revision");
    let s = store(&dir);
    let r0 = s.revision().await.unwrap();
    let p = s.submit(proposal(1)).await.unwrap();
    let r1 = s.revision().await.unwrap();
    assert!(r1 > r0);
    s.get(&p.id).await.unwrap();
    s.list(None, 10).await.unwrap();
    assert_eq!(s.revision().await.unwrap(), r1, "reads change nothing");
    s.decide(&p.id, "op".into(), true, None).await.unwrap();
    let r2 = s.revision().await.unwrap();
    assert!(r2 > r1);
    let _ = s.decide(&p.id, "op".into(), true, None).await;
    assert_eq!(
        s.revision().await.unwrap(),
        r2,
        "a conflict changes nothing"
    );
    s.record(&p.id, "gw".into(), Action::Applied, None)
        .await
        .unwrap();
    assert!(s.revision().await.unwrap() > r2);
}

#[tokio::test]
async fn oversized_or_unstorable_fields_are_refused() {
    let dir = TempDir::new("proposals-bounds");
    let s = store(&dir);
    let big = |n: usize| "x".repeat(n);
    type Edit = fn(&mut NewProposal);
    let at_limit: &[(&str, Edit)] = &[
        ("intent", |p| {
            p.intent_summary = Some("x".repeat(MAX_INTENT_SUMMARY))
        }),
        ("yaml", |p| p.change_yaml = "x".repeat(MAX_CHANGE_YAML)),
    ];
    for (what, edit) in at_limit {
        let mut p = proposal(1);
        edit(&mut p);
        assert!(s.submit(p).await.is_ok(), "{what} at its limit");
    }
    let refused: &[(&str, Edit)] = &[
        ("intent", |p| {
            p.intent_summary = Some("x".repeat(MAX_INTENT_SUMMARY + 1))
        }),
        ("yaml", |p| p.change_yaml = "x".repeat(MAX_CHANGE_YAML + 1)),
        ("operations", |p| {
            p.operations = json!([{"addRule": {"ruleName": "x".repeat(64 * 1024)}}])
        }),
        ("operations nul", |p| {
            p.operations = json!([{"addRule": {"ruleName": "a\u{0}b"}}])
        }),
        ("denial", |p| p.denial = Some("x".repeat(4097))),
        ("rule name", |p| p.rule_name = Some("x".repeat(257))),
        ("sandbox", |p| p.origin.sandbox = "x".repeat(257)),
        ("empty sandbox", |p| p.origin.sandbox = String::new()),
        ("binary", |p| p.origin.binary = Some("x".repeat(4097))),
        ("hash", |p| p.base_policy_hash = "x".repeat(257)),
        ("yaml nul", |p| p.change_yaml = "a\0b".into()),
    ];
    for (what, edit) in refused {
        let mut p = proposal(1);
        edit(&mut p);
        let err = s.submit(p).await;
        assert!(
            matches!(err, Err(StoreError::Invalid(_))),
            "{what}: {err:?}"
        );
    }
    let id = s.submit(proposal(2)).await.unwrap().id;
    let bad_decisions: &[(String, Option<String>)] = &[
        (big(257), None),
        (String::new(), None),
        ("op".into(), Some(big(MAX_REASON + 1))),
    ];
    for (actor, reason) in bad_decisions {
        let err = s.decide(&id, actor.clone(), true, reason.clone()).await;
        assert!(matches!(err, Err(StoreError::Invalid(_))), "{err:?}");
    }
    assert_eq!(
        s.get(&id).await.unwrap().map(|p| p.status),
        Some(Status::Pending),
        "refused decisions change nothing"
    );
    for bad in ["", "a/b", "p-1 2", &"x".repeat(65)] {
        assert!(bad.parse::<ProposalId>().is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn reopening_keeps_data_and_migrations_are_idempotent() {
    let dir = TempDir::new("proposals-reopen");
    let path = dir.path(SQLITE_FILE_NAME);
    let (p, rev) = {
        let s = store(&dir);
        let p = s.submit(proposal(1)).await.unwrap();
        let p = s
            .decide(&p.id, "op".into(), false, Some("no".into()))
            .await
            .unwrap();
        (p, s.revision().await.unwrap())
    };
    for _ in 0..2 {
        let s = store(&dir);
        assert_eq!(s.get(&p.id).await.unwrap(), Some(p.clone()));
        assert_eq!(s.revision().await.unwrap(), rev);
    }
    let conn = Connection::open(&path).unwrap();
    let versions: i64 = conn
        .query_row("SELECT count(*) FROM sluice_schema_migrations", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(versions, MIGRATIONS.len() as i64);
    let journal: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = TempDir::new("proposals-newer");
    drop(store(&dir));
    let conn = Connection::open(dir.path(SQLITE_FILE_NAME)).unwrap();
    conn.execute("INSERT INTO sluice_schema_migrations VALUES (999, 0)", [])
        .unwrap();
    let err = SqliteStore::open(&dir.path(SQLITE_FILE_NAME)).unwrap_err();
    assert!(err.to_string().contains("999"), "{err}");
}

#[tokio::test]
async fn the_file_is_private() {
    let dir = TempDir::new("proposals-mode");
    let nested = dir.path("state/sub");
    let spec = StoreSpec::parse(None, &nested).unwrap();
    let s = open(&spec).await.unwrap();
    s.submit(proposal(1)).await.unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let file = nested.join(SQLITE_FILE_NAME);
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&nested), 0o700);
    drop(s);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _reopened = SqliteStore::open(&file).unwrap();
    assert_eq!(mode(&file), 0o600, "an existing file is made private");
}

#[test]
fn json_shapes_are_the_wire_spelling() {
    let entry = HistoryEntry {
        at_ms: 1,
        actor: "gw".into(),
        action: Action::ApplyFailed,
        reason: None,
    };
    let v = serde_json::to_value(&entry).unwrap();
    assert_eq!(v["action"], "apply_failed");
    assert_eq!(serde_json::to_value(Status::Pending).unwrap(), "pending");
    let id: ProposalId = serde_json::from_value(json!("p-0123456789abcdef")).unwrap();
    assert_eq!(serde_json::to_value(&id).unwrap(), "p-0123456789abcdef");
    assert!(serde_json::from_value::<ProposalId>(json!("../etc")).is_err());
}
