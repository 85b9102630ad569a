//! `inference.local` (design §6.4) with the official `openai` and
//! `anthropic` Python SDKs inside `sluice run`, configured by nothing but
//! what sluice exports, against a model backend over TLS in a namespace
//! (`py/llm_server.py`, which records every request it gets). Refusals are
//! driven through `sluice serve` with a plain HTTPS client.

use std::process::Stdio;

use serde_json::Value;
use sluice_test_support::{eventually, recorded, sandbox_python, test_pki, Netns, Python, TempDir};

use crate::harness::{sluice_cmd, Sluice};
use crate::run::sluice_run;

const LLM_KEY: &str = "sk-real-llm-9f4e2a71c3";
const ANTHROPIC_KEY: &str = "sk-ant-real-5d8b0c62aa";

fn policy(port: u16) -> String {
    format!(
        r#"version: 1
network_policies: {{}}
inference:
  routes:
    - name: default
      endpoint: https://llm.test:{port}/v1
      protocols: [openai_chat_completions, openai_responses, openai_embeddings, model_discovery]
      model: served-model
      api_key: {{ env: LLM_REAL_KEY }}
      timeout: 20s
    - name: claude
      endpoint: https://anthropic.test:{port}
      protocols: [anthropic_messages]
      api_key: {{ env: ANTHROPIC_REAL_KEY }}
      auth_style: x-api-key
    - name: slow
      endpoint: https://llm.test:{port}/stall/v1
      protocols: [openai_completions]
      api_key: {{ env: LLM_REAL_KEY }}
      timeout: 1s
"#
    )
}

/// The agent: both SDKs, with only the environment sluice gives it.
const AGENT: &str = r#"
import json, os, sys, time
import openai, anthropic, httpx

def out(k, v): print("%s=%s" % (k, v), flush=True)
out("openai_base", os.environ.get("OPENAI_BASE_URL"))
out("anthropic_base", os.environ.get("ANTHROPIC_BASE_URL"))

o = openai.OpenAI(max_retries=0)
r = o.chat.completions.create(model="gpt-sandbox", messages=[{"role": "user", "content": "ping"}])
out("chat", r.choices[0].message.content)
out("chat_usage", "%d/%d" % (r.usage.prompt_tokens, r.usage.completion_tokens))

first = None
text = ""
for chunk in o.chat.completions.create(model="gpt-sandbox", messages=[{"role": "user", "content": "ping"}],
                                       stream=True, stream_options={"include_usage": True}):
    if chunk.choices and chunk.choices[0].delta.content:
        if first is None:
            first = time.time()
        text += chunk.choices[0].delta.content
out("chat_stream", text)
out("chat_first_chunk_at", repr(first))

e = o.embeddings.create(model="embed-sandbox", input="hello")
out("embedding", ",".join(str(x) for x in e.data[0].embedding))
out("models", ",".join(m.id for m in o.models.list()))
resp = o.responses.create(model="gpt-sandbox", input="ping")
out("responses", resp.output_text)

try:
    for _ in o.completions.create(model="x", prompt="p", stream=True):
        pass
    out("stall", "no error")
except openai.APIError as err:
    out("stall", "APIError " + str(err.message))

a = anthropic.Anthropic(max_retries=0)
m = a.messages.create(model="claude-sandbox", max_tokens=16, messages=[{"role": "user", "content": "ping"}])
out("anthropic", m.content[0].text)
first = None
text = ""
with a.messages.stream(model="claude-sandbox", max_tokens=16, messages=[{"role": "user", "content": "ping"}]) as s:
    for t in s.text_stream:
        if first is None:
            first = time.time()
        text += t
out("anthropic_stream", text)
out("anthropic_first_chunk_at", repr(first))

r = httpx.get("https://inference.local/v1/files", timeout=10)
out("unknown_route", "%d %s" % (r.status_code, r.json().get("error")))
"#;

fn requests_to(record: &[Value], path: &str) -> Vec<Value> {
    record
        .iter()
        .filter(|r| r["path"].as_str() == Some(path))
        .cloned()
        .collect()
}

#[test]
fn official_sdks_reach_models_through_inference_local() {
    let dir = TempDir::new("inference");
    let ns = Netns::new();
    let pki = test_pki(&dir, "llm", &["llm.test", "anthropic.test"]);
    let record = dir.path("llm.jsonl");
    ns.start_tls_server("llm_server.py", 8443, &record, &pki.cert, &pki.key);
    let agent = dir.path("agent.py");
    std::fs::write(&agent, AGENT).expect("agent script");
    let (llm, anthropic) = (
        format!("llm.test={}", ns.ns_ip),
        format!("anthropic.test={}", ns.ns_ip),
    );
    let ca = pki.ca.to_string_lossy().into_owned();
    let out = sluice_run(
        &dir,
        &policy(8443),
        &[
            "--add-host",
            &llm,
            "--add-host",
            &anthropic,
            "--upstream-ca",
            &ca,
        ],
        &format!("{} {}", sandbox_python(), agent.display()),
    )
    .env("LLM_REAL_KEY", LLM_KEY)
    .env("ANTHROPIC_REAL_KEY", ANTHROPIC_KEY)
    .stdin(Stdio::null())
    .output()
    .expect("sluice run");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let ctx = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    let value = |k: &str| -> String {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} not printed:\n{ctx}"))
            .to_owned()
    };
    assert!(out.status.success(), "{ctx}");
    assert_eq!(value("openai_base"), "https://inference.local/v1");
    assert_eq!(value("anthropic_base"), "https://inference.local");
    assert_eq!(value("chat"), "pong", "{ctx}");
    assert_eq!(value("chat_usage"), "7/3");
    assert_eq!(value("chat_stream"), "pong");
    assert_eq!(value("embedding"), "0.25,-0.5,1.0");
    assert_eq!(value("models"), "served-model");
    assert_eq!(value("responses"), "pong");
    assert!(
        value("stall").starts_with("APIError backend sent nothing for 1s"),
        "the idle bound ends the stream with an SSE error event: {ctx}"
    );
    assert_eq!(value("anthropic"), "pong");
    assert_eq!(value("anthropic_stream"), "pong");
    assert_eq!(value("unknown_route"), "403 inference_route_unknown");

    // What the backend saw: the route's credentials only, the model rewritten.
    let seen = recorded(&record);
    let chats = requests_to(&seen, "/v1/chat/completions");
    assert_eq!(chats.len(), 2, "{seen:#?}");
    for c in &chats {
        assert_eq!(c["headers"]["authorization"], format!("Bearer {LLM_KEY}"));
        assert!(c["headers"].get("x-api-key").is_none());
        assert_eq!(c["body"]["model"], "served-model", "model rewritten");
        assert_eq!(c["headers"]["host"], "llm.test:8443");
    }
    for path in ["/v1/embeddings", "/v1/models", "/v1/responses"] {
        assert_eq!(requests_to(&seen, path).len(), 1, "{path}: {seen:#?}");
    }
    let messages = requests_to(&seen, "/v1/messages");
    assert_eq!(messages.len(), 2);
    for m in &messages {
        assert_eq!(m["headers"]["x-api-key"], ANTHROPIC_KEY);
        assert!(m["headers"].get("authorization").is_none());
        assert_eq!(
            m["body"]["model"], "claude-sandbox",
            "no rewrite on this route"
        );
        assert!(
            m["headers"].get("anthropic-version").is_some(),
            "allowlisted"
        );
    }
    assert_eq!(requests_to(&seen, "/stall/v1/completions").len(), 1);
    assert!(
        requests_to(&seen, "/v1/files").is_empty(),
        "unknown route never sent"
    );

    // Streams were flushed per chunk: the SDK had its first chunk before the
    // backend sent its last one (0.8 s later).
    for (key, path) in [
        ("chat_first_chunk_at", "/v1/chat/completions"),
        ("anthropic_first_chunk_at", "/v1/messages"),
    ] {
        let first: f64 = value(key).parse().expect("a time");
        let stream = seen
            .iter()
            .find(|r| r["path"].as_str() == Some(path) && r.get("sent").is_some())
            .unwrap_or_else(|| panic!("no stream recorded for {path}"));
        let last = stream["sent"]
            .as_array()
            .and_then(|a| a.last())
            .and_then(Value::as_f64)
            .expect("sent times");
        assert!(
            first < last,
            "{key}: first chunk at {first}, backend's last at {last}"
        );
    }

    // One API Activity (6003) event per call, with model, route and usage.
    let audit = dir.path("audit.jsonl");
    let events = recorded(&audit);
    let calls: Vec<&Value> = events.iter().filter(|e| e["class_uid"] == 6003).collect();
    assert_eq!(calls.len(), 8, "{calls:#?}");
    let chat_stream = calls
        .iter()
        .find(|e| e["unmapped"]["input_tokens"] == 11)
        .expect("the streamed chat's usage");
    assert_eq!(chat_stream["ai_model"]["name"], "served-model");
    assert_eq!(chat_stream["ai_model"]["provider"], "default");
    assert_eq!(chat_stream["unmapped"]["output_tokens"], 2);
    assert!(chat_stream["unmapped"]["latency_ms"].as_u64() >= Some(800));
    assert!(chat_stream["unmapped"]["ttfb_ms"].as_u64() < Some(800));
    let claude_stream = calls
        .iter()
        .find(|e| e["unmapped"]["input_tokens"] == 21)
        .expect("the streamed message's usage");
    assert_eq!(claude_stream["unmapped"]["output_tokens"], 9);
    assert_eq!(claude_stream["ai_model"]["provider"], "claude");
    assert_eq!(
        claude_stream["message"],
        "Model call: claude-sandbox via claude (21in, 9out)"
    );
    assert!(calls
        .iter()
        .any(|e| e["unmapped"]["input_tokens"] == 8 && e["unmapped"]["output_tokens"] == 5));
    let stalled = calls
        .iter()
        .find(|e| e["ai_model"]["provider"] == "slow")
        .expect("the stalled call");
    assert_eq!(stalled["status"], "Failure");
    assert!(events.iter().any(|e| e["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("Inference interception denied: GET /v1/files"))));

    // The real keys never reached the sandbox, the log or the terminal.
    let log = std::fs::read_to_string(&audit).expect("audit log");
    for key in [LLM_KEY, ANTHROPIC_KEY] {
        assert!(!log.contains(key), "key in the audit log");
        assert!(
            !stdout.contains(key) && !stderr.contains(key),
            "key on the terminal"
        );
    }
}

/// Refusals answered by sluice: nothing reaches the backend.
#[test]
fn refusals_send_nothing() {
    let dir = TempDir::new("inference-refusals");
    let ns = Netns::new();
    let pki = test_pki(&dir, "llm", &["llm.test"]);
    let record = dir.path("llm.jsonl");
    ns.start_tls_server("llm_server.py", 8443, &record, &pki.cert, &pki.key);
    let host = format!("llm.test={}", ns.ns_ip);
    let ca = pki.ca.to_string_lossy().into_owned();
    let policy = |extra: &str| {
        format!(
            r#"version: 1
network_policies: {{}}
inference:
  routes:
    - name: default
      endpoint: https://llm.test:8443/v1
      protocols: [openai_chat_completions]
      api_key: {{ env: LLM_REAL_KEY }}
{extra}"#
        )
    };
    let sluice = Sluice::start_with_env(
        &dir,
        &policy(""),
        &["--add-host", &host, "--upstream-ca", &ca],
        &[("LLM_REAL_KEY", LLM_KEY)],
    );
    let client = r#"
import json, sys, httpx
proxy, ca = sys.argv[1], sys.argv[2]
c = httpx.Client(proxy=proxy, verify=ca, timeout=10)
def show(k, r): print("%s=%d %s" % (k, r.status_code, r.json().get("error")), flush=True)
show("messages", c.post("https://inference.local/v1/messages", json={"model": "m"}))
show("dup_model", c.post("https://inference.local/v1/chat/completions",
                         content=b'{"model":"a","model":"b","messages":[]}',
                         headers={"content-type": "application/json"}))
show("not_json", c.post("https://inference.local/v1/chat/completions", content=b"[1,2]"))
show("too_large", c.post("https://inference.local/v1/chat/completions",
                         content=b'{"x":"' + b"a" * (11 * 1024 * 1024) + b'"}'))
show("traversal", c.post("https://inference.local/v1/x/../chat/completions/..", json={}))
ok = c.post("https://inference.local/v1/chat/completions", json={"model": "m", "messages": []},
            headers={"authorization": "Bearer sandbox-held-key"})
print("ok=%d %s" % (ok.status_code, ok.json()["choices"][0]["message"]["content"]), flush=True)
"#;
    let sandbox_ca = dir.path("sluice-ca.pem");
    let state = dir.path("state");
    let pem = sluice_cmd(&["ca", "show", "--state-dir", &state.to_string_lossy()]);
    std::fs::write(&sandbox_ca, pem).expect("sandbox CA");
    let out = Python::inline(client)
        .arg(sluice.proxy_url())
        .arg(&sandbox_ca)
        .lines();
    let get = |k: &str| {
        out.iter()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} missing: {out:?}\n{}", sluice.stderr()))
            .to_owned()
    };
    assert_eq!(get("messages"), "404 inference_route_not_found");
    assert_eq!(get("dup_model"), "400 invalid_request_body");
    assert_eq!(get("not_json"), "400 invalid_request_body");
    assert_eq!(get("too_large"), "413 payload_too_large");
    assert_eq!(get("traversal"), "403 inference_route_unknown");
    assert_eq!(get("ok"), "200 pong");
    eventually("the backend saw the allowed call", || {
        !recorded(&record).is_empty()
    });
    let seen = recorded(&record);
    assert_eq!(seen.len(), 1, "only the allowed call arrived: {seen:#?}");
    assert_eq!(
        seen[0]["headers"]["authorization"],
        format!("Bearer {LLM_KEY}"),
        "the sandbox's key was replaced"
    );
    assert_eq!(seen[0]["body"]["model"], "m", "no rewrite configured");

    // Routes follow the policy: a reload adds a model rewrite.
    std::fs::write(&sluice.policy, policy("      model: reloaded-model\n")).expect("policy");
    sluice.wait_event("generation 2");
    let again = r#"
import sys, httpx
c = httpx.Client(proxy=sys.argv[1], verify=sys.argv[2], timeout=10)
r = c.post("https://inference.local/v1/chat/completions", json={"model": "m", "messages": []})
print("status=%d" % r.status_code, flush=True)
"#;
    let out = Python::inline(again)
        .arg(sluice.proxy_url())
        .arg(&sandbox_ca)
        .lines();
    assert_eq!(out, ["status=200"]);
    let seen = recorded(&record);
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1]["body"]["model"], "reloaded-model");
}
