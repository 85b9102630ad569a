//! Denials as people and agents read them: one decision from an audit
//! event ([`classify`], the words of `sluice run`'s terminal line and of the
//! `hint` of a denial body), and a bounded log of the most recent denials
//! ([`DenialLog`]) that `policy.local` and the operator console read, with
//! a broadcast of each new one as it happens.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use sluice_policy::suggest::{Denied, DeniedRequest};
use sluice_telemetry::{denial_line, Disposition, OcsfEvent};
use tokio::sync::broadcast;

/// One decision as the reporter sees it.
#[derive(Debug, PartialEq, Eq)]
pub struct DecisionLine {
    pub allowed: bool,
    /// `CONNECT host:port`, `GET host:port/path`, `direct connection to ip:port`.
    pub what: String,
    /// `host:port` (the summary key).
    pub destination: String,
    /// `(binary name, pid as CMD sees it)`.
    pub who: Option<(String, u64)>,
    pub reason: Option<String>,
    pub suggestion: Option<Denied>,
}

/// The compact reason of a denial: the event's status detail, or the `reason=`
/// part of an L7 message.
fn reason_of(e: &OcsfEvent) -> Option<String> {
    let text = e.status_detail_text().map(str::to_owned).or_else(|| {
        e.message_text()
            .and_then(|m| m.split_once(" reason=").map(|(_, r)| r.to_owned()))
    })?;
    let first = text.lines().next().unwrap_or_default();
    if first.len() <= 200 {
        return Some(first.to_owned());
    }
    let mut cut = 200;
    while !first.is_char_boundary(cut) {
        cut -= 1;
    }
    Some(format!("{}…", &first[..cut]))
}

/// The decision an event records, if it is one the terminal cares about: an
/// allowed or denied connection or request (not closes, findings, loads).
#[must_use]
pub fn classify(e: &OcsfEvent) -> Option<DecisionLine> {
    if !e.is_traffic() {
        return None;
    }
    let allowed = match e.disposition_value()? {
        Disposition::Allowed => true,
        Disposition::Blocked => false,
        _ => return None,
    };
    let message = e.message_text().unwrap_or_default();
    if message.starts_with("CONNECT closed") || message.starts_with("CONNECT tunnel closed") {
        return None;
    }
    let (host, port) = e.destination_host_port()?;
    let destination = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let (rule, engine) = e.rule().unwrap_or(("-", "-"));
    let dns_query = e
        .unmapped_value("dns_query")
        .and_then(serde_json::Value::as_str);
    let transparent = e.unmapped_value("transparent.synthetic_ip").is_some();
    let what = if let Some(name) = dns_query {
        format!("DNS query for {name}")
    } else if engine == "nftables" {
        format!("direct connection to {destination}")
    } else if let Some((method, path)) = e.http_method_path() {
        format!("{method} {destination}{path}")
    } else if let Some(protocol) = e
        .unmapped_value("processor.protocol")
        .and_then(serde_json::Value::as_str)
    {
        // One message of a native protocol session (a Redis command, a SQL
        // statement): the connection itself stays open.
        let summary = e
            .unmapped_value("processor.summary")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        format!("{protocol} {summary} to {destination}")
    } else if transparent {
        format!("connection to {destination} (by its synthetic address)")
    } else {
        format!("CONNECT {destination}")
    };
    let who = e.actor().map(|p| {
        let name = p.path.rsplit('/').next().unwrap_or(&p.path).to_owned();
        let pid = e
            .unmapped_value("sandbox_pid")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(u64::from(p.pid));
        (name, pid)
    });
    let binary = e.actor().map(|p| p.path.clone());
    let suggestion = match (allowed, engine) {
        (false, "opa") => Some(Denied {
            host: host.clone(),
            port,
            binary,
            request: None,
        }),
        (false, "l7") => e.http_method_path().map(|(method, path)| Denied {
            host: host.clone(),
            port,
            binary,
            request: Some(DeniedRequest {
                policy: rule.to_owned(),
                method: method.to_owned(),
                path: path.to_owned(),
            }),
        }),
        _ => None,
    };
    let reason = if dns_query.is_some() {
        Some("names are resolved by the proxy (use HTTP_PROXY/HTTPS_PROXY)".to_owned())
    } else if engine == "nftables" {
        Some("bypassed the proxy (use HTTP_PROXY/HTTPS_PROXY)".to_owned())
    } else if allowed {
        None
    } else {
        reason_of(e)
    };
    Some(DecisionLine {
        allowed,
        what,
        destination,
        who,
        reason,
        suggestion,
    })
}

impl DecisionLine {
    /// `sluice: denied CONNECT example.com:443 (curl, pid 12): reason` (the
    /// same words as the `hint` of an HTTP denial body).
    pub fn render(&self) -> String {
        let who = self.who.as_ref().map(|(n, p)| (n.as_str(), *p));
        if self.allowed {
            let mut out = format!("sluice: allowed {}", self.what);
            if let Some((name, pid)) = who {
                out.push_str(&format!(" ({name}, pid {pid})"));
            }
            out
        } else {
            format!(
                "sluice: {}",
                denial_line(&self.what, who, self.reason.as_deref())
            )
        }
    }
}

/// How many denials the log keeps.
pub const DENIAL_LOG_CAPACITY: usize = 256;
/// Longest line kept (bytes).
const MAX_LINE: usize = 4096;

/// One recent denial, as `policy.local` and the console show it. Paths in
/// `line` are query-free (the events are).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DenialRecord {
    /// Increasing number of the denial within this process.
    pub seq: u64,
    /// Unix time in milliseconds.
    pub at_ms: u64,
    /// `denied WHAT (BINARY, pid N): REASON`.
    pub line: String,
    /// `host:port`.
    pub destination: String,
    /// The client's executable, when identified.
    pub binary: Option<String>,
    /// The smallest policy change that would allow it, when there is one.
    #[serde(skip)]
    pub suggestion: Option<Denied>,
    /// [`Self::suggestion`] as a snippet to paste (for people).
    pub suggested_snippet: Option<String>,
}

/// The most recent denials (bounded) and a broadcast of new ones. Cheap to
/// clone; fed by an audit observer ([`DenialLog::observe`]).
#[derive(Clone, Debug)]
pub struct DenialLog {
    inner: Arc<Mutex<LogState>>,
    tx: broadcast::Sender<DenialRecord>,
}

#[derive(Debug, Default)]
struct LogState {
    next: u64,
    recent: VecDeque<DenialRecord>,
}

impl Default for DenialLog {
    fn default() -> Self {
        Self::new()
    }
}

impl DenialLog {
    /// An empty log.
    #[must_use]
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(64);
        Self {
            inner: Arc::new(Mutex::new(LogState::default())),
            tx,
        }
    }

    /// Records `e` when it is a denial of a connection or request.
    pub fn observe(&self, e: &OcsfEvent) {
        let Some(d) = classify(e) else { return };
        if d.allowed {
            return;
        }
        let who = d.who.as_ref().map(|(n, p)| (n.as_str(), *p));
        let mut line = denial_line(&d.what, who, d.reason.as_deref());
        if line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        let at_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let record = {
            let mut state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            state.next += 1;
            let record = DenialRecord {
                seq: state.next,
                at_ms,
                line,
                destination: d.destination,
                binary: e.actor().map(|p| p.path.clone()),
                suggested_snippet: d.suggestion.as_ref().map(sluice_policy::suggest::snippet),
                suggestion: d.suggestion,
            };
            if state.recent.len() == DENIAL_LOG_CAPACITY {
                state.recent.pop_front();
            }
            state.recent.push_back(record.clone());
            record
        };
        // Nobody listening is fine.
        let _ = self.tx.send(record);
    }

    /// The newest `n` denials, newest first.
    #[must_use]
    pub fn last(&self, n: usize) -> Vec<DenialRecord> {
        let state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        state.recent.iter().rev().take(n).cloned().collect()
    }

    /// The denial numbered `seq`, while it is still in the log.
    #[must_use]
    pub fn get(&self, seq: u64) -> Option<DenialRecord> {
        let state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        state.recent.iter().find(|r| r.seq == seq).cloned()
    }

    /// New denials as they are recorded (a slow reader loses the oldest).
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<DenialRecord> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use sluice_telemetry::{Action, Activity, EventClass, ProcessInfo};

    use super::*;

    fn denial(host: &str) -> OcsfEvent {
        OcsfEvent::new(EventClass::NetworkActivity, Activity::Open)
            .action(Action::Denied)
            .disposition(Disposition::Blocked)
            .dst_endpoint(host, 443)
            .firewall_rule("-", "opa")
            .actor_process(ProcessInfo {
                path: "/usr/bin/curl".into(),
                pid: 7,
                ancestors: vec![],
            })
            .status_detail("no policy matches")
    }

    #[test]
    fn keeps_the_newest_denials_and_broadcasts_them() {
        let log = DenialLog::new();
        let mut rx = log.subscribe();
        log.observe(
            &OcsfEvent::new(EventClass::NetworkActivity, Activity::Open)
                .action(Action::Allowed)
                .disposition(Disposition::Allowed)
                .dst_endpoint("ok.test", 443),
        );
        assert!(log.last(10).is_empty(), "allows are not denials");
        log.observe(&denial("first.test"));
        assert_eq!(
            rx.try_recv().map(|r| r.destination).ok().as_deref(),
            Some("first.test:443")
        );
        for i in 0..(DENIAL_LOG_CAPACITY + 4) {
            log.observe(&denial(&format!("h{i}.test")));
        }
        let last = log.last(3);
        assert_eq!(last.len(), 3);
        assert_eq!(
            last[0].destination,
            format!("h{}.test:443", DENIAL_LOG_CAPACITY + 3)
        );
        assert_eq!(
            last[0].line,
            format!(
                "denied CONNECT h{}.test:443 (curl, pid 7): no policy matches",
                DENIAL_LOG_CAPACITY + 3
            )
        );
        assert!(last[0]
            .suggested_snippet
            .as_deref()
            .is_some_and(|s| s.contains("/usr/bin/curl")));
        assert_eq!(log.last(10_000).len(), DENIAL_LOG_CAPACITY);
        assert!(
            rx.try_recv().is_err(),
            "a slow reader lags, it does not block the log"
        );
        assert!(log.get(1).is_none(), "evicted");
        assert!(log.get(last[0].seq).is_some());
    }
}
