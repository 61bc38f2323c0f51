use std::collections::BTreeMap;
use std::fmt::Write;

use parking_lot::Mutex;

/// Bytes and rows of one table in one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableTransfer {
    /// Encoded Flight bytes (IPC header + compressed body + app metadata).
    pub bytes: u64,
    pub rows: u64,
}

/// A copy of a [`TransferStats`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferSnapshot {
    pub sent: BTreeMap<String, TableTransfer>,
    pub received: BTreeMap<String, TableTransfer>,
    /// Bytes of generation headers (metadata messages), not of any table.
    pub header_bytes_sent: u64,
    pub header_bytes_received: u64,
    /// `DoGet` calls answered (server) or made (client).
    pub calls: u64,
    /// Calls that failed: the source failed, or the stream was rejected.
    pub failures: u64,
    /// Tables that travelled as column diffs (only changed columns, or
    /// nothing for a table equal to the parent's copy).
    pub diff_tables_sent: u64,
    pub diff_tables_received: u64,
}

impl TransferSnapshot {
    pub fn rows_sent(&self, table: &str) -> u64 {
        self.sent.get(table).map_or(0, |t| t.rows)
    }

    pub fn rows_received(&self, table: &str) -> u64 {
        self.received.get(table).map_or(0, |t| t.rows)
    }

    pub fn bytes_sent(&self, table: &str) -> u64 {
        self.sent.get(table).map_or(0, |t| t.bytes)
    }

    pub fn bytes_received(&self, table: &str) -> u64 {
        self.received.get(table).map_or(0, |t| t.bytes)
    }
}

/// Transfer counters of one server or one client, shared with its tasks.
///
/// Counters only grow (Prometheus counters); a table appears once it has
/// been transferred, which is what the on-demand collection tests assert
/// on: a table nobody asked for never shows up.
#[derive(Debug, Default)]
pub struct TransferStats {
    inner: Mutex<TransferSnapshot>,
}

impl TransferStats {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn snapshot(&self) -> TransferSnapshot {
        self.inner.lock().clone()
    }

    pub(crate) fn add_sent(&self, table: &str, bytes: u64, rows: u64) {
        let mut inner = self.inner.lock();
        let entry = inner.sent.entry(table.to_string()).or_default();
        entry.bytes += bytes;
        entry.rows += rows;
    }

    pub(crate) fn add_received(&self, table: &str, bytes: u64, rows: u64) {
        let mut inner = self.inner.lock();
        let entry = inner.received.entry(table.to_string()).or_default();
        entry.bytes += bytes;
        entry.rows += rows;
    }

    pub(crate) fn add_header_sent(&self, bytes: u64) {
        self.inner.lock().header_bytes_sent += bytes;
    }

    pub(crate) fn add_header_received(&self, bytes: u64) {
        self.inner.lock().header_bytes_received += bytes;
    }

    pub(crate) fn add_diff_sent(&self, tables: u64) {
        self.inner.lock().diff_tables_sent += tables;
    }

    pub(crate) fn add_diff_received(&self, tables: u64) {
        self.inner.lock().diff_tables_received += tables;
    }

    pub(crate) fn add_call(&self) {
        self.inner.lock().calls += 1;
    }

    pub(crate) fn add_failure(&self) {
        self.inner.lock().failures += 1;
    }
}

/// Renders transfer counters as Prometheus text.
///
/// Each part is a label set (e.g. `[("peer", "proxy-a")]` or
/// `[("role", "server")]`) and a snapshot; a process with one server and
/// many clients renders them all in one call so every metric family gets
/// exactly one `# TYPE` line. Output lines look like
/// `fleetsql_flight_rows_sent_total{peer="tla",table="sys"} 123`.
pub fn render_prometheus(parts: &[(&[(&str, &str)], &TransferSnapshot)]) -> String {
    type Pick = fn(&TransferSnapshot) -> Vec<(Option<&str>, u64)>;
    let families: [(&str, &str, Pick); 10] = [
        (
            "fleetsql_flight_bytes_sent_total",
            "Flight bytes sent per table",
            |s| {
                s.sent
                    .iter()
                    .map(|(t, c)| (Some(t.as_str()), c.bytes))
                    .collect()
            },
        ),
        (
            "fleetsql_flight_rows_sent_total",
            "Rows sent per table",
            |s| {
                s.sent
                    .iter()
                    .map(|(t, c)| (Some(t.as_str()), c.rows))
                    .collect()
            },
        ),
        (
            "fleetsql_flight_bytes_received_total",
            "Flight bytes received per table",
            |s| {
                s.received
                    .iter()
                    .map(|(t, c)| (Some(t.as_str()), c.bytes))
                    .collect()
            },
        ),
        (
            "fleetsql_flight_rows_received_total",
            "Rows received per table",
            |s| {
                s.received
                    .iter()
                    .map(|(t, c)| (Some(t.as_str()), c.rows))
                    .collect()
            },
        ),
        (
            "fleetsql_flight_header_bytes_sent_total",
            "Generation header bytes sent",
            |s| vec![(None, s.header_bytes_sent)],
        ),
        (
            "fleetsql_flight_header_bytes_received_total",
            "Generation header bytes received",
            |s| vec![(None, s.header_bytes_received)],
        ),
        (
            "fleetsql_flight_diff_tables_sent_total",
            "Tables sent as column diffs against the parent's copy",
            |s| vec![(None, s.diff_tables_sent)],
        ),
        (
            "fleetsql_flight_diff_tables_received_total",
            "Tables received as column diffs against this node's copy",
            |s| vec![(None, s.diff_tables_received)],
        ),
        (
            "fleetsql_flight_calls_total",
            "DoGet calls served or made",
            |s| vec![(None, s.calls)],
        ),
        (
            "fleetsql_flight_failures_total",
            "DoGet calls that failed",
            |s| vec![(None, s.failures)],
        ),
    ];
    let mut out = String::new();
    for (name, help, pick) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (labels, snapshot) in parts {
            for (table, value) in pick(snapshot) {
                let mut rendered: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                    .collect();
                if let Some(table) = table {
                    rendered.push(format!("table=\"{}\"", escape_label(table)));
                }
                if rendered.is_empty() {
                    let _ = writeln!(out, "{name} {value}");
                } else {
                    let _ = writeln!(out, "{name}{{{}}} {value}", rendered.join(","));
                }
            }
        }
    }
    out
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_type_line_per_family_and_labels() {
        let server = TransferStats::new();
        server.add_sent("sys", 100, 3);
        let client = TransferStats::new();
        client.add_received("sys", 100, 3);
        client.add_call();
        let (s, c) = (server.snapshot(), client.snapshot());
        let text = render_prometheus(&[
            (&[("role", "server")], &s),
            (&[("role", "client"), ("peer", "p\"1")], &c),
        ]);
        assert!(
            text.contains("fleetsql_flight_rows_sent_total{role=\"server\",table=\"sys\"} 3\n")
        );
        assert!(text.contains(
            "fleetsql_flight_rows_received_total{role=\"client\",peer=\"p\\\"1\",table=\"sys\"} 3\n"
        ));
        assert_eq!(
            text.matches("# TYPE fleetsql_flight_calls_total").count(),
            1
        );
        assert!(text.contains("fleetsql_flight_calls_total{role=\"client\",peer=\"p\\\"1\"} 1\n"));
    }
}
