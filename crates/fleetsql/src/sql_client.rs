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
    /// The SQL node's HTTP address; several, comma-separated, are tried in
    /// turn (one name per set: any of its SQL nodes answers).
    #[arg(long, env = "FLEETSQL_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// SQL nodes as `HOST[:PORT]`, comma-separated (port 8080 when left
    /// out): tried in order, the next one only when one cannot be reached.
    /// Overrides --url.
    #[arg(long)]
    host: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    format: OutputFormat,
    /// Do not print the generation summary to stderr.
    #[arg(long, short)]
    quiet: bool,
}

/// The URLs `--host` or `--url` name, in the order to try them.
fn endpoints(args: &SqlArgs) -> anyhow::Result<Vec<String>> {
    let urls: Vec<String> = match &args.host {
        Some(hosts) => hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| {
                if h.contains("://") {
                    h.to_string()
                } else if h
                    .rsplit_once(':')
                    .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
                    && !h.ends_with(']')
                {
                    format!("http://{h}")
                } else {
                    format!("http://{h}:8080")
                }
            })
            .collect(),
        None => args
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect(),
    };
    if urls.is_empty() {
        bail!("no SQL node given; pass --host HOST[:PORT],... or --url URL");
    }
    Ok(urls
        .into_iter()
        .map(|u| format!("{}/v1/query", u.trim_end_matches('/')))
        .collect())
}

/// Sends the query to the first SQL node that can be reached. A node that
/// answers, even with an error (a refusal, a query killed for its
/// resources), ends the search: a query is never run twice (seed 8.2).
async fn send(
    client: &reqwest::Client,
    endpoints: &[String],
    sql: &str,
) -> anyhow::Result<reqwest::Response> {
    let mut unreachable = Vec::new();
    for endpoint in endpoints {
        let sent = client
            .post(endpoint)
            .header(reqwest::header::ACCEPT, ARROW_STREAM)
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .await;
        match sent {
            Ok(response) => {
                if !unreachable.is_empty() {
                    eprintln!(
                        "answered by {endpoint} (not reachable: {})",
                        unreachable.join(", ")
                    );
                }
                return follow(client, endpoint, response, sql).await;
            }
            // Only a request that never reached a node moves on.
            Err(e) if e.is_connect() => unreachable.push(endpoint.clone()),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("the SQL node at {endpoint} did not answer; the query may have run there, so it is not sent to another node")
                });
            }
        }
    }
    bail!(
        "cannot reach any SQL node ({}); is `fleetsql demo` or `fleetsql sqlnode` running?",
        unreachable.join(", ")
    )
}

/// Redirects followed at most: one is what a partitioned set gives; more
/// means the nodes' topologies disagree.
const MAX_REDIRECTS: usize = 3;

/// Follows a SQL node's redirects (to the subset serving the query's
/// tables), refusing loops and long chains.
async fn follow(
    client: &reqwest::Client,
    first: &str,
    mut response: reqwest::Response,
    sql: &str,
) -> anyhow::Result<reqwest::Response> {
    let mut visited = vec![first.to_string()];
    loop {
        let status = response.status();
        if status != reqwest::StatusCode::TEMPORARY_REDIRECT
            && status != reqwest::StatusCode::PERMANENT_REDIRECT
        {
            return Ok(response);
        }
        let Some(location) = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| response.url().join(l).ok())
            .map(|u| u.to_string())
        else {
            bail!(
                "{} answered a redirect without a usable Location",
                response.url()
            );
        };
        if visited.contains(&location) {
            bail!(
                "redirect loop: {} -> {location}; the SQL nodes disagree about which subset serves these tables (do their topology files differ?); ask the serving node directly (SELECT node, tables FROM fleet_sets)",
                visited.join(" -> ")
            );
        }
        if visited.len() > MAX_REDIRECTS {
            bail!(
                "more than {MAX_REDIRECTS} redirects ({} -> {location}); the SQL nodes' topologies disagree; ask the serving node directly",
                visited.join(" -> ")
            );
        }
        visited.push(location.clone());
        eprintln!("redirected to {location}");
        response = client
            .post(&location)
            .header(reqwest::header::ACCEPT, ARROW_STREAM)
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .await
            .with_context(|| format!("cannot reach {location}, where the query was redirected"))?;
    }
}

pub(crate) async fn run(args: SqlArgs) -> anyhow::Result<()> {
    let endpoints = endpoints(&args)?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("making the HTTP client")?;
    let response = send(&client, &endpoints, &args.sql).await?;
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
        let span = info["span"]
            .as_str()
            .map(|span| format!(" of span {span}"))
            .unwrap_or_default();
        eprintln!(
            "generation {} ({} ms old): {}/{} clusters{span}, {}/{} machines",
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
