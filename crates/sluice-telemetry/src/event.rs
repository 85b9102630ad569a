//! The [`OcsfEvent`] model and its builder.

use std::net::IpAddr;
use std::time::SystemTime;

use serde_json::{Map, Value};

use crate::enums::{Action, Activity, Disposition, EventClass, Severity, Status};
use crate::redact::redact_path;

/// The process that originated the traffic (OCSF `actor.process`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessInfo {
    /// Executable path (`/usr/bin/curl`); also used as the OCSF process name.
    pub path: String,
    /// Process id; 0 when unknown.
    pub pid: u32,
    /// Executable paths of the ancestors, direct parent first. Each becomes a
    /// nested `parent_process`.
    pub ancestors: Vec<String>,
}

/// A network endpoint: an IP address or a host name, plus a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// Either an IP literal or a host name.
    pub(crate) host: EndpointHost,
    pub(crate) port: u16,
}

/// Host part of an [`Endpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EndpointHost {
    Ip(IpAddr),
    Name(String),
}

/// `http_request` contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpRequest {
    pub(crate) method: String,
    pub(crate) scheme: String,
    pub(crate) hostname: String,
    /// Always query- and fragment-free.
    pub(crate) path: String,
    pub(crate) port: u16,
}

/// Detection Finding contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub(crate) uid: String,
    pub(crate) title: String,
    pub(crate) remediation: String,
    pub(crate) evidences: Vec<(String, String)>,
}

/// One OCSF 1.8 event, independent of proxy types.
///
/// Built with [`OcsfEvent::new`] followed by chained setters; serialized with
/// `serde` (see [`OcsfEvent::to_json`]) into the OCSF JSON shape. Absent
/// optional fields are omitted, never written as `null`.
///
/// Events must never receive secrets: no credential or placeholder values, no
/// header values and no query strings (HTTP paths are passed through
/// [`redact_path`] automatically; free-text fields such as `message` and
/// `status_detail` are the caller's responsibility).
///
/// ```
/// use sluice_telemetry::{Action, Activity, Disposition, EventClass, OcsfEvent, Severity, Status};
///
/// let ev = OcsfEvent::new(EventClass::NetworkActivity, Activity::Open)
///     .severity(Severity::Medium)
///     .status(Status::Failure)
///     .action(Action::Denied)
///     .disposition(Disposition::Blocked)
///     .dst_endpoint("example.com", 443)
///     .firewall_rule("-", "opa")
///     .message("CONNECT denied example.com:443");
/// assert_eq!(ev.to_json()["type_uid"], 400101);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct OcsfEvent {
    pub(crate) class: EventClass,
    pub(crate) activity: Activity,
    pub(crate) time: SystemTime,
    pub(crate) severity: Severity,
    pub(crate) status: Option<Status>,
    pub(crate) action: Option<Action>,
    pub(crate) disposition: Option<Disposition>,
    pub(crate) message: Option<String>,
    pub(crate) status_detail: Option<String>,
    pub(crate) src_endpoint: Option<Endpoint>,
    pub(crate) dst_endpoint: Option<Endpoint>,
    pub(crate) proxy_endpoint: Option<Endpoint>,
    pub(crate) actor: Option<ProcessInfo>,
    pub(crate) firewall_rule: Option<(String, String)>,
    pub(crate) http_request: Option<HttpRequest>,
    pub(crate) http_status: Option<u16>,
    pub(crate) finding: Option<Finding>,
    pub(crate) is_alert: Option<bool>,
    pub(crate) observation_point_id: Option<u8>,
    pub(crate) policy_generation: Option<u64>,
    /// `ai_model{name, provider}` (the `ai_operation` profile).
    pub(crate) ai_model: Option<(String, String)>,
    pub(crate) unmapped: Map<String, Value>,
}

impl OcsfEvent {
    /// Starts an event of `class` / `activity`, timestamped now, with
    /// severity `Informational` and every optional field absent.
    pub fn new(class: EventClass, activity: Activity) -> Self {
        Self {
            class,
            activity,
            time: SystemTime::now(),
            severity: Severity::Informational,
            status: None,
            action: None,
            disposition: None,
            message: None,
            status_detail: None,
            src_endpoint: None,
            dst_endpoint: None,
            proxy_endpoint: None,
            actor: None,
            firewall_rule: None,
            http_request: None,
            http_status: None,
            finding: None,
            is_alert: None,
            observation_point_id: None,
            policy_generation: None,
            ai_model: None,
            unmapped: Map::new(),
        }
    }

    /// The event class.
    pub fn class(&self) -> EventClass {
        self.class
    }

    /// The activity.
    pub fn activity(&self) -> Activity {
        self.activity
    }

    /// OCSF `activity_id` of this event (class-specific, see [`Activity`]).
    pub fn activity_id(&self) -> u8 {
        self.activity.id_in(self.class)
    }

    /// OCSF `type_uid` = `class_uid * 100 + activity_id`.
    pub fn type_uid(&self) -> u64 {
        u64::from(self.class.uid()) * 100 + u64::from(self.activity_id())
    }

    /// OCSF `type_name`, e.g. `"Network Activity: Open"`.
    pub fn type_name(&self) -> String {
        format!("{}: {}", self.class.name(), self.activity.name())
    }

    /// Overrides the event time (defaults to the construction time).
    #[must_use]
    pub fn time(mut self, time: SystemTime) -> Self {
        self.time = time;
        self
    }

    /// Sets `severity_id` / `severity`.
    #[must_use]
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// Sets `status_id` / `status`.
    #[must_use]
    pub fn status(mut self, status: Status) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets `action_id` / `action`.
    #[must_use]
    pub fn action(mut self, action: Action) -> Self {
        self.action = Some(action);
        self
    }

    /// Sets `disposition_id` / `disposition`.
    #[must_use]
    pub fn disposition(mut self, disposition: Disposition) -> Self {
        self.disposition = Some(disposition);
        self
    }

    /// Sets `message` (e.g. `CONNECT denied example.com:443`). Must not
    /// contain secrets or query strings.
    #[must_use]
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Sets `status_detail` (usually the deny reason). Must not contain
    /// secrets or query strings.
    #[must_use]
    pub fn status_detail(mut self, detail: impl Into<String>) -> Self {
        self.status_detail = Some(detail.into());
        self
    }

    /// Sets `src_endpoint` (the sandboxed client).
    #[must_use]
    pub fn src_endpoint(mut self, ip: IpAddr, port: u16) -> Self {
        self.src_endpoint = Some(Endpoint {
            host: EndpointHost::Ip(ip),
            port,
        });
        self
    }

    /// Sets `dst_endpoint`. A host that parses as an IP address (optionally
    /// in `[...]` brackets) is written as `ip`, anything else as `hostname`.
    #[must_use]
    pub fn dst_endpoint(mut self, host_or_ip: &str, port: u16) -> Self {
        let bare = host_or_ip
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host_or_ip);
        let host = match bare.parse::<IpAddr>() {
            Ok(ip) => EndpointHost::Ip(ip),
            Err(_) => EndpointHost::Name(host_or_ip.to_owned()),
        };
        self.dst_endpoint = Some(Endpoint { host, port });
        self
    }

    /// Sets `proxy_endpoint` (the sluice listener that handled the traffic).
    #[must_use]
    pub fn proxy_endpoint(mut self, ip: IpAddr, port: u16) -> Self {
        self.proxy_endpoint = Some(Endpoint {
            host: EndpointHost::Ip(ip),
            port,
        });
        self
    }

    /// Sets `actor.process`.
    #[must_use]
    pub fn actor_process(mut self, process: ProcessInfo) -> Self {
        self.actor = Some(process);
        self
    }

    /// Sets `firewall_rule{name, type}`: the policy entry key (or `-`) and the
    /// engine that decided (`opa`, `ssrf`, `l7`, `tls`, ...).
    #[must_use]
    pub fn firewall_rule(mut self, name: impl Into<String>, rule_type: impl Into<String>) -> Self {
        self.firewall_rule = Some((name.into(), rule_type.into()));
        self
    }

    /// Sets `http_request{http_method, url{scheme, hostname, path, port}}`.
    /// The path is passed through [`redact_path`].
    #[must_use]
    pub fn http_request(
        mut self,
        method: impl Into<String>,
        scheme: impl Into<String>,
        hostname: impl Into<String>,
        path: &str,
        port: u16,
    ) -> Self {
        self.http_request = Some(HttpRequest {
            method: method.into(),
            scheme: scheme.into(),
            hostname: hostname.into(),
            path: redact_path(path),
            port,
        });
        self
    }

    /// Sets `http_response{code}`.
    #[must_use]
    pub fn http_status(mut self, code: u16) -> Self {
        self.http_status = Some(code);
        self
    }

    /// Sets the Detection Finding details: `finding_info{uid, title}`,
    /// `remediation{desc}` (omitted when empty) and one `evidences` entry
    /// whose `data` holds the key/value pairs (omitted when empty).
    #[must_use]
    pub fn finding<K, V>(
        mut self,
        uid: impl Into<String>,
        title: impl Into<String>,
        remediation: impl Into<String>,
        evidences: impl IntoIterator<Item = (K, V)>,
    ) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.finding = Some(Finding {
            uid: uid.into(),
            title: title.into(),
            remediation: remediation.into(),
            evidences: evidences
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        });
        self
    }

    /// Sets `is_alert` (Detection Finding).
    #[must_use]
    pub fn alert(mut self, is_alert: bool) -> Self {
        self.is_alert = Some(is_alert);
        self
    }

    /// Sets `observation_point_id` (e.g. 3 for bypass detection).
    #[must_use]
    pub fn observation_point(mut self, id: u8) -> Self {
        self.observation_point_id = Some(id);
        self
    }

    /// Adds `unmapped.<key>` = `value`. The key `policy_generation` is
    /// reserved for [`OcsfEvent::policy_generation`], which wins.
    #[must_use]
    pub fn unmapped(mut self, key: impl Into<String>, value: Value) -> Self {
        self.unmapped.insert(key.into(), value);
        self
    }

    /// Sets `ai_model{name, provider}` and adds the `ai_operation` profile
    /// (model calls through `inference.local`).
    #[must_use]
    pub fn ai_model(mut self, name: impl Into<String>, provider: impl Into<String>) -> Self {
        self.ai_model = Some((name.into(), provider.into()));
        self
    }

    /// Sets `unmapped.policy_generation`: the generation of the policy
    /// snapshot that decided this event (or that was loaded, for 5019).
    #[must_use]
    pub fn policy_generation(mut self, generation: u64) -> Self {
        self.policy_generation = Some(generation);
        self
    }

    /// The `message`, if set.
    pub fn message_text(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// The `status_detail`, if set.
    pub fn status_detail_text(&self) -> Option<&str> {
        self.status_detail.as_deref()
    }
}
