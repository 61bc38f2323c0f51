//! `fleetsql`: one binary, a subcommand per role. Everything here is
//! argument parsing and wiring; the work happens in the library crates.

mod alerts_cmd;
mod demo;
mod demo_alerts;
mod sql_client;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "fleetsql",
    version,
    about = "SQL over a whole fleet, seconds after the fact"
)]
struct Cli {
    /// Log filter, e.g. `info`, `fleetsql=debug`.
    #[arg(long, global = true, env = "FLEETSQL_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every role in one process over a simulated fleet plus this machine.
    Demo(demo::DemoArgs),
    /// Ask a SQL node one question and print the answer.
    Sql(sql_client::SqlArgs),
    /// Alert tools: `alerts check FILE` tries a definition before deploying it.
    Alerts(alerts_cmd::AlertsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Sql(args) => sql_client::run(args).await,
            Command::Alerts(args) => alerts_cmd::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
