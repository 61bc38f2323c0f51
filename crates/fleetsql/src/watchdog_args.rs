//! `--watchdog-*`: the agent's watchdog limits (`fleetsql agent`, and the
//! demo's local agent), over its defaults.

use clap::Args;
use fleetsql_agent::WatchdogConfig;

#[derive(Debug, Clone, Args)]
pub(crate) struct WatchdogArgs {
    /// Agent: rows one publisher of one table may publish per tick before
    /// it is shed (its publishes answered 429) [default: 100000].
    #[arg(long)]
    watchdog_rows_per_tick: Option<u64>,
    /// Agent: body bytes one publisher of one table may send per tick
    /// before it is shed [default: 33554432].
    #[arg(long)]
    watchdog_bytes_per_tick: Option<u64>,
    /// Agent: resident memory (MiB) above which every publish is refused
    /// (503) until it is back under [default: 200].
    #[arg(long)]
    watchdog_max_rss_mib: Option<u64>,
    /// Agent: no watchdog (no publisher is shed, none reported).
    #[arg(long)]
    no_watchdog: bool,
}

impl WatchdogArgs {
    /// `base` with what the flags name.
    pub(crate) fn apply(&self, mut base: WatchdogConfig) -> anyhow::Result<WatchdogConfig> {
        if let Some(rows) = self.watchdog_rows_per_tick {
            base.rows_per_tick = rows;
        }
        if let Some(bytes) = self.watchdog_bytes_per_tick {
            base.bytes_per_tick = bytes;
        }
        if let Some(mib) = self.watchdog_max_rss_mib {
            base.max_rss_bytes = mib.saturating_mul(1024 * 1024);
        }
        if self.no_watchdog {
            base.enabled = false;
        }
        if base.rows_per_tick == 0 || base.bytes_per_tick == 0 || base.max_rss_bytes == 0 {
            anyhow::bail!(
                "--watchdog-* limits must be at least 1 (use --no-watchdog to turn it off)"
            );
        }
        Ok(base)
    }

    /// Whether any flag was given (they are for agents only).
    pub(crate) fn any(&self) -> bool {
        self.watchdog_rows_per_tick.is_some()
            || self.watchdog_bytes_per_tick.is_some()
            || self.watchdog_max_rss_mib.is_some()
            || self.no_watchdog
    }
}
