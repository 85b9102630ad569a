//! The `sluice` binary: command-line parsing and wiring only. All logic
//! lives in the library crates; `anyhow` is used only here.
#![forbid(unsafe_code)]

mod cli;
mod cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // `sluice run`'s init re-executes this binary: it must not parse the CLI, log
    // or touch anything else before confining itself.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == sluice_sandbox::confine::INIT_ARG)
    {
        let code = sluice_sandbox::confine::init_main(&args[2..]);
        return ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1));
    }
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = match cli.command {
        cli::Command::Serve(args) => cmd::serve::run(args),
        cli::Command::Check(args) => cmd::check::run(&args),
        cli::Command::Explain(args) => cmd::explain::run(&args),
        cli::Command::Ca(args) => cmd::ca::run(&args),
        cli::Command::Run(args) => cmd::run::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
