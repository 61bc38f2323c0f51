use std::io::Write;

use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use clap::{Args, ValueEnum};

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum OutputFormat {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Args)]
pub(crate) struct SqlArgs {
    /// The SQL statement.
    sql: String,
    /// The SQL node's HTTP address.
    #[arg(long, env = "FLEETSQL_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, value_enum, default_value = "table")]
    format: OutputFormat,
    /// Do not print the generation summary to stderr.
    #[arg(long, short)]
    quiet: bool,
}

pub(crate) async fn run(args: SqlArgs) -> anyhow::Result<()> {
    let endpoint = format!("{}/v1/query", args.url.trim_end_matches('/'));
    let client = reqwest::Client::new();
    let response = client
        .post(&endpoint)
        .header(reqwest::header::ACCEPT, ARROW_STREAM)
        .json(&serde_json::json!({ "sql": args.sql }))
        .send()
        .await
        .with_context(|| {
            format!("cannot reach the SQL node at {endpoint}; is `fleetsql demo` running?")
        })?;
    let status = response.status();
    let generation = response
        .headers()
        .get("x-fleetsql-generation")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.bytes().await.context("reading the answer")?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                let error = v.get("error")?.as_str()?.to_string();
                Some(match v.get("hint").and_then(|h| h.as_str()) {
                    Some(hint) => format!("{error}\nhint: {hint}"),
                    None => error,
                })
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("{message}");
    }
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
        .context("the answer is not an Arrow stream")?;
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader
        .collect::<Result<_, _>>()
        .context("decoding the answer")?;
    let mut out = std::io::stdout().lock();
    match args.format {
        OutputFormat::Table => {
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            let text = if batches.is_empty() {
                arrow::util::pretty::pretty_format_batches(&[RecordBatch::new_empty(schema)])?
            } else {
                arrow::util::pretty::pretty_format_batches(&batches)?
            };
            writeln!(out, "{text}")?;
            writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" })?;
        }
        OutputFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            if batches.is_empty() {
                writer.write(&RecordBatch::new_empty(schema))?;
            }
            for batch in &batches {
                writer.write(batch)?;
            }
        }
        OutputFormat::Json => {
            let mut writer = arrow::json::ArrayWriter::new(&mut out);
            for batch in &batches {
                writer.write(batch)?;
            }
            writer.finish()?;
            if batches.is_empty() {
                write!(out, "[]")?;
            }
            writeln!(out)?;
        }
    }
    if !args.quiet
        && let Some(info) = generation
        && let Ok(info) = serde_json::from_str::<serde_json::Value>(&info)
    {
        eprintln!(
            "generation {} ({} ms old): {}/{} clusters, {}/{} machines",
            info["id"],
            info["age_ms"],
            info["clusters_seen"],
            info["clusters_expected"],
            info["machines_seen"],
            info["machines_expected"]
        );
    }
    Ok(())
}
