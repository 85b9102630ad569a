//! What a person at the terminal sees of `sluice run` (stdout and stderr are
//! CMD's): one line on stderr per denial as it happens (`-q`: none; `-v`: allows
//! too), and at exit a summary by destination with, for every denial, the
//! policy change that would allow it (`--suggest-policy FILE` writes the whole
//! policy with those changes).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::sync::Mutex;

use sluice_policy::suggest::{self, Denied};
use sluice_proxy::denials::classify;
use sluice_telemetry::OcsfEvent;

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
    use sluice_telemetry::{Action, Activity, Disposition, EventClass, ProcessInfo};

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
