//! Query History between tiers: a SQL node fetches the history files its
//! TLA keeps, so history survives the SQL node's loss (issue 18 item 4).
//!
//! Two calls on the same Flight endpoint as generations:
//!
//! 1. `DoAction` [`HISTORY_LIST_ACTION`] with body `{"table": "sys"}`:
//!    one result, a JSON array of [`HistoryFileInfo`] (every kept file of
//!    the table, oldest first). The requester picks the ones it lacks.
//! 2. `DoGet` with a `history` ticket ([`HistoryTicket`],
//!    `{"history": {"table": "sys", "files": ["<made_at_ms>-<gen>.parquet", ...]}}`):
//!    the files, in the order asked, each as one or more messages whose
//!    `app_metadata` is a [`ChunkHeader`] (`file`, `offset`, `total`) and
//!    whose `data_body` is that part of the file. A file is sent whole or
//!    the call fails: the client checks that each file's parts join up to
//!    `total` bytes.
//!
//! Files travel as the zstd Parquet the TLA wrote (with `_generation` and
//! `_generation_time`), not re-encoded as Arrow: they are already
//! compressed, and the SQL node keeps them byte for byte, so both nodes'
//! copies of a generation are the same file. A file asked for that the
//! server no longer keeps (thinned between the two calls) is left out, not
//! an error; the client sees it missing from the answer.

use std::fmt::Debug;

use arrow_flight::FlightData;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{FlightError, Result};

/// The `DoAction` type listing a table's kept history files.
pub const HISTORY_LIST_ACTION: &str = "history-list";

/// Largest part of a file in one message: well under the default
/// `max_message_bytes` of both ends.
pub(crate) const CHUNK_BYTES: usize = 1024 * 1024;

/// Most files one `history` ticket may ask for: bounds one call's length
/// (a requester asks again for the rest).
pub const MAX_FILES_PER_TICKET: usize = 64;

/// Why a history source cannot answer; the text goes to the requester.
pub type HistorySourceError = Box<dyn std::error::Error + Send + Sync>;

/// One kept file, as [`HISTORY_LIST_ACTION`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryFileInfo {
    /// `<made_at_ms>-<generation>.parquet`.
    pub name: String,
    pub generation: u64,
    /// `_generation_time`, ms since the epoch.
    pub time_ms: i64,
    pub bytes: u64,
}

/// The kept history a Flight server serves (a TLA's store).
pub trait HistoryFiles: Send + Sync + Debug {
    /// The kept files of `table`, oldest first.
    fn list(&self, table: &str) -> std::result::Result<Vec<HistoryFileInfo>, HistorySourceError>;
    /// The bytes of kept file `name` of `table`; `Ok(None)` when it is not
    /// kept (any more).
    fn read(
        &self,
        table: &str,
        name: &str,
    ) -> std::result::Result<Option<Vec<u8>>, HistorySourceError>;
}

/// The body of a [`HISTORY_LIST_ACTION`] call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryListRequest {
    pub table: String,
}

/// A `DoGet` ticket asking for kept history files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryTicket {
    pub history: HistoryWanted,
}

/// Which files of which table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryWanted {
    pub table: String,
    pub files: Vec<String>,
}

impl HistoryTicket {
    pub fn to_bytes(&self) -> Bytes {
        // A struct of strings always serialises.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// The ticket, when `bytes` is a history ticket (a generation ticket
    /// has no `history` field, so it never reads as one).
    pub fn from_bytes(bytes: &[u8]) -> Option<HistoryTicket> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The `app_metadata` of one part of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkHeader {
    pub file: String,
    pub offset: u64,
    pub total: u64,
}

/// The messages carrying `bytes` as file `name`.
pub(crate) fn file_messages(name: &str, bytes: &[u8]) -> Result<Vec<FlightData>> {
    let total = bytes.len() as u64;
    let mut messages = Vec::with_capacity(bytes.len() / CHUNK_BYTES + 1);
    let mut offset = 0usize;
    loop {
        let end = (offset + CHUNK_BYTES).min(bytes.len());
        let header = ChunkHeader {
            file: name.to_string(),
            offset: offset as u64,
            total,
        };
        let metadata = serde_json::to_vec(&header).map_err(|e| FlightError::Encode {
            table: name.to_string(),
            reason: e.to_string(),
        })?;
        messages.push(FlightData {
            app_metadata: metadata.into(),
            data_body: Bytes::copy_from_slice(&bytes[offset..end]),
            ..FlightData::default()
        });
        offset = end;
        if offset >= bytes.len() {
            return Ok(messages);
        }
    }
}

/// Joins the parts of a `history` answer into whole files, in the order
/// sent; anything that does not join up is a protocol error.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    done: Vec<(String, Bytes)>,
    current: Option<(ChunkHeader, Vec<u8>)>,
}

impl Assembler {
    pub(crate) fn push(&mut self, message: &FlightData) -> std::result::Result<(), String> {
        let header: ChunkHeader = serde_json::from_slice(&message.app_metadata)
            .map_err(|e| format!("history part header is not valid JSON: {e}"))?;
        let body = &message.data_body;
        match &mut self.current {
            Some((open, bytes)) if open.file == header.file => {
                if header.offset != bytes.len() as u64 || header.total != open.total {
                    return Err(format!(
                        "history file `{}`: part at offset {} of {} where {} of {} were received",
                        header.file,
                        header.offset,
                        header.total,
                        bytes.len(),
                        open.total
                    ));
                }
                bytes.extend_from_slice(body);
            }
            _ => {
                self.close()?;
                if header.offset != 0 {
                    return Err(format!(
                        "history file `{}` starts at offset {}",
                        header.file, header.offset
                    ));
                }
                self.current = Some((header, body.to_vec()));
            }
        }
        if let Some((open, bytes)) = &self.current
            && bytes.len() as u64 > open.total
        {
            return Err(format!(
                "history file `{}`: {} bytes received of {} announced",
                open.file,
                bytes.len(),
                open.total
            ));
        }
        Ok(())
    }

    fn close(&mut self) -> std::result::Result<(), String> {
        if let Some((open, bytes)) = self.current.take() {
            if bytes.len() as u64 != open.total {
                return Err(format!(
                    "history file `{}` cut short: {} bytes of {}",
                    open.file,
                    bytes.len(),
                    open.total
                ));
            }
            self.done.push((open.file, Bytes::from(bytes)));
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> std::result::Result<Vec<(String, Bytes)>, String> {
        self.close()?;
        Ok(self.done)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// What a peer sends as a history answer (issue 17 item 7): random
        /// and mutated parts join up or are refused, never a panic, and
        /// nothing joined is longer than its header announced.
        #[test]
        fn mutated_history_parts_join_or_are_refused(
            sizes in proptest::collection::vec(0..(CHUNK_BYTES * 2 + 3), 1..3),
            cuts in proptest::collection::vec((any::<usize>(), 0u8..4, any::<u8>()), 0..4),
            noise in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut messages = Vec::new();
            for (i, size) in sizes.iter().enumerate() {
                let bytes = vec![i as u8; *size];
                messages.extend(file_messages(&format!("{i}-{i}.parquet"), &bytes).unwrap());
            }
            for (at, how, byte) in &cuts {
                let n = messages.len();
                if n == 0 {
                    break;
                }
                let i = at % n;
                match how {
                    0 => {
                        messages.remove(i);
                    }
                    1 => {
                        let mut meta = messages[i].app_metadata.to_vec();
                        if !meta.is_empty() {
                            let j = at % meta.len();
                            meta[j] ^= byte | 1;
                        }
                        messages[i].app_metadata = meta.into();
                    }
                    2 => messages[i].app_metadata = noise.clone().into(),
                    _ => {
                        let copy = messages[i].clone();
                        messages.insert(i, copy);
                    }
                }
            }
            let mut assembler = Assembler::default();
            let mut refused = false;
            for m in &messages {
                if assembler.push(m).is_err() {
                    refused = true;
                    break;
                }
            }
            if !refused && let Ok(files) = assembler.finish() {
                for (_, bytes) in files {
                    prop_assert!(bytes.len() <= CHUNK_BYTES * 2 + 3);
                }
            }
        }

        #[test]
        fn random_history_tickets_are_a_ticket_or_nothing(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
            text in "\\PC{0,200}",
        ) {
            let _ = HistoryTicket::from_bytes(&bytes);
            let _ = HistoryTicket::from_bytes(text.as_bytes());
        }
    }

    #[test]
    fn files_split_into_parts_join_up_and_short_ones_are_refused() {
        let big: Vec<u8> = (0..(CHUNK_BYTES * 2 + 17)).map(|i| i as u8).collect();
        let small = b"PAR1 small".to_vec();
        let mut messages = file_messages("1-1.parquet", &big).unwrap();
        assert_eq!(messages.len(), 3);
        messages.extend(file_messages("2-2.parquet", &small).unwrap());
        let mut assembler = Assembler::default();
        for m in &messages {
            assembler.push(m).unwrap();
        }
        let files = assembler.finish().unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].0, "1-1.parquet");
        assert_eq!(files[0].1.as_ref(), big.as_slice());
        assert_eq!(files[1].1.as_ref(), small.as_slice());

        // A part missing in the middle, or at the end, is an error.
        let mut assembler = Assembler::default();
        assembler.push(&messages[0]).unwrap();
        assert!(assembler.push(&messages[2]).is_err());
        let mut assembler = Assembler::default();
        assembler.push(&messages[0]).unwrap();
        assembler.push(&messages[1]).unwrap();
        assert!(assembler.finish().unwrap_err().contains("cut short"));
    }

    #[test]
    fn history_tickets_and_generation_tickets_never_read_as_each_other() {
        let ticket = HistoryTicket {
            history: HistoryWanted {
                table: "sys".into(),
                files: vec!["1-1.parquet".into()],
            },
        };
        let bytes = ticket.to_bytes();
        assert_eq!(HistoryTicket::from_bytes(&bytes), Some(ticket));
        assert!(crate::FetchTicket::from_bytes(&bytes).is_err());
        let fetch = br#"{"requester":"sql","tables":["sys"]}"#;
        assert!(HistoryTicket::from_bytes(fetch).is_none());
    }
}
