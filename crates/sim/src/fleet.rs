use std::collections::HashMap;
use std::sync::Arc;

use fleetsql_aggregator::{Child, ChildGroup};
use fleetsql_model::now_ms;

use crate::geo::{continent, region_of_cluster};
use crate::profile::Profile;
use crate::{Result, SimConfig, SimMachine, SimProxy};

/// The machines of one cluster.
#[derive(Debug, Clone)]
pub struct SimCluster {
    /// `cluster-00`, `cluster-01`, ...
    pub name: String,
    pub machines: Vec<Arc<SimMachine>>,
}

impl SimCluster {
    /// One child group per machine: what a cluster proxy merges.
    pub fn child_groups(&self) -> Vec<ChildGroup> {
        self.machines
            .iter()
            .map(|m| ChildGroup::single(m.clone()))
            .collect()
    }
}

/// A deterministic simulated fleet: `clusters` x `machines_per_cluster`
/// machines, each a [`SimMachine`].
#[derive(Debug, Clone)]
pub struct SimFleet {
    config: SimConfig,
    clusters: Vec<SimCluster>,
}

fn digits(max: usize) -> usize {
    max.max(1).to_string().len()
}

impl SimFleet {
    pub fn new(config: SimConfig) -> Result<Self> {
        config.validate()?;
        let cluster_width = digits(config.clusters - 1).max(2);
        let machine_width = digits(config.machines_per_cluster - 1).max(3);
        let mut profiles: Vec<Vec<Profile>> = Vec::with_capacity(config.clusters);
        for c in 0..config.clusters {
            let cluster = format!("cluster-{c:0cluster_width$}");
            let machines = (0..config.machines_per_cluster)
                .map(|m| {
                    let index = c * config.machines_per_cluster + m;
                    let host = format!("{cluster}-m{m:0machine_width$}");
                    Profile::new(config.seed, index, c, &cluster, host)
                })
                .collect();
            profiles.push(machines);
        }
        spread_hits(&mut profiles);
        let tick_ms = config.tick_ms();
        let clusters = profiles
            .into_iter()
            .map(|machines| SimCluster {
                name: machines[0].cluster.clone(),
                machines: machines
                    .into_iter()
                    .map(|p| {
                        Arc::new(SimMachine::new(
                            p,
                            config.processes_per_machine,
                            tick_ms,
                            config.churn,
                            config.rows,
                        ))
                    })
                    .collect(),
            })
            .collect();
        Ok(SimFleet { config, clusters })
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    pub fn clusters(&self) -> &[SimCluster] {
        &self.clusters
    }

    pub fn machines(&self) -> impl Iterator<Item = &Arc<SimMachine>> {
        self.clusters.iter().flat_map(|c| c.machines.iter())
    }

    /// Every cluster's name with its machines as children: the agents of
    /// an in-process tree (`fleetsql_tiers::LocalFleet::add_cluster`).
    pub fn machines_by_cluster(&self) -> Vec<(String, Vec<Arc<dyn Child>>)> {
        self.clusters
            .iter()
            .map(|c| {
                let machines = c
                    .machines
                    .iter()
                    .map(|m| m.clone() as Arc<dyn Child>)
                    .collect();
                (c.name.clone(), machines)
            })
            .collect()
    }

    /// One simulated proxy per cluster (`cluster-00-proxy`, ...), each
    /// answering with its whole cluster's rows already merged: the same
    /// rows a real proxy over [`SimFleet::machines_by_cluster`] would send, made
    /// directly, so one process can feed a real TLA a large fleet.
    pub fn proxies(&self) -> Vec<Arc<SimProxy>> {
        self.clusters
            .iter()
            .map(|c| {
                Arc::new(SimProxy::new(
                    format!("{}-proxy", c.name),
                    c.machines.iter().map(|m| m.profile_clone()).collect(),
                    self.config.processes_per_machine,
                    self.config.tick_ms(),
                    self.config.churn,
                    self.config.rows,
                ))
            })
            .collect()
    }

    pub fn machine_count(&self) -> usize {
        self.config.machines()
    }

    /// The simulated tick now.
    pub fn current_tick(&self) -> u64 {
        self.config.tick_at(now_ms())
    }
}

/// Gives each serving machine its share of its continent's hits: the
/// continent's total is split evenly over its clusters and each cluster's
/// share over its serving machines, so the continent query shows the
/// seed's figures and order whatever the fleet's size.
fn spread_hits(profiles: &mut [Vec<Profile>]) {
    let mut clusters_per_continent: HashMap<&str, usize> = HashMap::new();
    for c in 0..profiles.len() {
        *clusters_per_continent
            .entry(region_of_cluster(c).continent)
            .or_default() += 1;
    }
    for (c, machines) in profiles.iter_mut().enumerate() {
        let code = region_of_cluster(c).continent;
        let Some(continent) = continent(code) else {
            continue;
        };
        let serving = machines.iter().filter(|p| p.role.serves_traffic()).count();
        if serving == 0 {
            continue;
        }
        let share = continent.hits / clusters_per_continent[code] as f64 / serving as f64;
        for p in machines.iter_mut().filter(|p| p.role.serves_traffic()) {
            p.mean_hits = share;
        }
    }
}
