//! Table partitioning between the subsets of a set (seed 6.3.3): each
//! subset's SQL nodes serve some of the set's tables. A query reads here
//! when this node serves all its fleet tables; otherwise it belongs to the
//! one subset serving them all (HTTP redirects there, pg forwards), and a
//! query no single subset can answer gets an error naming, per table, the
//! subsets holding it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use arrow::array::RecordBatch;

use crate::{GenerationInfo, QueryOutput, Result, SqlError};

/// The subsets of this node's set and which of them this node is in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Partition {
    /// The set's name, for messages.
    pub set: String,
    /// This node's subset; `None`: it serves every table.
    pub own: Option<String>,
    pub subsets: Vec<Subset>,
}

/// SQL nodes of a set that serve some of its tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subset {
    pub name: String,
    pub tables: BTreeSet<String>,
    pub nodes: Vec<Peer>,
}

/// Another SQL node: where its HTTP port is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub http: Option<SocketAddr>,
}

/// Where a query over some fleet tables runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Here,
    /// On a node of another subset (the first that has an address; the
    /// others in `nodes` are alternatives).
    Elsewhere {
        subset: String,
        nodes: Vec<Peer>,
    },
}

impl Partition {
    fn serves(&self, subset: &Subset, tables: &BTreeSet<String>) -> bool {
        tables.is_subset(&subset.tables)
    }

    /// Where a query reading `tables` runs, or the error naming which
    /// subsets hold which of them.
    pub fn route(&self, tables: &BTreeSet<String>) -> Result<Route> {
        if tables.is_empty() {
            return Ok(Route::Here);
        }
        let own = self
            .own
            .as_ref()
            .and_then(|own| self.subsets.iter().find(|s| &s.name == own));
        let Some(own) = own else {
            return Ok(Route::Here);
        };
        if self.serves(own, tables) {
            return Ok(Route::Here);
        }
        if let Some(other) = self
            .subsets
            .iter()
            .find(|s| s.name != own.name && self.serves(s, tables) && !s.nodes.is_empty())
        {
            return Ok(Route::Elsewhere {
                subset: other.name.clone(),
                nodes: other.nodes.clone(),
            });
        }
        let holders: BTreeMap<&String, Vec<&str>> = tables
            .iter()
            .map(|t| {
                let held: Vec<&str> = self
                    .subsets
                    .iter()
                    .filter(|s| s.tables.contains(t))
                    .map(|s| s.name.as_str())
                    .collect();
                (t, held)
            })
            .collect();
        let detail = holders
            .iter()
            .map(|(table, held)| {
                if held.is_empty() {
                    format!("`{table}` by no subset")
                } else {
                    format!("`{table}` by subset {}", held.join(", "))
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        Err(SqlError::NoSubset {
            set: self.set.clone(),
            detail,
        })
    }
}

/// Runs `sql` on the SQL node `peer` over its HTTP port and returns its
/// answer as this node's own, its generation marked as computed there.
/// One hop: a peer that redirects again is an error (their topology files
/// disagree), so a query never circles.
pub(crate) async fn forward(
    peer: &Peer,
    sql: &str,
    timeout: std::time::Duration,
) -> Result<QueryOutput> {
    let unreachable = |reason: String| SqlError::Forward {
        node: peer.name.clone(),
        reason,
    };
    let addr = peer
        .http
        .ok_or_else(|| unreachable("the topology gives it no `http` address".into()))?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
        .map_err(|e| unreachable(e.to_string()))?;
    let started = std::time::Instant::now();
    let response = client
        .post(format!("http://{addr}/v1/query"))
        .header(
            reqwest::header::ACCEPT,
            "application/vnd.apache.arrow.stream",
        )
        .json(&serde_json::json!({ "sql": sql }))
        .send()
        .await
        .map_err(|e| unreachable(format!("cannot reach it at {addr}: {e}")))?;
    let status = response.status();
    let generation = response
        .headers()
        .get("x-fleetsql-generation")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
        .map(|v| generation_info(&v));
    let body = response
        .bytes()
        .await
        .map_err(|e| unreachable(format!("reading its answer: {e}")))?;
    if !status.is_success() {
        let error = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Err(SqlError::Remote {
            node: peer.name.clone(),
            error,
        });
    }
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
        .map_err(|e| unreachable(format!("its answer is not an Arrow stream: {e}")))?;
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| unreachable(format!("decoding its answer: {e}")))?;
    let mut generation =
        generation.ok_or_else(|| unreachable("its answer has no generation header".into()))?;
    generation.computed_by = Some(peer.name.clone());
    Ok(QueryOutput {
        schema,
        batches,
        generation,
        elapsed: started.elapsed(),
    })
}

/// The peer's `x-fleetsql-generation` header as this node's own.
fn generation_info(v: &serde_json::Value) -> GenerationInfo {
    let int = |k: &str| v[k].as_i64().unwrap_or(0);
    let count = |k: &str| v[k].as_u64().unwrap_or(0);
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    GenerationInfo {
        id: count("id"),
        producer: text("producer"),
        made_at: text("made_at"),
        made_at_ms: int("made_at_ms"),
        age_ms: int("age_ms"),
        data_age_ms: v["data_age_ms"].as_i64(),
        clusters_seen: count("clusters_seen"),
        clusters_expected: count("clusters_expected"),
        machines_seen: count("machines_seen"),
        machines_expected: count("machines_expected"),
        span: v["span"].as_str().map(str::to_string),
        history: Vec::new(),
        computed_by: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(own: &str) -> Partition {
        let subset = |name: &str, tables: &[&str], node: &str| Subset {
            name: name.into(),
            tables: tables.iter().map(|t| t.to_string()).collect(),
            nodes: vec![Peer {
                name: node.into(),
                http: Some("127.0.0.1:1".parse().unwrap()),
            }],
        };
        Partition {
            set: "b".into(),
            own: Some(own.into()),
            subsets: vec![
                subset("b1", &["processes", "sys"], "sb1"),
                subset("b2", &["filesystem", "sys"], "sb2"),
            ],
        }
    }

    fn tables(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn a_query_runs_where_its_tables_are_served() {
        let p = partition("b1");
        assert_eq!(
            p.route(&tables(&["processes", "sys"])).unwrap(),
            Route::Here
        );
        assert_eq!(p.route(&tables(&[])).unwrap(), Route::Here);
        match p.route(&tables(&["filesystem"])).unwrap() {
            Route::Elsewhere { subset, nodes } => {
                assert_eq!(subset, "b2");
                assert_eq!(nodes[0].name, "sb2");
            }
            other => panic!("{other:?}"),
        }
        let e = p
            .route(&tables(&["processes", "filesystem"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`filesystem` by subset b2") && e.contains("`processes` by subset b1"),
            "{e}"
        );
        let whole = Partition {
            own: None,
            ..partition("b1")
        };
        assert_eq!(
            whole.route(&tables(&["processes", "filesystem"])).unwrap(),
            Route::Here
        );
    }
}
