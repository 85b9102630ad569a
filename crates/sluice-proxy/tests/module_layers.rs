//! The dependency arrows between the top-level modules of `sluice-proxy` run
//! one way (issue 14): `gateway` → `server` → `adapter` → {`relay`, `proposals`} →
//! {`audit`, `refusal`, `denials`}
//! → `destination` → `egress` → {`addr_class`, `policy_store`, `metrics`} → `local_http`. This reads the
//! `crate::<module>` paths of every source file (comments aside) and fails on
//! any arrow that points up a layer, and on a module nobody placed in a layer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers, top first; a module may use modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    &["gateway"],
    &["server"],
    &["adapter"],
    &["relay", "proposals"],
    &["audit", "refusal", "denials"],
    &["destination"],
    &["egress"],
    &["addr_class", "policy_store", "metrics"],
    &["local_http"],
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `crate::<name>` references in code lines (not comments).
fn references(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let code = code.split(" //").next().unwrap_or(code);
        for (i, _) in code.match_indices("crate::") {
            let before = code[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // e.g. `sluice_proxy_crate::`
            }
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

#[test]
fn top_level_modules_depend_only_downwards() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let first = rel.components().next().expect("component");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read");
        let deps = references(&text);
        edges
            .entry(module.clone())
            .or_default()
            .extend(deps.into_iter().filter(|d| *d != module));
    }
    let mut problems = Vec::new();
    for (module, deps) in &edges {
        let Some(from) = rank(module) else {
            problems.push(format!("`{module}` is in no layer of LAYERS"));
            continue;
        };
        for dep in deps {
            match rank(dep) {
                None => problems.push(format!("`{module}` uses `{dep}`, which is in no layer")),
                Some(to) if to <= from => problems.push(format!(
                    "`{module}` (layer {from}) uses `{dep}` (layer {to}): arrows must point down"
                )),
                Some(_) => {}
            }
        }
    }
    assert!(
        edges.len() >= 9,
        "found only {:?}: is the source tree where this test looks?",
        edges.keys().collect::<Vec<_>>()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn references_skip_comments_and_longer_names() {
    let text = "use crate::egress::X;\n// crate::server is only mentioned\nlet a = crate::relay::f(); // crate::adapter\nlet b = my_crate::audit;\n";
    let got: Vec<String> = references(text).into_iter().collect();
    assert_eq!(got, ["egress", "relay"]);
}
