//! JSON shape tests for OCSF events.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};
use sluice_telemetry::{
    Action, Activity, Disposition, EventClass, OcsfEvent, ProcessInfo, Severity, Status,
};

const T: u64 = 1_700_000_000_123;

fn at_t(ev: OcsfEvent) -> OcsfEvent {
    ev.time(UNIX_EPOCH + Duration::from_millis(T))
}

fn curl() -> ProcessInfo {
    ProcessInfo {
        path: "/usr/bin/curl".into(),
        pid: 1234,
        ancestors: vec!["/bin/bash".into(), "/sbin/init".into()],
    }
}

fn assert_no_nulls(v: &Value, at: &str) {
    match v {
        Value::Null => panic!("null at {at}"),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                assert_no_nulls(item, &format!("{at}[{i}]"));
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                assert_no_nulls(item, &format!("{at}.{k}"));
            }
        }
        _ => {}
    }
}

fn connect_deny() -> OcsfEvent {
    at_t(OcsfEvent::new(EventClass::NetworkActivity, Activity::Open))
        .severity(Severity::Medium)
        .status(Status::Failure)
        .action(Action::Denied)
        .disposition(Disposition::Blocked)
        .src_endpoint(IpAddr::V4(Ipv4Addr::new(10, 200, 0, 2)), 51000)
        .dst_endpoint("example.com", 443)
        .proxy_endpoint(IpAddr::V4(Ipv4Addr::new(10, 200, 0, 1)), 3128)
        .actor_process(curl())
        .firewall_rule("-", "opa")
        .message("CONNECT denied example.com:443")
        .status_detail("no policy entry matches example.com:443")
        .policy_generation(7)
}

#[test]
fn connect_deny_shape() {
    let v = connect_deny().to_json();
    assert_no_nulls(&v, "$");
    assert_eq!(v["class_uid"], 4001);
    assert_eq!(v["class_name"], "Network Activity");
    assert_eq!(v["category_uid"], 4);
    assert_eq!(v["category_name"], "Network Activity");
    assert_eq!(v["activity_id"], 1);
    assert_eq!(v["activity_name"], "Open");
    assert_eq!(v["type_uid"], 400_101);
    assert_eq!(v["type_name"], "Network Activity: Open");
    assert_eq!(v["time"], T);
    assert_eq!(v["time_dt"], "2023-11-14T22:13:20.123Z");
    assert_eq!(v["severity_id"], 3);
    assert_eq!(v["severity"], "Medium");
    assert_eq!(v["status_id"], 2);
    assert_eq!(v["status"], "Failure");
    assert_eq!(v["action_id"], 2);
    assert_eq!(v["action"], "Denied");
    assert_eq!(v["disposition_id"], 2);
    assert_eq!(v["disposition"], "Blocked");
    assert_eq!(v["message"], "CONNECT denied example.com:443");
    assert_eq!(
        v["status_detail"],
        "no policy entry matches example.com:443"
    );
    assert_eq!(
        v["src_endpoint"],
        json!({"ip": "10.200.0.2", "port": 51000})
    );
    assert_eq!(
        v["dst_endpoint"],
        json!({"hostname": "example.com", "port": 443})
    );
    assert_eq!(
        v["proxy_endpoint"],
        json!({"ip": "10.200.0.1", "port": 3128})
    );
    assert_eq!(v["firewall_rule"], json!({"name": "-", "type": "opa"}));
    assert_eq!(v["unmapped"], json!({"policy_generation": 7}));
    assert_eq!(
        v["metadata"],
        json!({
            "version": "1.8.0",
            "product": {"name": "sluice", "vendor_name": "sluice", "version": env!("CARGO_PKG_VERSION")},
            "profiles": ["security_control"],
        })
    );
    assert_eq!(
        v["actor"],
        json!({"process": {
            "name": "/usr/bin/curl",
            "pid": 1234,
            "file": {"name": "curl", "path": "/usr/bin/curl"},
            "parent_process": {
                "name": "/bin/bash",
                "file": {"name": "bash", "path": "/bin/bash"},
                "parent_process": {
                    "name": "/sbin/init",
                    "file": {"name": "init", "path": "/sbin/init"},
                },
            },
        }})
    );
    for absent in [
        "http_request",
        "http_response",
        "finding_info",
        "evidences",
        "remediation",
    ] {
        assert!(v.get(absent).is_none(), "{absent} should be absent");
    }
}

#[test]
fn connect_allow_shape() {
    let v = at_t(OcsfEvent::new(EventClass::NetworkActivity, Activity::Open))
        .status(Status::Success)
        .action(Action::Allowed)
        .disposition(Disposition::Allowed)
        .dst_endpoint("api.github.com", 443)
        .firewall_rule("github", "opa")
        .message("CONNECT allowed api.github.com:443")
        .to_json();
    assert_no_nulls(&v, "$");
    assert_eq!(v["severity_id"], 1);
    assert_eq!(v["severity"], "Informational");
    assert_eq!(v["status"], "Success");
    assert_eq!(v["action"], "Allowed");
    assert_eq!(v["disposition_id"], 1);
    assert_eq!(v["firewall_rule"]["name"], "github");
    assert!(v.get("status_detail").is_none());
    assert!(v.get("actor").is_none());
    assert!(v.get("unmapped").is_none());
}

#[test]
fn http_forward_deny_shape() {
    let ev = at_t(OcsfEvent::new(EventClass::HttpActivity, Activity::Other))
        .severity(Severity::Medium)
        .status(Status::Failure)
        .action(Action::Denied)
        .disposition(Disposition::Blocked)
        .dst_endpoint("example.com", 80)
        .http_request("POST", "http", "example.com", "/upload?token=secret#x", 80)
        .http_status(403)
        .firewall_rule("-", "opa")
        .message("FORWARD denied POST example.com:80/upload")
        .status_detail("method not allowed");
    let v = ev.to_json();
    assert_no_nulls(&v, "$");
    assert_eq!(v["class_uid"], 4002);
    assert_eq!(v["class_name"], "HTTP Activity");
    assert_eq!(v["category_uid"], 4);
    assert_eq!(v["activity_id"], 99);
    assert_eq!(v["type_uid"], 400_299);
    assert_eq!(v["type_name"], "HTTP Activity: Other");
    assert_eq!(
        v["http_request"],
        json!({"http_method": "POST", "url": {"scheme": "http", "hostname": "example.com", "path": "/upload", "port": 80}})
    );
    assert_eq!(v["http_response"], json!({"code": 403}));
    let line = ev.to_json_line();
    assert!(!line.contains("secret") && !line.contains('?'), "{line}");
}

#[test]
fn config_event_with_generation() {
    let v = at_t(OcsfEvent::new(
        EventClass::DeviceConfigStateChange,
        Activity::Log,
    ))
    .status(Status::Success)
    .message("policy reloaded from /etc/sluice/policy.yaml")
    .policy_generation(42)
    .unmapped("entries", json!(12))
    .to_json();
    assert_no_nulls(&v, "$");
    assert_eq!(v["class_uid"], 5019);
    assert_eq!(v["class_name"], "Device Config State Change");
    assert_eq!(v["category_uid"], 5);
    assert_eq!(v["category_name"], "Discovery");
    assert_eq!(v["activity_id"], 1);
    assert_eq!(v["activity_name"], "Log");
    assert_eq!(v["type_uid"], 501_901);
    assert_eq!(
        v["unmapped"],
        json!({"policy_generation": 42, "entries": 12})
    );
    assert!(v["metadata"].get("profiles").is_none());
}

#[test]
fn finding_shape() {
    let v = at_t(OcsfEvent::new(
        EventClass::DetectionFinding,
        Activity::Create,
    ))
    .severity(Severity::Medium)
    .action(Action::Denied)
    .disposition(Disposition::Blocked)
    .alert(true)
    .finding(
        "bypass-detect",
        "Proxy Bypass Detected",
        "Route traffic through the proxy (HTTPS_PROXY).",
        [
            ("dst_addr", "93.184.216.34"),
            ("dst_port", "443"),
            ("binary", "/usr/bin/nc"),
        ],
    )
    .to_json();
    assert_no_nulls(&v, "$");
    assert_eq!(v["class_uid"], 2004);
    assert_eq!(v["category_uid"], 2);
    assert_eq!(v["category_name"], "Findings");
    assert_eq!(v["activity_name"], "Create");
    assert_eq!(v["type_uid"], 200_401);
    assert_eq!(
        v["finding_info"],
        json!({"uid": "bypass-detect", "title": "Proxy Bypass Detected"})
    );
    assert_eq!(
        v["remediation"],
        json!({"desc": "Route traffic through the proxy (HTTPS_PROXY)."})
    );
    assert_eq!(
        v["evidences"],
        json!([{"data": {"dst_addr": "93.184.216.34", "dst_port": "443", "binary": "/usr/bin/nc"}}])
    );
    assert_eq!(v["is_alert"], true);
}

#[test]
fn finding_without_remediation_or_evidence_omits_them() {
    let v = OcsfEvent::new(EventClass::DetectionFinding, Activity::Create)
        .finding("x", "X", "", Vec::<(String, String)>::new())
        .to_json();
    assert!(v.get("remediation").is_none());
    assert!(v.get("evidences").is_none());
}

#[test]
fn type_uid_arithmetic() {
    let cases = [
        (EventClass::NetworkActivity, Activity::Open, 400_101),
        (EventClass::NetworkActivity, Activity::Refuse, 400_105),
        (EventClass::NetworkActivity, Activity::Listen, 400_107),
        (EventClass::HttpActivity, Activity::Fail, 400_204),
        (EventClass::HttpActivity, Activity::Refuse, 400_205),
        (EventClass::DetectionFinding, Activity::Update, 200_402),
        (EventClass::DetectionFinding, Activity::Close, 200_403),
        (EventClass::ApiActivity, Activity::Create, 600_301),
        (EventClass::ApiActivity, Activity::Update, 600_303),
        (
            EventClass::DeviceConfigStateChange,
            Activity::Collect,
            501_902,
        ),
        (
            EventClass::DeviceConfigStateChange,
            Activity::Unknown,
            501_900,
        ),
    ];
    for (class, activity, want) in cases {
        let ev = OcsfEvent::new(class, activity);
        assert_eq!(ev.type_uid(), want, "{class:?}/{activity:?}");
        let v = ev.to_json();
        assert_eq!(v["type_uid"], want);
        assert_eq!(
            v["type_uid"],
            v["class_uid"].as_u64().unwrap() * 100 + v["activity_id"].as_u64().unwrap()
        );
    }
}

#[test]
fn dst_endpoint_ip_vs_hostname() {
    let cases = [
        ("93.184.216.34", json!({"ip": "93.184.216.34", "port": 443})),
        ("::1", json!({"ip": "::1", "port": 443})),
        ("[2001:db8::1]", json!({"ip": "2001:db8::1", "port": 443})),
        (
            "example.com",
            json!({"hostname": "example.com", "port": 443}),
        ),
        ("localhost", json!({"hostname": "localhost", "port": 443})),
        (
            "1.2.3.4.example",
            json!({"hostname": "1.2.3.4.example", "port": 443}),
        ),
    ];
    for (host, want) in cases {
        let v = OcsfEvent::new(EventClass::NetworkActivity, Activity::Open)
            .dst_endpoint(host, 443)
            .to_json();
        assert_eq!(v["dst_endpoint"], want, "{host}");
    }
}

#[test]
fn minimal_event_has_no_nulls_and_no_optional_fields() {
    let v = OcsfEvent::new(EventClass::ApiActivity, Activity::Unknown).to_json();
    assert_no_nulls(&v, "$");
    let obj = v.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "activity_id",
            "activity_name",
            "category_name",
            "category_uid",
            "class_name",
            "class_uid",
            "metadata",
            "severity",
            "severity_id",
            "time",
            "time_dt",
            "type_name",
            "type_uid",
        ]
    );
    assert_eq!(v["category_name"], "Application Activity");
}

#[test]
fn shorthand_lines() {
    assert_eq!(
        connect_deny().shorthand(),
        "NET:OPEN [MED] DENIED /usr/bin/curl(1234) -> example.com:443 [policy:- engine:opa] \
         [reason:no policy entry matches example.com:443]"
    );
    let http = OcsfEvent::new(EventClass::HttpActivity, Activity::Other)
        .action(Action::Allowed)
        .http_request("GET", "https", "example.com", "/a?b=c", 443);
    assert_eq!(
        http.shorthand(),
        "HTTP:OTHER [INFO] ALLOWED GET https://example.com/a"
    );
    let http = OcsfEvent::new(EventClass::HttpActivity, Activity::Other).http_request(
        "GET",
        "http",
        "example.com",
        "/a",
        8080,
    );
    assert_eq!(
        http.shorthand(),
        "HTTP:OTHER [INFO] GET http://example.com:8080/a"
    );
    let cfg = OcsfEvent::new(EventClass::DeviceConfigStateChange, Activity::Log)
        .message("policy loaded (generation 1)");
    assert_eq!(
        cfg.shorthand(),
        "CONFIG:LOG [INFO] policy loaded (generation 1)"
    );
    let finding = OcsfEvent::new(EventClass::DetectionFinding, Activity::Create)
        .severity(Severity::High)
        .finding("bypass-detect", "Proxy Bypass Detected", "", [("k", "v")]);
    assert_eq!(
        finding.shorthand(),
        "FINDING:CREATE [HIGH] \"Proxy Bypass Detected\" [bypass-detect]"
    );
    let v6 = OcsfEvent::new(EventClass::NetworkActivity, Activity::Open).dst_endpoint("::1", 22);
    assert_eq!(v6.shorthand(), "NET:OPEN [INFO] [::1]:22");
}
