//! SNMPv3 with the User-based Security Model (RFC 3414): engine discovery,
//! HMAC-SHA-96 authentication and AES-128 CFB privacy (RFC 3826), for the
//! SNMP gateway's GETBULK walks. The cryptography is RustCrypto's (`hmac`,
//! `sha1`, `aes`, `cfb-mode`); only the message layout is written here.

use std::time::Instant;

use aes::cipher::{AsyncStreamCipher, KeyIvInit};
use hmac::{Hmac, Mac};
use sha1::{Digest, Sha1};

use crate::snmp::{Reader, ber_int, decode_int, decode_oid, tlv};

type HmacSha1 = Hmac<Sha1>;
type Aes128CfbEnc = cfb_mode::Encryptor<aes::Aes128>;
type Aes128CfbDec = cfb_mode::Decryptor<aes::Aes128>;

/// Length of the HMAC-SHA-96 digest in a message.
const AUTH_LEN: usize = 12;
/// usmStats counters an agent reports errors with (RFC 3414 section 5).
const USM_STATS: [u64; 9] = [1, 3, 6, 1, 6, 3, 15, 1, 1];

/// A v3 user's keys, localized to one engine.
#[derive(Clone)]
pub(crate) struct UsmUser {
    pub(crate) name: String,
    auth_password: Option<String>,
    priv_password: Option<String>,
    auth_key: Option<Vec<u8>>,
    priv_key: Option<Vec<u8>>,
}

impl std::fmt::Debug for UsmUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsmUser")
            .field("name", &self.name)
            .field("auth", &self.auth_password.is_some())
            .field("priv", &self.priv_password.is_some())
            .finish()
    }
}

/// RFC 3414 A.2.2: the password stretched to 1 MiB and hashed.
fn password_to_key(password: &str) -> Vec<u8> {
    let bytes = password.as_bytes();
    let mut hasher = Sha1::new();
    let mut chunk = [0u8; 64];
    let mut at = 0usize;
    for _ in 0..(1_048_576 / 64) {
        for b in chunk.iter_mut() {
            *b = bytes[at % bytes.len()];
            at += 1;
        }
        hasher.update(chunk);
    }
    hasher.finalize().to_vec()
}

/// The key localized to `engine_id`: `H(Ku || engineID || Ku)`.
fn localize(password: &str, engine_id: &[u8]) -> Vec<u8> {
    let ku = password_to_key(password);
    let mut hasher = Sha1::new();
    hasher.update(&ku);
    hasher.update(engine_id);
    hasher.update(&ku);
    hasher.finalize().to_vec()
}

fn hmac96(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut mac = HmacSha1::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(message);
    mac.finalize().into_bytes()[..AUTH_LEN].to_vec()
}

/// The authoritative engine as discovered.
#[derive(Debug, Clone)]
pub(crate) struct Engine {
    pub(crate) id: Vec<u8>,
    boots: i64,
    time: i64,
    at: Instant,
}

impl Engine {
    fn time_now(&self) -> i64 {
        self.time + self.at.elapsed().as_secs() as i64
    }
}

/// What a v3 answer held.
#[derive(Debug)]
pub(crate) enum V3Answer {
    /// The PDU (tag and content), decrypted and authenticated.
    Pdu(u8, Vec<u8>),
    /// A Report naming a usmStats counter: the agent refused the request.
    Report {
        msg_id: i64,
        problem: String,
        engine: Engine,
    },
}

impl UsmUser {
    pub(crate) fn new(
        name: &str,
        auth_password: Option<&str>,
        priv_password: Option<&str>,
    ) -> UsmUser {
        UsmUser {
            name: name.to_string(),
            auth_password: auth_password.map(str::to_string),
            priv_password: priv_password.map(str::to_string),
            auth_key: None,
            priv_key: None,
        }
    }

    /// Localizes the keys to `engine` (slow by design: 1 MiB of SHA-1 each).
    pub(crate) fn localize(&mut self, engine: &[u8]) {
        self.auth_key = self.auth_password.as_deref().map(|p| localize(p, engine));
        self.priv_key = self
            .priv_password
            .as_deref()
            .map(|p| localize(p, engine)[..16].to_vec());
    }

    fn flags(&self) -> u8 {
        match (&self.auth_key, &self.priv_key) {
            (Some(_), Some(_)) => 0x07,
            (Some(_), None) => 0x05,
            _ => 0x04,
        }
    }
}

/// The discovery request: no user, no engine, reportable.
pub(crate) fn discovery_request(msg_id: i32) -> Vec<u8> {
    let pdu = tlv(
        0xa0,
        &[
            ber_int(i64::from(msg_id)),
            ber_int(0),
            ber_int(0),
            tlv(0x30, &[]),
        ]
        .concat(),
    );
    let scoped = tlv(0x30, &[tlv(0x04, &[]), tlv(0x04, &[]), pdu].concat());
    message(
        msg_id,
        0x04,
        &security_params(&[], 0, 0, "", &[], &[]),
        &scoped,
    )
}

fn security_params(
    engine: &[u8],
    boots: i64,
    time: i64,
    user: &str,
    auth: &[u8],
    salt: &[u8],
) -> Vec<u8> {
    tlv(
        0x30,
        &[
            tlv(0x04, engine),
            ber_int(boots),
            ber_int(time),
            tlv(0x04, user.as_bytes()),
            tlv(0x04, auth),
            tlv(0x04, salt),
        ]
        .concat(),
    )
}

fn message(msg_id: i32, flags: u8, security: &[u8], data: &[u8]) -> Vec<u8> {
    let global = tlv(
        0x30,
        &[
            ber_int(i64::from(msg_id)),
            ber_int(65_507),
            tlv(0x04, &[flags]),
            ber_int(3),
        ]
        .concat(),
    );
    tlv(
        0x30,
        &[ber_int(3), global, tlv(0x04, security), data.to_vec()].concat(),
    )
}

/// A v3 request carrying `pdu` (a whole BER PDU), authenticated and
/// encrypted as the user's keys allow. `salt` must differ per message.
pub(crate) fn request(
    user: &UsmUser,
    engine: &Engine,
    msg_id: i32,
    pdu: &[u8],
    salt: u64,
) -> Vec<u8> {
    let scoped = tlv(
        0x30,
        &[tlv(0x04, &engine.id), tlv(0x04, &[]), pdu.to_vec()].concat(),
    );
    let time = engine.time_now();
    let (data, salt) = match &user.priv_key {
        Some(key) => {
            let salt = salt.to_be_bytes();
            let mut iv = Vec::with_capacity(16);
            iv.extend_from_slice(&(engine.boots as u32).to_be_bytes());
            iv.extend_from_slice(&(time as u32).to_be_bytes());
            iv.extend_from_slice(&salt);
            let mut buf = scoped;
            // Key and IV are 16 bytes by construction.
            Aes128CfbEnc::new_from_slices(key, &iv)
                .unwrap_or_else(|_| unreachable!())
                .encrypt(&mut buf);
            (tlv(0x04, &buf), salt.to_vec())
        }
        None => (scoped, Vec::new()),
    };
    let placeholder = if user.auth_key.is_some() {
        vec![0u8; AUTH_LEN]
    } else {
        Vec::new()
    };
    let security = security_params(
        &engine.id,
        engine.boots,
        time,
        &user.name,
        &placeholder,
        &salt,
    );
    let mut whole = message(msg_id, user.flags(), &security, &data);
    if let Some(key) = &user.auth_key {
        let digest = hmac96(key, &whole);
        // The placeholder is the only run of 12 zero bytes after the user name.
        if let Some(at) = find_placeholder(&whole, &user.name) {
            whole[at..at + AUTH_LEN].copy_from_slice(&digest);
        }
    }
    whole
}

fn find_placeholder(message: &[u8], user: &str) -> Option<usize> {
    let mut pattern = vec![0x04, user.len() as u8];
    pattern.extend_from_slice(user.as_bytes());
    pattern.extend_from_slice(&[0x04, AUTH_LEN as u8]);
    message
        .windows(pattern.len())
        .position(|w| w == pattern.as_slice())
        .map(|p| p + pattern.len())
}

/// Decodes a v3 answer to `user`'s request, checking its digest.
pub(crate) fn decode(user: &UsmUser, message: &[u8]) -> Result<V3Answer, String> {
    let mut outer = Reader { data: message };
    let mut msg = Reader {
        data: outer.expect(0x30)?,
    };
    if decode_int(msg.expect(0x02)?) != 3 {
        return Err("not an SNMPv3 message".to_string());
    }
    let mut global = Reader {
        data: msg.expect(0x30)?,
    };
    let msg_id = decode_int(global.expect(0x02)?);
    global.expect(0x02)?;
    let flags = global.expect(0x04)?.first().copied().unwrap_or(0);
    let security = msg.expect(0x04)?;
    let mut sp = Reader {
        data: Reader { data: security }.expect(0x30)?,
    };
    let engine_id = sp.expect(0x04)?.to_vec();
    let boots = decode_int(sp.expect(0x02)?);
    let time = decode_int(sp.expect(0x02)?);
    sp.expect(0x04)?;
    let auth = sp.expect(0x04)?.to_vec();
    let salt = sp.expect(0x04)?.to_vec();
    let engine = Engine {
        id: engine_id,
        boots,
        time,
        at: Instant::now(),
    };
    if flags & 0x01 != 0 {
        let key = user
            .auth_key
            .as_ref()
            .ok_or("an authenticated answer to an unauthenticated request")?;
        let mut zeroed = message.to_vec();
        let at = find_placeholder(&zeroed, &user.name).ok_or("no digest in the answer")?;
        zeroed[at..at + AUTH_LEN].fill(0);
        if hmac96(key, &zeroed) != auth {
            return Err("the answer's digest is wrong; check auth_password".to_string());
        }
    }
    let scoped = if flags & 0x02 != 0 {
        let key = user
            .priv_key
            .as_ref()
            .ok_or("an encrypted answer to an unencrypted request")?;
        let mut buf = msg.expect(0x04)?.to_vec();
        let mut iv = Vec::with_capacity(16);
        iv.extend_from_slice(&(boots as u32).to_be_bytes());
        iv.extend_from_slice(&(time as u32).to_be_bytes());
        iv.extend_from_slice(&salt);
        Aes128CfbDec::new_from_slices(key, &iv)
            .map_err(|_| "bad privacy parameters in the answer".to_string())?
            .decrypt(&mut buf);
        buf
    } else {
        msg.data.to_vec()
    };
    let mut scoped = Reader { data: &scoped };
    let mut scoped = Reader {
        data: scoped
            .expect(0x30)
            .map_err(|e| format!("{e}; check priv_password"))?,
    };
    scoped.expect(0x04)?;
    scoped.expect(0x04)?;
    let (tag, pdu) = scoped.next()?;
    if tag == 0xa8 {
        return Ok(V3Answer::Report {
            msg_id,
            problem: report_problem(pdu),
            engine,
        });
    }
    Ok(V3Answer::Pdu(tag, pdu.to_vec()))
}

/// What the usmStats counter in a Report means, with what to do.
fn report_problem(pdu: &[u8]) -> String {
    let oid = (|| {
        let mut pdu = Reader { data: pdu };
        pdu.expect(0x02)?;
        pdu.expect(0x02)?;
        pdu.expect(0x02)?;
        let mut list = Reader {
            data: pdu.expect(0x30)?,
        };
        let mut vb = Reader {
            data: list.expect(0x30)?,
        };
        decode_oid(vb.expect(0x06)?)
    })()
    .unwrap_or_default();
    let counter = oid
        .strip_prefix(&USM_STATS[..])
        .and_then(|rest| rest.first().copied());
    match counter {
        Some(1) => "unsupported security level for this user; check auth/priv settings".into(),
        Some(2) => "not in time window".into(),
        Some(3) => "unknown user name; check `user`".into(),
        Some(4) => "unknown engine id".into(),
        Some(5) => "wrong digest; check auth_password".into(),
        Some(6) => "decryption error; check priv_password".into(),
        _ => format!(
            "report {}",
            oid.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
        ),
    }
}

/// True for the Report that asks for the engine's current time (resend).
pub(crate) fn is_time_window(problem: &str) -> bool {
    problem == "not in time window"
}

/// True for the Report that answers discovery.
pub(crate) fn is_unknown_engine(problem: &str) -> bool {
    problem == "unknown engine id"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_rfc_3414_appendix_a3_2() {
        // "maplesyrup" localized to engine 00..02 with SHA-1 (RFC 3414 A.3.2).
        let engine = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let key = localize("maplesyrup", &engine);
        assert_eq!(
            key.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "6695febc9288e36282235fc7151f128497b38f3f"
        );
    }

    #[test]
    fn requests_round_trip_through_encryption_and_digest() {
        let mut user = UsmUser::new("u", Some("authpassword"), Some("privpassword"));
        let engine = Engine {
            id: vec![0x80, 0, 0x1f, 0x88, 1, 2, 3],
            boots: 3,
            time: 1000,
            at: Instant::now(),
        };
        user.localize(&engine.id);
        let pdu = tlv(
            0xa2,
            &[ber_int(7), ber_int(0), ber_int(0), tlv(0x30, &[])].concat(),
        );
        let wire = request(&user, &engine, 42, &pdu, 99);
        match decode(&user, &wire).unwrap() {
            V3Answer::Pdu(tag, content) => {
                assert_eq!(tag, 0xa2);
                assert_eq!(tlv(0xa2, &content), pdu);
            }
            other => panic!("{other:?}"),
        }
        // A flipped byte breaks the digest.
        let mut bad = wire.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decode(&user, &bad).unwrap_err().contains("digest"));
    }
}
