use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use fleetsql_aggregator::{Child, FetchRequest};
use fleetsql_model::{ClusterVisibility, Generation, ModelError, TableVisibility, now_ms};
use parking_lot::Mutex;

use crate::profile::{Profile, Role};
use crate::tables::{Clock, Kind, TABLES, TableState};

static AVAILABLE: LazyLock<BTreeSet<String>> =
    LazyLock::new(|| TABLES.iter().map(|t| t.to_string()).collect());

/// One simulated machine, playing its own agent: a [`Child`] that answers
/// a fetch with the requested tables as of the current simulated tick.
///
/// There is no per-machine timer: data are a pure function of the tick
/// number, so a fetch computes (or takes from its cache) the tick's tables
/// on demand, and 100,000 idle machines cost only their cached arrays.
#[derive(Debug)]
pub struct SimMachine {
    profile: Profile,
    processes: usize,
    tick_ms: i64,
    churn: f64,
    state: Mutex<MachineState>,
}

#[derive(Debug, Default)]
struct MachineState {
    /// Indexed by `Kind`; built on the first request for the table.
    tables: [Option<TableState>; 5],
    /// The last answer, returned as is to a second fetch in the same tick.
    last: Option<(u64, BTreeSet<String>, Arc<Generation>)>,
}

impl SimMachine {
    pub(crate) fn new(profile: Profile, processes: usize, tick_ms: i64, churn: f64) -> Self {
        SimMachine {
            profile,
            processes,
            tick_ms,
            churn,
            state: Mutex::new(MachineState::default()),
        }
    }

    pub fn host(&self) -> &str {
        &self.profile.host
    }

    pub fn ip(&self) -> &str {
        &self.profile.ip
    }

    pub fn cluster(&self) -> &str {
        &self.profile.cluster
    }

    pub fn role(&self) -> Role {
        self.profile.role
    }

    /// The simulated tick at wall-clock time `now_ms`.
    pub fn tick_at(&self, now_ms: i64) -> u64 {
        now_ms.div_euclid(self.tick_ms).max(0) as u64
    }

    /// This machine's generation at `tick` with only the `tables` asked for
    /// (names it does not publish answer as empty). The id is the tick
    /// number and `made_at_ms` the tick's start, so the same tick always
    /// gives the same generation.
    pub fn generation_at(
        &self,
        tick: u64,
        tables: &BTreeSet<String>,
    ) -> Result<Arc<Generation>, ModelError> {
        let mut state = self.state.lock();
        if let Some((last_tick, last_tables, generation)) = &state.last
            && *last_tick == tick
            && last_tables == tables
        {
            return Ok(generation.clone());
        }
        let clock = Clock {
            tick,
            tick_ms: self.tick_ms,
            churn: self.churn,
        };
        let made_at_ms = clock.tick_start_ms();
        let mut generation = Generation::empty(&self.profile.host);
        generation.meta.id = tick;
        generation.meta.made_at_ms = made_at_ms;
        generation.meta.available = AVAILABLE.clone();
        let visibility = &mut generation.meta.visibility;
        visibility.clusters.insert(
            self.profile.cluster.clone(),
            ClusterVisibility {
                machines_expected: 1,
                machines_seen: 1,
                oldest_data_ms: Some(made_at_ms),
                newest_data_ms: Some(made_at_ms),
                via: String::new(),
            },
        );
        for name in tables {
            let Some(kind) = Kind::from_name(name) else {
                // Answered, with nothing: not the same as not answering.
                visibility.tables.insert(
                    name.clone(),
                    TableVisibility {
                        machines_empty: 1,
                        ..Default::default()
                    },
                );
                continue;
            };
            let table = state.tables[kind as usize]
                .get_or_insert_with(|| TableState::new(kind, &self.profile, self.processes, clock))
                .table_at(&self.profile, clock)?;
            let rows = table.num_rows() as u64;
            visibility.tables.insert(
                name.clone(),
                TableVisibility {
                    machines_with_rows: u64::from(rows > 0),
                    machines_empty: u64::from(rows == 0),
                    rows,
                    rejected_parts: 0,
                },
            );
            generation.tables.insert(name.clone(), table);
        }
        let generation = Arc::new(generation);
        state.last = Some((tick, tables.clone(), generation.clone()));
        Ok(generation)
    }
}

#[async_trait]
impl Child for SimMachine {
    fn name(&self) -> &str {
        &self.profile.host
    }

    async fn fetch(&self, request: &FetchRequest) -> fleetsql_aggregator::Result<Arc<Generation>> {
        let mut tick = self.tick_at(now_ms());
        if let (Some(since), Some(wait)) = (request.since_generation, request.wait)
            && since >= tick
        {
            // Long poll: the next generation appears when tick `since + 1`
            // begins; wait for it, but no longer than the caller allows.
            let next_ms = (since as i64 + 1).saturating_mul(self.tick_ms);
            let until_next = Duration::from_millis((next_ms - now_ms()).max(0) as u64);
            tokio::time::sleep(until_next.min(wait)).await;
            tick = self.tick_at(now_ms());
        }
        Ok(self.generation_at(tick, &request.tables)?)
    }
}
