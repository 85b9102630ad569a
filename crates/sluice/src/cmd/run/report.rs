//! What a person at the terminal sees of `sluice run` (stdout and stderr are
//! CMD's): one line on stderr per denial as it happens (`-q`: none; `-v`: allows
//! too), and at exit a summary by destination with, for every denial, the
//! policy change that would allow it (`--suggest-policy FILE` writes the whole
//! policy with those changes).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::sync::Mutex;

use sluice_policy::suggest::{self, Denied, DeniedRequest};
use sluice_telemetry::{denial_line, Disposition, OcsfEvent};

/// How much goes to stderr while CMD runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verbosity {
    /// Nothing but errors (`-q`).
    Quiet,
    /// Denials, and the summary at exit.
    Normal,
    /// Allows too (`-v`).
    Verbose,
}

#[derive(Debug, Default)]
struct Tally {
    allowed: BTreeMap<String, u64>,
    denied: BTreeMap<String, (u64, BTreeSet<String>)>,
    suggestions: BTreeSet<Denied>,
}

/// Receives every audit event of the run.
pub(super) struct Reporter {
    verbosity: Verbosity,
    tally: Mutex<Tally>,
}

/// One decision as the reporter sees it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Line {
    pub(super) allowed: bool,
    /// `CONNECT host:port`, `GET host:port/path`, `direct connection to ip:port`.
    pub(super) what: String,
    /// `host:port` (the summary key).
    pub(super) destination: String,
    /// `(binary name, pid as CMD sees it)`.
    pub(super) who: Option<(String, u64)>,
    pub(super) reason: Option<String>,
    pub(super) suggestion: Option<Denied>,
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
pub(super) fn classify(e: &OcsfEvent) -> Option<Line> {
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
    Some(Line {
        allowed,
        what,
        destination,
        who,
        reason,
        suggestion,
    })
}

impl Line {
    /// `sluice: denied CONNECT example.com:443 (curl, pid 12): reason` (the
    /// same words as the `hint` of an HTTP denial body).
    pub(super) fn render(&self) -> String {
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

impl Reporter {
    pub(super) fn new(verbosity: Verbosity) -> Self {
        Self {
            verbosity,
            tally: Mutex::new(Tally::default()),
        }
    }

    /// The observer: prints the line as it happens and counts it.
    pub(super) fn observe(&self, e: &OcsfEvent) {
        let Some(line) = classify(e) else { return };
        let print = match self.verbosity {
            Verbosity::Quiet => false,
            Verbosity::Normal => !line.allowed,
            Verbosity::Verbose => true,
        };
        if print {
            let _ = writeln!(std::io::stderr().lock(), "{}", line.render());
        }
        let mut t = self
            .tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if line.allowed {
            *t.allowed.entry(line.destination).or_default() += 1;
        } else {
            let entry = t.denied.entry(line.destination).or_default();
            entry.0 += 1;
            if let Some((name, _)) = line.who {
                entry.1.insert(name);
            }
            if let Some(s) = line.suggestion {
                t.suggestions.insert(s);
            }
        }
    }

    /// Every suggestion collected so far.
    pub(super) fn suggestions(&self) -> Vec<Denied> {
        let t = self
            .tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        t.suggestions.iter().cloned().collect()
    }

    /// The exit summary (empty when nothing was decided or `-q`).
    pub(super) fn summary(&self, policy: &std::path::Path) -> String {
        if self.verbosity == Verbosity::Quiet {
            return String::new();
        }
        let t = self
            .tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if t.allowed.is_empty() && t.denied.is_empty() {
            return String::new();
        }
        let (a, d): (u64, u64) = (
            t.allowed.values().sum(),
            t.denied.values().map(|(n, _)| n).sum(),
        );
        let mut out = format!("sluice: summary: {a} allowed, {d} denied\n");
        let width = t
            .allowed
            .keys()
            .chain(t.denied.keys())
            .map(String::len)
            .max()
            .unwrap_or(0);
        for (dest, n) in &t.allowed {
            out.push_str(&format!("  allowed  {dest:<width$}  {n}\n"));
        }
        for (dest, (n, who)) in &t.denied {
            let who: Vec<&str> = who.iter().map(String::as_str).collect();
            let who = if who.is_empty() {
                String::new()
            } else {
                format!("  ({})", who.join(", "))
            };
            out.push_str(&format!("  denied   {dest:<width$}  {n}{who}\n"));
        }
        let (hosts, requests): (Vec<&Denied>, Vec<&Denied>) =
            t.suggestions.iter().partition(|s| s.request.is_none());
        if !hosts.is_empty() {
            out.push_str(&format!(
                "sluice: to allow the denied destinations, add under `network_policies:` in {} \
                 (or run with --suggest-policy FILE):\n",
                policy.display()
            ));
            for s in hosts {
                out.push_str(&suggest::snippet(s));
            }
        }
        if !requests.is_empty() {
            out.push_str("sluice: to allow the denied requests, add these rules (or run with --suggest-policy FILE):\n");
            for s in requests {
                out.push_str(&suggest::snippet(s));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use sluice_telemetry::{Action, Activity, EventClass, ProcessInfo};

    use super::*;

    fn curl() -> ProcessInfo {
        ProcessInfo {
            path: "/usr/bin/curl".into(),
            pid: 4242,
            ancestors: vec![],
        }
    }

    #[test]
    fn lines_for_each_kind_of_decision() {
        let connect = OcsfEvent::new(EventClass::NetworkActivity, Activity::Open)
            .action(Action::Denied)
            .disposition(Disposition::Blocked)
            .dst_endpoint("example.com", 443)
            .actor_process(curl())
            .unmapped("sandbox_pid", 7.into())
            .firewall_rule("-", "opa")
            .message("CONNECT denied example.com:443")
            .status_detail("no policy matches example.com:443");
        let line = classify(&connect).unwrap();
        assert_eq!(
            line.render(),
            "sluice: denied CONNECT example.com:443 (curl, pid 7): no policy matches example.com:443"
        );
        let captured = OcsfEvent::new(EventClass::NetworkActivity, Activity::Refuse)
            .action(Action::Denied)
            .disposition(Disposition::Blocked)
            .dst_endpoint("cache.internal", 6380)
            .firewall_rule("-", "policy-dns")
            .unmapped("transparent.synthetic_ip", "198.18.0.1".into())
            .message("TRANSPARENT refused cache.internal:6380 via 198.18.0.1:6380")
            .status_detail(
                "transparent_tcp_port_mismatch: port 6380 is not allowed for cache.internal",
            );
        assert_eq!(
            classify(&captured).unwrap().render(),
            "sluice: denied connection to cache.internal:6380 (by its synthetic address): transparent_tcp_port_mismatch: port 6380 is not allowed for cache.internal"
        );
        assert_eq!(
            line.suggestion
                .as_ref()
                .map(|s| (s.host.as_str(), s.binary.as_deref())),
            Some(("example.com", Some("/usr/bin/curl")))
        );

        let redis = OcsfEvent::new(EventClass::NetworkActivity, Activity::Traffic)
            .action(Action::Denied)
            .disposition(Disposition::Blocked)
            .dst_endpoint("cache.internal", 6379)
            .firewall_rule("cache", "redis")
            .unmapped("transparent.synthetic_ip", "198.18.0.1".into())
            .unmapped("processor.protocol", "redis".into())
            .unmapped("processor.summary", "command=SET keys=1".into())
            .message("REDIS deny cache.internal:6379 command=SET keys=1")
            .status_detail("SET not permitted by policy");
        assert_eq!(
            classify(&redis).unwrap().render(),
            "sluice: denied redis command=SET keys=1 to cache.internal:6379: SET not permitted by policy"
        );

        let l7 = OcsfEvent::new(EventClass::HttpActivity, Activity::Other)
            .action(Action::Denied)
            .disposition(Disposition::Blocked)
            .dst_endpoint("api.test", 8443)
            .actor_process(curl())
            .firewall_rule("demo", "l7")
            .http_request("DELETE", "http", "api.test", "/repos/x", 8443)
            .message(
                "L7_REQUEST deny DELETE api.test:8443/repos/x reason=DELETE not allowed [rest]",
            );
        let line = classify(&l7).unwrap();
        assert_eq!(
            line.render(),
            "sluice: denied DELETE api.test:8443/repos/x (curl, pid 4242): DELETE not allowed [rest]"
        );
        assert_eq!(
            line.suggestion
                .and_then(|s| s.request)
                .map(|r| (r.policy, r.method)),
            Some(("demo".to_owned(), "DELETE".to_owned()))
        );

        let bypass = OcsfEvent::new(EventClass::NetworkActivity, Activity::Refuse)
            .disposition(Disposition::Blocked)
            .dst_endpoint("10.1.2.3", 80)
            .firewall_rule("bypass-detect", "nftables")
            .message("BYPASS_DETECT 10.1.2.3:80");
        let line = classify(&bypass).unwrap();
        assert_eq!(
            line.render(),
            "sluice: denied direct connection to 10.1.2.3:80: bypassed the proxy (use HTTP_PROXY/HTTPS_PROXY)"
        );
        assert!(
            line.suggestion.is_none(),
            "nothing in the policy can allow a bypass"
        );

        let allowed = OcsfEvent::new(EventClass::NetworkActivity, Activity::Open)
            .disposition(Disposition::Allowed)
            .dst_endpoint("example.com", 443)
            .firewall_rule("web", "opa")
            .message("CONNECT allowed example.com:443");
        assert_eq!(
            classify(&allowed).unwrap().render(),
            "sluice: allowed CONNECT example.com:443"
        );
        let closed = OcsfEvent::new(EventClass::NetworkActivity, Activity::Close)
            .disposition(Disposition::Blocked)
            .dst_endpoint("example.com", 443)
            .message("CONNECT tunnel closed after policy reload");
        assert!(classify(&closed).is_none());
        let finding = OcsfEvent::new(EventClass::DetectionFinding, Activity::Create)
            .disposition(Disposition::Blocked);
        assert!(classify(&finding).is_none());
    }

    #[test]
    fn summary_counts_and_suggests() {
        let r = Reporter::new(Verbosity::Quiet);
        assert_eq!(r.summary(std::path::Path::new("p.yaml")), "");
        let r = Reporter::new(Verbosity::Normal);
        let denied = OcsfEvent::new(EventClass::NetworkActivity, Activity::Open)
            .disposition(Disposition::Blocked)
            .dst_endpoint("example.com", 443)
            .actor_process(curl())
            .firewall_rule("-", "opa")
            .status_detail("no policy matches");
        r.observe(&denied);
        r.observe(&denied);
        let summary = r.summary(std::path::Path::new("p.yaml"));
        assert!(
            summary.starts_with("sluice: summary: 0 allowed, 2 denied\n"),
            "{summary}"
        );
        assert!(
            summary.contains("  denied   example.com:443  2  (curl)\n"),
            "{summary}"
        );
        assert!(summary.contains("  allow_example_com_443:\n"), "{summary}");
        assert_eq!(r.suggestions().len(), 1);
    }
}
