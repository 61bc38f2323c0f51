//! SNMPv2c traps (RFC 3416 Trap-PDU in an RFC 1901 message), BER-encoded
//! here: the few types a trap needs do not justify an ASN.1 dependency.

use std::sync::OnceLock;
use std::time::Instant;

use serde_json::Value;

const SYS_UP_TIME: [u32; 9] = [1, 3, 6, 1, 2, 1, 1, 3, 0];
const SNMP_TRAP_OID: [u32; 11] = [1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0];

const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const OBJECT_IDENTIFIER: u8 = 0x06;
const SEQUENCE: u8 = 0x30;
const TIME_TICKS: u8 = 0x43;
const SNMPV2_TRAP: u8 = 0xa7;

fn tlv(tag: u8, content: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
}

fn integer(value: i64, out: &mut Vec<u8>) {
    let bytes = value.to_be_bytes();
    // Shortest two's complement form.
    let mut start = 0;
    while start < 7
        && ((bytes[start] == 0 && bytes[start + 1] & 0x80 == 0)
            || (bytes[start] == 0xff && bytes[start + 1] & 0x80 != 0))
    {
        start += 1;
    }
    tlv(INTEGER, &bytes[start..], out);
}

fn unsigned(tag: u8, value: u32, out: &mut Vec<u8>) {
    let bytes = u64::from(value).to_be_bytes();
    let mut start = 0;
    while start < 7 && bytes[start] == 0 && bytes[start + 1] & 0x80 == 0 {
        start += 1;
    }
    tlv(tag, &bytes[start..], out);
}

fn oid(arcs: &[u32], out: &mut Vec<u8>) -> Result<(), String> {
    if arcs.len() < 2 || arcs[0] > 2 || (arcs[0] < 2 && arcs[1] >= 40) {
        return Err(format!("{arcs:?} is not a valid OID"));
    }
    let mut content = Vec::new();
    let mut push = |mut arc: u64| {
        let mut groups = vec![(arc & 0x7f) as u8];
        arc >>= 7;
        while arc > 0 {
            groups.push((arc & 0x7f) as u8 | 0x80);
            arc >>= 7;
        }
        content.extend(groups.iter().rev());
    };
    push(u64::from(arcs[0]) * 40 + u64::from(arcs[1]));
    for arc in &arcs[2..] {
        push(u64::from(*arc));
    }
    tlv(OBJECT_IDENTIFIER, &content, out);
    Ok(())
}

fn parse_oid(text: &str) -> Result<Vec<u32>, String> {
    text.trim_start_matches('.')
        .split('.')
        .map(|arc| arc.parse::<u32>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format!("`{text}` is not a numeric OID like 1.3.6.1.4.1.8072.9999"))
}

fn varbind(
    name: &[u32],
    value: impl FnOnce(&mut Vec<u8>) -> Result<(), String>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let mut content = Vec::new();
    oid(name, &mut content)?;
    value(&mut content)?;
    tlv(SEQUENCE, &content, out);
    Ok(())
}

fn uptime_ticks() -> u32 {
    static START: OnceLock<Instant> = OnceLock::new();
    (START.get_or_init(Instant::now).elapsed().as_millis() / 10) as u32
}

/// One SNMPv2c trap for one event: `snmpTrapOID.0` is `<enterprise>.1`
/// (fired), `.2` (cleared) or `.3` (no data); the alert, severity, kind,
/// key and details follow as strings under `<enterprise>.0.{1..5}`.
pub fn encode_trap(
    community: &str,
    enterprise: &str,
    request_id: i32,
    alert: &str,
    severity: &str,
    event: &Value,
) -> Result<Vec<u8>, String> {
    let base = parse_oid(enterprise)?;
    let kind = event["kind"].as_str().unwrap_or("fired");
    let suffix = match kind {
        "fired" => 1,
        "cleared" => 2,
        _ => 3,
    };
    let with = |tail: &[u32]| {
        let mut arcs = base.clone();
        arcs.extend_from_slice(tail);
        arcs
    };
    let mut bindings = Vec::new();
    varbind(
        &SYS_UP_TIME,
        |o| {
            unsigned(TIME_TICKS, uptime_ticks(), o);
            Ok(())
        },
        &mut bindings,
    )?;
    varbind(&SNMP_TRAP_OID, |o| oid(&with(&[suffix]), o), &mut bindings)?;
    let strings = [
        alert.to_string(),
        severity.to_string(),
        kind.to_string(),
        event["key"].to_string(),
        event["details"].to_string(),
    ];
    for (i, text) in strings.iter().enumerate() {
        varbind(
            &with(&[0, i as u32 + 1]),
            |o| {
                tlv(OCTET_STRING, text.as_bytes(), o);
                Ok(())
            },
            &mut bindings,
        )?;
    }
    let mut pdu = Vec::new();
    integer(i64::from(request_id), &mut pdu);
    integer(0, &mut pdu); // error-status
    integer(0, &mut pdu); // error-index
    tlv(SEQUENCE, &bindings, &mut pdu);
    let mut message = Vec::new();
    integer(1, &mut message); // version: 1 is SNMPv2c
    tlv(OCTET_STRING, community.as_bytes(), &mut message);
    tlv(SNMPV2_TRAP, &pdu, &mut message);
    let mut out = Vec::new();
    tlv(SEQUENCE, &message, &mut out);
    Ok(out)
}

/// Sends one trap per event of the batch over UDP.
pub async fn send_traps(
    target: &str,
    community: &str,
    enterprise: &str,
    payload: &Value,
) -> Result<(), String> {
    let socket = tokio::net::UdpSocket::bind(if target.starts_with('[') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    })
    .await
    .map_err(|e| format!("UDP socket: {e}"))?;
    let alert = payload["alert"].as_str().unwrap_or("?");
    let severity = payload["severity"].as_str().unwrap_or("?");
    let id = payload["id"].as_i64().unwrap_or(0);
    for (i, event) in payload["events"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let request_id = (id.wrapping_mul(1000) + i as i64) as i32;
        let bytes = encode_trap(community, enterprise, request_id, alert, severity, event)?;
        socket
            .send_to(&bytes, target)
            .await
            .map_err(|e| format!("sending a trap to {target}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ber_primitives() {
        let mut out = Vec::new();
        integer(0, &mut out);
        integer(127, &mut out);
        integer(128, &mut out);
        integer(-1, &mut out);
        assert_eq!(out, [2, 1, 0, 2, 1, 127, 2, 2, 0, 128, 2, 1, 0xff]);
        let mut out = Vec::new();
        oid(&[1, 3, 6, 1, 4, 1, 8072], &mut out).unwrap();
        assert_eq!(out, [6, 7, 0x2b, 6, 1, 4, 1, 0xbf, 0x08]);
        let mut out = Vec::new();
        tlv(OCTET_STRING, &[0u8; 200], &mut out);
        assert_eq!(&out[..3], &[4, 0x81, 200]);
    }
}
