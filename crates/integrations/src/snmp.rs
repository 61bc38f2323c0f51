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
//! The SNMPv2c messages (GETBULK out, Response in) are encoded here in a
//! few lines of BER: the `snmp2` crate pulls `asn1-rs`, whose dependencies
//! change features of crates DataFusion shares (a full rebuild for every
//! build of the workspace). SNMPv3 (USM: authNoPriv with HMAC-SHA-96,
//! authPriv adding AES-128) wraps the same PDUs; see `snmp_usm`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use async_trait::async_trait;
use tokio::net::UdpSocket;

use crate::config::SnmpConfig;
use crate::error::{IntegrationError, Result};
use crate::snmp_usm;
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
    let (oid, name, columns): (Vec<u64>, String, &'static [&'static str]) = match text
        .to_ascii_lowercase()
        .as_str()
    {
        "iftable" => (vec![1, 3, 6, 1, 2, 1, 2, 2], "iftable".into(), &IF_TABLE),
        "ifxtable" => (
            vec![1, 3, 6, 1, 2, 1, 31, 1, 1],
            "ifxtable".into(),
            &IF_X_TABLE,
        ),
        other => {
            let oid = other
                .trim_start_matches('.')
                .split('.')
                .map(|p| p.parse::<u64>())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|_| format!("`{text}` is neither ifTable, ifXTable nor a dotted OID"))?;
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

/// An SNMP value as decoded from a response.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int(i64),
    Bytes(Vec<u8>),
    Oid(Vec<u64>),
    Ip([u8; 4]),
    Null,
    /// noSuchObject, noSuchInstance, endOfMibView.
    End,
    Other(u8),
}

fn cell(value: &Value) -> Option<Cell> {
    Some(match value {
        Value::Int(n) => Cell::Int(*n),
        Value::Bytes(bytes) => Cell::Text(match std::str::from_utf8(bytes) {
            Ok(s) if s.chars().all(|c| !c.is_control()) => s.to_string(),
            _ => bytes
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
        }),
        Value::Ip(a) => Cell::Text(format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])),
        Value::Oid(oid) => Cell::Text(dotted(oid)),
        Value::Null | Value::End | Value::Other(_) => return None,
    })
}

fn dotted(oid: &[u64]) -> String {
    oid.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

// --- BER, just what SNMPv2c GETBULK needs ---

fn ber_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
}

pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    ber_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

pub(crate) fn ber_int(n: i64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let mut start = 0;
    while start < 7
        && ((bytes[start] == 0 && bytes[start + 1] & 0x80 == 0)
            || (bytes[start] == 0xff && bytes[start + 1] & 0x80 != 0))
    {
        start += 1;
    }
    tlv(0x02, &bytes[start..])
}

fn ber_oid(oid: &[u64]) -> Vec<u8> {
    let mut content = Vec::new();
    let (a, b) = (
        oid.first().copied().unwrap_or(1),
        oid.get(1).copied().unwrap_or(3),
    );
    let mut parts = vec![a * 40 + b];
    parts.extend(oid.iter().skip(2));
    for part in parts {
        let mut groups = vec![(part & 0x7f) as u8];
        let mut rest = part >> 7;
        while rest > 0 {
            groups.push((rest & 0x7f) as u8 | 0x80);
            rest >>= 7;
        }
        content.extend(groups.into_iter().rev());
    }
    tlv(0x06, &content)
}

/// A GETBULK PDU for the names after `oid`.
fn getbulk_pdu(request_id: i32, oid: &[u64], repetitions: i64) -> Vec<u8> {
    let varbind = tlv(0x30, &[ber_oid(oid), vec![0x05, 0x00]].concat());
    tlv(
        0xa5,
        &[
            ber_int(i64::from(request_id)),
            ber_int(0),
            ber_int(repetitions),
            tlv(0x30, &varbind),
        ]
        .concat(),
    )
}

/// A v2c GETBULK request for the names after `oid`.
fn getbulk_request(community: &str, request_id: i32, oid: &[u64], repetitions: i64) -> Vec<u8> {
    let pdu = getbulk_pdu(request_id, oid, repetitions);
    tlv(
        0x30,
        &[ber_int(1), tlv(0x04, community.as_bytes()), pdu].concat(),
    )
}

pub(crate) struct Reader<'a> {
    pub(crate) data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn next(&mut self) -> std::result::Result<(u8, &'a [u8]), String> {
        let short = || "truncated SNMP message".to_string();
        let (&tag, rest) = self.data.split_first().ok_or_else(short)?;
        let (&first, mut rest) = rest.split_first().ok_or_else(short)?;
        let len = if first & 0x80 == 0 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return Err("bad BER length".into());
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return Err(short());
        }
        self.data = &rest[len..];
        Ok((tag, &rest[..len]))
    }

    pub(crate) fn expect(&mut self, want: u8) -> std::result::Result<&'a [u8], String> {
        match self.next()? {
            (tag, content) if tag == want => Ok(content),
            (tag, _) => Err(format!("expected BER tag {want:#04x}, found {tag:#04x}")),
        }
    }
}

pub(crate) fn decode_int(content: &[u8]) -> i64 {
    let negative = content.first().is_some_and(|b| b & 0x80 != 0);
    content
        .iter()
        .fold(if negative { -1i64 } else { 0 }, |acc, b| {
            (acc << 8) | i64::from(*b)
        })
}

fn decode_unsigned(content: &[u8]) -> i64 {
    let v = content
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn decode_oid(content: &[u8]) -> std::result::Result<Vec<u64>, String> {
    let mut parts = Vec::new();
    let mut current = 0u64;
    for b in content {
        current = (current << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            parts.push(current);
            current = 0;
        }
    }
    let first = *parts.first().ok_or("empty OID")?;
    let (a, b) = if first < 80 {
        (first / 40, first % 40)
    } else {
        (2, first - 80)
    };
    let mut oid = vec![a, b];
    oid.extend(&parts[1..]);
    Ok(oid)
}

/// A decoded Response: request id, error status, varbinds.
type Response = (i64, i64, Vec<(Vec<u64>, Value)>);

fn decode_response(message: &[u8]) -> std::result::Result<Response, String> {
    let mut outer = Reader { data: message };
    let mut msg = Reader {
        data: outer.expect(0x30)?,
    };
    msg.expect(0x02)?;
    msg.expect(0x04)?;
    decode_pdu(msg.expect(0xa2)?)
}

/// The content of a Response PDU.
fn decode_pdu(content: &[u8]) -> std::result::Result<Response, String> {
    let mut pdu = Reader { data: content };
    let request_id = decode_int(pdu.expect(0x02)?);
    let error_status = decode_int(pdu.expect(0x02)?);
    pdu.expect(0x02)?;
    let mut list = Reader {
        data: pdu.expect(0x30)?,
    };
    let mut varbinds = Vec::new();
    while !list.data.is_empty() {
        let mut vb = Reader {
            data: list.expect(0x30)?,
        };
        let oid = decode_oid(vb.expect(0x06)?)?;
        let (tag, content) = vb.next()?;
        let value = match tag {
            0x02 => Value::Int(decode_int(content)),
            0x41 | 0x42 | 0x43 | 0x46 => Value::Int(decode_unsigned(content)),
            0x04 | 0x44 => Value::Bytes(content.to_vec()),
            0x06 => Value::Oid(decode_oid(content)?),
            0x40 if content.len() == 4 => {
                Value::Ip([content[0], content[1], content[2], content[3]])
            }
            0x05 => Value::Null,
            0x80..=0x82 => Value::End,
            other => Value::Other(other),
        };
        varbinds.push((oid, value));
    }
    Ok((request_id, error_status, varbinds))
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
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            device, n,
        ))),
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

/// How requests are secured for one poll.
#[derive(Debug)]
enum Session {
    V2c,
    V3 {
        user: snmp_usm::UsmUser,
        engine: snmp_usm::Engine,
    },
}

/// Polls one device.
#[derive(Debug)]
pub struct SnmpPublisher {
    config: SnmpConfig,
    tables: Vec<TableSpec>,
    /// The v3 user (keys not yet localized), when `version = "3"`.
    user: Option<snmp_usm::UsmUser>,
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
        let user = (config.version == "3").then(|| {
            snmp_usm::UsmUser::new(
                config.user.as_deref().unwrap_or_default(),
                config.auth_password.as_deref(),
                config.priv_password.as_deref(),
            )
        });
        Ok(SnmpPublisher {
            config: config.clone(),
            tables,
            user,
        })
    }

    /// Sends one datagram and waits for the answer `accept` takes (late
    /// answers to earlier requests are skipped).
    async fn send_and_receive<T>(
        &self,
        socket: &UdpSocket,
        request: &[u8],
        mut accept: impl FnMut(&[u8]) -> Option<std::result::Result<T, String>>,
    ) -> Result<T> {
        let c = &self.config;
        let mut buf = vec![0u8; 65_536];
        socket
            .send(request)
            .await
            .map_err(|e| IntegrationError::Remote(format!("snmp {}: {e}", c.host)))?;
        loop {
            let n = match tokio::time::timeout(c.timeout, socket.recv(&mut buf)).await {
                Err(_) => {
                    let check = if c.version == "3" {
                        "the v3 user and its passwords (agents drop requests encrypted with a wrong priv_password unanswered)"
                    } else {
                        "the community"
                    };
                    return Err(IntegrationError::Remote(format!(
                        "snmp {}: no answer within {:?}; check the address, that snmpd runs, and {check}",
                        c.host, c.timeout
                    )));
                }
                Ok(Err(e)) => {
                    return Err(IntegrationError::Remote(format!("snmp {}: {e}", c.host)));
                }
                Ok(Ok(n)) => n,
            };
            match accept(&buf[..n]) {
                Some(Ok(answer)) => return Ok(answer),
                Some(Err(e)) => {
                    return Err(IntegrationError::BadInput(format!(
                        "snmp {}: unreadable response: {e}",
                        c.host
                    )));
                }
                None => continue,
            }
        }
    }

    /// Starts a session: for v3, discovers the agent's engine and localizes the keys.
    async fn session(&self, socket: &UdpSocket) -> Result<Session> {
        let c = &self.config;
        let Some(user) = &self.user else {
            return Ok(Session::V2c);
        };
        let discovery = snmp_usm::discovery_request(0);
        let engine = self
            .send_and_receive(socket, &discovery, |answer| {
                match snmp_usm::decode(user, answer) {
                    Ok(snmp_usm::V3Answer::Report {
                        engine, problem, ..
                    }) if snmp_usm::is_unknown_engine(&problem) => Some(Ok(engine)),
                    Ok(other) => Some(Err(format!(
                        "unexpected answer to engine discovery: {other:?}"
                    ))),
                    Err(e) => Some(Err(e)),
                }
            })
            .await?;
        if engine.id.is_empty() {
            return Err(IntegrationError::Remote(format!(
                "snmp {}: the agent announced no engine id",
                c.host
            )));
        }
        let mut user = user.clone();
        user.localize(&engine.id);
        Ok(Session::V3 { user, engine })
    }

    /// One GETBULK exchange: (error status, varbinds).
    async fn getbulk(
        &self,
        socket: &UdpSocket,
        session: &mut Session,
        request_id: i32,
        next: &[u64],
    ) -> Result<(i64, Vec<(Vec<u64>, Value)>)> {
        let c = &self.config;
        let (user, engine) = match session {
            Session::V2c => {
                let request = getbulk_request(&c.community, request_id, next, 25);
                return self
                    .send_and_receive(socket, &request, |answer| match decode_response(answer) {
                        Ok((id, status, varbinds)) if id == i64::from(request_id) => {
                            Some(Ok((status, varbinds)))
                        }
                        Ok(_) => None,
                        Err(e) => Some(Err(e)),
                    })
                    .await;
            }
            Session::V3 { user, engine } => (user, engine),
        };
        let pdu = getbulk_pdu(request_id, next, 25);
        // One resend when the agent's clock moved out of our window.
        for _ in 0..2 {
            let salt = (u64::from(std::process::id()) << 32) | request_id as u32 as u64;
            let request = snmp_usm::request(user, engine, request_id, &pdu, salt);
            let answer = self
                .send_and_receive(socket, &request, |answer| {
                    match snmp_usm::decode(user, answer) {
                        Ok(snmp_usm::V3Answer::Report { msg_id, .. })
                            if msg_id != i64::from(request_id) =>
                        {
                            None
                        }
                        Ok(a) => Some(Ok(a)),
                        Err(e) => Some(Err(e)),
                    }
                })
                .await;
            let answer = match answer {
                Err(IntegrationError::BadInput(e)) => {
                    return Err(IntegrationError::Remote(format!(
                        "{e} (SNMPv3 user `{}`)",
                        user.name
                    )));
                }
                other => other?,
            };
            match answer {
                snmp_usm::V3Answer::Pdu(0xa2, content) => {
                    let (_, status, varbinds) = decode_pdu(&content).map_err(|e| {
                        IntegrationError::BadInput(format!(
                            "snmp {}: unreadable response: {e}",
                            c.host
                        ))
                    })?;
                    return Ok((status, varbinds));
                }
                snmp_usm::V3Answer::Pdu(tag, _) => {
                    return Err(IntegrationError::BadInput(format!(
                        "snmp {}: expected a Response PDU, found tag {tag:#04x}",
                        c.host
                    )));
                }
                snmp_usm::V3Answer::Report {
                    problem,
                    engine: now,
                    ..
                } if snmp_usm::is_time_window(&problem) => *engine = now,
                snmp_usm::V3Answer::Report { problem, .. } => {
                    return Err(IntegrationError::Remote(format!(
                        "snmp {}: the agent refused SNMPv3 user `{}`: {problem}",
                        c.host, user.name
                    )));
                }
            }
        }
        Err(IntegrationError::Remote(format!(
            "snmp {}: the agent's clock keeps leaving the time window",
            c.host
        )))
    }

    async fn walk(
        &self,
        socket: &UdpSocket,
        session: &mut Session,
        spec: &TableSpec,
    ) -> Result<(Walked, u64)> {
        let c = &self.config;
        let mut entry = spec.oid.clone();
        entry.push(1);
        let mut next = entry.clone();
        let mut rows = Walked::new();
        let mut bad = 0u64;
        // Bounded: a device answering forever (or looping) stops here.
        for request_id in 1..10_000i32 {
            let (status, varbinds) = self.getbulk(socket, session, request_id, &next).await?;
            if status != 0 {
                return Err(IntegrationError::Remote(format!(
                    "snmp {}: the agent answered error status {status}",
                    c.host
                )));
            }
            let mut last = None;
            let mut done = false;
            for (oid, value) in varbinds {
                if !oid.starts_with(&entry) || oid.len() < entry.len() + 2 || value == Value::End {
                    done = true;
                    break;
                }
                let column = oid[entry.len()];
                let index = oid[entry.len() + 1..].to_vec();
                match cell(&value) {
                    Some(v) => {
                        rows.entry(index).or_default().insert(column, v);
                    }
                    None => bad += 1,
                }
                last = Some(oid);
            }
            match last {
                Some(oid) if !done && oid > next => next = oid,
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
        // A fresh socket per poll: a timed-out request's late answer cannot
        // be mistaken for the next poll's.
        let remote = tokio::net::lookup_host(c.host.as_str())
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                IntegrationError::Remote(format!("snmp {}: cannot resolve the address", c.host))
            })?;
        let local = if remote.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let socket = UdpSocket::bind(local)
            .await
            .map_err(|e| IntegrationError::Remote(format!("snmp {}: {e}", c.host)))?;
        socket
            .connect(remote)
            .await
            .map_err(|e| IntegrationError::Remote(format!("snmp {}: {e}", c.host)))?;
        let mut session = self.session(&socket).await?;
        let mut polled = Polled::default();
        for spec in &self.tables {
            let (rows, bad) = self.walk(&socket, &mut session, spec).await?;
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
        assert_eq!(
            table_spec("1.3.6.1.4.1.9", "").unwrap().name,
            "t1_3_6_1_4_1_9"
        );
        assert!(table_spec("nonsense", "").is_err());
        let mut rows = Walked::new();
        rows.entry(vec![1]).or_default().insert(1, Cell::Int(1));
        rows.entry(vec![1])
            .or_default()
            .insert(2, Cell::Text("lo".into()));
        rows.entry(vec![2]).or_default().insert(1, Cell::Int(2));
        let b = table_batch("sw", &s, &rows);
        let names: Vec<_> = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["device", "index", "ifindex", "ifdescr"]);
        assert_eq!(b.num_rows(), 2);
        assert_eq!(
            cell(&Value::Bytes(vec![0, 1, 0xab])),
            Some(Cell::Text("00:01:ab".into()))
        );
    }

    #[test]
    fn ber_round_trips() {
        let oid = vec![1, 3, 6, 1, 2, 1, 2, 2, 1, 300_000];
        let encoded = ber_oid(&oid);
        assert_eq!(decode_oid(&encoded[2..]).unwrap(), oid);
        for n in [0i64, 127, 128, -1, -129, i64::from(i32::MAX)] {
            let e = ber_int(n);
            assert_eq!(decode_int(&e[2..]), n, "{e:?}");
        }
        let request = getbulk_request("public", 7, &[1, 3, 6, 1], 25);
        assert_eq!(usize::from(request[1]), request.len() - 2);
        assert!(decode_response(&request).unwrap_err().contains("0xa2"));
        assert!(decode_response(&[0x30, 0x05, 0x02]).is_err());
    }
}
