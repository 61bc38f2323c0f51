use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field};
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, System};

use super::{Collector, HostInfo, batch, int};
use crate::{AgentError, Result};

/// `sys`: one row describing the machine. Memory in KiB (the same unit as
/// `processes.rss`), load averages and CPU use as floats.
#[derive(Debug)]
pub struct Sys {
    /// Kept between collections: CPU use is the difference of two samples.
    system: Option<System>,
}

impl Sys {
    pub fn new() -> Self {
        Sys { system: None }
    }
}

impl Default for Sys {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector for Sys {
    fn table(&self) -> &'static str {
        "sys"
    }

    fn collect(&mut self, host: &HostInfo) -> Result<RecordBatch> {
        let system = match &mut self.system {
            Some(system) => system,
            None => self
                .system
                .insert(System::new().map_err(|e| AgentError::collector("sys", format!("{e:?}")))?),
        };
        system.refresh_memory_specifics(MemoryRefreshKind::everything());
        system.refresh_cpu_specifics(CpuRefreshKind::nothing().with_usage());
        let kib = |bytes: u64| int(bytes / 1024);
        let load = System::load_average().ok();
        let ncpus = system.cpus().len().max(1) as i64;
        let os = System::long_os_version().unwrap_or_default();
        let kernel = System::kernel_version().unwrap_or_default();
        let uptime = System::uptime().map(int).ok();
        let boot_time = System::boot_time().map(int).ok();
        let f64s = |name: &str, v: Option<f64>| {
            (
                Field::new(name, DataType::Float64, true),
                Arc::new(Float64Array::from(vec![v])) as _,
            )
        };
        let i64s = |name: &str, v: Option<i64>| {
            (
                Field::new(name, DataType::Int64, true),
                Arc::new(Int64Array::from(vec![v])) as _,
            )
        };
        let text = |name: &str, v: &str| {
            (
                Field::new(name, DataType::Utf8, false),
                Arc::new(StringArray::from(vec![v.to_string()])) as _,
            )
        };
        batch(
            "sys",
            vec![
                text("ip", &host.ip),
                text("hostname", &host.hostname),
                i64s("memtotal", Some(kib(system.total_memory()))),
                i64s("memfree", Some(kib(system.free_memory()))),
                i64s("memavail", Some(kib(system.available_memory()))),
                i64s("swaptotal", Some(kib(system.total_swap()))),
                i64s("swapfree", Some(kib(system.free_swap()))),
                f64s("cpu_pct", Some(f64::from(system.global_cpu_usage()))),
                f64s("load1", load.as_ref().map(|l| l.one)),
                f64s("load5", load.as_ref().map(|l| l.five)),
                f64s("load15", load.as_ref().map(|l| l.fifteen)),
                i64s("uptime", uptime),
                i64s("boot_time", boot_time),
                i64s("ncpus", Some(ncpus)),
                text("os", &os),
                text("kernel", &kernel),
            ],
        )
    }
}
