//! The simulator's promises: determinism, churn, the seed's conditions,
//! requested-only tables, origin columns, and a whole fleet merged through
//! real aggregators.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{Int64Type, TimestampMillisecondType};
use fleetsql_aggregator::{Aggregator, AggregatorConfig, Child, ChildGroup, FetchRequest};
use fleetsql_model::{Table, origin};
use fleetsql_sim::{
    CONTINENTS, DEMO_STATIC_FILES, REGIONS, Role, SimConfig, SimError, SimFleet, TABLES,
};

/// A tick in late 2026 with the default 5 s tick: realistic magnitudes.
const TICK: u64 = 357_000_000;

fn all_tables() -> BTreeSet<String> {
    TABLES.iter().map(|t| t.to_string()).collect()
}

fn one(table: &str) -> BTreeSet<String> {
    [table.to_string()].into()
}

fn small() -> SimConfig {
    SimConfig {
        clusters: 3,
        machines_per_cluster: 4,
        processes_per_machine: 30,
        ..SimConfig::default()
    }
}

fn batch(table: &Table) -> RecordBatch {
    concat_batches(table.schema(), table.batches()).unwrap()
}

/// The batch without `_published_at`, which moves every tick by design.
fn content(table: &Table) -> RecordBatch {
    let b = batch(table);
    let keep: Vec<usize> = (0..b.num_columns())
        .filter(|i| b.schema().field(*i).name() != origin::PUBLISHED_AT)
        .collect();
    b.project(&keep).unwrap()
}

fn ints(b: &RecordBatch, column: &str) -> Vec<i64> {
    let c = b.column_by_name(column).unwrap();
    c.as_primitive::<Int64Type>().values().to_vec()
}

fn strings(b: &RecordBatch, column: &str) -> Vec<String> {
    let c = b.column_by_name(column).unwrap();
    c.as_string::<i32>()
        .iter()
        .map(|s| s.unwrap().to_string())
        .collect()
}

#[test]
fn same_seed_same_rows_other_seed_other_rows() {
    let a = SimFleet::new(small()).unwrap();
    let b = SimFleet::new(small()).unwrap();
    let c = SimFleet::new(SimConfig { seed: 7, ..small() }).unwrap();
    let mut differs = false;
    for ((ma, mb), mc) in a.machines().zip(b.machines()).zip(c.machines()) {
        let ga = ma.generation_at(TICK, &all_tables()).unwrap();
        let gb = mb.generation_at(TICK, &all_tables()).unwrap();
        let gc = mc.generation_at(TICK, &all_tables()).unwrap();
        assert_eq!(ga.meta.id, gb.meta.id);
        for t in TABLES {
            assert_eq!(batch(&ga.tables[t]), batch(&gb.tables[t]), "{t}");
            differs |= gc.tables[t].num_rows() != ga.tables[t].num_rows()
                || batch(&gc.tables[t]) != batch(&ga.tables[t]);
        }
    }
    assert!(differs, "another seed must give another fleet");
}

#[test]
fn same_tick_same_generation_and_incremental_equals_fresh() {
    let fleet = SimFleet::new(small()).unwrap();
    let fresh = SimFleet::new(small()).unwrap();
    for (m, f) in fleet.machines().zip(fresh.machines()) {
        let first = m.generation_at(TICK, &all_tables()).unwrap();
        let again = m.generation_at(TICK, &all_tables()).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        // Advancing tick by tick re-samples only churned rows; the result
        // must equal a fleet that jumps straight to the last tick.
        let mut last = first;
        for t in 1..=5 {
            last = m.generation_at(TICK + t, &all_tables()).unwrap();
        }
        let direct = f.generation_at(TICK + 5, &all_tables()).unwrap();
        assert_eq!(last.meta.id, TICK + 5);
        assert_eq!(last.meta.made_at_ms, direct.meta.made_at_ms);
        for t in TABLES {
            assert_eq!(batch(&last.tables[t]), batch(&direct.tables[t]), "{t}");
        }
    }
}

/// Fraction of rows of `table` that differ between two consecutive ticks.
fn churned(fleet: &SimFleet, table: &str) -> f64 {
    let (mut changed, mut rows) = (0usize, 0usize);
    for m in fleet.machines() {
        let before = content(&m.generation_at(TICK, &one(table)).unwrap().tables[table]);
        let after = content(&m.generation_at(TICK + 1, &one(table)).unwrap().tables[table]);
        for r in 0..before.num_rows() {
            rows += 1;
            if before.slice(r, 1) != after.slice(r, 1) {
                changed += 1;
            }
        }
    }
    changed as f64 / rows as f64
}

#[test]
fn churn_fraction_is_roughly_as_configured() {
    let fleet = SimFleet::new(SimConfig {
        processes_per_machine: 50,
        ..SimConfig::default()
    })
    .unwrap();
    let processes = churned(&fleet, "processes");
    assert!(
        (0.08..0.12).contains(&processes),
        "processes churn {processes}"
    );
    let filesystem = churned(&fleet, "filesystem");
    assert!(
        (0.07..0.13).contains(&filesystem),
        "filesystem churn {filesystem}"
    );
    let sys = churned(&fleet, "sys");
    assert!((0.06..0.14).contains(&sys), "sys churn {sys}");

    let frozen = SimFleet::new(SimConfig {
        churn: 0.0,
        ..small()
    })
    .unwrap();
    assert_eq!(churned(&frozen, "processes"), 0.0);
    assert_eq!(churned(&frozen, "sys"), 0.0);
    let all = SimFleet::new(SimConfig {
        churn: 1.0,
        ..small()
    })
    .unwrap();
    assert!(churned(&all, "processes") > 0.95);
}

#[test]
fn dns_machines_have_processes_above_75_percent_rss() {
    let fleet = SimFleet::new(SimConfig::default()).unwrap();
    let wanted: BTreeSet<String> = ["sys".to_string(), "processes".to_string()].into();
    let (mut dns_hogs, mut other_hogs, mut dns) = (0, 0, 0);
    for m in fleet.machines() {
        let g = m.generation_at(TICK, &wanted).unwrap();
        let memtotal = ints(&batch(&g.tables["sys"]), "memtotal")[0];
        let hog = ints(&batch(&g.tables["processes"]), "rss")
            .iter()
            .any(|rss| (rss * 100) / memtotal > 75);
        if m.role() == Role::Dns {
            dns += 1;
            dns_hogs += usize::from(hog);
        } else {
            other_hogs += usize::from(hog);
        }
    }
    assert!(dns >= 30, "{dns} dns machines");
    assert!(
        (3..dns / 2).contains(&dns_hogs),
        "{dns_hogs} of {dns} dns machines above 75%"
    );
    // Some non-dns machines too, so the query's role filter matters.
    assert!(other_hogs > 0);
}

#[test]
fn a_few_disks_are_nearly_full() {
    let fleet = SimFleet::new(SimConfig::default()).unwrap();
    let (mut full, mut rows) = (0, 0);
    for m in fleet.machines() {
        let g = m.generation_at(TICK, &one("filesystem")).unwrap();
        let b = batch(&g.tables["filesystem"]);
        let (blocks, bavail, bfree) = (ints(&b, "blocks"), ints(&b, "bavail"), ints(&b, "bfree"));
        for r in 0..b.num_rows() {
            rows += 1;
            assert!(blocks[r] > 0 && bavail[r] <= bfree[r] && bfree[r] <= blocks[r]);
            full += usize::from((100 * bavail[r]) / blocks[r] < 3);
        }
    }
    assert!(
        (2..=rows / 50).contains(&full),
        "{full} of {rows} disks nearly full"
    );
}

#[tokio::test]
async fn fetch_answers_only_requested_tables_with_origin_columns() {
    let fleet = SimFleet::new(small()).unwrap();
    let m = &fleet.clusters()[1].machines[2];
    let request = FetchRequest {
        requester: "test".into(),
        tables: ["processes".to_string(), "no_such_table".to_string()].into(),
        ..Default::default()
    };
    let g = m.fetch(&request).await.unwrap();
    assert_eq!(g.tables.keys().collect::<Vec<_>>(), ["processes"]);
    assert_eq!(g.meta.available, all_tables());
    assert_eq!(g.meta.id, fleet.current_tick().max(g.meta.id));
    let v = &g.meta.visibility;
    assert_eq!(v.tables["processes"].machines_with_rows, 1);
    assert_eq!(v.tables["processes"].rows, 30);
    assert_eq!(v.tables["no_such_table"].machines_empty, 1);
    let cluster = &v.clusters["cluster-01"];
    assert_eq!((cluster.machines_expected, cluster.machines_seen), (1, 1));
    assert_eq!(cluster.newest_data_ms, Some(g.meta.made_at_ms));

    let b = batch(&g.tables["processes"]);
    assert_eq!(m.host(), "cluster-01-m002");
    assert!(strings(&b, origin::HOST).iter().all(|h| h == m.host()));
    assert!(strings(&b, origin::IP).iter().all(|ip| ip == m.ip()));
    assert!(strings(&b, "ip").iter().all(|ip| ip == m.ip()));
    assert!(
        strings(&b, origin::CLUSTER)
            .iter()
            .all(|c| c == "cluster-01")
    );
    let published = b.column_by_name(origin::PUBLISHED_AT).unwrap();
    let published = published.as_primitive::<TimestampMillisecondType>();
    assert!(published.values().iter().all(|t| *t == g.meta.made_at_ms));
    assert_eq!(published.null_count(), 0);

    // A second fetch in the same tick is the same generation.
    let again = m.fetch(&request).await.unwrap();
    if again.meta.id == g.meta.id {
        assert!(Arc::ptr_eq(&g, &again));
    }
}

#[tokio::test]
async fn long_poll_waits_for_the_next_tick() {
    let fleet = SimFleet::new(SimConfig {
        tick: Duration::from_millis(50),
        ..small()
    })
    .unwrap();
    let m = &fleet.clusters()[0].machines[0];
    let first = m.fetch(&FetchRequest::default()).await.unwrap();
    let next = m
        .fetch(&FetchRequest {
            since_generation: Some(first.meta.id),
            wait: Some(Duration::from_secs(5)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(next.meta.id > first.meta.id);
}

#[test]
fn continents_get_the_seeds_order_of_hits() {
    let fleet = SimFleet::new(SimConfig::default()).unwrap();
    let continent_of: BTreeMap<i64, &str> = REGIONS.iter().map(|r| (r.id, r.continent)).collect();
    let mut hits: BTreeMap<&str, i64> = BTreeMap::new();
    let mut empty = 0;
    for m in fleet.machines() {
        let g = m.generation_at(TICK, &one("load_info")).unwrap();
        let t = &g.tables["load_info"];
        if t.num_rows() == 0 {
            assert!(!m.role().serves_traffic());
            assert_eq!(g.meta.visibility.tables["load_info"].machines_empty, 1);
            empty += 1;
            continue;
        }
        let b = batch(t);
        for (region, h) in ints(&b, "georegion").into_iter().zip(ints(&b, "hits")) {
            *hits.entry(continent_of[&region]).or_default() += h;
        }
    }
    assert!(
        empty > 0,
        "db and storage machines publish no load_info rows"
    );
    let order = ["NAM", "EUR", "SAM", "ASI", "AFR", "OCE", "ANT"];
    for pair in order.windows(2) {
        assert!(hits[pair[0]] > hits[pair[1]], "{hits:?}");
    }
    assert!(hits["ANT"] > 0);
    // Totals stay near the seed's figures.
    let north_america = CONTINENTS.iter().find(|c| c.code == "NAM").unwrap().hits;
    assert!((hits["NAM"] as f64 / north_america - 1.0).abs() < 0.05);
}

#[test]
fn demo_static_tables_match_the_simulator() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../demo/static");
    let regions = std::fs::read_to_string(dir.join("region_data.csv")).unwrap();
    let mut lines = regions.lines();
    assert_eq!(lines.next(), Some("id,name,continent,country,city"));
    let rows: Vec<String> = lines.map(str::to_string).collect();
    let expected: Vec<String> = REGIONS
        .iter()
        .map(|r| {
            format!(
                "{},{},{},{},{}",
                r.id, r.name, r.continent, r.country, r.city
            )
        })
        .collect();
    assert_eq!(rows, expected);

    let continents = std::fs::read_to_string(dir.join("continent_data.csv")).unwrap();
    let mut lines = continents.lines();
    assert_eq!(lines.next(), Some("continent,continent_name"));
    let rows: Vec<String> = lines.map(str::to_string).collect();
    let expected: Vec<String> = CONTINENTS
        .iter()
        .map(|c| format!("{},{}", c.code, c.name))
        .collect();
    assert_eq!(rows, expected);
}

#[tokio::test]
async fn demo_static_files_load_from_the_repo_and_when_written_out() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../demo/static");
    let written = tempfile::tempdir().unwrap();
    for (name, contents) in DEMO_STATIC_FILES {
        assert_eq!(std::fs::read_to_string(repo.join(name)).unwrap(), contents);
        std::fs::write(written.path().join(name), contents).unwrap();
    }
    for dir in [repo.as_path(), written.path()] {
        let tables = fleetsql_aggregator::StaticTables::open(dir.join("index.toml")).unwrap();
        let g = tables
            .fetch(&FetchRequest {
                tables: ["region_data".to_string(), "continent_data".to_string()].into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(g.tables["region_data"].num_rows(), REGIONS.len());
        assert_eq!(g.tables["continent_data"].num_rows(), 7);
        // `georegion = id` must join Int64 to Int64.
        let id = g.tables["region_data"]
            .schema()
            .field_with_name("id")
            .unwrap()
            .clone();
        assert_eq!(id.data_type(), &arrow::datatypes::DataType::Int64);
    }
}

#[test]
fn bad_configs_are_refused() {
    for (config, field) in [
        (
            SimConfig {
                clusters: 0,
                ..SimConfig::default()
            },
            "clusters",
        ),
        (
            SimConfig {
                churn: 1.5,
                ..SimConfig::default()
            },
            "churn",
        ),
        (
            SimConfig {
                processes_per_machine: 0,
                ..SimConfig::default()
            },
            "processes_per_machine",
        ),
        (
            SimConfig {
                tick: Duration::ZERO,
                ..SimConfig::default()
            },
            "tick",
        ),
    ] {
        match SimFleet::new(config) {
            Err(SimError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected an error, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_fleet_merges_through_proxies_and_a_tla() {
    let fleet = SimFleet::new(SimConfig::default()).unwrap();
    // Long aggregator ticks: generations are made on request, not by timer.
    let tick = Duration::from_secs(3600);
    let proxies: Vec<Aggregator> = fleet
        .clusters()
        .iter()
        .map(|c| {
            Aggregator::start(
                AggregatorConfig::new(format!("proxy-{}", c.name), tick),
                c.child_groups(),
            )
        })
        .collect();
    let groups = fleet
        .clusters()
        .iter()
        .zip(&proxies)
        .map(|(c, p)| ChildGroup {
            name: c.name.clone(),
            members: vec![p.as_child()],
            expected: Some((c.name.clone(), c.machines.len() as u64)),
        })
        .collect();
    let tla = Aggregator::start(AggregatorConfig::new("tla", tick), groups);
    let g = tla
        .as_child()
        .fetch(&FetchRequest {
            requester: "sql".into(),
            tables: all_tables(),
            ..Default::default()
        })
        .await
        .unwrap();

    let machines = 500u64;
    let serving = fleet
        .machines()
        .filter(|m| m.role().serves_traffic())
        .count() as u64;
    let v = &g.meta.visibility;
    assert_eq!(v.machines_seen(), machines);
    assert_eq!(v.machines_expected(), machines);
    assert_eq!(v.clusters_seen(), 20);
    let mut offered = all_tables();
    offered.insert("fleet_nodes".to_string());
    assert_eq!(g.meta.available, offered);
    let rows = |t: &str| g.tables[t].num_rows() as u64;
    assert_eq!(rows("sys"), machines);
    assert_eq!(rows("machinerole"), machines);
    assert_eq!(rows("processes"), machines * 100);
    assert_eq!(rows("filesystem"), machines * 4);
    assert_eq!(rows("load_info"), serving);
    for t in TABLES {
        let tv = &v.tables[t];
        assert_eq!(tv.rows, rows(t), "{t}");
        assert_eq!(tv.machines_with_rows + tv.machines_empty, machines, "{t}");
        assert_eq!(tv.rejected_parts, 0, "{t}");
    }
    assert_eq!(v.tables["load_info"].machines_with_rows, serving);
    // Every machine's rows arrived with their origin.
    let hosts: BTreeSet<String> = strings(&batch(&g.tables["sys"]), origin::HOST)
        .into_iter()
        .collect();
    assert_eq!(hosts.len(), 500);
}

/// A simulated proxy's rows are its machines' rows, in machine order, at
/// every tick, whether built fresh or advanced tick by tick.
#[test]
fn a_simulated_proxy_sends_exactly_its_machines_rows() {
    let fleet = SimFleet::new(small()).unwrap();
    let proxies = fleet.proxies();
    assert_eq!(proxies.len(), fleet.clusters().len());
    for (proxy, cluster) in proxies.iter().zip(fleet.clusters()) {
        assert_eq!(proxy.cluster(), cluster.name);
        assert_eq!(proxy.machines(), cluster.machines.len());
        for tick in [TICK, TICK + 1, TICK + 4] {
            let merged = proxy.generation_at(tick, &all_tables()).unwrap();
            assert_eq!(merged.meta.id, tick);
            let seen = &merged.meta.visibility.clusters[&cluster.name];
            assert_eq!(seen.machines_seen, cluster.machines.len() as u64);
            for t in TABLES {
                let parts: Vec<RecordBatch> = cluster
                    .machines
                    .iter()
                    .map(|m| batch(&m.generation_at(tick, &one(t)).unwrap().tables[t]))
                    .filter(|b| b.num_rows() > 0)
                    .collect();
                let expected =
                    concat_batches(&fleetsql_sim::table_schema(t).unwrap(), &parts).unwrap();
                assert_eq!(batch(&merged.tables[t]), expected, "{t} at {tick}");
                let with_rows = merged.meta.visibility.tables[t].machines_with_rows;
                assert_eq!(with_rows, parts.len() as u64, "{t}");
            }
        }
    }
}
