use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, TimeUnit};
use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};

use super::{Collector, HostInfo, batch, int};
use crate::{AgentError, Result};

/// `processes`: one row per process. `rss` and `vsz` in KiB, like
/// `sys.memtotal`, so `(rss*100)/sys.memtotal` is a whole percentage.
#[derive(Debug)]
pub struct Processes {
    /// Kept between collections: per-process CPU use is the difference of
    /// two samples (0 on the first).
    system: Option<System>,
}

impl Processes {
    pub fn new() -> Self {
        Processes { system: None }
    }
}

impl Default for Processes {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector for Processes {
    fn table(&self) -> &'static str {
        "processes"
    }

    fn collect(&mut self, host: &HostInfo) -> Result<RecordBatch> {
        let system = match &mut self.system {
            Some(system) => system,
            None => self.system.insert(
                System::new().map_err(|e| AgentError::collector("processes", format!("{e:?}")))?,
            ),
        };
        // Threads are not processes here: without_tasks keeps one row per
        // process, as `ps` shows them.
        system.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing()
                .with_memory()
                .with_cpu()
                .with_user(UpdateKind::OnlyIfNotSet)
                .without_tasks(),
        );
        let users = user_names();
        let mut procs: Vec<_> = system.processes().values().collect();
        procs.sort_by_key(|p| p.pid());
        let n = procs.len();
        let uid = |p: &sysinfo::Process| p.user_id().map(|u| **u);
        let columns = vec![
            (
                Field::new("ip", DataType::Utf8, false),
                Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                    host.ip.as_str(),
                    n,
                ))) as _,
            ),
            (
                Field::new("pid", DataType::Int64, false),
                Arc::new(Int64Array::from_iter_values(
                    procs.iter().map(|p| i64::from(p.pid().as_u32())),
                )) as _,
            ),
            (
                Field::new("ppid", DataType::Int64, true),
                Arc::new(Int64Array::from_iter(
                    procs
                        .iter()
                        .map(|p| p.parent().map(|pp| i64::from(pp.as_u32()))),
                )) as _,
            ),
            (
                Field::new("procname", DataType::Utf8, false),
                Arc::new(StringArray::from_iter_values(
                    procs.iter().map(|p| p.name().to_string_lossy()),
                )) as _,
            ),
            (
                Field::new("rss", DataType::Int64, false),
                Arc::new(Int64Array::from_iter_values(
                    procs.iter().map(|p| int(p.memory() / 1024)),
                )) as _,
            ),
            (
                Field::new("vsz", DataType::Int64, false),
                Arc::new(Int64Array::from_iter_values(
                    procs.iter().map(|p| int(p.virtual_memory() / 1024)),
                )) as _,
            ),
            (
                Field::new("cpu_pct", DataType::Float64, false),
                Arc::new(Float64Array::from_iter_values(
                    procs.iter().map(|p| f64::from(p.cpu_usage())),
                )) as _,
            ),
            (
                Field::new("uid", DataType::Int64, true),
                Arc::new(Int64Array::from_iter(
                    procs.iter().map(|p| uid(p).map(i64::from)),
                )) as _,
            ),
            (
                Field::new("user", DataType::Utf8, true),
                Arc::new(StringArray::from_iter(procs.iter().map(|p| {
                    uid(p).map(|u| users.get(&u).cloned().unwrap_or_else(|| u.to_string()))
                }))) as _,
            ),
            (
                Field::new("state", DataType::Utf8, false),
                Arc::new(StringArray::from_iter_values(
                    procs.iter().map(|p| p.status().to_string()),
                )) as _,
            ),
            (
                Field::new(
                    "start_time",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                    false,
                ),
                Arc::new(
                    TimestampMillisecondArray::from_iter_values(
                        procs
                            .iter()
                            .map(|p| int(p.start_time()).saturating_mul(1000)),
                    )
                    .with_timezone("UTC"),
                ) as _,
            ),
        ];
        batch("processes", columns)
    }
}

/// uid → user name from `/etc/passwd`; sysinfo's user lookup is a feature
/// the workspace leaves off, and a missing file just means numeric users.
fn user_names() -> HashMap<u32, String> {
    let Ok(text) = std::fs::read_to_string("/etc/passwd") else {
        return HashMap::new();
    };
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split(':');
            let name = parts.next()?;
            let uid = parts.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}
