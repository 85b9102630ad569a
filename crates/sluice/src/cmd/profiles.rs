//! `sluice profiles list|show|lint`: the embedded provider profile catalog,
//! one profile, and validation of profile files.

use std::process::ExitCode;

use serde_json::json;
use sluice_policy::profile::{self, Profile};
use sluice_policy::{Diagnostic, LoadError};

use crate::cli::{ProfilesArgs, ProfilesCommand, TableFormat};

pub(crate) fn run(args: &ProfilesArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        ProfilesCommand::List { format } => list(*format),
        ProfilesCommand::Show { profile, format } => show(profile, *format),
        ProfilesCommand::Lint { files, format } => lint(files, *format),
    }
}

fn catalog() -> anyhow::Result<Vec<Profile>> {
    profile::catalog()
        .iter()
        .map(|e| {
            profile::parse_profile(e.source, &e.origin())
                .map_err(|err| anyhow::anyhow!("embedded profile {} is invalid:\n{err}", e.id))
        })
        .collect()
}

fn env_names(p: &Profile) -> String {
    let names: Vec<&str> = p
        .credentials
        .iter()
        .flat_map(|c| c.env_vars.iter().map(String::as_str))
        .collect();
    if names.is_empty() {
        "-".to_owned()
    } else {
        names.join(",")
    }
}

fn list(format: TableFormat) -> anyhow::Result<ExitCode> {
    let all = catalog()?;
    match format {
        TableFormat::Json => println!("{}", serde_json::to_string_pretty(&all)?),
        TableFormat::Table => {
            println!(
                "{:<18} {:<15} {:>9}  {:<28} CREDENTIALS",
                "ID", "CATEGORY", "ENDPOINTS", "NAME"
            );
            for p in &all {
                println!(
                    "{:<18} {:<15} {:>9}  {:<28} {}",
                    p.id,
                    p.category.as_deref().unwrap_or("-"),
                    p.endpoints.len(),
                    p.display_name.as_deref().unwrap_or("-"),
                    env_names(p)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show(r: &profile::ProfileRef, format: TableFormat) -> anyhow::Result<ExitCode> {
    let p = match profile::load_profile(r, None) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(1));
        }
    };
    if format == TableFormat::Json {
        println!("{}", serde_json::to_string_pretty(&p)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("id:          {}", p.id);
    println!("name:        {}", p.display_name.as_deref().unwrap_or("-"));
    println!("category:    {}", p.category.as_deref().unwrap_or("-"));
    println!("source:      {}", p.origin);
    println!("policy key:  {}", p.entry_key());
    if let Some(d) = &p.description {
        println!("description: {}", d.trim());
    }
    println!("endpoints:");
    for e in &p.endpoints {
        let ports: Vec<String> = e.ports.iter().map(u16::to_string).collect();
        let mut what = vec![e.protocol.clone().unwrap_or_else(|| "L4".to_owned())];
        what.extend(e.access.as_ref().map(|a| format!("access {a}")));
        if e.rules > 0 {
            what.push(format!("{} rule(s)", e.rules));
        }
        if e.deny_rules > 0 {
            what.push(format!("{} deny rule(s)", e.deny_rules));
        }
        let path = e
            .path
            .as_deref()
            .map_or_else(String::new, |p| format!(" path {p}"));
        println!(
            "  {}:{}{path}  {}",
            e.host,
            ports.join(","),
            what.join(", ")
        );
    }
    println!("binaries:");
    for b in &p.binaries {
        println!("  {b}");
    }
    if p.binaries.is_empty() {
        println!("  (any)");
    }
    println!("credentials:");
    for c in &p.credentials {
        println!(
            "  {} ({}{}): placeholders under {}",
            c.name,
            if c.required { "required" } else { "optional" },
            c.auth_style.as_ref().map_or_else(String::new, |s| format!(
                ", {s} {}",
                c.header_name.as_deref().unwrap_or("")
            )),
            if c.env_vars.is_empty() {
                c.name.clone()
            } else {
                c.env_vars.join(", ")
            }
        );
    }
    if p.credentials.is_empty() {
        println!("  (none)");
    }
    Ok(ExitCode::SUCCESS)
}

fn diagnostic_json(d: &Diagnostic) -> serde_json::Value {
    json!({"file": &*d.file, "line": d.line, "col": d.col, "message": d.message})
}

fn lint(files: &[std::path::PathBuf], format: TableFormat) -> anyhow::Result<ExitCode> {
    let mut ok = true;
    let mut report = Vec::new();
    for file in files {
        let result: Result<Profile, LoadError> =
            profile::load_profile(&profile::ProfileRef::File(file.clone()), None);
        match (&result, format) {
            (Ok(p), TableFormat::Table) => println!(
                "{}: ok (profile {}, {} endpoints, {} credentials)",
                file.display(),
                p.id,
                p.endpoints.len(),
                p.credentials.len()
            ),
            (Err(e), TableFormat::Table) => println!("{e}"),
            (Ok(p), TableFormat::Json) => {
                report.push(json!({"file": file.display().to_string(), "ok": true, "id": p.id, "diagnostics": []}));
            }
            (Err(e), TableFormat::Json) => report.push(json!({
                "file": file.display().to_string(),
                "ok": false,
                "diagnostics": e.diagnostics.iter().map(diagnostic_json).collect::<Vec<_>>(),
            })),
        }
        ok &= result.is_ok();
    }
    if format == TableFormat::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
