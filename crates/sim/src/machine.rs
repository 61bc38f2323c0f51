use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use fleetsql_aggregator::{Child, FetchRequest};
use fleetsql_model::{ClusterVisibility, Generation, ModelError, TableVisibility, now_ms};
use parking_lot::Mutex;

use crate::churn::away;
use crate::config::RowChurn;
use crate::profile::{Profile, Role};
use crate::tables::{Clock, Kind, TABLES, TableState};

static AVAILABLE: LazyLock<BTreeSet<String>> =
    LazyLock::new(|| TABLES.iter().map(|t| t.to_string()).collect());

/// Simulated machines answering as one child: one machine for a simulated
/// agent, a whole cluster for a simulated proxy. Data are a pure function
/// of the tick number, so a fetch computes (or takes from its cache) the
/// tick's tables on demand, and idle sources cost only their cached arrays.
#[derive(Debug)]
struct Source {
    /// The child's name: the machine's host, or the proxy's name.
    name: String,
    profiles: Vec<Profile>,
    processes: usize,
    tick_ms: i64,
    churn: f64,
    rows: RowChurn,
    state: Mutex<SourceState>,
}

#[derive(Debug, Default)]
struct SourceState {
    /// Indexed by `Kind`; built on the first request for the table.
    tables: [Option<TableState>; 5],
    /// The last answer, returned as is to a second fetch in the same tick.
    last: Option<(u64, BTreeSet<String>, Arc<Generation>)>,
}

impl Source {
    fn tick_at(&self, now_ms: i64) -> u64 {
        now_ms.div_euclid(self.tick_ms).max(0) as u64
    }

    fn generation_at(
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
            rows: self.rows,
        };
        let made_at_ms = clock.tick_start_ms();
        let machines = self.profiles.len() as u64;
        let mut generation = Generation::empty(&self.name);
        generation.meta.id = tick;
        generation.meta.made_at_ms = made_at_ms;
        generation.meta.available = AVAILABLE.clone();
        let visibility = &mut generation.meta.visibility;
        for cluster in self.clusters() {
            let machines_in = self
                .profiles
                .iter()
                .filter(|p| p.cluster == cluster)
                .count() as u64;
            let away_in = self
                .profiles
                .iter()
                .filter(|p| p.cluster == cluster && away(p, tick, &self.rows))
                .count() as u64;
            visibility.clusters.insert(
                cluster.to_string(),
                ClusterVisibility {
                    machines_expected: machines_in,
                    machines_seen: machines_in - away_in,
                    oldest_data_ms: Some(made_at_ms),
                    newest_data_ms: Some(made_at_ms),
                    via: String::new(),
                },
            );
        }
        let profiles: Vec<&Profile> = self.profiles.iter().collect();
        for name in tables {
            let Some(kind) = Kind::from_name(name) else {
                // Answered, with nothing: not the same as not answering.
                visibility.tables.insert(
                    name.clone(),
                    TableVisibility {
                        machines_empty: machines,
                        ..Default::default()
                    },
                );
                continue;
            };
            let slot = &mut state.tables[kind as usize];
            if slot.is_none() {
                *slot = Some(TableState::new(kind, &profiles, self.processes, clock)?);
            }
            let Some(table_state) = slot.as_mut() else {
                continue;
            };
            let table = table_state.table_at(&profiles, clock)?;
            let with_rows = table_state.machines_with_rows();
            visibility.tables.insert(
                name.clone(),
                TableVisibility {
                    machines_with_rows: with_rows,
                    machines_empty: machines - with_rows,
                    rows: table.num_rows() as u64,
                    rejected_parts: 0,
                },
            );
            generation.tables.insert(name.clone(), table);
        }
        let generation = Arc::new(generation);
        state.last = Some((tick, tables.clone(), generation.clone()));
        Ok(generation)
    }

    /// Distinct clusters of the profiles, in order of first appearance.
    fn clusters(&self) -> Vec<&str> {
        let mut seen: Vec<&str> = Vec::new();
        for p in &self.profiles {
            if seen.last() != Some(&p.cluster.as_str()) && !seen.contains(&p.cluster.as_str()) {
                seen.push(&p.cluster);
            }
        }
        seen
    }

    /// Answers a fetch. A source covering many machines (a cluster) builds
    /// on a blocking thread: that takes long enough to stall the transfers
    /// of the other sources if it ran on their threads.
    async fn answer(
        self: &Arc<Self>,
        request: &FetchRequest,
    ) -> fleetsql_aggregator::Result<Arc<Generation>> {
        let tick = self.tick_for(request).await;
        if let [machine] = self.profiles.as_slice()
            && away(machine, tick, &self.rows)
        {
            // A machine that left answers nothing, as an agent that is down.
            return Err(fleetsql_aggregator::AggregatorError::Child {
                child: self.name.clone(),
                reason: "simulated machine is away (it left its cluster for a while)".into(),
            });
        }
        if self.profiles.len() == 1 {
            return Ok(self.generation_at(tick, &request.tables)?);
        }
        let source = self.clone();
        let tables = request.tables.clone();
        tokio::task::spawn_blocking(move || source.generation_at(tick, &tables))
            .await
            .map_err(|e| fleetsql_aggregator::AggregatorError::Child {
                child: self.name.clone(),
                reason: format!("simulated cluster build failed: {e}"),
            })?
            .map_err(Into::into)
    }

    /// The tick a fetch answers with: the current one, or for a long poll
    /// on the current one the next, waited for no longer than allowed.
    async fn tick_for(&self, request: &FetchRequest) -> u64 {
        let tick = self.tick_at(now_ms());
        if let (Some(since), Some(wait)) = (request.since_generation, request.wait)
            && since >= tick
        {
            let next_ms = (since as i64 + 1).saturating_mul(self.tick_ms);
            let until_next = Duration::from_millis((next_ms - now_ms()).max(0) as u64);
            tokio::time::sleep(until_next.min(wait)).await;
            return self.tick_at(now_ms());
        }
        tick
    }
}

/// One simulated machine, playing its own agent: a [`Child`] that answers
/// a fetch with the requested tables as of the current simulated tick.
///
/// There is no per-machine timer: data are a pure function of the tick
/// number, so a fetch computes (or takes from its cache) the tick's tables
/// on demand, and 100,000 idle machines cost only their cached arrays.
#[derive(Debug)]
pub struct SimMachine {
    source: Arc<Source>,
}

impl SimMachine {
    pub(crate) fn new(
        profile: Profile,
        processes: usize,
        tick_ms: i64,
        churn: f64,
        rows: RowChurn,
    ) -> Self {
        SimMachine {
            source: Arc::new(Source {
                name: profile.host.clone(),
                profiles: vec![profile],
                processes,
                tick_ms,
                churn,
                rows,
                state: Mutex::new(SourceState::default()),
            }),
        }
    }

    fn profile(&self) -> &Profile {
        &self.source.profiles[0]
    }

    pub(crate) fn profile_clone(&self) -> Profile {
        self.profile().clone()
    }

    pub fn host(&self) -> &str {
        &self.profile().host
    }

    pub fn ip(&self) -> &str {
        &self.profile().ip
    }

    pub fn cluster(&self) -> &str {
        &self.profile().cluster
    }

    pub fn role(&self) -> Role {
        self.profile().role
    }

    /// The simulated tick at wall-clock time `now_ms`.
    pub fn tick_at(&self, now_ms: i64) -> u64 {
        self.source.tick_at(now_ms)
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
        self.source.generation_at(tick, tables)
    }
}

#[async_trait]
impl Child for SimMachine {
    fn name(&self) -> &str {
        &self.source.name
    }

    async fn fetch(&self, request: &FetchRequest) -> fleetsql_aggregator::Result<Arc<Generation>> {
        self.source.answer(request).await
    }
}

/// A whole simulated cluster answering as its proxy would: the tables of
/// all its machines, already merged, generated directly as Arrow (one
/// column per table for the cluster, re-sampling only the rows that
/// churned). The rows are exactly those of the cluster's [`SimMachine`]s
/// merged by a real proxy, at a fraction of the cost, so a benchmark can
/// feed a real TLA with 100,000 machines from one process.
#[derive(Debug)]
pub struct SimProxy {
    source: Arc<Source>,
}

impl SimProxy {
    pub(crate) fn new(
        name: String,
        profiles: Vec<Profile>,
        processes: usize,
        tick_ms: i64,
        churn: f64,
        rows: RowChurn,
    ) -> Self {
        SimProxy {
            source: Arc::new(Source {
                name,
                profiles,
                processes,
                tick_ms,
                churn,
                rows,
                state: Mutex::new(SourceState::default()),
            }),
        }
    }

    pub fn cluster(&self) -> &str {
        self.source
            .profiles
            .first()
            .map_or("", |p| p.cluster.as_str())
    }

    pub fn machines(&self) -> usize {
        self.source.profiles.len()
    }

    pub fn tick_at(&self, now_ms: i64) -> u64 {
        self.source.tick_at(now_ms)
    }

    /// The cluster's merged generation at `tick` (see
    /// [`SimMachine::generation_at`]).
    pub fn generation_at(
        &self,
        tick: u64,
        tables: &BTreeSet<String>,
    ) -> Result<Arc<Generation>, ModelError> {
        self.source.generation_at(tick, tables)
    }
}

#[async_trait]
impl Child for SimProxy {
    fn name(&self) -> &str {
        &self.source.name
    }

    async fn fetch(&self, request: &FetchRequest) -> fleetsql_aggregator::Result<Arc<Generation>> {
        self.source.answer(request).await
    }
}
