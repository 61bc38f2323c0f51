//! A fixed fleet for SQL tests: machines whose tables are the inline CSV of
//! `tests/fixtures/fleet.toml`, merged by real proxies and a real TLA, and a
//! SQL node (plus a Postgres listener) on top.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fleetsql_aggregator::{Child, FetchRequest};
use fleetsql_model::origin::{Origin, with_origin};
use fleetsql_model::parse::{InputFormat, parse_rows};
use fleetsql_model::{ClusterVisibility, Generation, Table, TableVisibility, now_ms};
use fleetsql_pgwire::PgServer;
use fleetsql_sqlnode::{SqlNode, SqlNodeConfig};
use fleetsql_tiers::{LocalFleet, TlaEntry};
use serde::Deserialize;

pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[derive(Debug, Deserialize)]
struct FixtureFile {
    machine: Vec<FixtureMachineSpec>,
}

/// One machine of `tests/fixtures/fleet.toml`: its origin and its tables
/// as inline CSV.
#[derive(Debug, Deserialize)]
pub(crate) struct FixtureMachineSpec {
    pub(crate) host: String,
    pub(crate) ip: String,
    pub(crate) cluster: String,
    pub(crate) tables: BTreeMap<String, String>,
}

/// The fixture fleet's machines, in file order.
pub(crate) fn fixture_machines() -> Vec<FixtureMachineSpec> {
    let text = std::fs::read_to_string(repo_root().join("tests/fixtures/fleet.toml")).unwrap();
    let file: FixtureFile = toml::from_str(&text).unwrap();
    file.machine
}

/// A machine that always publishes the same rows.
#[derive(Debug)]
pub(crate) struct FixtureMachine {
    origin: Origin,
    tables: BTreeMap<String, arrow::array::RecordBatch>,
}

#[async_trait]
impl Child for FixtureMachine {
    fn name(&self) -> &str {
        &self.origin.host
    }

    async fn fetch(&self, request: &FetchRequest) -> fleetsql_aggregator::Result<Arc<Generation>> {
        let now = now_ms();
        let mut generation = Generation::empty(&self.origin.host);
        generation.meta.id = 1;
        generation.meta.made_at_ms = now;
        generation.meta.available = self.tables.keys().cloned().collect();
        generation.meta.visibility.clusters.insert(
            self.origin.cluster.clone(),
            ClusterVisibility {
                machines_expected: 1,
                machines_seen: 1,
                oldest_data_ms: Some(now),
                newest_data_ms: Some(now),
                via: String::new(),
            },
        );
        for name in &request.tables {
            let mut stats = TableVisibility::default();
            match self.tables.get(name) {
                Some(batch) => {
                    let batch = with_origin(name, batch, &self.origin, now)?;
                    stats.machines_with_rows = 1;
                    stats.rows = batch.num_rows() as u64;
                    let table = Table::new(name, batch.schema(), vec![batch])?;
                    generation.tables.insert(name.clone(), Arc::new(table));
                }
                None => stats.machines_empty = 1,
            }
            generation
                .meta
                .visibility
                .tables
                .insert(name.clone(), stats);
        }
        Ok(Arc::new(generation))
    }
}

/// The fixed fleet with a SQL node and a Postgres listener on port 0.
#[derive(Debug)]
pub(crate) struct FixtureFleet {
    _hierarchy: LocalFleet,
    pub(crate) node: Arc<SqlNode>,
    pub(crate) pg: PgServer,
}

impl FixtureFleet {
    pub(crate) async fn start() -> FixtureFleet {
        let mut clusters: BTreeMap<String, Vec<Arc<dyn Child>>> = BTreeMap::new();
        for spec in fixture_machines() {
            let tables = spec
                .tables
                .iter()
                .map(|(name, csv)| {
                    (
                        name.clone(),
                        parse_rows(InputFormat::Csv, csv.as_bytes()).unwrap(),
                    )
                })
                .collect();
            let machine = FixtureMachine {
                origin: Origin {
                    host: spec.host,
                    ip: spec.ip,
                    cluster: spec.cluster.clone(),
                },
                tables,
            };
            clusters
                .entry(spec.cluster)
                .or_default()
                .push(Arc::new(machine));
        }
        // Planned as every tree is; a long tick: tests make generations on
        // demand, never by waiting.
        let (topology, agents) = LocalFleet::one_tla(
            Duration::from_secs(3600),
            clusters,
            TlaEntry {
                static_tables: Some(repo_root().join("tests/fixtures/static/index.toml")),
                ..TlaEntry::default()
            },
        );
        let hierarchy = LocalFleet::start(&topology, agents).unwrap();
        hierarchy.tick_now().await;
        let tla = hierarchy.tla("tla").unwrap().as_child();
        let mut config = SqlNodeConfig::new("sqlnode", Duration::from_secs(1));
        config.table_wait = Duration::from_secs(10);
        let node = Arc::new(SqlNode::start(config, vec![tla]).unwrap());
        node.wait_for_generation(Duration::from_secs(10))
            .await
            .unwrap();
        let pg = PgServer::start(node.clone(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        FixtureFleet {
            _hierarchy: hierarchy,
            node,
            pg,
        }
    }
}
