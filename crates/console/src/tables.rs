//! `GET /v1/tables`: what the table browser shows.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, SchemaRef};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use fleetsql_model::{Generation, Table, origin};
use fleetsql_sqlnode::{GenerationHook, GenerationInfo, SYSTEM_TABLES, SqlNode};
use serde::Serialize;

use crate::ConsoleState;

/// At most this many publishing machines are named per table; the total is
/// always given.
const PUBLISHERS_NAMED: usize = 200;

#[derive(Debug, Clone, Serialize)]
pub struct ColumnInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    /// One of the columns the agent adds to every row (`_host`, ...).
    pub origin: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableInfo {
    pub name: String,
    /// `fleet` (published by machines), `static` (added by the TLA, no
    /// origin columns) or `system` (describes the generation itself).
    pub kind: &'static str,
    /// False when the table is available but was not collected in time.
    pub collected: bool,
    pub columns: Vec<ColumnInfo>,
    pub rows: u64,
    pub machines_with_rows: u64,
    /// The first [`PUBLISHERS_NAMED`] machines (`_host`) with rows, sorted.
    pub publishers: Vec<String>,
    pub publishers_total: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TablesAnswer {
    pub generation: GenerationInfo,
    pub tables: Vec<TableInfo>,
}

fn columns(schema: &SchemaRef) -> Vec<ColumnInfo> {
    schema
        .fields()
        .iter()
        .map(|f| ColumnInfo {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            origin: origin::COLUMNS.contains(&f.name().as_str()),
        })
        .collect()
}

fn publishers(table: &Table) -> BTreeSet<String> {
    let mut hosts = BTreeSet::new();
    let Ok(index) = table.schema().index_of(origin::HOST) else {
        return hosts;
    };
    for batch in table.batches() {
        let column = batch.column(index);
        if let DataType::Utf8 = column.data_type() {
            let values = column.as_string::<i32>();
            for i in 0..values.len() {
                if values.is_valid(i) && !hosts.contains(values.value(i)) {
                    hosts.insert(values.value(i).to_string());
                }
            }
        }
    }
    hosts
}

fn fleet_table(generation: &Generation, name: &str) -> TableInfo {
    let stats = generation.meta.visibility.tables.get(name);
    match generation.table(name) {
        Some(table) => {
            let hosts = publishers(table);
            let is_fleet = table.schema().index_of(origin::HOST).is_ok();
            TableInfo {
                name: name.to_string(),
                kind: if is_fleet { "fleet" } else { "static" },
                collected: true,
                columns: columns(table.schema()),
                rows: table.num_rows() as u64,
                machines_with_rows: stats.map_or(hosts.len() as u64, |s| s.machines_with_rows),
                publishers_total: hosts.len() as u64,
                publishers: hosts.into_iter().take(PUBLISHERS_NAMED).collect(),
            }
        }
        None => TableInfo {
            name: name.to_string(),
            kind: "fleet",
            collected: false,
            columns: Vec::new(),
            rows: stats.map_or(0, |s| s.rows),
            machines_with_rows: stats.map_or(0, |s| s.machines_with_rows),
            publishers: Vec::new(),
            publishers_total: 0,
        },
    }
}

/// The fleet tables' descriptions of one generation, made at the first
/// request in that generation and shared by every later one (naming the
/// publishers reads every `_host` of every table: at 100k machines, too
/// much to redo per page load). A per-generation hook drops it when the
/// node installs the next generation, as the seed's views are cached until
/// the generation changes.
#[derive(Debug, Default)]
pub(crate) struct ListingCache {
    current: Mutex<Option<Listing>>,
}

#[derive(Debug, Clone)]
struct Listing {
    producer: String,
    id: u64,
    tables_held: usize,
    tables: Arc<Vec<TableInfo>>,
}

impl ListingCache {
    fn get(&self, generation: &Generation) -> Option<Arc<Vec<TableInfo>>> {
        let current = self.current.lock().ok()?;
        current
            .as_ref()
            .filter(|l| {
                l.producer == generation.meta.producer
                    && l.id == generation.meta.id
                    && l.tables_held == generation.tables.len()
            })
            .map(|l| l.tables.clone())
    }

    fn put(&self, generation: &Generation, tables: Arc<Vec<TableInfo>>) {
        if let Ok(mut current) = self.current.lock() {
            *current = Some(Listing {
                producer: generation.meta.producer.clone(),
                id: generation.meta.id,
                tables_held: generation.tables.len(),
                tables,
            });
        }
    }
}

impl GenerationHook for ListingCache {
    fn name(&self) -> &str {
        "console table browser"
    }

    /// Wants no tables: the browser asks for what it shows when opened.
    fn on_generation(&self, generation: &Arc<Generation>) {
        if let Ok(mut current) = self.current.lock()
            && current.as_ref().is_some_and(|l| {
                l.producer != generation.meta.producer || l.id != generation.meta.id
            })
        {
            *current = None;
        }
    }
}

/// Every table of the current generation, described. Tables that are
/// available but not collected yet are requested first, and the answer
/// waits (at most the node's table wait) for a generation that has them,
/// so a browser shows columns rather than names only.
pub async fn describe_tables(node: &SqlNode) -> TablesAnswer {
    describe_tables_cached(node, None).await
}

async fn describe_tables_cached(node: &SqlNode, cache: Option<&ListingCache>) -> TablesAnswer {
    let mut generation = node.current();
    let missing: BTreeSet<String> = generation
        .meta
        .available
        .iter()
        .filter(|name| generation.table(name).is_none())
        .cloned()
        .collect();
    if !missing.is_empty() {
        node.request_tables(&missing);
        let mut updates = node.subscribe();
        let covered = |g: &Arc<Generation>| missing.iter().all(|name| g.table(name).is_some());
        if let Ok(Ok(g)) =
            tokio::time::timeout(node.config().table_wait, updates.wait_for(covered)).await
        {
            generation = g.clone();
        } else {
            generation = node.current();
        }
    }
    let fleet = match cache.and_then(|c| c.get(&generation)) {
        Some(fleet) => fleet,
        None => {
            let mut names: BTreeSet<&String> = generation.meta.available.iter().collect();
            names.extend(generation.tables.keys());
            let fleet: Arc<Vec<TableInfo>> = Arc::new(
                names
                    .into_iter()
                    .map(|name| fleet_table(&generation, name))
                    .collect(),
            );
            if let Some(cache) = cache {
                cache.put(&generation, fleet.clone());
            }
            fleet
        }
    };
    let mut tables: Vec<TableInfo> = fleet.as_ref().clone();
    for name in SYSTEM_TABLES {
        // A system table is built per query; its schema and size come from
        // asking for it, which also keeps this list right as tables are added.
        if let Ok(output) = node.query(&format!("SELECT * FROM {name}")).await {
            tables.push(TableInfo {
                name: name.to_string(),
                kind: "system",
                collected: true,
                columns: columns(&output.schema),
                rows: output.num_rows() as u64,
                machines_with_rows: 0,
                publishers: Vec::new(),
                publishers_total: 0,
            });
        }
    }
    TablesAnswer {
        generation: GenerationInfo::of(&generation),
        tables,
    }
}

pub(crate) async fn handler(State(state): State<ConsoleState>) -> Response {
    axum::Json(describe_tables_cached(&state.node, Some(&state.listing)).await).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation(producer: &str, id: u64) -> Arc<Generation> {
        let mut generation = Generation::empty(producer);
        generation.meta.id = id;
        Arc::new(generation)
    }

    #[test]
    fn the_listing_lasts_one_generation() {
        let cache = ListingCache::default();
        let first = generation("t1", 7);
        let listing = Arc::new(vec![fleet_table(&first, "sys")]);
        cache.put(&first, listing.clone());
        assert!(cache.get(&first).is_some_and(|l| Arc::ptr_eq(&l, &listing)));
        // Offered again (the same generation): kept.
        cache.on_generation(&first);
        assert!(cache.get(&first).is_some());
        // The node moves on, or to another TLA: dropped.
        cache.on_generation(&generation("t1", 8));
        assert!(cache.get(&first).is_none());
        cache.put(&first, listing);
        assert!(cache.get(&generation("t2", 7)).is_none());
    }
}
