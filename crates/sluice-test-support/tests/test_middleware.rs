//! The `sluice-test-middleware` binary as other crates' tests run it:
//! started by `start_test_middleware`, ready on its first line, config-driven,
//! recording what it saw, gone when its guard drops.

use serde_json::json;
use sluice_test_support::middleware::proto::{
    self, supervisor_middleware_client::SupervisorMiddlewareClient,
};
use sluice_test_support::middleware::start_test_middleware;
use sluice_test_support::{recorded, TempDir};

fn config(value: serde_json::Value) -> prost_types::Struct {
    let fields = value
        .as_object()
        .expect("object")
        .iter()
        .map(|(k, v)| {
            let kind = match v {
                serde_json::Value::String(s) => prost_types::value::Kind::StringValue(s.clone()),
                serde_json::Value::Bool(b) => prost_types::value::Kind::BoolValue(*b),
                other => panic!("unsupported {other}"),
            };
            (k.clone(), prost_types::Value { kind: Some(kind) })
        })
        .collect();
    prost_types::Struct { fields }
}

#[tokio::test]
async fn binary_serves_records_and_stops_on_drop() {
    let dir = TempDir::new("mw-bin");
    let record = dir.path("record.jsonl");
    let (guard, addr) = start_test_middleware(&record, &["--http-only"]);
    let url = format!("http://{addr}");
    let mut client = SupervisorMiddlewareClient::connect(url.clone())
        .await
        .expect("connect");

    let manifest = client.describe(()).await.expect("describe").into_inner();
    assert_eq!(manifest.bindings.len(), 1, "--http-only");
    assert_eq!(manifest.bindings[0].operation, 1);
    assert_eq!(manifest.bindings[0].max_payload_bytes, 1024 * 1024);

    let valid = client
        .validate_config(proto::ValidateConfigRequest {
            config: Some(config(json!({"reject": true}))),
            middleware_name: "t".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!valid.valid);
    assert_eq!(valid.reason, "rejected by test server");

    let result = client
        .evaluate_http_request(proto::HttpRequestEvaluation {
            config: Some(config(json!({"behavior": "deny_if", "pattern": "secret"}))),
            headers: vec![proto::HttpHeader {
                name: "x-token".into(),
                value: "v".into(),
            }],
            body: b"a secret".to_vec(),
            middleware_name: "t".into(),
            ..proto::HttpRequestEvaluation::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(result.decision, 2);
    assert_eq!(result.reason_code, "test_denied");

    let lines = recorded(&record);
    let rpcs: Vec<&str> = lines.iter().map(|l| l["rpc"].as_str().unwrap()).collect();
    assert_eq!(rpcs, ["Describe", "ValidateConfig", "EvaluateHttpRequest"]);
    assert_eq!(lines[2]["headers"], json!(["x-token"]));
    assert_eq!(lines[2]["body_len"], 8);
    assert!(!std::fs::read_to_string(&record).unwrap().contains("secret"));

    drop(guard);
    assert!(
        SupervisorMiddlewareClient::connect(url).await.is_err(),
        "the process is gone"
    );
}
