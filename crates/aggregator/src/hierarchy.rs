use std::sync::Arc;
use std::time::Duration;

use crate::{Aggregator, AggregatorConfig, Child, ChildGroup};

/// One cluster: its name and its machines (agents, simulated or real).
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub name: String,
    pub machines: Vec<Arc<dyn Child>>,
}

/// Cluster proxies and a TLA in one process: the demo's and the tests'
/// fleet above the agents. Each tier ticks a tenth of a tick after the one
/// below, so a generation carries data collected moments before.
#[derive(Debug)]
pub struct InProcessHierarchy {
    pub proxies: Vec<Aggregator>,
    pub tla: Aggregator,
}

impl InProcessHierarchy {
    /// Starts one proxy per cluster and a TLA over them plus `tla_extra`
    /// children (static tables).
    pub fn start(
        clusters: Vec<ClusterSpec>,
        tla_extra: Vec<Arc<dyn Child>>,
        tick: Duration,
    ) -> Self {
        let step = tick / 10;
        let expected: Vec<(String, u64)> = clusters
            .iter()
            .map(|c| (c.name.clone(), c.machines.len() as u64))
            .collect();
        let proxies: Vec<Aggregator> = clusters
            .into_iter()
            .map(|cluster| {
                let mut config = AggregatorConfig::new(format!("proxy-{}", cluster.name), tick);
                config.role = "proxy".to_string();
                config.offset = step;
                let groups = cluster
                    .machines
                    .into_iter()
                    .map(|m| ChildGroup::single(m).expecting(cluster.name.clone(), 1))
                    .collect();
                Aggregator::start(config, groups)
            })
            .collect();
        let mut groups: Vec<ChildGroup> = proxies
            .iter()
            .zip(expected)
            .map(|(p, (cluster, machines))| {
                ChildGroup::single(p.as_child()).expecting(cluster, machines)
            })
            .collect();
        groups.extend(tla_extra.into_iter().map(ChildGroup::single));
        let mut config = AggregatorConfig::new("tla", tick);
        config.role = "tla".to_string();
        config.offset = step * 2;
        let tla = Aggregator::start(config, groups);
        InProcessHierarchy { proxies, tla }
    }

    /// Makes a generation at every tier now, bottom up (tests, start-up).
    pub async fn tick_now(&self) {
        for proxy in &self.proxies {
            let mut receiver = proxy.subscribe();
            let before = receiver.borrow_and_update().meta.id;
            proxy.tick_now();
            let _ = receiver.wait_for(|g| g.meta.id > before).await;
        }
        let mut receiver = self.tla.subscribe();
        let before = receiver.borrow_and_update().meta.id;
        self.tla.tick_now();
        let _ = receiver.wait_for(|g| g.meta.id > before).await;
    }

    pub async fn shutdown(self) {
        self.tla.shutdown().await;
        for proxy in self.proxies {
            proxy.shutdown().await;
        }
    }
}
