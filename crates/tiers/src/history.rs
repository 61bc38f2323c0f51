//! A SQL node's Query History, from its topology entry (the logic is in
//! `fleetsql_history`; this only finds the directory and attaches it).

use std::path::Path;
use std::sync::Arc;

use fleetsql_history::{History, HistoryConfig, SystemClock};
use fleetsql_sqlnode::SqlNode;

use crate::{Result, TiersError};

/// Attaches `config` to `node`, its files under `config.dir` or
/// `<state_dir>/history`.
pub(crate) fn attach(
    node: &SqlNode,
    name: &str,
    config: Option<&HistoryConfig>,
    state_dir: Option<&Path>,
) -> Result<Option<History>> {
    let Some(config) = config else {
        return Ok(None);
    };
    let dir = match (&config.dir, state_dir) {
        (Some(dir), _) => dir.clone(),
        (None, Some(state)) => state.join("history"),
        (None, None) => {
            return Err(TiersError::Config {
                path: "topology".into(),
                reason: format!(
                    "[sqlnodes.{name}] keeps history but has no directory for it; set `history.dir` or `state_dir` (history then goes to <state_dir>/history)"
                ),
            });
        }
    };
    let history = History::attach(node, &dir, config.clone(), Arc::new(SystemClock))?;
    tracing::info!(node = %name, dir = %history.store().dir().display(), tables = ?config.tables, "keeping history");
    Ok(Some(history))
}
