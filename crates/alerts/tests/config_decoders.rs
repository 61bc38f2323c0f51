//! Property tests of the TOML an operator (or whoever can write the
//! watched directories) gives a node (issue 17 item 7): alert definitions,
//! alert routes and the topology, random and mutations of valid ones,
//! load or are refused with an error, never a panic.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use fleetsql_alerts::{AlertDefinition, RouteConfig};
use fleetsql_tiers::Topology;
use proptest::prelude::*;

const ALERTS: &[&str] = &[
    include_str!("../../../alerts/examples/high_cpu.toml"),
    include_str!("../../../alerts/examples/disk_space.toml"),
    include_str!("../../../alerts/examples/few_machines.toml"),
];

const ROUTES: &str = r#"
[route.ops]
kind = "webhook"
url = "https://hooks.example.com/fleet"
retries = 3
backoff = "1s"

[route.mail]
kind = "email"
smtp = "127.0.0.1:25"
to = ["ops@example.com"]

[route.trap]
kind = "snmp"
target = "127.0.0.1:162"
"#;

const TOPOLOGY: &str = r#"
tick = "5s"
table_expiry = "10m"
[agents.a1]
cluster = "c1"
flight = "127.0.0.1:7101"
http = "127.0.0.1:7102"
publish = "127.0.0.1:7070"
prewarm = ["sys"]
[proxies.p1]
cluster = "c1"
flight = "127.0.0.1:7201"
[tlas.tla]
flight = "127.0.0.1:7301"
[sqlnodes.sql]
tlas = { tla = 0 }
pg = "127.0.0.1:5433"
http = "127.0.0.1:8080"
query_timeout = "30s"
table_wait = "5s"
query_memory_mib = 1024
max_requested_tables = 4096
"#;

/// Values that have broken config loaders: overflowing durations and
/// numbers, wrong types, empty and odd strings.
const VALUES: &[&str] = &[
    "\"99999999999999999999999\"",
    "\"18446744073709551616s\"",
    "\"1e300\"",
    "\"999999999999h\"",
    "\"0\"",
    "\"-1s\"",
    "\"nan\"",
    "\"\"",
    "\".\"",
    "\"5 parsecs\"",
    "18446744073709551615",
    "9223372036854775807",
    "-9223372036854775808",
    "1e308",
    "-1",
    "0",
    "nan",
    "inf",
    "true",
    "[]",
    "{}",
    "[[1], \"a\"]",
    "\"\\u0000\"",
    "\"999.999.999.999:99999\"",
    "\"[::1]:0\"",
];

#[derive(Debug, Clone)]
enum Edit {
    /// Replaces the value of the `line`-th `key = value` line.
    Value {
        line: usize,
        value: usize,
    },
    DeleteLine {
        line: usize,
    },
    DuplicateLine {
        line: usize,
    },
    Chars {
        at: usize,
        insert: String,
        delete: usize,
    },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<usize>(), any::<usize>()).prop_map(|(line, value)| Edit::Value { line, value }),
        1 => any::<usize>().prop_map(|line| Edit::DeleteLine { line }),
        1 => any::<usize>().prop_map(|line| Edit::DuplicateLine { line }),
        2 => (any::<usize>(), "[\\[\\]{}=\"'.,#a-z0-9\n ]{0,8}", 0..6usize)
            .prop_map(|(at, insert, delete)| Edit::Chars { at, insert, delete }),
    ]
}

fn apply(text: &str, edit: &Edit) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        return text.to_string();
    }
    let n = lines.len();
    match edit {
        Edit::Value { line, value } => {
            let assignments: Vec<usize> = (0..n).filter(|i| lines[*i].contains(" = ")).collect();
            if let Some(&i) = assignments.get(line % assignments.len().max(1)) {
                let key = lines[i].split(" = ").next().unwrap_or_default().to_string();
                lines[i] = format!("{key} = {}", VALUES[value % VALUES.len()]);
            }
        }
        Edit::DeleteLine { line } => {
            lines.remove(line % n);
        }
        Edit::DuplicateLine { line } => {
            let copy = lines[line % n].clone();
            lines.insert(line % n, copy);
        }
        Edit::Chars { at, insert, delete } => {
            let chars: Vec<char> = lines.join("\n").chars().collect();
            let at = at % chars.len().max(1);
            let end = (at + delete).min(chars.len());
            return chars[..at]
                .iter()
                .copied()
                .chain(insert.chars())
                .chain(chars[end..].iter().copied())
                .collect();
        }
    }
    lines.join("\n")
}

fn mutated(base: &str, edits: &[Edit]) -> String {
    edits
        .iter()
        .fold(base.to_string(), |text, e| apply(&text, e))
}

fn alert(text: &str) {
    let routes: BTreeSet<String> = ["ops".to_string()].into();
    let _ = AlertDefinition::parse(text, Path::new("mutated.toml"), &routes);
}

fn routes(text: &str) {
    if let Ok(file) = toml::from_str::<BTreeMap<String, BTreeMap<String, RouteConfig>>>(text) {
        for route in file.values().flat_map(BTreeMap::values) {
            if let RouteConfig::Webhook { backoff, .. } = route {
                let _ = fleetsql_alerts::parse_duration(backoff);
            }
        }
    }
}

fn topology(text: &str) {
    if let Ok(topology) = Topology::parse(text) {
        let _ = topology.validate();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_alert_definitions_load_or_are_refused(
        which in any::<usize>(),
        edits in proptest::collection::vec(edit(), 1..5),
    ) {
        alert(&mutated(ALERTS[which % ALERTS.len()], &edits));
    }

    #[test]
    fn mutated_routes_load_or_are_refused(edits in proptest::collection::vec(edit(), 1..5)) {
        routes(&mutated(ROUTES, &edits));
    }

    #[test]
    fn mutated_topologies_load_or_are_refused(edits in proptest::collection::vec(edit(), 1..5)) {
        topology(&mutated(TOPOLOGY, &edits));
    }

    #[test]
    fn random_text_is_refused(text in "\\PC{0,300}") {
        alert(&text);
        routes(&text);
        topology(&text);
    }
}

#[test]
fn the_valid_files_load() {
    let routes: BTreeSet<String> = ["ops".to_string()].into();
    for text in ALERTS {
        AlertDefinition::parse(text, Path::new("example.toml"), &routes).expect("example loads");
    }
    Topology::parse(TOPOLOGY).expect("topology loads");
    let parsed: BTreeMap<String, BTreeMap<String, RouteConfig>> =
        toml::from_str(ROUTES).expect("routes load");
    assert_eq!(parsed["route"].len(), 3);
}

/// Found while writing the properties above: an `every` of more seconds than a
/// `Duration` holds panicked while the definition was loaded.
#[test]
fn an_overflowing_duration_is_refused() {
    let text = ALERTS[0].replace("every = \"2m\"", "every = \"99999999999999999999999\"");
    let routes: BTreeSet<String> = BTreeSet::new();
    let error = AlertDefinition::parse(&text, Path::new("big.toml"), &routes).unwrap_err();
    assert!(error.to_string().contains("every"), "{error}");
}
