//! `sluice check FILE...`

use std::process::ExitCode;

use crate::cli::CheckArgs;

pub(crate) fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let mut ok = true;
    for file in &args.files {
        match sluice_policy::load_file(file, 1) {
            Ok(loaded) => {
                for n in &loaded.notices {
                    println!("{n}");
                }
                let s = &loaded.snapshot;
                println!(
                    "{}: ok ({} policies, {} endpoints)",
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
