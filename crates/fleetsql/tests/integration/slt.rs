//! Runs every `tests/slt/*.slt` file against a fresh fixed fleet through
//! each front end: the SQL node's own API, HTTP `/v1/query` (JSON), and the
//! Postgres wire with tokio-postgres in the simple protocol (text rows) and
//! the extended protocol (prepared, binary rows), so all must agree.
//!
//! A query whose SQL starts with `/* names */` answers with its column
//! names as the first row, so the files also pin down output naming.

use std::path::PathBuf;

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use sqllogictest::{DBOutput, DefaultColumnType};

use crate::fixture::{FixtureFleet, repo_root};

#[derive(Debug)]
struct SltError(String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

fn normalise(value: &str) -> String {
    match value {
        "t" => "true".into(),
        "f" => "false".into(),
        "" => "(empty)".into(),
        other => other.to_string(),
    }
}

struct InProcess {
    fleet: FixtureFleet,
}

/// Whether `sql` asks for its column names as the first row.
fn wants_names(sql: &str) -> bool {
    sql.trim_start().starts_with("/* names */")
}

fn answer(
    sql: &str,
    names: impl IntoIterator<Item = String>,
    mut rows: Vec<Vec<String>>,
) -> DBOutput<DefaultColumnType> {
    let names: Vec<String> = names.into_iter().collect();
    let width = names.len();
    if wants_names(sql) {
        rows.insert(0, names);
    }
    DBOutput::Rows {
        types: vec![DefaultColumnType::Any; width],
        rows,
    }
}

fn rows_of(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, SltError> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SltError(e.to_string()))?;
        for i in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| normalise(&f.value(i).to_string()))
                    .collect(),
            );
        }
    }
    Ok(rows)
}

#[async_trait]
impl sqllogictest::AsyncDB for InProcess {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn shutdown(&mut self) {}

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let output = self
            .fleet
            .node
            .query(sql)
            .await
            .map_err(|e| SltError(e.to_string()))?;
        let names = output.schema.fields().iter().map(|f| f.name().clone());
        Ok(answer(sql, names, rows_of(&output.batches)?))
    }
}

struct OverHttp {
    client: reqwest::Client,
    url: String,
    _server: fleetsql_http::HttpServer,
    _fleet: FixtureFleet,
}

fn json_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "NULL".to_string(),
        serde_json::Value::String(s) => normalise(s),
        other => other.to_string(),
    }
}

#[async_trait]
impl sqllogictest::AsyncDB for OverHttp {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn shutdown(&mut self) {}

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let response = self
            .client
            .post(&self.url)
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .await
            .map_err(|e| SltError(e.to_string()))?;
        let body: serde_json::Value = response.json().await.map_err(|e| SltError(e.to_string()))?;
        if let Some(error) = body.get("error").and_then(|e| e.as_str()) {
            return Err(SltError(error.to_string()));
        }
        let names = body["columns"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["name"].as_str().unwrap_or_default().to_string());
        let rows = body["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|row| {
                row.as_array()
                    .into_iter()
                    .flatten()
                    .map(json_text)
                    .collect()
            })
            .collect();
        Ok(answer(sql, names, rows))
    }
}

struct OverPostgres {
    client: tokio_postgres::Client,
    _fleet: FixtureFleet,
}

#[async_trait]
impl sqllogictest::AsyncDB for OverPostgres {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn shutdown(&mut self) {}

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        use tokio_postgres::SimpleQueryMessage;
        let messages = self.client.simple_query(sql).await.map_err(|e| {
            SltError(
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_string()),
            )
        })?;
        let mut rows = Vec::new();
        let mut names = Vec::new();
        for message in messages {
            match message {
                SimpleQueryMessage::Row(row) => {
                    rows.push(
                        (0..row.len())
                            .map(|i| row.get(i).map_or_else(|| "NULL".to_string(), normalise))
                            .collect(),
                    );
                }
                SimpleQueryMessage::RowDescription(columns) => {
                    names = columns.iter().map(|c| c.name().to_string()).collect();
                }
                _ => {}
            }
        }
        Ok(answer(sql, names, rows))
    }
}

/// The extended protocol as drivers use it: Parse, Bind, Execute, with
/// binary result columns.
struct OverPostgresExtended {
    client: tokio_postgres::Client,
    _fleet: FixtureFleet,
}

/// One binary column value, decoded by hand so every type the node sends
/// is read the same way whatever tokio-postgres features are on.
struct Binary(Option<String>);

impl<'a> tokio_postgres::types::FromSql<'a> for Binary {
    fn from_sql(
        ty: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        use tokio_postgres::types::Type;
        let text = match *ty {
            Type::BOOL => bool::from_sql(ty, raw)?.to_string(),
            Type::INT2 => i16::from_sql(ty, raw)?.to_string(),
            Type::INT4 => i32::from_sql(ty, raw)?.to_string(),
            Type::INT8 => i64::from_sql(ty, raw)?.to_string(),
            Type::FLOAT4 => f32::from_sql(ty, raw)?.to_string(),
            Type::FLOAT8 => f64::from_sql(ty, raw)?.to_string(),
            Type::NUMERIC => numeric_text(raw)?,
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
                normalise(<&str>::from_sql(ty, raw)?)
            }
            ref other => return Err(format!("the slt runner cannot read type {other}").into()),
        };
        Ok(Binary(Some(text)))
    }

    fn from_sql_null(
        _: &tokio_postgres::types::Type,
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Binary(None))
    }

    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }
}

/// A binary NUMERIC (how unsigned 64-bit integers travel) as its text:
/// base-10000 digits, the weight of the first, a sign and a display scale.
fn numeric_text(raw: &[u8]) -> Result<String, Box<dyn std::error::Error + Sync + Send>> {
    let word = |i: usize| -> Result<i16, Box<dyn std::error::Error + Sync + Send>> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "short NUMERIC".into())
    };
    let (ndigits, weight, sign, scale) = (word(0)?, word(1)?, word(2)? as u16, word(3)?);
    if sign == 0xC000 {
        return Ok("NaN".into());
    }
    let digits = (0..ndigits as usize)
        .map(|i| word(4 + i))
        .collect::<Result<Vec<_>, _>>()?;
    let mut integer = String::new();
    for position in 0..=weight.max(0) {
        let digit = digits.get(position as usize).copied().unwrap_or(0);
        if integer.is_empty() {
            integer = digit.to_string();
        } else {
            integer.push_str(&format!("{digit:04}"));
        }
    }
    if weight < 0 {
        integer = "0".into();
    }
    let mut fraction = String::new();
    for position in (weight + 1).max(0)..ndigits {
        fraction.push_str(&format!("{:04}", digits[position as usize]));
    }
    for _ in 0..(-weight - 1).max(0) {
        fraction.insert_str(0, "0000");
    }
    fraction.truncate(scale.max(0) as usize);
    let sign = if sign == 0x4000 { "-" } else { "" };
    Ok(if fraction.is_empty() {
        format!("{sign}{integer}")
    } else {
        format!("{sign}{integer}.{fraction}")
    })
}

#[async_trait]
impl sqllogictest::AsyncDB for OverPostgresExtended {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn shutdown(&mut self) {}

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let db_error = |e: tokio_postgres::Error| {
            SltError(
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_string()),
            )
        };
        let statement = self.client.prepare(sql).await.map_err(db_error)?;
        let names = statement
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect::<Vec<_>>();
        let rows = self
            .client
            .query(&statement, &[])
            .await
            .map_err(db_error)?
            .iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| {
                        row.try_get::<_, Binary>(i)
                            .map(|b| b.0.unwrap_or_else(|| "NULL".to_string()))
                            .map_err(|e| SltError(e.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(answer(sql, names, rows))
    }
}

async fn pg_client(fleet: &FixtureFleet) -> Result<tokio_postgres::Client, SltError> {
    let url = format!(
        "host=127.0.0.1 port={} user=fleetsql",
        fleet.pg.local_addr().port()
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .map_err(|e| SltError(e.to_string()))?;
    tokio::spawn(connection);
    Ok(client)
}

fn slt_files() -> Vec<PathBuf> {
    slt_files_in("tests/slt")
}

/// The `.slt` files of `dir` (under the repository's root), in name order.
fn slt_files_in(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files found");
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_in_process() {
    for file in slt_files() {
        let mut runner = sqllogictest::Runner::new(|| async {
            Ok(InProcess {
                fleet: FixtureFleet::start().await,
            })
        });
        runner
            .run_file_async(&file)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_over_http() {
    for file in slt_files() {
        let mut runner = sqllogictest::Runner::new(|| async {
            let fleet = FixtureFleet::start().await;
            let server = fleetsql_http::HttpServer::start(
                fleetsql_http::router(fleet.node.clone()),
                "127.0.0.1:0".parse().unwrap(),
            )
            .await
            .map_err(|e| SltError(e.to_string()))?;
            Ok(OverHttp {
                client: reqwest::Client::new(),
                url: format!("http://{}/v1/query", server.local_addr()),
                _server: server,
                _fleet: fleet,
            })
        });
        runner
            .run_file_async(&file)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_over_postgres_wire() {
    for file in slt_files() {
        let mut runner = sqllogictest::Runner::new(|| async {
            let fleet = FixtureFleet::start().await;
            Ok(OverPostgres {
                client: pg_client(&fleet).await?,
                _fleet: fleet,
            })
        });
        runner
            .run_file_async(&file)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_over_postgres_extended_protocol() {
    for file in slt_files() {
        let mut runner = sqllogictest::Runner::new(|| async {
            let fleet = FixtureFleet::start().await;
            Ok(OverPostgresExtended {
                client: pg_client(&fleet).await?,
                _fleet: fleet,
            })
        });
        runner
            .run_file_async(&file)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}

/// `tests/slt_pg/*.slt`: what Postgres clients send before they query
/// (Grafana's PostgreSQL data source, pgjdbc's `DatabaseMetaData`, psql),
/// word for word. Postgres syntax (`::regclass`, `OPERATOR(...)`, `~`)
/// that only the Postgres front end reads, so over the wire only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_client_catalog_queries_over_postgres_wire() {
    for file in slt_files_in("tests/slt_pg") {
        let mut runner = sqllogictest::Runner::new(|| async {
            let fleet = FixtureFleet::start().await;
            Ok(OverPostgres {
                client: pg_client(&fleet).await?,
                _fleet: fleet,
            })
        });
        runner
            .run_file_async(&file)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}
