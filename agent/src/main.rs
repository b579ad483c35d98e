//! The `hostprobe` binary: parse, set up logging and the runtime, run the
//! command, map its error to an exit code. The work happens in the library.

use std::process::ExitCode;

use clap::error::{ContextKind, ErrorKind};
use clap::Parser;
use hostprobe::cli::{Cli, Command};
use hostprobe::commands;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    let filter = match &cli.log_level {
        Some(l) => EnvFilter::try_new(l),
        None => EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(default_level)),
    };
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: bad --log-level/RUST_LOG: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Help and version as clap prints them; any other error in one line that
/// names the flag and what it expects, exit 2.
fn usage_error(e: clap::Error) -> ExitCode {
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let rendered = e.render().to_string();
    let mut line = rendered
        .lines()
        .next()
        .unwrap_or("error: bad arguments")
        .to_string();
    if let Some(clap::error::ContextValue::Strings(values)) = e.get(ContextKind::ValidValue) {
        line += &format!(" (one of: {})", values.join(", "));
    }
    eprintln!("{line}");
    ExitCode::from(2)
}
