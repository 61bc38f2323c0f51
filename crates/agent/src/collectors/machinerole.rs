use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field};

use super::{Collector, HostInfo, batch};
use crate::Result;

/// `machinerole (ip, role)`: one row per role from the agent's config, so
/// queries can pick machines by what they do (`role = 'dns'`).
#[derive(Debug)]
pub struct MachineRole {
    roles: Vec<String>,
}

impl MachineRole {
    pub fn new(roles: Vec<String>) -> Self {
        MachineRole { roles }
    }
}

impl Collector for MachineRole {
    fn table(&self) -> &'static str {
        "machinerole"
    }

    fn collect(&mut self, host: &HostInfo) -> Result<RecordBatch> {
        let n = self.roles.len();
        batch(
            "machinerole",
            vec![
                (
                    Field::new("ip", DataType::Utf8, false),
                    Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                        host.ip.as_str(),
                        n,
                    ))),
                ),
                (
                    Field::new("role", DataType::Utf8, false),
                    Arc::new(StringArray::from_iter_values(self.roles.iter())),
                ),
            ],
        )
    }
}
