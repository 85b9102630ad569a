//! Audit sink tests.

use serde_json::Value;
use sluice_telemetry::{Activity, AuditSink, EventClass, OcsfEvent, QUEUE_CAPACITY};
use sluice_test_support::{skip_or_fail, TempDir};

fn event(n: u64) -> OcsfEvent {
    OcsfEvent::new(EventClass::NetworkActivity, Activity::Open)
        .dst_endpoint("example.com", 443)
        .message(format!("CONNECT allowed example.com:443 #{n}"))
        .policy_generation(n)
}

#[test]
fn disabled_sink_is_a_no_op() {
    let sink = AuditSink::disabled();
    assert!(!sink.is_enabled());
    sink.emit(&event(1));
    sink.flush();
    assert_eq!(sink.dropped_writes(), 0);
}

#[test]
fn memory_sink_returns_events_in_order() {
    let (sink, handle) = AuditSink::memory();
    assert!(sink.is_enabled());
    for n in 0..10 {
        sink.emit(&event(n));
    }
    let events = handle.events();
    assert_eq!(events.len(), 10);
    for (n, ev) in events.iter().enumerate() {
        assert_eq!(ev["unmapped"]["policy_generation"], n as u64);
        assert_eq!(ev["class_uid"], 4001);
    }
    assert_eq!(sink.dropped_writes(), 0);
}

#[test]
fn flush_orders_across_clones_and_threads() {
    let (sink, handle) = AuditSink::memory();
    // More than the queue capacity, from several threads: emit blocks when
    // full and nothing is lost.
    let per_thread = (QUEUE_CAPACITY as u64) / 2 + 17;
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let sink = sink.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    sink.emit(&event(t * 1_000_000 + i));
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    sink.flush();
    let events = handle.events();
    assert_eq!(events.len() as u64, 4 * per_thread);
    // Per-thread order is preserved.
    for t in 0..4u64 {
        let gens: Vec<u64> = events
            .iter()
            .map(|e| e["unmapped"]["policy_generation"].as_u64().unwrap())
            .filter(|g| g / 1_000_000 == t)
            .collect();
        assert!(gens.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(gens.len() as u64, per_thread);
    }
    // Everything emitted before flush is visible right after it.
    sink.emit(&event(424_242));
    sink.flush();
    let last: Value = handle.events().pop().unwrap();
    assert_eq!(last["unmapped"]["policy_generation"], 424_242);
}

#[test]
fn file_sink_appends_json_lines_with_mode_0600() {
    let dir = TempDir::new("telemetry");
    let path = dir.path("audit.jsonl");
    {
        let sink = AuditSink::file(&path).unwrap();
        sink.emit(&event(1));
        sink.emit(&event(2));
        sink.flush();
    }
    {
        // Reopening appends rather than truncating.
        let sink = AuditSink::file(&path).unwrap();
        sink.emit(&event(3));
        sink.flush();
        assert_eq!(sink.dropped_writes(), 0);
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(text.ends_with('\n'));
    for (i, line) in lines.iter().enumerate() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["unmapped"]["policy_generation"], i as u64 + 1);
        assert_eq!(v["metadata"]["product"]["name"], "sluice");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "mode {mode:o}");
    }
}

#[cfg(unix)]
#[test]
fn file_sink_narrows_existing_file_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("telemetry");
    let path = dir.path("audit.jsonl");
    std::fs::write(&path, "").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let sink = AuditSink::file(&path).unwrap();
    sink.flush();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn file_sink_open_error_is_reported() {
    let dir = TempDir::new("telemetry");
    let missing = dir.path("no-such-dir").join("audit.jsonl");
    assert!(AuditSink::file(&missing).is_err());
}

#[cfg(target_os = "linux")]
#[test]
fn write_errors_are_counted_not_panicking() {
    // /dev/full accepts opens but fails every write with ENOSPC.
    let sink = match AuditSink::file("/dev/full") {
        Ok(sink) => sink,
        Err(e) => return skip_or_fail(&format!("cannot open /dev/full: {e}")),
    };
    sink.emit(&event(1));
    sink.emit(&event(2));
    sink.flush();
    assert!(sink.dropped_writes() >= 1);
}

#[test]
fn sink_types_are_send_sync_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<AuditSink>();
    check::<sluice_telemetry::MemorySinkHandle>();
    check::<OcsfEvent>();
}

/// The writer batches (it lingers after each drain) but never sits on
/// events: without any flush, every line of a burst and of a lone event
/// after it reaches the file on its own.
#[test]
fn unflushed_events_reach_the_file_without_a_flush() {
    let dir = TempDir::new("telemetry");
    let path = dir.path("audit.jsonl");
    let sink = AuditSink::file(&path).unwrap();
    let lines_now = || {
        std::fs::read_to_string(&path)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let wait_for = |n: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while lines_now() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of {n} lines written",
                lines_now()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    for n in 0..1000 {
        sink.emit(&event(n));
    }
    wait_for(1000);
    // Idle, then one more: the writer is blocked again and wakes for it.
    std::thread::sleep(std::time::Duration::from_millis(50));
    sink.emit(&event(1000));
    wait_for(1001);
    assert_eq!(sink.dropped_writes(), 0);
}

#[test]
fn bounded_file_rotates_once_and_stays_bounded() {
    let dir = TempDir::new("telemetry");
    let path = dir.path("audit.jsonl");
    let sink = AuditSink::file_bounded(&path, 4096).unwrap();
    for n in 0..200 {
        sink.emit(&event(n));
        if n % 10 == 9 {
            sink.flush();
        }
    }
    sink.flush();
    let current = std::fs::read_to_string(&path).unwrap();
    let old = std::fs::read_to_string(dir.path("audit.jsonl.1")).unwrap();
    assert!(current.len() <= 4096 + 2048, "{}", current.len());
    assert!(old.len() <= 4096 + 2048, "{}", old.len());
    // Whole lines only, and the newest event is in the current file.
    for line in current.lines().chain(old.lines()) {
        serde_json::from_str::<Value>(line).expect("whole JSON line");
    }
    assert!(current.contains("#199"));
    assert!(!dir.path("audit.jsonl.2").exists());
}

#[test]
fn observer_sees_every_event_and_pretty_writes_lines() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink_seen = std::sync::Arc::clone(&seen);
    let (sink, handle) = AuditSink::memory();
    let sink = sink
        .with_format(sluice_telemetry::AuditFormat::Pretty { color: false })
        .with_observer(std::sync::Arc::new(move |e: &OcsfEvent| {
            sink_seen
                .lock()
                .unwrap()
                .push(e.message_text().unwrap_or_default().to_owned());
        }));
    sink.emit(&event(1));
    sink.emit(&event(2));
    let lines = handle.lines();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].ends_with("-     CONNECT allowed example.com:443 #1"),
        "{lines:?}"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "CONNECT allowed example.com:443 #1",
            "CONNECT allowed example.com:443 #2"
        ]
    );
}
