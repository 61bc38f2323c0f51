//! Built-in host tables, one collector per file (after Vector's sources).
//!
//! A collector runs only when its table is requested, right before the
//! generation that needs it; its rows then go through the same store as
//! any other publisher's (publisher `builtin:<table>`), so they get origin
//! columns and schema checks like everything else.
//!
//! Units are chosen so the seed's queries mean what they say: memory sizes
//! (`sys.memtotal`, `processes.rss`) are KiB, every count is Int64 so
//! integer division stays integral.

mod filesystem;
mod machinerole;
mod processes;
mod sys;

use std::fmt::Debug;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{Field, Schema};

pub use filesystem::Filesystem;
pub use machinerole::MachineRole;
pub use processes::Processes;
pub use sys::Sys;

use crate::{AgentConfig, AgentError, Result};

/// What a collector knows about the machine it runs on.
#[derive(Debug, Clone)]
pub struct HostInfo {
    pub hostname: String,
    pub ip: String,
}

/// A source of one table on this machine.
pub trait Collector: Send + Debug {
    /// The table this collector publishes.
    fn table(&self) -> &'static str;

    /// The table's rows now. Blocking: called off the IO runtime.
    fn collect(&mut self, host: &HostInfo) -> Result<RecordBatch>;
}

/// The collectors `config` enables: `sys`, `processes` and `filesystem`
/// with `host_collectors`, `machinerole` when roles are configured.
pub fn builtin(config: &AgentConfig) -> Vec<Box<dyn Collector>> {
    let mut collectors: Vec<Box<dyn Collector>> = Vec::new();
    if config.host_collectors {
        collectors.push(Box::new(Sys::new()));
        collectors.push(Box::new(Processes::new()));
        collectors.push(Box::new(Filesystem::new()));
    }
    if !config.roles.is_empty() {
        collectors.push(Box::new(MachineRole::new(config.roles.clone())));
    }
    collectors
}

/// A batch from `(field, column)` pairs, naming the collector on failure.
pub(crate) fn batch(
    collector: &'static str,
    columns: Vec<(Field, ArrayRef)>,
) -> Result<RecordBatch> {
    let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = columns.into_iter().unzip();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| AgentError::collector(collector, e))
}

/// Counters from the OS are u64; SQL wants Int64. Nothing real overflows.
pub(crate) fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
