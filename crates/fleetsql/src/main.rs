//! `fleetsql`: one binary, a subcommand per role. Everything here is
//! argument parsing and wiring; the work happens in the library crates.

mod alerts_cmd;
mod apps_args;
mod auth_cmd;
mod bench_cmd;
mod certs_cmd;
mod demo;
mod integrations;
mod security_args;
mod signal;
mod sql_client;
mod tier;
mod watchdog_args;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// Every tier allocates and frees many short-lived Arrow buffers and rows;
// mimalloc keeps that off the profile (see BENCHMARKS.md, Alerts).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in `mimalloc.h` (v3, the mimalloc that the
/// pinned `libmimalloc-sys` builds; its bindings have no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with the process before going back to the
/// OS, unless `MIMALLOC_PURGE_DELAY` says otherwise.
///
/// A tier frees a whole generation every tick and allocates the next one's
/// worth right after. With mimalloc's default of 1 s every generation is
/// faulted in and zeroed by the kernel again: half of a TLA's CPU at
/// 100,000 machines (see BENCHMARKS.md). Ten seconds spans a tick, so the
/// memory is reused, and an idle process still gives it back.
fn keep_freed_memory_across_a_tick() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets one integer option, which mimalloc reads atomically at
    // each purge decision; no memory is touched.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10_000) }
}

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
    /// Run an agent: this machine's tables, served to its cluster proxies.
    Agent(tier::TierArgs),
    /// Run a cluster proxy: merges its cluster's agents.
    Proxy(tier::TierArgs),
    /// Run a top-level aggregator: merges every cluster through its proxies.
    Tla(tier::TierArgs),
    /// Run a SQL node over one or more TLAs (Postgres wire and HTTP).
    Sqlnode(tier::TierArgs),
    /// Run a TLA and the SQL node of the same name in one process: the SQL
    /// node reads that TLA without a network hop.
    #[command(name = "tla-sql")]
    TlaSql(tier::TierArgs),
    /// Alert tools: `alerts check FILE` tries a definition before deploying it.
    Alerts(alerts_cmd::AlertsArgs),
    /// Measure a real TLA and SQL node fed by a simulated fleet (up to
    /// 100,000 machines) against baselines taken in the same run.
    Bench(bench_cmd::BenchArgs),
    /// A fleet CA and node certificates for mutual TLS between tiers, for
    /// tests and small fleets: `certs init --dir D`, `certs issue NAME --dir D`.
    Certs(certs_cmd::CertsArgs),
    /// Users of a SQL node's users file (Postgres wire, console log-in):
    /// `users add NAME --role ROLE --file PATH`, `users list`, `users remove`.
    Users(auth_cmd::UsersArgs),
    /// Bearer tokens of a SQL node's tokens file (HTTP): `tokens create
    /// --role ROLE --expires 30d --file PATH`, `tokens list`, `tokens revoke ID`.
    Tokens(auth_cmd::TokensArgs),
}

fn main() -> ExitCode {
    keep_freed_memory_across_a_tick();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        // Our SQL node sends a NOTICE with every answer (generation, age,
        // coverage); the client library logs each at info, which would
        // bury everything else a command prints.
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
            "{},tokio_postgres::connection=warn",
            cli.log
        )))
        .with_writer(std::io::stderr)
        .init();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if matches!(cli.command, Command::Agent(_)) {
        // The agent runs on every machine of the fleet: a small, fixed
        // runtime and 4 KiB pages keep it at its own few MiB of heap
        // (BENCHMARKS.md, Agent footprint; fleetsql_agent::footprint).
        builder.worker_threads(fleetsql_agent::footprint::AGENT_WORKER_THREADS);
        if let Err(e) = fleetsql_agent::footprint::disable_transparent_huge_pages() {
            tracing::warn!(error = %e, "cannot turn transparent huge pages off for the agent");
        }
    }
    let runtime = match builder.enable_all().build() {
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
            Command::Agent(args) => tier::run(tier::Role::Agent, args).await,
            Command::Proxy(args) => tier::run(tier::Role::Proxy, args).await,
            Command::Tla(args) => tier::run(tier::Role::Tla, args).await,
            Command::Sqlnode(args) => tier::run(tier::Role::SqlNode, args).await,
            Command::TlaSql(args) => tier::run(tier::Role::TlaSql, args).await,
            Command::Alerts(args) => alerts_cmd::run(args).await,
            Command::Bench(args) => bench_cmd::run(args).await,
            Command::Certs(args) => certs_cmd::run(args),
            Command::Users(args) => auth_cmd::users(args),
            Command::Tokens(args) => auth_cmd::tokens(args),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_set_is_mimallocs_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads one integer option.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        // This mimalloc's own default purge delay is 1,000 ms, and no other
        // option defaults to 1,000, so the number names the right one.
        assert_eq!(get(), 1000);
        keep_freed_memory_across_a_tick();
        assert_eq!(get(), 10_000);
    }
}
