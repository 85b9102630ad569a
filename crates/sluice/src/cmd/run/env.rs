//! CMD's environment (docs/operations.md, "What CMD inherits"): the caller's
//! environment minus every secret source, plus the proxy, CA-trust, placeholder
//! and user variables. Nothing else is added; nothing else is removed.

use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use sluice_policy::{MetadataKind, SecretSources};
use sluice_proxy::relay::tls::{TrustFiles, JAVA_TRUST_STORE_PASSWORD};
use sluice_sandbox::confine::SandboxUser;

/// Secret values shorter than this are not searched for inside other variables
/// (too likely to match by chance); their named sources are still removed.
pub(super) const MIN_SCRUBBED_VALUE: usize = 8;

/// CA-trust variables, all pointing at the bundle (system roots + sandbox CA).
pub(super) const CA_VARS: [&str; 14] = [
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "NODE_EXTRA_CA_CERTS",
    "NPM_CONFIG_CAFILE",
    "DENO_CERT",
    "PIP_CERT",
    "CARGO_HTTP_CAINFO",
    "AWS_CA_BUNDLE",
    "BUNDLE_SSL_CA_CERT",
    "HEX_CACERTS_PATH",
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
    "NIX_SSL_CERT_FILE",
];

const PROXY_VARS: [&str; 7] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "grpc_proxy",
];

/// sluice's own settings that may carry secrets (`SLUICE_STORE`: a
/// PostgreSQL URL with its password): never CMD's.
const SLUICE_ONLY: [&str; 1] = ["SLUICE_STORE"];

/// Whether `haystack` contains `needle` (bytes).
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether a variable's value carries one of the secret values.
pub(super) fn carries_secret(value: &OsStr, secrets: &SecretSources) -> bool {
    secrets
        .values
        .iter()
        .map(|s| s.expose().as_bytes())
        .filter(|s| s.len() >= MIN_SCRUBBED_VALUE)
        .any(|s| contains(value.as_bytes(), s))
}

/// The caller's environment without the secret sources: every variable the policy
/// names as a source, and every variable whose value carries a secret value.
/// Returns what is kept and the names removed (never values).
pub(super) fn inherited(
    caller: impl Iterator<Item = (OsString, OsString)>,
    secrets: &SecretSources,
) -> (Vec<(OsString, OsString)>, Vec<String>) {
    let mut kept = Vec::new();
    let mut removed = Vec::new();
    for (name, value) in caller {
        let named = name
            .to_str()
            .is_some_and(|n| secrets.env.contains(n) || SLUICE_ONLY.contains(&n));
        if named || carries_secret(&value, secrets) {
            removed.push(name.to_string_lossy().into_owned());
        } else {
            kept.push((name, value));
        }
    }
    (kept, removed)
}

/// Java's view of the proxy and the trust store: `http(s).proxyHost/Port`,
/// `http.nonProxyHosts` and the JKS trust store, after the caller's own options
/// (the last definition of a property wins).
fn java_tool_options(caller: Option<&OsStr>, proxy: SocketAddr, trust: &TrustFiles) -> OsString {
    let (host, port) = (proxy.ip(), proxy.port());
    let ours = format!(
        "-Dhttp.proxyHost={host} -Dhttp.proxyPort={port} -Dhttps.proxyHost={host} \
         -Dhttps.proxyPort={port} -Dhttp.nonProxyHosts=localhost|127.0.0.1|[::1] \
         -Djavax.net.ssl.trustStore={} -Djavax.net.ssl.trustStoreType=JKS \
         -Djavax.net.ssl.trustStorePassword={JAVA_TRUST_STORE_PASSWORD}",
        trust.java_trust_store.display()
    );
    match caller.filter(|c| !c.is_empty()) {
        Some(c) => {
            let mut v = c.to_owned();
            v.push(" ");
            v.push(ours);
            v
        }
        None => ours.into(),
    }
}

/// The variables that point CMD's cloud SDKs at the metadata loopbacks
/// (`sluice_proxy::adapter::metadata`), one set per service the run serves.
pub(super) fn metadata_vars(kinds: &[MetadataKind]) -> Vec<(OsString, OsString)> {
    use sluice_proxy::adapter::metadata::{GCE_ADDR, IMDS_ADDR};
    let mut out: Vec<(OsString, OsString)> = Vec::new();
    for kind in kinds {
        match kind {
            MetadataKind::Gce => {
                out.push(("GCE_METADATA_HOST".into(), GCE_ADDR.to_string().into()));
                out.push(("GCE_METADATA_IP".into(), GCE_ADDR.to_string().into()));
                out.push(("METADATA_SERVER_DETECTION".into(), "assume-present".into()));
            }
            MetadataKind::Aws => {
                out.push((
                    "AWS_EC2_METADATA_SERVICE_ENDPOINT".into(),
                    format!("http://{IMDS_ADDR}/").into(),
                ));
                out.push((
                    "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE".into(),
                    "IPv4".into(),
                ));
            }
        }
    }
    out
}

/// `inherited` plus sluice's variables (each replaces a caller's variable of the
/// same name): proxy, CA trust (also for Java and npm), placeholders, the
/// metadata loopbacks' variables (`metadata`), and HOME/USER/LOGNAME of CMD's user.
pub(super) fn complete(
    mut env: Vec<(OsString, OsString)>,
    proxy: SocketAddr,
    trust: &TrustFiles,
    placeholders: &[(String, String)],
    metadata: &[(OsString, OsString)],
    user: &SandboxUser,
) -> Vec<(OsString, OsString)> {
    let bundle: &Path = &trust.bundle;
    let url = format!("http://{proxy}");
    let mut ours: Vec<(OsString, OsString)> = PROXY_VARS
        .iter()
        .map(|k| ((*k).into(), url.clone().into()))
        .collect();
    for k in ["NO_PROXY", "no_proxy"] {
        ours.push((k.into(), "127.0.0.1,localhost,::1".into()));
    }
    ours.push(("NODE_USE_ENV_PROXY".into(), "1".into()));
    for k in CA_VARS {
        ours.push((k.into(), bundle.as_os_str().to_owned()));
    }
    ours.push(("SSL_CERT_DIR".into(), trust.cert_dir.as_os_str().to_owned()));
    let caller_java = env
        .iter()
        .find(|(k, _)| k == "JAVA_TOOL_OPTIONS")
        .map(|(_, v)| v.as_os_str());
    ours.push((
        "JAVA_TOOL_OPTIONS".into(),
        java_tool_options(caller_java, proxy, trust),
    ));
    for (name, placeholder) in placeholders {
        ours.push((name.into(), placeholder.into()));
    }
    ours.extend(metadata.iter().cloned());
    if let Some(name) = &user.name {
        ours.push(("USER".into(), name.into()));
        ours.push(("LOGNAME".into(), name.into()));
    }
    if let Some(home) = &user.home {
        ours.push(("HOME".into(), home.as_os_str().to_owned()));
    }
    env.retain(|(k, _)| !ours.iter().any(|(o, _)| o == k));
    env.extend(ours);
    env
}

/// The base URL variables of `inference.local` (design §6.4), when the policy
/// has inference routes. The SDKs also refuse to start without a key: a
/// stand-in is set where the caller has none (sluice drops whatever key the
/// caller sends there and sets the route's).
pub(super) fn with_inference(
    mut env: Vec<(OsString, OsString)>,
    routes: bool,
) -> Vec<(OsString, OsString)> {
    if !routes {
        return env;
    }
    for (k, v) in [
        ("OPENAI_BASE_URL", "https://inference.local/v1"),
        ("ANTHROPIC_BASE_URL", "https://inference.local"),
    ] {
        env.retain(|(n, _)| n != k);
        env.push((k.into(), v.into()));
    }
    for k in ["OPENAI_API_KEY", "ANTHROPIC_API_KEY"] {
        if !env.iter().any(|(n, _)| n == k) {
            env.push((k.into(), INFERENCE_STAND_IN_KEY.into()));
        }
    }
    env
}

/// What the SDKs send as their key to `inference.local` (dropped there).
pub(super) const INFERENCE_STAND_IN_KEY: &str = "sluice-inference-local";

#[cfg(test)]
mod tests {
    use sluice_policy::Secret;

    use super::*;

    /// The Kubernetes shape gives the workload the same variables
    /// (`deploy/`, docs/kubernetes.md): the manifest and the chart's helper
    /// name every one.
    #[test]
    fn kubernetes_workloads_get_the_same_variables() {
        let manifest = include_str!("../../../../../deploy/kubernetes/deployment.yaml");
        let chart = include_str!("../../../../../deploy/helm/sluice/templates/_helpers.tpl");
        let names = PROXY_VARS
            .iter()
            .chain(CA_VARS.iter())
            .chain(["NO_PROXY", "no_proxy", "NODE_USE_ENV_PROXY", "SSL_CERT_DIR"].iter());
        for name in names {
            assert!(
                manifest.contains(&format!("name: {name},"))
                    || manifest.contains(&format!("name: {name}\n")),
                "deploy/kubernetes/deployment.yaml lacks {name}"
            );
            assert!(
                chart.contains(&format!("\"{name}\"")) || chart.contains(&format!("name: {name},")),
                "the chart's sluice.workloadEnv lacks {name}"
            );
        }
        assert!(
            manifest.contains("name: JAVA_TOOL_OPTIONS")
                && chart.contains("name: JAVA_TOOL_OPTIONS")
        );
    }

    fn get<'a>(env: &'a [(OsString, OsString)], k: &str) -> Option<&'a str> {
        env.iter()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| v.to_str())
    }

    #[test]
    fn secret_sources_and_carriers_are_removed() {
        let mut secrets = SecretSources::default();
        secrets.env.insert("HOST_GH_SECRET".into());
        secrets.env.insert("UNSET_SOURCE".into());
        secrets.values.push(Secret::new("ghp_realSECRETvalue"));
        secrets.values.push(Secret::new("short"));
        let caller = [
            ("HOST_GH_SECRET", "ghp_realSECRETvalue"),
            ("COPY", "prefix-ghp_realSECRETvalue-suffix"),
            ("PATH", "/usr/bin:/bin"),
            ("SHORTISH", "a short value"),
            ("HTTPS_PROXY", "http://elsewhere:1"),
            ("JAVA_TOOL_OPTIONS", "-Xmx64m"),
            ("SLUICE_STORE", "postgres://gw:pw@db/q"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let (kept, mut removed) = inherited(caller.into_iter(), &secrets);
        removed.sort();
        assert_eq!(removed, ["COPY", "HOST_GH_SECRET", "SLUICE_STORE"]);
        assert_eq!(
            get(&kept, "SHORTISH"),
            Some("a short value"),
            "short secrets are not searched"
        );
        let user = SandboxUser {
            name: Some("alice".into()),
            uid: 1000,
            gid: 1000,
            groups: vec![1000],
            home: Some("/home/alice".into()),
        };
        let trust = TrustFiles {
            bundle: "/run/sluice/x/ca-bundle.pem".into(),
            cert_dir: "/run/sluice/x/certs".into(),
            java_trust_store: "/run/sluice/x/java-cacerts.jks".into(),
        };
        let env = complete(
            kept,
            "10.200.0.1:3128".parse().unwrap(),
            &trust,
            &[(
                "GITHUB_TOKEN".into(),
                "sluice:resolve:env:GITHUB_TOKEN".into(),
            )],
            &[],
            &user,
        );
        assert_eq!(get(&env, "https_proxy"), Some("http://10.200.0.1:3128"));
        assert_eq!(
            get(&env, "HTTPS_PROXY"),
            Some("http://10.200.0.1:3128"),
            "caller's replaced"
        );
        assert_eq!(env.iter().filter(|(k, _)| k == "HTTPS_PROXY").count(), 1);
        assert_eq!(get(&env, "NO_PROXY"), Some("127.0.0.1,localhost,::1"));
        assert_eq!(get(&env, "NODE_USE_ENV_PROXY"), Some("1"));
        for k in CA_VARS {
            assert_eq!(get(&env, k), Some("/run/sluice/x/ca-bundle.pem"), "{k}");
        }
        assert_eq!(
            get(&env, "GITHUB_TOKEN"),
            Some("sluice:resolve:env:GITHUB_TOKEN")
        );
        assert_eq!(get(&env, "HOME"), Some("/home/alice"));
        assert_eq!(get(&env, "USER"), Some("alice"));
        assert_eq!(get(&env, "PATH"), Some("/usr/bin:/bin"));
        assert!(!env
            .iter()
            .any(|(_, v)| v.to_string_lossy().contains("ghp_realSECRETvalue")));
        for k in [
            "GCE_METADATA_HOST",
            "GCE_METADATA_IP",
            "METADATA_SERVER_DETECTION",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
        ] {
            assert_eq!(get(&env, k), None, "{k} without metadata providers");
        }
    }

    #[test]
    fn metadata_vars_point_at_the_loopbacks() {
        type Row<'a> = (&'a [MetadataKind], &'a [(&'a str, &'a str)]);
        let table: [Row<'_>; 4] = [
            (&[], &[]),
            (
                &[MetadataKind::Gce],
                &[
                    ("GCE_METADATA_HOST", "127.0.0.1:8174"),
                    ("GCE_METADATA_IP", "127.0.0.1:8174"),
                    ("METADATA_SERVER_DETECTION", "assume-present"),
                ],
            ),
            (
                &[MetadataKind::Aws],
                &[
                    (
                        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                        "http://127.0.0.1:8175/",
                    ),
                    ("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv4"),
                ],
            ),
            (
                &[MetadataKind::Gce, MetadataKind::Aws],
                &[
                    ("GCE_METADATA_HOST", "127.0.0.1:8174"),
                    ("GCE_METADATA_IP", "127.0.0.1:8174"),
                    ("METADATA_SERVER_DETECTION", "assume-present"),
                    (
                        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                        "http://127.0.0.1:8175/",
                    ),
                    ("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv4"),
                ],
            ),
        ];
        for (kinds, want) in table {
            let got = metadata_vars(kinds);
            let got: Vec<(&str, &str)> = got
                .iter()
                .filter_map(|(k, v)| Some((k.to_str()?, v.to_str()?)))
                .collect();
            assert_eq!(got, want, "{kinds:?}");
        }
        // They replace a caller's own value.
        let trust = TrustFiles {
            bundle: "/b".into(),
            cert_dir: "/c".into(),
            java_trust_store: "/j".into(),
        };
        let user = SandboxUser {
            name: None,
            uid: 65534,
            gid: 65534,
            groups: vec![],
            home: None,
        };
        let caller = vec![(
            OsString::from("GCE_METADATA_HOST"),
            OsString::from("169.254.169.254"),
        )];
        let env = complete(
            caller,
            "10.200.0.1:3128".parse().unwrap(),
            &trust,
            &[],
            &metadata_vars(&[MetadataKind::Gce]),
            &user,
        );
        assert_eq!(get(&env, "GCE_METADATA_HOST"), Some("127.0.0.1:8174"));
        assert_eq!(
            env.iter().filter(|(k, _)| k == "GCE_METADATA_HOST").count(),
            1
        );
    }

    #[test]
    fn inference_variables_only_with_routes() {
        let caller = vec![
            (
                OsString::from("ANTHROPIC_API_KEY"),
                OsString::from("callers-own"),
            ),
            (
                OsString::from("OPENAI_BASE_URL"),
                OsString::from("https://elsewhere/v1"),
            ),
        ];
        assert_eq!(with_inference(caller.clone(), false), caller);
        let env = with_inference(caller, true);
        assert_eq!(
            get(&env, "OPENAI_BASE_URL"),
            Some("https://inference.local/v1")
        );
        assert_eq!(
            get(&env, "ANTHROPIC_BASE_URL"),
            Some("https://inference.local")
        );
        assert_eq!(get(&env, "OPENAI_API_KEY"), Some(INFERENCE_STAND_IN_KEY));
        assert_eq!(get(&env, "ANTHROPIC_API_KEY"), Some("callers-own"));
        assert_eq!(
            env.iter().filter(|(k, _)| k == "OPENAI_BASE_URL").count(),
            1
        );
    }
}
