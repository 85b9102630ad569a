//! Read access to an event's fields, for consumers that are not the JSON
//! writer (the terminal reporter of `sluice run`, the pretty format).

use serde_json::Value;

use crate::enums::{Disposition, EventClass};
use crate::event::{EndpointHost, OcsfEvent, ProcessInfo};

impl OcsfEvent {
    /// The disposition (allowed, blocked, ...), if set.
    #[must_use]
    pub fn disposition_value(&self) -> Option<Disposition> {
        self.disposition
    }

    /// The destination as `(host or IP, port)`.
    #[must_use]
    pub fn destination_host_port(&self) -> Option<(String, u16)> {
        self.dst_endpoint.as_ref().map(|ep| {
            let host = match &ep.host {
                EndpointHost::Name(n) => n.clone(),
                EndpointHost::Ip(ip) => ip.to_string(),
            };
            (host, ep.port)
        })
    }

    /// The process behind the event, if known.
    #[must_use]
    pub fn actor(&self) -> Option<&ProcessInfo> {
        self.actor.as_ref()
    }

    /// `(method, query-free path)` of the HTTP request, if any.
    #[must_use]
    pub fn http_method_path(&self) -> Option<(&str, &str)> {
        self.http_request
            .as_ref()
            .map(|r| (r.method.as_str(), r.path.as_str()))
    }

    /// `(policy entry, engine)` of the firewall rule, if set.
    #[must_use]
    pub fn rule(&self) -> Option<(&str, &str)> {
        self.firewall_rule
            .as_ref()
            .map(|(n, t)| (n.as_str(), t.as_str()))
    }

    /// A value of the `unmapped` object.
    #[must_use]
    pub fn unmapped_value(&self, key: &str) -> Option<&Value> {
        self.unmapped.get(key)
    }

    /// Whether this is a network or HTTP decision (not a finding, a policy
    /// load or an inference call).
    #[must_use]
    pub fn is_traffic(&self) -> bool {
        matches!(
            self.class,
            EventClass::NetworkActivity | EventClass::HttpActivity
        )
    }
}
