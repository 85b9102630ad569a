//! `sluice check [--mode MODE] FILE...`: validate policy files and, with
//! `--mode`, check them against what that runtime mode can enforce.

use std::process::ExitCode;

use sluice_policy::{Capabilities, MetadataKind, RuntimeMode};
use sluice_proxy::relay::middleware::available_middleware;

use crate::cli::{CheckArgs, IdentityArg, ModeArg};

/// The capabilities `args` describe, or `None` without `--mode`.
fn capabilities(args: &CheckArgs) -> Option<Capabilities> {
    let (mode, transparent, metadata) = match args.mode? {
        ModeArg::Serve => (RuntimeMode::Serve, false, false),
        ModeArg::Run => (RuntimeMode::Run, true, true),
        ModeArg::Sidecar => (RuntimeMode::Sidecar, true, false),
    };
    Some(Capabilities {
        process_identity: args.identity == IdentityArg::Required,
        transparent_capture: transparent,
        metadata_loopback: if metadata {
            vec![MetadataKind::Gce, MetadataKind::Aws]
        } else {
            Vec::new()
        },
        middleware: available_middleware(args.middleware.iter().map(String::as_str)),
        ..Capabilities::new(mode)
    })
}

pub(crate) fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let caps = capabilities(args);
    let mut ok = true;
    for file in &args.files {
        let checked = args
            .profiles
            .load(Some(file), &sluice_policy::ProcessEnv)
            .and_then(|loaded| {
                if let Some(caps) = &caps {
                    caps.check(loaded.snapshot.requirements())?;
                }
                Ok(loaded)
            });
        match checked {
            Ok(loaded) => {
                for n in &loaded.notices {
                    println!("{n}");
                }
                let s = &loaded.snapshot;
                let under = caps.as_ref().map_or_else(String::new, |c| {
                    format!(", enforceable by {}", c.mode.as_str())
                });
                println!(
                    "{}: ok ({} policies, {} endpoints{under})",
                    file.display(),
                    s.policies().len(),
                    s.endpoints().len()
                );
            }
            Err(e) => {
                ok = false;
                println!("{e}");
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
