//! The clients agents really run, inside `sluice run` with nothing but what it
//! exports (issue 13): curl (HTTP/1.1 and `--http2`), wget (GnuTLS), Python
//! `requests`/`httpx`/`urllib`, pip from a PEP 503 index, npm with and without a
//! `cafile` npmrc, git clone/fetch and a push denied by rule, Java 17's
//! `HttpClient` with no proxy or trust code, Node (the version boundary of its
//! proxy support), a WebSocket client and SSE streaming, all against HTTPS
//! servers in a namespace the test makes, TLS terminated by sluice.

use crate::run::run_to_end;
use sluice_test_support::{recorded, sandbox_python, test_pki, Netns, TempDir};

const POLICY: &str = r#"version: 1
network_policies:
  clients:
    endpoints:
      - host: clients.test
        port: 8443
        protocol: rest
        enforcement: enforce
        rules:
          - allow: { method: GET, path: "/**" }
          - allow: { method: HEAD, path: "/**" }
          - allow: { method: POST, path: "/upload" }
        deny_rules:
          - { method: "*", path: "/git/**", query: { service: git-receive-pack } }
      - host: clients.test
        port: 8444
        protocol: websocket
        enforcement: enforce
        access: read-write
    binaries:
      - { path: "/**" }
"#;

const PY_CLIENTS: &str = r#"
import json, ssl, sys, time, urllib.request
import httpx, requests
from websockets.sync.client import connect
URL = "https://clients.test:8443/files/hello.txt"
def out(k, v): print("%s=%s" % (k, v), flush=True)
def attempt(key, f):
    try:
        out(key, f())
    except Exception as e:
        out(key, "fail " + repr(e)[:200])
attempt("requests", lambda: "%d %s" % ((r := requests.get(URL, timeout=20)).status_code, r.text.strip()))
attempt("httpx", lambda: "%d %s" % ((r := httpx.get(URL, timeout=20)).status_code, r.text.strip()))
attempt("urllib", lambda: urllib.request.urlopen(URL, timeout=20).read().decode().strip())
def sse():
    start = time.monotonic()
    first = None
    with requests.get("https://clients.test:8443/sse", stream=True, timeout=20) as r:
        events = []
        for line in r.iter_lines():
            if line.startswith(b"data: "):
                events.append(line[6:].decode())
                if first is None:
                    first = time.monotonic() - start
    total = time.monotonic() - start
    return "%s first_ms=%d total_ms=%d" % (",".join(events), first * 1000, total * 1000)
attempt("sse", sse)
def ws():
    with connect("wss://clients.test:8444/chat", open_timeout=20) as c:
        c.send("ping through sluice")
        return c.recv(timeout=20)
attempt("websocket", ws)
"#;

const JAVA_CLIENT: &str = r#"
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
public class Client {
    public static void main(String[] args) throws Exception {
        HttpClient c = HttpClient.newHttpClient();
        HttpResponse<String> r = c.send(HttpRequest.newBuilder(URI.create(args[0])).build(),
            HttpResponse.BodyHandlers.ofString());
        System.out.println("java=" + r.statusCode() + " " + r.body().trim());
    }
}
"#;

fn script(py: &str, dir: &TempDir) -> String {
    let java = dir.path("Client.java");
    std::fs::write(&java, JAVA_CLIENT).expect("java source");
    let pyc = dir.path("clients.py");
    std::fs::write(&pyc, PY_CLIENTS).expect("python clients");
    let url = "https://clients.test:8443";
    format!(
        "T=$(mktemp -d) && cd \"$T\"\n\
         curl -sS -o /dev/null -w 'curl=%{{http_code}}\\n' {url}/files/hello.txt\n\
         curl -sS --http2 -o /dev/null -w 'curl_h2=%{{http_code}} http/%{{http_version}}\\n' {url}/files/hello.txt\n\
         wget -q -O wget.out {url}/files/hello.txt 2>wget.err; echo wget_rc=$?; echo wget_body=$(cat wget.out) $(head -c 200 wget.err)\n\
         {py} {pyc}\n\
         {py} -m pip install -q --no-cache-dir --disable-pip-version-check --target pipt --index-url {url}/simple/ demo-pkg >pip.log 2>&1; echo pip_rc=$?\n\
         PYTHONPATH=pipt {py} -c 'import demo_pkg; print(\"pip_import=\" + demo_pkg.MESSAGE)'\n\
         npm_config_cache=\"$T/c1\" npm install --prefix n1 --registry {url}/npm/ --no-audit --no-fund --no-update-notifier demo-npm >npm1.log 2>&1; echo npm_rc=$?\n\
         node -e 'console.log(\"npm_module=\" + require(\"./n1/node_modules/demo-npm\"))'\n\
         printf 'cafile=/etc/ssl/certs/ca-certificates.crt\\n' > npmrc\n\
         env -u NPM_CONFIG_CAFILE NPM_CONFIG_USERCONFIG=\"$T/npmrc\" npm_config_cache=\"$T/c2\" npm install --prefix n2 --registry {url}/npm/ --no-audit --no-fund --no-update-notifier demo-npm >npm2.log 2>&1; echo npm_cafile_rc=$?\n\
         git clone -q {url}/git/demo.git repo >git.log 2>&1; echo git_clone_rc=$?; echo git_readme=$(cat repo/README)\n\
         git -C repo fetch -q origin >>git.log 2>&1; echo git_fetch_rc=$?\n\
         git -C repo -c user.name=a -c user.email=a@a commit -q --allow-empty -m x >>git.log 2>&1\n\
         git -C repo push -q origin HEAD:main >push.log 2>&1; echo git_push_rc=$?; grep -q 403 push.log && echo git_push_403=yes\n\
         java {java} {url}/files/hello.txt 2>java.err || echo java=fail $(grep -v JAVA_TOOL_OPTIONS java.err | head -c 300)\n\
         node -e 'fetch(\"{url}/files/hello.txt\", {{signal: AbortSignal.timeout(10000)}}).then(r => r.text()).then(t => console.log(\"node=ok \" + t.trim()), e => console.log(\"node=fail \" + ((e.cause && e.cause.code) || e.name)))'\n\
         echo node_version=$(node --version)\n\
         for f in *.log *.err; do sed \"s|^|log:$f: |\" \"$f\"; done\n",
        pyc = pyc.display(),
        java = java.display(),
    )
}

#[test]
fn common_clients_work_inside_sluice_run_with_zero_flags() {
    let py = sandbox_python();
    let dir = TempDir::new("clients");
    let root = dir.path("www");
    std::fs::create_dir_all(&root).expect("www");
    let ns = Netns::new();
    let pki = test_pki(&dir, "clients", &["clients.test"]);
    let record = dir.path("clients.jsonl");
    ns.start_script(
        "clients_server.py",
        8443,
        &record,
        &[&pki.cert, &pki.key, &root],
    );
    ns.start_script(
        "ws_server.py",
        8444,
        &dir.path("ws.jsonl"),
        &[&pki.cert, &pki.key],
    );
    let host = format!("clients.test={}", ns.ns_ip);
    let ca = pki.ca.to_string_lossy().into_owned();
    let r = run_to_end(
        &dir,
        POLICY,
        &["--add-host", &host, "--upstream-ca", &ca],
        &script(&py, &dir),
    );
    let ctx = format!("{}\n{}", r.stdout, r.stderr);
    let hello = "hello through sluice";
    assert_eq!(r.value("curl"), "200", "{ctx}");
    assert_eq!(
        r.value("curl_h2"),
        "200 http/2",
        "h2 offered and agreed on the inspected tunnel (issue 20): {ctx}"
    );
    assert_eq!(
        r.value("wget_rc"),
        "0",
        "wget (GnuTLS, system store): {ctx}"
    );
    assert_eq!(r.value("wget_body"), hello);
    for client in ["requests", "httpx"] {
        assert_eq!(r.value(client), format!("200 {hello}"), "{client}: {ctx}");
    }
    assert_eq!(r.value("urllib"), hello, "{ctx}");
    let sse = r.value("sse");
    let (events, times) = sse.split_once(' ').unwrap_or_else(|| panic!("sse: {ctx}"));
    assert_eq!(events, "first,second", "{ctx}");
    let ms = |k: &str| -> u64 {
        times
            .split_whitespace()
            .find_map(|t| t.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{k} in {sse}"))
    };
    assert!(
        ms("first_ms=") + 1000 < ms("total_ms="),
        "the first event arrived before the server finished: {sse}"
    );
    assert_eq!(r.value("websocket"), "ping through sluice", "{ctx}");
    assert_eq!(r.value("pip_rc"), "0", "{ctx}");
    assert_eq!(r.value("pip_import"), "demo-pkg installed through sluice");
    assert_eq!(r.value("npm_rc"), "0", "{ctx}");
    assert_eq!(r.value("npm_module"), "demo-npm installed through sluice");
    assert_eq!(
        r.value("npm_cafile_rc"),
        "0",
        "npmrc cafile = the system bundle path: {ctx}"
    );
    assert_eq!(r.value("git_clone_rc"), "0", "{ctx}");
    assert_eq!(
        r.value("git_readme"),
        "demo repository served through sluice"
    );
    assert_eq!(r.value("git_fetch_rc"), "0", "{ctx}");
    assert_ne!(r.value("git_push_rc"), "0", "push is denied by rule");
    assert_eq!(r.value("git_push_403"), "yes", "{ctx}");
    assert_eq!(r.value("java"), format!("200 {hello}"), "{ctx}");
    let node_major: u32 = r
        .value("node_version")
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .expect("node version");
    if node_major >= 24 {
        assert_eq!(r.value("node"), format!("ok {hello}"), "{ctx}");
    } else {
        // Node before 24 ignores HTTPS_PROXY/NODE_USE_ENV_PROXY for fetch and https:
        // it resolves the name itself, which fails inside the sandbox (documented).
        assert!(r.value("node").starts_with("fail"), "{ctx}");
    }
    let seen = recorded(&record);
    assert!(
        !seen.iter().any(|e| e["path"]
            .as_str()
            .is_some_and(|p| p.contains("git-receive-pack"))),
        "the denied push never reached the server"
    );
    assert!(
        seen.iter()
            .any(|e| e["path"] == "/npm/demo-npm/-/demo-npm-1.0.0.tgz"),
        "npm fetched the tarball"
    );
}
