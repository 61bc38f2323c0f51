//! SNMP gateway: polls devices' tables (SNMP v2c) and publishes them as
//! fleet tables.
//!
//! Each configured table is walked with GETBULK under its entry OID
//! (`<table>.1`); the instance suffix becomes the `index` column and each
//! column number a column, named from the MIB for the tables known here
//! (IF-MIB `ifTable`, `ifXTable`) and `c<N>` otherwise. A column whose
//! values are all integers (INTEGER, Counter32/64, Gauge, TimeTicks) is
//! `Int64`, any other column text (printable strings as they are, other
//! octets as `aa:bb:..` hex, addresses and OIDs dotted).
//!
//! SNMPv3 is left out: the `snmp2` crate's v3 support requires `rand`
//! features that would change the workspace's shared dependency graph.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use async_trait::async_trait;
use snmp2::{AsyncSession, Oid, Value};

use crate::config::SnmpConfig;
use crate::error::{IntegrationError, Result};
use crate::{Polled, Publisher};

const IF_TABLE: [&str; 22] = [
    "ifindex",
    "ifdescr",
    "iftype",
    "ifmtu",
    "ifspeed",
    "ifphysaddress",
    "ifadminstatus",
    "ifoperstatus",
    "iflastchange",
    "ifinoctets",
    "ifinucastpkts",
    "ifinnucastpkts",
    "ifindiscards",
    "ifinerrors",
    "ifinunknownprotos",
    "ifoutoctets",
    "ifoutucastpkts",
    "ifoutnucastpkts",
    "ifoutdiscards",
    "ifouterrors",
    "ifoutqlen",
    "ifspecific",
];

const IF_X_TABLE: [&str; 19] = [
    "ifname",
    "ifinmulticastpkts",
    "ifinbroadcastpkts",
    "ifoutmulticastpkts",
    "ifoutbroadcastpkts",
    "ifhcinoctets",
    "ifhcinucastpkts",
    "ifhcinmulticastpkts",
    "ifhcinbroadcastpkts",
    "ifhcoutoctets",
    "ifhcoutucastpkts",
    "ifhcoutmulticastpkts",
    "ifhcoutbroadcastpkts",
    "iflinkupdowntrapenable",
    "ifhighspeed",
    "ifpromiscuousmode",
    "ifconnectorpresent",
    "ifalias",
    "ifcounterdiscontinuitytime",
];

/// A table to walk: OID, fleet table name, column names by number.
#[derive(Debug, Clone)]
struct TableSpec {
    oid: Vec<u64>,
    name: String,
    columns: &'static [&'static str],
}

fn table_spec(text: &str, prefix: &str) -> std::result::Result<TableSpec, String> {
    let (oid, name, columns): (Vec<u64>, String, &'static [&'static str]) =
        match text.to_ascii_lowercase().as_str() {
            "iftable" => (vec![1, 3, 6, 1, 2, 1, 2, 2], "iftable".into(), &IF_TABLE),
            "ifxtable" => (vec![1, 3, 6, 1, 2, 1, 31, 1, 1], "ifxtable".into(), &IF_X_TABLE),
            other => {
                let oid = other
                    .trim_start_matches('.')
                    .split('.')
                    .map(|p| p.parse::<u64>())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|_| {
                        format!("`{text}` is neither ifTable, ifXTable nor a dotted OID")
                    })?;
                (oid, format!("t{}", other.replace('.', "_")), &[])
            }
        };
    Ok(TableSpec {
        oid,
        name: format!("{prefix}{name}"),
        columns,
    })
}

/// One cell, owned.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Int(i64),
    Text(String),
}

fn cell(value: &Value<'_>) -> Option<Cell> {
    Some(match value {
        Value::Integer(n) => Cell::Int(*n),
        Value::Counter32(n) | Value::Unsigned32(n) | Value::Timeticks(n) => Cell::Int(i64::from(*n)),
        Value::Counter64(n) => Cell::Int(i64::try_from(*n).unwrap_or(i64::MAX)),
        Value::OctetString(bytes) => Cell::Text(match std::str::from_utf8(bytes) {
            Ok(s) if s.chars().all(|c| !c.is_control()) => s.to_string(),
            _ => bytes
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
        }),
        Value::IpAddress(a) => Cell::Text(format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])),
        Value::ObjectIdentifier(oid) => Cell::Text(oid.to_id_string()),
        Value::Boolean(b) => Cell::Int(i64::from(*b)),
        _ => return None,
    })
}

/// Walked rows: index suffix -> column number -> cell.
type Walked = BTreeMap<Vec<u64>, BTreeMap<u64, Cell>>;

/// The table as Arrow: `device`, `index`, then the columns in number order.
fn table_batch(device: &str, spec: &TableSpec, rows: &Walked) -> RecordBatch {
    let numbers: std::collections::BTreeSet<u64> =
        rows.values().flat_map(|r| r.keys().copied()).collect();
    let n = rows.len();
    let mut fields = vec![
        Field::new("device", DataType::Utf8, false),
        Field::new("index", DataType::Utf8, false),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(device, n))),
        Arc::new(StringArray::from_iter_values(rows.keys().map(|k| {
            k.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
        }))),
    ];
    for number in numbers {
        let name = usize::try_from(number)
            .ok()
            .and_then(|i| spec.columns.get(i.wrapping_sub(1)))
            .map_or_else(|| format!("c{number}"), |s| s.to_string());
        let cells: Vec<Option<&Cell>> = rows.values().map(|r| r.get(&number)).collect();
        if cells.iter().flatten().all(|c| matches!(c, Cell::Int(_))) {
            fields.push(Field::new(name, DataType::Int64, true));
            columns.push(Arc::new(Int64Array::from(
                cells
                    .iter()
                    .map(|c| match c {
                        Some(Cell::Int(i)) => Some(*i),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            )));
        } else {
            fields.push(Field::new(name, DataType::Utf8, true));
            columns.push(Arc::new(StringArray::from(
                cells
                    .iter()
                    .map(|c| {
                        c.map(|c| match c {
                            Cell::Int(i) => i.to_string(),
                            Cell::Text(t) => t.clone(),
                        })
                    })
                    .collect::<Vec<_>>(),
            )));
        }
    }
    let schema = Arc::new(Schema::new(fields));
    RecordBatch::try_new(schema.clone(), columns).unwrap_or_else(|_| RecordBatch::new_empty(schema))
}

/// Polls one device.
#[derive(Debug)]
pub struct SnmpPublisher {
    config: SnmpConfig,
    tables: Vec<TableSpec>,
}

impl SnmpPublisher {
    /// A publisher for `config` (nothing is sent yet).
    pub fn new(config: &SnmpConfig) -> Result<Self> {
        let tables = config
            .tables
            .iter()
            .map(|t| table_spec(t, &config.table_prefix))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| IntegrationError::Config(format!("snmp `{}`: {e}", config.name)))?;
        Ok(SnmpPublisher {
            config: config.clone(),
            tables,
        })
    }

    async fn walk(&self, session: &mut AsyncSession, spec: &TableSpec) -> Result<(Walked, u64)> {
        let c = &self.config;
        let mut entry = spec.oid.clone();
        entry.push(1);
        let mut next = entry.clone();
        let mut rows = Walked::new();
        let mut bad = 0u64;
        // Bounded: a device answering forever (or looping) stops here.
        for _ in 0..10_000 {
            let oid = Oid::from(&next).map_err(|e| {
                IntegrationError::BadInput(format!("snmp {}: OID {next:?}: {e:?}", c.host))
            })?;
            let answer = tokio::time::timeout(c.timeout, session.getbulk(&[&oid], 0, 25)).await;
            let pdu = match answer {
                Err(_) => {
                    return Err(IntegrationError::Remote(format!(
                        "snmp {}: no answer within {:?}; check the address, that snmpd runs, and the community",
                        c.host, c.timeout
                    )));
                }
                Ok(Err(e)) => {
                    return Err(IntegrationError::Remote(format!("snmp {}: {e:?}", c.host)));
                }
                Ok(Ok(pdu)) => pdu,
            };
            if pdu.error_status != 0 {
                return Err(IntegrationError::Remote(format!(
                    "snmp {}: the agent answered error status {}",
                    c.host, pdu.error_status
                )));
            }
            let mut last = None;
            let mut done = false;
            for (oid, value) in pdu.varbinds {
                let Some(parts) = oid.iter().map(|i| i.collect::<Vec<u64>>()) else {
                    bad += 1;
                    continue;
                };
                if !parts.starts_with(&entry)
                    || matches!(value, Value::EndOfMibView | Value::NoSuchObject)
                {
                    done = true;
                    break;
                }
                let column = parts[entry.len()];
                let index = parts[entry.len() + 1..].to_vec();
                match cell(&value) {
                    Some(v) => {
                        rows.entry(index).or_default().insert(column, v);
                    }
                    None => bad += 1,
                }
                last = Some(parts);
            }
            match last {
                Some(parts) if !done && parts > next => next = parts,
                _ => return Ok((rows, bad)),
            }
        }
        Ok((rows, bad))
    }
}

#[async_trait]
impl Publisher for SnmpPublisher {
    fn name(&self) -> &str {
        &self.config.name
    }
    fn kind(&self) -> &'static str {
        "snmp"
    }
    fn interval(&self) -> Duration {
        self.config.interval
    }
    async fn poll(&self) -> Result<Polled> {
        let c = &self.config;
        // A fresh session per poll: a timed-out request's late answer
        // cannot be mistaken for the next one's.
        let mut session = AsyncSession::new_v2c(c.host.as_str(), c.community.as_bytes(), 1)
            .await
            .map_err(|e| IntegrationError::Remote(format!("snmp {}: {e}", c.host)))?;
        let mut polled = Polled::default();
        for spec in &self.tables {
            let (rows, bad) = self.walk(&mut session, spec).await?;
            if bad > 0 {
                polled.bad_items += bad;
                polled.last_bad = Some(format!(
                    "snmp {}: {bad} unusable values in {}",
                    c.host, spec.name
                ));
            }
            polled
                .tables
                .push((spec.name.clone(), table_batch(&c.name, spec, &rows)));
        }
        Ok(polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_and_batches() {
        let s = table_spec("ifTable", "snmp_").unwrap();
        assert_eq!(s.name, "snmp_iftable");
        assert_eq!(table_spec("1.3.6.1.4.1.9", "").unwrap().name, "t1_3_6_1_4_1_9");
        assert!(table_spec("nonsense", "").is_err());
        let mut rows = Walked::new();
        rows.entry(vec![1]).or_default().insert(1, Cell::Int(1));
        rows.entry(vec![1]).or_default().insert(2, Cell::Text("lo".into()));
        rows.entry(vec![2]).or_default().insert(1, Cell::Int(2));
        let b = table_batch("sw", &s, &rows);
        let names: Vec<_> = b.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["device", "index", "ifindex", "ifdescr"]);
        assert_eq!(b.num_rows(), 2);
        assert_eq!(cell(&Value::OctetString(&[0, 1, 0xab])), Some(Cell::Text("00:01:ab".into())));
    }
}
