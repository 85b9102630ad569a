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
    // Quiet by default: warnings only; -v raises it (run: -vv, since its -v is
    // about allowed connections); SLUICE_LOG or RUST_LOG override.
    let level = match &cli.command {
        cli::Command::Serve(a) => ["warn", "info", "debug"][usize::from(a.serve.verbose.min(2))],
        cli::Command::Run(a) => {
            ["warn", "warn", "info", "debug"][usize::from(a.serve.verbose.min(3))]
        }
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .with_env_filter(filter)
        .init();
    let result = match cli.command {
        cli::Command::Serve(args) => cmd::serve::run(args),
        cli::Command::Check(args) => cmd::check::run(&args),
        cli::Command::Explain(args) => cmd::explain::run(&args),
        cli::Command::Test(args) => cmd::test::run(&args),
        cli::Command::Ca(args) => cmd::ca::run(&args),
        cli::Command::Run(args) => cmd::run::run(args),
        cli::Command::Proposals(args) => cmd::proposals::run(&args),
        cli::Command::SidecarInit(args) => cmd::sidecar_init::run(&args),
        cli::Command::Profiles(args) => cmd::profiles::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
