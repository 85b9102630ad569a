//! One-line human summaries of events for debug logs.

use std::fmt::Write as _;

use crate::enums::EventClass;
use crate::event::{EndpointHost, OcsfEvent};

/// Default port of `scheme`, if known.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

impl OcsfEvent {
    /// A one-line human summary, e.g.
    /// `NET:OPEN [MED] DENIED /usr/bin/curl(1234) -> example.com:443 [policy:- engine:opa] [reason:...]`.
    ///
    /// Layout: `<CLASS>:<ACTIVITY> [<SEV>] [<ACTION> ]<details>` followed by
    /// `[policy:<name> engine:<type>]` when a firewall rule is set and
    /// `[reason:<status_detail>]` when a status detail is set. Details are
    /// `<actor> -> <destination>` for network and HTTP events (HTTP shows
    /// `METHOD url`, with the port only when non-default), the quoted title
    /// and uid for findings, and the message otherwise (or when nothing else
    /// is known).
    pub fn shorthand(&self) -> String {
        let mut out = format!(
            "{}:{} [{}]",
            self.class.shorthand(),
            self.activity.name().to_ascii_uppercase(),
            self.severity.short()
        );
        if let Some(action) = self.action {
            let _ = write!(out, " {}", action.name().to_ascii_uppercase());
        }
        let details = self.details();
        if !details.is_empty() {
            out.push(' ');
            out.push_str(&details);
        }
        if let Some((name, rule_type)) = &self.firewall_rule {
            let _ = write!(out, " [policy:{name} engine:{rule_type}]");
        }
        if let Some(detail) = &self.status_detail {
            let _ = write!(out, " [reason:{detail}]");
        }
        out
    }

    fn details(&self) -> String {
        let target = match self.class {
            EventClass::DetectionFinding => self
                .finding
                .as_ref()
                .map(|f| format!("\"{}\" [{}]", f.title, f.uid)),
            EventClass::NetworkActivity
            | EventClass::HttpActivity
            | EventClass::DnsActivity
            | EventClass::ApiActivity => self.destination(),
            EventClass::DeviceConfigStateChange => None,
        };
        let actor = self
            .actor
            .as_ref()
            .map(|p| format!("{}({})", p.path, p.pid));
        match (actor, target) {
            (Some(a), Some(t)) if self.class != EventClass::DetectionFinding => {
                format!("{a} -> {t}")
            }
            (_, Some(t)) => t,
            (Some(a), None) => match &self.message {
                Some(m) => format!("{a} {m}"),
                None => a,
            },
            (None, None) => self.message.clone().unwrap_or_default(),
        }
    }

    fn destination(&self) -> Option<String> {
        if let Some(req) = &self.http_request {
            let port = if default_port(&req.scheme) == Some(req.port) {
                String::new()
            } else {
                format!(":{}", req.port)
            };
            return Some(format!(
                "{} {}://{}{port}{}",
                req.method, req.scheme, req.hostname, req.path
            ));
        }
        self.dst_endpoint.as_ref().map(|ep| match &ep.host {
            EndpointHost::Name(name) => format!("{name}:{}", ep.port),
            EndpointHost::Ip(ip) if ip.is_ipv6() => format!("[{ip}]:{}", ep.port),
            EndpointHost::Ip(ip) => format!("{ip}:{}", ep.port),
        })
    }
}
