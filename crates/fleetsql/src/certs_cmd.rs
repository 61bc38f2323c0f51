//! `fleetsql certs init|issue`: a fleet CA and node certificates for mTLS
//! between tiers (`fleetsql_flight::certs`).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use fleetsql_flight::certs::FleetCa;

#[derive(Debug, Args)]
pub(crate) struct CertsArgs {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Make a fleet CA: DIR/ca.crt and DIR/ca.key (0600).
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Replace an existing CA (every node certificate must then be
        /// issued again).
        #[arg(long)]
        force: bool,
    },
    /// Issue node NAME's certificate, signed by DIR's CA: DIR/NAME.crt and
    /// DIR/NAME.key (0600); DNS names NAME and localhost, IP 127.0.0.1.
    Issue {
        name: String,
        #[arg(long)]
        dir: PathBuf,
        /// Replace NAME's existing certificate (a running node picks the
        /// new one up for its next connections).
        #[arg(long)]
        force: bool,
    },
}

pub(crate) fn run(args: CertsArgs) -> anyhow::Result<()> {
    match args.command {
        CertsCommand::Init { dir, force } => {
            let ca = FleetCa::init(&dir, force).context("fleetsql certs init")?;
            println!(
                "fleet CA written: {} (key {})",
                ca.cert_path().display(),
                dir.join("ca.key").display()
            );
        }
        CertsCommand::Issue { name, dir, force } => {
            let ca = FleetCa::open(&dir)?;
            let issued = ca
                .issue(&name, &dir, force)
                .with_context(|| format!("fleetsql certs issue {name}"))?;
            println!(
                "certificate for {name} written: {} (key {})",
                issued.cert.display(),
                issued.key.display()
            );
        }
    }
    Ok(())
}
