//! A tree run in one process: the demo's simulated fleet and the tests'
//! fixture fleets. It is planned from a [`Topology`] by the same code as
//! the processes ([`crate::plan`]); only its agents are given here (any
//! [`Child`]: simulated machines, fixture machines, a local agent) and its
//! proxies and TLAs are linked in memory instead of over Flight.

use std::collections::BTreeMap;
use std::sync::Arc;

use fleetsql_aggregator::{Aggregator, Child};

use crate::plan::{self, Links};
use crate::topology::{AgentEntry, ProxyEntry, Topology};
use crate::{Result, TiersError};

/// The proxies and TLAs of a topology, running in this process.
#[derive(Debug)]
pub struct LocalFleet {
    proxies: BTreeMap<String, Aggregator>,
    tlas: BTreeMap<String, Aggregator>,
}

impl LocalFleet {
    /// Adds cluster `cluster` to `topology`: each machine as an agent
    /// named after the child, and one proxy `proxy-<cluster>`; the machines
    /// go into `agents`, the children to hand to [`LocalFleet::start`].
    pub fn add_cluster(
        topology: &mut Topology,
        agents: &mut BTreeMap<String, Arc<dyn Child>>,
        cluster: &str,
        machines: impl IntoIterator<Item = Arc<dyn Child>>,
    ) {
        for machine in machines {
            let name = machine.name().to_string();
            topology.agents.insert(
                name.clone(),
                AgentEntry {
                    cluster: cluster.to_string(),
                    ..AgentEntry::default()
                },
            );
            agents.insert(name, machine);
        }
        topology.proxies.insert(
            format!("proxy-{cluster}"),
            ProxyEntry {
                cluster: cluster.to_string(),
                ..ProxyEntry::default()
            },
        );
    }

    /// Starts every proxy and TLA of `topology` over `agents` (one child
    /// per `[agents.NAME]`, by name), planned as the processes are.
    pub fn start(topology: &Topology, agents: BTreeMap<String, Arc<dyn Child>>) -> Result<Self> {
        topology.validate()?;
        if let Some(missing) = topology.agents.keys().find(|a| !agents.contains_key(*a)) {
            return Err(TiersError::Config {
                path: "topology".into(),
                reason: format!("agent `{missing}` is in the topology but was not given"),
            });
        }
        let mut links = Links::in_process();
        for (name, child) in agents {
            links.insert(name, child);
        }
        let mut proxies = BTreeMap::new();
        for name in topology.proxies.keys() {
            let plan = plan::proxy(topology, name, &links)?;
            let proxy = Aggregator::start(plan.config, plan.groups);
            links.insert(name.clone(), proxy.as_child());
            proxies.insert(name.clone(), proxy);
        }
        let mut tlas = BTreeMap::new();
        for name in topology.tlas.keys() {
            let plan = plan::tla(topology, name, &links)?;
            tlas.insert(name.clone(), Aggregator::start(plan.config, plan.groups));
        }
        Ok(LocalFleet { proxies, tlas })
    }

    /// How SQL nodes reach this fleet's TLAs.
    pub fn links(&self) -> Links {
        let mut links = Links::in_process();
        for (name, tla) in &self.tlas {
            links.insert(name.clone(), tla.as_child());
        }
        links
    }

    /// The TLA `name` (its `as_child()` for a SQL node started by hand,
    /// its stats for benchmarks).
    pub fn tla(&self, name: &str) -> Option<&Aggregator> {
        self.tlas.get(name)
    }

    /// A tree of one TLA `tla` over `clusters` (name, machines), and the
    /// agents to start it with: the shape of the demo, tests and benches.
    pub fn one_tla(
        tick: std::time::Duration,
        clusters: impl IntoIterator<Item = (String, Vec<Arc<dyn Child>>)>,
        tla: crate::TlaEntry,
    ) -> (Topology, BTreeMap<String, Arc<dyn Child>>) {
        let mut topology = Topology {
            tick,
            ..Topology::default()
        };
        let mut agents = BTreeMap::new();
        for (cluster, machines) in clusters {
            Self::add_cluster(&mut topology, &mut agents, &cluster, machines);
        }
        topology.tlas.insert("tla".to_string(), tla);
        (topology, agents)
    }

    /// Makes a generation at every tier now, bottom up (tests, start-up),
    /// rather than waiting for the next tick.
    pub async fn tick_now(&self) {
        for tier in [&self.proxies, &self.tlas] {
            for aggregator in tier.values() {
                let mut receiver = aggregator.subscribe();
                let before = receiver.borrow_and_update().meta.id;
                aggregator.tick_now();
                let _ = receiver.wait_for(|g| g.meta.id > before).await;
            }
        }
    }

    /// TLAs first, so no parent fetches from a stopped proxy.
    pub async fn shutdown(self) {
        for tla in self.tlas.into_values() {
            tla.shutdown().await;
        }
        for proxy in self.proxies.into_values() {
            proxy.shutdown().await;
        }
    }
}
