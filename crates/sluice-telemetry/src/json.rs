//! Serialization of [`OcsfEvent`] into the OCSF 1.8 JSON shape.

use std::net::IpAddr;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::event::{Endpoint, EndpointHost, OcsfEvent, ProcessInfo};
use crate::time::{epoch_millis, rfc3339_millis};

/// OCSF schema version written in `metadata.version`.
pub const OCSF_VERSION: &str = "1.8.0";

/// Product name and vendor written in `metadata.product`.
pub const PRODUCT_NAME: &str = "sluice";

#[derive(Serialize)]
struct Wire<'a> {
    class_uid: u32,
    class_name: &'static str,
    category_uid: u32,
    category_name: &'static str,
    activity_id: u8,
    activity_name: &'static str,
    type_uid: u64,
    type_name: String,
    time: u64,
    time_dt: String,
    severity_id: u8,
    severity: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_id: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_detail: Option<&'a str>,
    metadata: Metadata,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_endpoint: Option<WireEndpoint<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_endpoint: Option<WireEndpoint<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy_endpoint: Option<WireEndpoint<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<Actor<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    firewall_rule: Option<FirewallRule<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action_id: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disposition_id: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disposition: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    observation_point_id: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_request: Option<WireHttpRequest<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_response: Option<HttpResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finding_info: Option<FindingInfo<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_alert: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remediation: Option<Remediation<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    evidences: Option<[Evidence; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ai_model: Option<AiModel<'a>>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    unmapped: Map<String, Value>,
}

#[derive(Serialize)]
struct AiModel<'a> {
    name: &'a str,
    provider: &'a str,
}

#[derive(Serialize)]
struct Metadata {
    version: &'static str,
    product: Product,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    profiles: Vec<&'static str>,
}

#[derive(Serialize)]
struct Product {
    name: &'static str,
    vendor_name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
struct WireEndpoint<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<&'a str>,
    port: u16,
}

impl<'a> From<&'a Endpoint> for WireEndpoint<'a> {
    fn from(ep: &'a Endpoint) -> Self {
        match &ep.host {
            EndpointHost::Ip(ip) => Self {
                ip: Some(*ip),
                hostname: None,
                port: ep.port,
            },
            EndpointHost::Name(name) => Self {
                ip: None,
                hostname: Some(name),
                port: ep.port,
            },
        }
    }
}

#[derive(Serialize)]
struct Actor<'a> {
    process: Process<'a>,
}

#[derive(Serialize)]
struct Process<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    file: File<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_process: Option<Box<Self>>,
}

#[derive(Serialize)]
struct File<'a> {
    name: &'a str,
    path: &'a str,
}

impl<'a> File<'a> {
    fn new(path: &'a str) -> Self {
        let name = path.rsplit('/').next().unwrap_or(path);
        Self { name, path }
    }
}

/// Builds the nested process chain: the process itself, then each ancestor
/// (direct parent first) as `parent_process`.
fn process_chain(info: &ProcessInfo) -> Process<'_> {
    let mut parent: Option<Box<Process<'_>>> = None;
    for anc in info.ancestors.iter().rev() {
        parent = Some(Box::new(Process {
            name: anc,
            pid: None,
            file: File::new(anc),
            parent_process: parent,
        }));
    }
    Process {
        name: &info.path,
        pid: Some(info.pid),
        file: File::new(&info.path),
        parent_process: parent,
    }
}

#[derive(Serialize)]
struct FirewallRule<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    rule_type: &'a str,
}

#[derive(Serialize)]
struct WireHttpRequest<'a> {
    http_method: &'a str,
    url: Url<'a>,
}

#[derive(Serialize)]
struct Url<'a> {
    scheme: &'a str,
    hostname: &'a str,
    path: &'a str,
    port: u16,
}

#[derive(Serialize)]
struct HttpResponse {
    code: u16,
}

#[derive(Serialize)]
struct FindingInfo<'a> {
    uid: &'a str,
    title: &'a str,
}

#[derive(Serialize)]
struct Remediation<'a> {
    desc: &'a str,
}

#[derive(Serialize)]
struct Evidence {
    data: Map<String, Value>,
}

impl OcsfEvent {
    fn wire(&self) -> Wire<'_> {
        let ms = epoch_millis(self.time);
        let has_control =
            self.action.is_some() || self.disposition.is_some() || self.firewall_rule.is_some();
        let mut unmapped = self.unmapped.clone();
        if let Some(generation) = self.policy_generation {
            unmapped.insert("policy_generation".to_owned(), Value::from(generation));
        }
        let finding = self.finding.as_ref();
        Wire {
            class_uid: self.class.uid(),
            class_name: self.class.name(),
            category_uid: self.class.category_uid(),
            category_name: self.class.category_name(),
            activity_id: self.activity_id(),
            activity_name: self.activity.name(),
            type_uid: self.type_uid(),
            type_name: self.type_name(),
            time: ms,
            time_dt: rfc3339_millis(ms),
            severity_id: self.severity.id(),
            severity: self.severity.name(),
            status_id: self.status.map(|s| s.id()),
            status: self.status.map(|s| s.name()),
            message: self.message.as_deref(),
            status_detail: self.status_detail.as_deref(),
            metadata: Metadata {
                version: OCSF_VERSION,
                product: Product {
                    name: PRODUCT_NAME,
                    vendor_name: PRODUCT_NAME,
                    version: env!("CARGO_PKG_VERSION"),
                },
                profiles: {
                    let mut p = Vec::new();
                    if has_control {
                        p.push("security_control");
                    }
                    if self.ai_model.is_some() {
                        p.push("ai_operation");
                    }
                    p
                },
            },
            src_endpoint: self.src_endpoint.as_ref().map(Into::into),
            dst_endpoint: self.dst_endpoint.as_ref().map(Into::into),
            proxy_endpoint: self.proxy_endpoint.as_ref().map(Into::into),
            actor: self.actor.as_ref().map(|p| Actor {
                process: process_chain(p),
            }),
            firewall_rule: self
                .firewall_rule
                .as_ref()
                .map(|(name, rule_type)| FirewallRule { name, rule_type }),
            action_id: self.action.map(|a| a.id()),
            action: self.action.map(|a| a.name()),
            disposition_id: self.disposition.map(|d| d.id()),
            disposition: self.disposition.map(|d| d.name()),
            observation_point_id: self.observation_point_id,
            http_request: self.http_request.as_ref().map(|r| WireHttpRequest {
                http_method: &r.method,
                url: Url {
                    scheme: &r.scheme,
                    hostname: &r.hostname,
                    path: &r.path,
                    port: r.port,
                },
            }),
            http_response: self.http_status.map(|code| HttpResponse { code }),
            finding_info: finding.map(|f| FindingInfo {
                uid: &f.uid,
                title: &f.title,
            }),
            is_alert: self.is_alert,
            remediation: finding
                .filter(|f| !f.remediation.is_empty())
                .map(|f| Remediation {
                    desc: &f.remediation,
                }),
            evidences: finding.filter(|f| !f.evidences.is_empty()).map(|f| {
                let data = f
                    .evidences
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                    .collect();
                [Evidence { data }]
            }),
            ai_model: self
                .ai_model
                .as_ref()
                .map(|(name, provider)| AiModel { name, provider }),
            unmapped,
        }
    }

    /// The event as a JSON value in the OCSF 1.8 shape.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The event as one compact JSON line (no trailing newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl Serialize for OcsfEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.wire().serialize(serializer)
    }
}
