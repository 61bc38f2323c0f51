use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field};
use sysinfo::Disks;

use super::{Collector, HostInfo, batch, int};
use crate::{AgentError, Result};

/// `filesystem`: one row per mounted disk with statvfs(3) numbers, so the
/// seed's `(100*bavail)/blocks` alert and `bavail*bsize` free bytes work.
#[derive(Debug)]
pub struct Filesystem {
    disks: Option<Disks>,
}

impl Filesystem {
    pub fn new() -> Self {
        Filesystem { disks: None }
    }
}

impl Default for Filesystem {
    fn default() -> Self {
        Self::new()
    }
}

struct Row {
    mountp: String,
    fstype: String,
    device: String,
    bsize: i64,
    blocks: i64,
    bfree: i64,
    bavail: i64,
    files: i64,
    ffree: i64,
}

impl Collector for Filesystem {
    fn table(&self) -> &'static str {
        "filesystem"
    }

    fn collect(&mut self, host: &HostInfo) -> Result<RecordBatch> {
        let disks = match &mut self.disks {
            Some(disks) => {
                disks.refresh(true);
                disks
            }
            None => self.disks.insert(
                Disks::new_with_refreshed_list()
                    .map_err(|e| AgentError::collector("filesystem", format!("{e:?}")))?,
            ),
        };
        let mut seen = BTreeSet::new();
        let mut rows = Vec::new();
        for disk in disks.iter() {
            let mountp = disk.mount_point().to_string_lossy().into_owned();
            if !seen.insert(mountp.clone()) {
                continue;
            }
            // A mount that vanished or denies access is left out, not fatal.
            let Ok(st) = rustix::fs::statvfs(disk.mount_point()) else {
                tracing::debug!(mountp, "statvfs failed; mount left out");
                continue;
            };
            rows.push(Row {
                mountp,
                fstype: disk.file_system().to_string_lossy().into_owned(),
                device: disk.name().to_string_lossy().into_owned(),
                // Block counts are in units of f_frsize; reporting that as
                // bsize makes `bavail*bsize` the free bytes, as the seed uses it.
                bsize: int(st.f_frsize),
                blocks: int(st.f_blocks),
                bfree: int(st.f_bfree),
                bavail: int(st.f_bavail),
                files: int(st.f_files),
                ffree: int(st.f_ffree),
            });
        }
        let n = rows.len();
        let ints = |name: &str, f: fn(&Row) -> i64| {
            (
                Field::new(name, DataType::Int64, false),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(f))) as _,
            )
        };
        let texts = |name: &str, f: fn(&Row) -> &str| {
            (
                Field::new(name, DataType::Utf8, false),
                Arc::new(StringArray::from_iter_values(rows.iter().map(f))) as _,
            )
        };
        batch(
            "filesystem",
            vec![
                (
                    Field::new("machineip", DataType::Utf8, false),
                    Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                        host.ip.as_str(),
                        n,
                    ))) as _,
                ),
                texts("mountp", |r| &r.mountp),
                texts("fstype", |r| &r.fstype),
                texts("device", |r| &r.device),
                ints("bsize", |r| r.bsize),
                ints("blocks", |r| r.blocks),
                ints("bfree", |r| r.bfree),
                ints("bavail", |r| r.bavail),
                ints("files", |r| r.files),
                ints("ffree", |r| r.ffree),
            ],
        )
    }
}
