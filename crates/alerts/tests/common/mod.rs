//! A SQL node over a small simulated fleet, with an alerts directory.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fleetsql_alerts::{AlertService, AlertsConfig};
use fleetsql_sim::{SimConfig, SimFleet};
use fleetsql_sqlnode::{SqlNode, SqlNodeConfig};
use fleetsql_tiers::{LocalFleet, TlaEntry};

pub struct TestFleet {
    pub node: Arc<SqlNode>,
    _hierarchy: LocalFleet,
    pub dir: tempfile::TempDir,
}

impl TestFleet {
    /// 3 clusters x 4 machines; alert SQL picks machines by name so the
    /// instances do not depend on simulated values.
    pub async fn start() -> TestFleet {
        let tick = Duration::from_secs(3600);
        let sim = SimFleet::new(SimConfig {
            clusters: 3,
            machines_per_cluster: 4,
            processes_per_machine: 5,
            tick,
            ..SimConfig::default()
        })
        .unwrap();
        let (topology, agents) =
            LocalFleet::one_tla(tick, sim.machines_by_cluster(), TlaEntry::default());
        let hierarchy = LocalFleet::start(&topology, agents).unwrap();
        let tla = hierarchy.tla("tla").unwrap().as_child();
        let node = SqlNode::start(
            SqlNodeConfig::new("alerts-test", Duration::from_millis(200)),
            vec![tla],
        )
        .unwrap();
        hierarchy.tick_now().await;
        node.wait_for_generation(Duration::from_secs(30))
            .await
            .unwrap();
        TestFleet {
            node: Arc::new(node),
            _hierarchy: hierarchy,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn alerts_dir(&self) -> PathBuf {
        let dir = self.dir.path().join("alerts");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub fn service(&self) -> AlertService {
        let config = AlertsConfig::new(self.alerts_dir(), self.dir.path().join("state.db"));
        AlertService::open(self.node.clone(), config).unwrap()
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.alerts_dir().join(name), text).unwrap();
    }
}
