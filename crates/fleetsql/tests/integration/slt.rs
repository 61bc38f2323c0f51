//! Runs every `tests/slt/*.slt` file twice, each time against a fresh fixed
//! fleet: once through the SQL node's own API and once over the Postgres
//! wire with tokio-postgres, so both front ends must agree.

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
        let types = vec![DefaultColumnType::Any; output.schema.fields().len()];
        Ok(DBOutput::Rows {
            types,
            rows: rows_of(&output.batches)?,
        })
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
        let mut width = 0;
        for message in messages {
            match message {
                SimpleQueryMessage::Row(row) => {
                    width = row.len();
                    rows.push(
                        (0..row.len())
                            .map(|i| row.get(i).map_or_else(|| "NULL".to_string(), normalise))
                            .collect(),
                    );
                }
                SimpleQueryMessage::RowDescription(columns) => width = columns.len(),
                _ => {}
            }
        }
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; width],
            rows,
        })
    }
}

fn slt_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("tests/slt"))
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
async fn slt_over_postgres_wire() {
    for file in slt_files() {
        let mut runner = sqllogictest::Runner::new(|| async {
            let fleet = FixtureFleet::start().await;
            let url = format!(
                "host=127.0.0.1 port={} user=fleetsql",
                fleet.pg.local_addr().port()
            );
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| SltError(e.to_string()))?;
            tokio::spawn(connection);
            Ok(OverPostgres {
                client,
                _fleet: fleet,
            })
        });
        runner
            .run_file_async(&file)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}
