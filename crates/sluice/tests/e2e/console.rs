//! The operator console in headless Chromium (Selenium): a live denial
//! appears, rules are proposed from denials, one is approved (the policy
//! file gains it, a new generation is published, the request goes
//! through), one is rejected with a reason; cross-site POSTs without the
//! CSRF token or from a foreign origin are refused and change nothing.
//! A screenshot is saved for review.

use std::path::{Path, PathBuf};

use crate::adapters::basic_policy;
use crate::harness::{curl, Sluice};
use sluice_test_support::{eventually, skip_or_fail, Netns, Python, TempDir};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The browser session: argv = console URL, proxy URL, screenshot path,
/// chrome profile dir. Prints one JSON object of what it saw.
const SCRIPT: &str = r##"
import json, subprocess, sys, time
import requests
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

url, proxy, shot, profile = sys.argv[1:5]
opts = Options()
opts.binary_location = "/usr/bin/chromium"
for a in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--no-first-run", "--no-proxy-server", "--window-size=1400,1400",
          "--user-data-dir=" + profile]:
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=opts)
out = {}
try:
    # The page re-renders lists when events arrive: an element found a moment
    # ago may be replaced, so waits retry on stale references and texts are
    # read in one step through `text_of`.
    wait = WebDriverWait(driver, 20, ignored_exceptions=[StaleElementReferenceException])

    def text_of(css):
        return wait.until(lambda d: (d.find_element(By.CSS_SELECTOR, css).text,))[0]
    driver.get(url)
    out["url_after_login"] = driver.current_url
    wait.until(lambda d: d.find_element(By.ID, "live").text == "live")

    def denial(host):
        for li in driver.find_elements(By.CSS_SELECTOR, "#denials li"):
            if host in li.text:
                return li
        return None

    def pending(host):
        for li in driver.find_elements(By.CSS_SELECTOR, "#pending li.proposal"):
            if host in li.text:
                return li
        return None

    wait.until(lambda d: denial("first.test"))
    # A denial made after the page loaded arrives over the event stream.
    subprocess.run(["curl", "-s", "-o", "/dev/null", "--max-time", "5", "-x", proxy,
                    "http://second.test:8080/later"], check=False)
    wait.until(lambda d: denial("second.test"))
    out["live_denial"] = True

    for host in ["first.test", "second.test"]:
        denial(host).find_element(By.CSS_SELECTOR, "button.propose").click()
        wait.until(lambda d: pending(host))
    out["pending_after_propose"] = len(driver.find_elements(By.CSS_SELECTOR, "#pending li.proposal"))

    li = pending("first.test")
    approved_id = li.get_attribute("data-proposal-id")
    li.find_element(By.CSS_SELECTOR, "textarea.reason").send_keys("the agent needs it")
    li.find_element(By.CSS_SELECTOR, "button.approve").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR,
        '#decided li[data-proposal-id="%s"][data-status="approved"]' % approved_id))
    out["approved_id"] = approved_id
    out["approve_notice"] = text_of("#notice")
    out["approved_history"] = text_of('#decided li[data-proposal-id="%s"] .history' % approved_id)

    li = pending("second.test")
    rejected_id = li.get_attribute("data-proposal-id")
    li.find_element(By.CSS_SELECTOR, "button.reject").click()
    out["reject_without_reason"] = li.find_element(By.CSS_SELECTOR, ".result").text
    li.find_element(By.CSS_SELECTOR, "textarea.reason").send_keys("not this one")
    li.find_element(By.CSS_SELECTOR, "button.reject").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR,
        '#decided li[data-proposal-id="%s"][data-status="rejected"]' % rejected_id))
    out["rejected_id"] = rejected_id
    out["rejected_history"] = text_of('#decided li[data-proposal-id="%s"] .history' % rejected_id)
    wait.until(lambda d: "generation 2" in text_of("#generation")
               or "generation 3" in text_of("#generation"))
    out["generation_shown"] = text_of("#generation")
    out["policy_shown_has_rule"] = "first.test" in text_of("#policy")
    driver.save_screenshot(shot)

    # Cross-site requests: the session cookie alone is not enough.
    base = url.split("/?")[0].rstrip("/")
    cookies = {c["name"]: c["value"] for c in driver.get_cookies()}
    out["cookie_http_only"] = all(c.get("httpOnly") for c in driver.get_cookies())
    out["cookie_same_site"] = [c.get("sameSite") for c in driver.get_cookies()]
    csrf = driver.find_element(By.CSS_SELECTOR, 'meta[name="csrf-token"]').get_attribute("content")
    seq = denial("first.test").get_attribute("data-seq")
    s = requests.Session()
    s.trust_env = False
    target = base + "/api/denials/" + seq + "/propose"
    out["post_no_csrf"] = s.post(target, json={}, cookies=cookies).status_code
    out["post_evil_origin"] = s.post(target, json={}, cookies=cookies,
        headers={"X-CSRF-Token": csrf, "Origin": "http://evil.test"}).status_code
    out["post_no_cookie"] = s.post(target, json={}, headers={"X-CSRF-Token": csrf}).status_code
    state = s.get(base + "/api/state", cookies=cookies).json()
    out["pending_after_refusals"] = len(state["pending"])
    out["page_without_session"] = s.get(base + "/").status_code
finally:
    driver.quit()
print(json.dumps(out))
"##;

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn screenshot_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&target).expect("target dir");
    target.join("console-screenshot.png")
}

#[test]
fn console_in_headless_chromium() {
    for tool in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(tool).exists() {
            return skip_or_fail(&format!("{tool} is missing (scripts/test installs it)"));
        }
    }
    let selenium = Python::inline("import selenium, requests").output();
    if !selenium.status.success() {
        return skip_or_fail("Python selenium is missing (scripts/test installs it)");
    }
    let dir = TempDir::new("console-e2e");
    let ns = Netns::new();
    ns.start_upstream(8080, &dir.path("upstream.jsonl"));
    let console = format!("127.0.0.1:{}", free_port());
    let first = format!("first.test={}", ns.ns_ip);
    let second = format!("second.test={}", ns.ns_ip);
    let sluice = Sluice::start(
        &dir,
        &basic_policy(),
        &[
            "--add-host",
            &first,
            "--add-host",
            &second,
            "--console",
            &console,
        ],
    );
    let proxy = sluice.proxy_url();
    let mut url = String::new();
    eventually("the console URL on stderr", || {
        url = sluice
            .stderr()
            .lines()
            .find_map(|l| l.strip_prefix("console: "))
            .unwrap_or_default()
            .to_owned();
        !url.is_empty()
    });
    assert!(
        url.starts_with(&format!("http://{console}/?token=")),
        "{url}"
    );

    // Denied before the page is opened.
    assert_eq!(
        curl(&proxy, "http://first.test:8080/early", false, &[]).status,
        403
    );

    let shot = screenshot_path();
    let _ = std::fs::remove_file(&shot);
    let out = Python::inline(SCRIPT)
        .args([
            url.as_str(),
            proxy.as_str(),
            &shot.display().to_string(),
            &dir.path("chrome-profile").display().to_string(),
        ])
        .stdout();
    let seen: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("browser output {out:?}: {e}"));
    println!("console screenshot: {}", shot.display());
    eprintln!("browser saw: {seen:#}");

    assert_eq!(
        seen["url_after_login"],
        format!("http://{console}/"),
        "the token leaves the URL"
    );
    assert_eq!(seen["live_denial"], true);
    assert_eq!(seen["pending_after_propose"], 2);
    assert!(
        seen["approve_notice"]
            .as_str()
            .is_some_and(|n| n.contains("applied")),
        "{seen}"
    );
    assert!(
        seen["approved_history"]
            .as_str()
            .is_some_and(|h| h.contains("applied") && h.contains("the agent needs it")),
        "{seen}"
    );
    assert_eq!(seen["reject_without_reason"], "A rejection needs a reason.");
    assert!(
        seen["rejected_history"]
            .as_str()
            .is_some_and(|h| h.contains("rejected") && h.contains("not this one")),
        "{seen}"
    );
    assert_eq!(seen["policy_shown_has_rule"], true, "{seen}");
    assert_eq!(seen["cookie_http_only"], true);
    assert_eq!(seen["cookie_same_site"][0], "Strict");
    assert_eq!(seen["post_no_csrf"], 403);
    assert_eq!(seen["post_evil_origin"], 403);
    assert_eq!(seen["post_no_cookie"], 401);
    assert_eq!(
        seen["pending_after_refusals"], 0,
        "refused POSTs changed nothing"
    );
    assert_eq!(seen["page_without_session"], 401);
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000),
        "screenshot at {}",
        shot.display()
    );

    // The approval is in the file and in force; the rejection is not.
    let text = std::fs::read_to_string(&sluice.policy).expect("policy");
    assert!(text.contains("first.test"), "{text}");
    assert!(!text.contains("second.test"), "{text}");
    sluice.wait_event("Policy loaded: generation 2");
    assert_eq!(
        curl(&proxy, "http://first.test:8080/again", false, &[]).status,
        200
    );
    assert_eq!(
        curl(&proxy, "http://second.test:8080/again", false, &[]).status,
        403
    );
}
