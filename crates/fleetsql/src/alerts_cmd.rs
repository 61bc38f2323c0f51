//! `fleetsql alerts ...`: tools for alert authors.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub(crate) struct AlertsArgs {
    #[command(subcommand)]
    command: AlertsCommand,
}

#[derive(Debug, Subcommand)]
enum AlertsCommand {
    /// Run a definition once against the node's current generation and
    /// print the instances it would fire (nothing is stored or notified).
    Check {
        /// The alert definition (`*.toml`).
        file: PathBuf,
        /// The SQL node's HTTP address.
        #[arg(long, env = "FLEETSQL_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
    },
}

pub(crate) async fn run(args: AlertsArgs) -> anyhow::Result<()> {
    match args.command {
        AlertsCommand::Check { file, url } => check(file, url).await,
    }
}

async fn check(file: PathBuf, url: String) -> anyhow::Result<()> {
    let def = fleetsql_alerts::load_definition(&file)?;
    let endpoint = format!("{}/v1/query", url.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&endpoint)
        .json(&serde_json::json!({ "sql": def.sql }))
        .send()
        .await
        .with_context(|| format!("cannot reach the SQL node at {endpoint}"))?;
    let status = response.status();
    let answer: serde_json::Value = response
        .json()
        .await
        .context("the SQL node's answer is not JSON")?;
    if !status.is_success() {
        bail!(
            "alert `{}`: its SQL fails: {}{}",
            def.name,
            answer["error"].as_str().unwrap_or("unknown error"),
            answer["hint"]
                .as_str()
                .map(|h| format!("\nhint: {h}"))
                .unwrap_or_default()
        );
    }
    let rows = fleetsql_alerts::rows_from_answer(&answer)?;
    print!(
        "{}",
        fleetsql_alerts::describe(&def, &rows, &answer["generation"])
    );
    Ok(())
}
