//! `fleet_sets`: the aggregator sets of the topology as a SQL node sees
//! them: each set's span and domain, its TLAs and SQL nodes, the tables
//! each serves, and each node's state as this node last probed it (its
//! `/health`), so an operator finds which node of which set to ask.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use fleetsql_sqlnode::NodeTable;
use parking_lot::{Mutex, RwLock};
use tokio::task::JoinHandle;

use crate::topology::Topology;

pub const SETS_TABLE: &str = "fleet_sets";

/// The name `fleet_sets` gives the one set of a topology without `[sets]`.
pub const IMPLICIT_SET: &str = "(all)";

/// One row of `fleet_sets`.
#[derive(Debug, Clone, PartialEq)]
pub struct SetNode {
    pub set: String,
    /// Clusters, comma-separated; `*` for every cluster.
    pub span: String,
    pub node: String,
    pub role: &'static str,
    /// Roles whose ad-hoc queries it answers; `*` for every role.
    pub domain: String,
    /// Tables it serves; `*` for every table of its span.
    pub tables: String,
    pub http: Option<SocketAddr>,
}

fn joined<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    items.into_iter().collect::<Vec<_>>().join(",")
}

/// Every set of `topology` and its nodes, a topology without sets as one
/// implicit set of every TLA and SQL node spanning every cluster.
pub fn set_nodes(topology: &Topology) -> Vec<SetNode> {
    let mut rows = Vec::new();
    let mut push =
        |set: &str, span: String, domain: String, tlas: Vec<&String>, sql: Vec<&String>| {
            for tla in tlas {
                rows.push(SetNode {
                    set: set.to_string(),
                    span: span.clone(),
                    node: tla.clone(),
                    role: "tla",
                    domain: domain.clone(),
                    tables: "*".to_string(),
                    http: topology.tlas.get(tla).and_then(|t| t.http),
                });
            }
            for node in sql {
                rows.push(SetNode {
                    set: set.to_string(),
                    span: span.clone(),
                    node: node.clone(),
                    role: "sqlnode",
                    domain: domain.clone(),
                    tables: "*".to_string(),
                    http: topology.sqlnodes.get(node).and_then(|s| s.http),
                });
            }
        };
    if topology.sets.is_empty() {
        push(
            IMPLICIT_SET,
            "*".to_string(),
            "*".to_string(),
            topology.tlas.keys().collect(),
            topology.sqlnodes.keys().collect(),
        );
        return rows;
    }
    for (name, set) in &topology.sets {
        let span = if set.clusters.is_none() && set.select.is_empty() {
            "*".to_string()
        } else {
            joined(topology.set_span(set).iter().map(String::as_str))
        };
        let domain = match &set.domain {
            None => "*".to_string(),
            Some(roles) => joined(roles.iter().map(|r| r.as_str())),
        };
        push(
            name,
            span,
            domain,
            set.tlas.iter().collect(),
            set.sqlnodes.iter().collect(),
        );
    }
    // A node of a subset serves only the subset's tables.
    for row in &mut rows {
        let subset = topology.sets.get(&row.set).and_then(|set| {
            set.subsets
                .values()
                .find(|sub| sub.sqlnodes.contains(&row.node))
        });
        if let Some(subset) = subset {
            row.tables = joined(subset.tables.iter().map(String::as_str));
        }
    }
    rows
}

/// What `fleet_sets` reads: the topology of the moment (a re-read file
/// replaces it) and the last probe of each node.
#[derive(Debug, Clone)]
pub struct SetsState {
    own: String,
    topology: Arc<RwLock<Topology>>,
    states: Arc<Mutex<BTreeMap<String, String>>>,
}

impl SetsState {
    pub fn new(own: &str, topology: &Topology) -> SetsState {
        SetsState {
            own: own.to_string(),
            topology: Arc::new(RwLock::new(topology.clone())),
            states: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// A re-read topology.
    pub fn set_topology(&self, topology: &Topology) {
        *self.topology.write() = topology.clone();
    }

    fn state_of(&self, node: &SetNode) -> String {
        if node.node == self.own {
            return "up (this node)".to_string();
        }
        if node.http.is_none() {
            return "unknown (no http address in the topology)".to_string();
        }
        self.states
            .lock()
            .get(&node.node)
            .cloned()
            .unwrap_or_else(|| "unknown (not probed yet)".to_string())
    }

    /// Probes every other node's `/health` every `every` while the
    /// returned prober lives.
    pub fn spawn_prober(&self, every: Duration) -> Prober {
        let state = self.clone();
        Prober(tokio::spawn(async move {
            let client = match reqwest::Client::builder()
                .timeout(every.min(Duration::from_secs(2)))
                .build()
            {
                Ok(client) => client,
                Err(e) => {
                    tracing::warn!(error = %e, "fleet_sets: no HTTP client; node states stay unknown");
                    return;
                }
            };
            loop {
                let nodes: BTreeSet<(String, SocketAddr)> = set_nodes(&state.topology.read())
                    .into_iter()
                    .filter(|n| n.node != state.own)
                    .filter_map(|n| Some((n.node, n.http?)))
                    .collect();
                let mut probes = tokio::task::JoinSet::new();
                for (name, addr) in nodes {
                    let client = client.clone();
                    probes.spawn(async move {
                        let answer = client.get(format!("http://{addr}/health")).send().await;
                        let state = match answer {
                            Ok(r) if r.status().is_success() => "up".to_string(),
                            Ok(r) => format!("down (health answered {})", r.status()),
                            Err(e) if e.is_timeout() => "down (health timed out)".to_string(),
                            Err(_) => format!("down (no answer at {addr})"),
                        };
                        (name, state)
                    });
                }
                let mut states = Vec::new();
                while let Some(Ok(probed)) = probes.join_next().await {
                    states.push(probed);
                }
                *state.states.lock() = states.into_iter().collect();
                tokio::time::sleep(every).await;
            }
        }))
    }
}

/// The probing task of a [`SetsState`]; stops when dropped.
#[derive(Debug)]
pub struct Prober(JoinHandle<()>);

impl Drop for Prober {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl NodeTable for SetsState {
    fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            ["set", "span", "node", "role", "domain", "tables", "state"]
                .into_iter()
                .map(|name| Field::new(name, DataType::Utf8, false))
                .collect::<Vec<_>>(),
        ))
    }

    fn batch(&self) -> Result<RecordBatch, ArrowError> {
        let rows = set_nodes(&self.topology.read());
        let column = |f: &dyn Fn(&SetNode) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
        };
        RecordBatch::try_new(
            self.schema(),
            vec![
                column(&|r| r.set.clone()),
                column(&|r| r.span.clone()),
                column(&|r| r.node.clone()),
                column(&|r| r.role.to_string()),
                column(&|r| r.domain.clone()),
                column(&|r| r.tables.clone()),
                column(&|r| self.state_of(r)),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_list_their_nodes_and_spans() {
        let t = Topology::parse(
            "[agents.a]\ncluster = \"c1\"\n[agents.b]\ncluster = \"c2\"\n\
             [proxies.p1]\ncluster = \"c1\"\n[proxies.p2]\ncluster = \"c2\"\n\
             [clusters.c1]\nlabels = { region = \"eu\" }\n\
             [tlas.t1]\n[tlas.t2]\n[sqlnodes.s1]\n[sqlnodes.s2]\n\
             [sets.eu]\nselect = { region = \"eu\" }\ntlas = [\"t1\"]\nsqlnodes = [\"s1\"]\ndomain = []\n\
             [sets.all]\ntlas = [\"t2\"]\nsqlnodes = [\"s2\"]\n",
        )
        .unwrap();
        let rows = set_nodes(&t);
        let eu: Vec<_> = rows.iter().filter(|r| r.set == "eu").collect();
        assert_eq!(eu.len(), 2);
        assert!(eu.iter().all(|r| r.span == "c1" && r.domain.is_empty()));
        let all: Vec<_> = rows.iter().filter(|r| r.set == "all").collect();
        assert!(all.iter().all(|r| r.span == "*" && r.domain == "*"));
        let state = SetsState::new("s1", &t);
        let batch = state.batch().unwrap();
        assert_eq!(batch.num_rows(), 4);
        let no_sets = Topology::parse("[tlas.t]\n[sqlnodes.s]\ntlas = { t = 0 }").unwrap();
        let rows = set_nodes(&no_sets);
        assert!(rows.iter().all(|r| r.set == IMPLICIT_SET && r.span == "*"));
        assert_eq!(rows.len(), 2);
    }
}
