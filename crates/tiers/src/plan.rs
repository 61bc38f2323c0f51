//! The one place that turns a [`Topology`] into the configuration of each
//! tier: tick offsets, which children a proxy or TLA collects from, the
//! machines each cluster is expected to have, failover groups, stale
//! limits, prewarm lists and a SQL node's TLAs. Processes (`fleetsql
//! agent|proxy|tla|sqlnode|tla-sql`), the demo and the tests all plan
//! through here; only how a child is reached differs ([`Links`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fleetsql_aggregator::{AggregatorConfig, Child, ChildGroup, StaticTables};
use fleetsql_flight::{FlightChild, FlightChildOptions, TlsContext, TransferStats};
use fleetsql_sqlnode::SqlNodeConfig;

use crate::topology::Topology;
use crate::{Result, TiersError};

/// Tiers tick one after the other within a tick: agents at its start,
/// proxies a fifth later, TLAs two fifths, so each merges its children's
/// fresh generations and a row waits at most about one tick per hop.
pub fn tick_offset(tick: Duration, role: Role) -> Duration {
    let tier = match role {
        Role::Agent => 0,
        Role::Proxy => 1,
        Role::Tla => 2,
    };
    tick * tier / 5
}

/// The aggregating roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Agent,
    Proxy,
    Tla,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Proxy => "proxy",
            Role::Tla => "tla",
        }
    }
}

/// How a tier reaches a node the topology names: in this process when
/// that node was given here (the demo, tests, a combined TLA/SQL node),
/// otherwise over Flight at the address the topology gives it.
#[derive(Debug, Clone, Default)]
pub struct Links {
    local: BTreeMap<String, Link>,
    remote: bool,
    /// This node's mTLS identity for the children it dials (the topology's
    /// `[tls]`); `None`: plaintext.
    tls: Option<Arc<TlsContext>>,
    /// The history stores of in-process TLAs that keep history (a
    /// combined node's own TLA): its SQL node syncs from them directly.
    history: BTreeMap<String, Arc<fleetsql_history::HistoryStore>>,
}

/// One reached child, with its transfer counters when it is remote.
#[derive(Debug, Clone)]
pub struct Link {
    pub child: Arc<dyn Child>,
    pub stats: Option<Arc<TransferStats>>,
}

impl Links {
    /// Every node over Flight (a process of a distributed fleet).
    pub fn remote() -> Links {
        Links {
            local: BTreeMap::new(),
            remote: true,
            tls: None,
            history: BTreeMap::new(),
        }
    }

    /// Every node over Flight, over mutual TLS with `tls` when given.
    pub fn remote_with(tls: Option<Arc<TlsContext>>) -> Links {
        Links {
            tls,
            ..Links::remote()
        }
    }

    /// The identity remote children are dialled with.
    pub fn tls(&self) -> Option<&Arc<TlsContext>> {
        self.tls.as_ref()
    }

    /// Only nodes given with [`Links::with`]; a node not given is an error
    /// (an in-process tree never dials out).
    pub fn in_process() -> Links {
        Links::default()
    }

    /// `name` is reached in this process, as `child`.
    pub fn with(mut self, name: impl Into<String>, child: Arc<dyn Child>) -> Links {
        self.insert(name, child);
        self
    }

    /// The in-process TLA `name` keeps history in `store`.
    pub fn with_history(
        mut self,
        name: impl Into<String>,
        store: Arc<fleetsql_history::HistoryStore>,
    ) -> Links {
        self.history.insert(name.into(), store);
        self
    }

    /// The history stores of in-process TLAs, by name.
    pub fn history(&self) -> &BTreeMap<String, Arc<fleetsql_history::HistoryStore>> {
        &self.history
    }

    pub fn insert(&mut self, name: impl Into<String>, child: Arc<dyn Child>) {
        self.local.insert(name.into(), Link { child, stats: None });
    }

    /// Keeps an existing link to `name` (a re-planned tier whose child did
    /// not move keeps its connection, its diff base and its counters).
    pub fn reuse(&mut self, name: impl Into<String>, link: Link) {
        self.local.insert(name.into(), link);
    }

    /// Takes every in-process link of `other` (a combined TLA/SQL node
    /// re-planned from a re-read file keeps reading its own TLA in memory).
    pub fn keep_local_of(&mut self, other: &Links) {
        for (name, link) in &other.local {
            self.local.insert(name.clone(), link.clone());
        }
        for (name, store) in &other.history {
            self.history.insert(name.clone(), store.clone());
        }
    }

    fn link(
        &self,
        topology: &Topology,
        name: &str,
        addr: Option<SocketAddr>,
        role: &'static str,
    ) -> Result<Link> {
        if let Some(link) = self.local.get(name) {
            return Ok(link.clone());
        }
        if !self.remote {
            return Err(TiersError::Config {
                path: "topology".into(),
                reason: format!(
                    "{role} `{name}` is not running in this process and this tree does not dial out"
                ),
            });
        }
        let addr = addr.ok_or_else(|| TiersError::MissingAddress {
            role,
            name: name.to_string(),
            field: "flight",
        })?;
        let defaults = FlightChildOptions::default();
        let child = FlightChild::new(
            name,
            format!("http://{addr}"),
            FlightChildOptions {
                request_timeout: topology.fetch_timeout.unwrap_or(defaults.request_timeout),
                tls: self.tls.clone(),
                ..defaults
            },
        )?;
        let stats = child.stats();
        Ok(Link {
            child: Arc::new(child),
            stats: Some(stats),
        })
    }
}

/// What an aggregating tier runs with: its configuration, its children
/// (grouped, with what each group is expected to cover), and the transfer
/// counters of its remote children for `/metrics`.
#[derive(Debug)]
pub struct TierPlan {
    pub config: AggregatorConfig,
    pub groups: Vec<ChildGroup>,
    pub children: Vec<Linked>,
}

/// A child a plan links to: its name, the address the topology gives it,
/// and the link.
#[derive(Debug, Clone)]
pub struct Linked {
    pub name: String,
    pub addr: Option<SocketAddr>,
    pub link: Link,
}

/// The transfer counters of the remote children among `children`, by name.
pub fn clients(children: &[Linked]) -> Vec<(String, Arc<TransferStats>)> {
    children
        .iter()
        .filter_map(|c| Some((c.name.clone(), c.link.stats.clone()?)))
        .collect()
}

/// Links that keep every child of `children` whose address in `topology`
/// is unchanged, and dial the others anew over Flight.
pub fn links_reusing(
    children: &[Linked],
    address_now: impl Fn(&str) -> Option<SocketAddr>,
    tls: Option<Arc<TlsContext>>,
) -> Links {
    let mut links = Links::remote_with(tls);
    for child in children {
        if address_now(&child.name) == child.addr {
            links.reuse(child.name.clone(), child.link.clone());
        }
    }
    links
}

pub(crate) fn unknown(role: &'static str, name: &str, known: Vec<&String>) -> TiersError {
    TiersError::UnknownNode {
        role,
        name: name.to_string(),
        known: known
            .into_iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn aggregator_config(topology: &Topology, name: &str, role: Role) -> AggregatorConfig {
    let mut config = AggregatorConfig::new(name, topology.tick);
    if let Some(timeout) = topology.fetch_timeout {
        config.fetch_timeout = timeout;
    }
    config.role = role.as_str().to_string();
    config.offset = tick_offset(topology.tick, role);
    config.stale_after = topology.stale_after();
    config
}

/// A cluster proxy: one child per agent of its cluster, each expected to
/// be one machine.
pub fn proxy(topology: &Topology, name: &str, links: &Links) -> Result<TierPlan> {
    proxy_with(topology, name, &BTreeMap::new(), links)
}

/// A cluster proxy whose cluster also has the members in `announced`
/// (agents that announced themselves: name → Flight address): one child
/// per listed or announced agent, each expected to be one machine; the
/// members `[clusters.NAME]` expects that are not known yet, and the
/// machines its `machines` (or the proxy's) expects beyond those named,
/// are counted expected as children that never answer.
pub fn proxy_with(
    topology: &Topology,
    name: &str,
    announced: &BTreeMap<String, SocketAddr>,
    links: &Links,
) -> Result<TierPlan> {
    let entry = topology
        .proxies
        .get(name)
        .ok_or_else(|| unknown("proxy", name, topology.proxies.keys().collect()))?;
    let cluster = &entry.cluster;
    let declared = topology.clusters.get(cluster);
    let mut agents: BTreeMap<String, Option<SocketAddr>> = topology
        .agents
        .iter()
        .filter(|(_, a)| &a.cluster == cluster)
        .map(|(n, a)| (n.clone(), a.flight))
        .collect();
    for (member, addr) in announced {
        agents.entry(member.clone()).or_insert(Some(*addr));
    }
    if agents.is_empty() && declared.is_none() && entry.machines.is_none() {
        return Err(TiersError::Config {
            path: "topology".into(),
            reason: format!(
                "proxy `{name}` has no agents in this file to collect from; list cluster `{cluster}`'s agents under [agents.NAME], or declare [clusters.{cluster}] for agents that join by themselves"
            ),
        });
    }
    let mut groups = Vec::new();
    let mut children = Vec::new();
    for (agent_name, addr) in &agents {
        let link = links.link(topology, agent_name, *addr, "agent")?;
        groups.push(ChildGroup::single(link.child.clone()).expecting(cluster.clone(), 1));
        children.push(Linked {
            name: agent_name.clone(),
            addr: *addr,
            link,
        });
    }
    let mut known = agents.len() as u64;
    for member in declared.iter().flat_map(|d| &d.members) {
        if !agents.contains_key(member) {
            let waiting = Unannounced::named(member, "has not announced itself yet");
            groups.push(ChildGroup::single(Arc::new(waiting)).expecting(cluster.clone(), 1));
            known += 1;
        }
    }
    let machines = declared
        .and_then(|d| d.machines)
        .unwrap_or(0)
        .max(entry.machines.unwrap_or(0));
    if machines > known {
        let missing = machines - known;
        let waiting = Unannounced::named(
            &format!("{cluster}:unannounced"),
            &format!(
                "{missing} of the {machines} machines expected in cluster `{cluster}` are not known by name: they have not announced themselves"
            ),
        );
        groups.push(ChildGroup::single(Arc::new(waiting)).expecting(cluster.clone(), missing));
    }
    Ok(TierPlan {
        config: aggregator_config(topology, name, Role::Proxy),
        groups,
        children,
    })
}

/// Machines a proxy expects that have not announced themselves: a child
/// that never answers, so they are counted expected and unseen.
#[derive(Debug)]
struct Unannounced {
    name: String,
    reason: String,
}

impl Unannounced {
    fn named(name: &str, reason: &str) -> Unannounced {
        Unannounced {
            name: name.to_string(),
            reason: reason.to_string(),
        }
    }
}

#[async_trait::async_trait]
impl Child for Unannounced {
    fn name(&self) -> &str {
        &self.name
    }

    async fn fetch(
        &self,
        _request: &fleetsql_aggregator::FetchRequest,
    ) -> fleetsql_aggregator::Result<Arc<fleetsql_model::Generation>> {
        Err(fleetsql_aggregator::AggregatorError::Child {
            child: self.name.clone(),
            reason: self.reason.clone(),
        })
    }
}

/// A TLA: one child group per cluster it spans, whose members are that
/// cluster's proxies (tried in name order: the failover order), plus its
/// static tables.
pub fn tla(topology: &Topology, name: &str, links: &Links) -> Result<TierPlan> {
    let entry = topology
        .tlas
        .get(name)
        .ok_or_else(|| unknown("tla", name, topology.tlas.keys().collect()))?;
    let mut groups = Vec::new();
    let mut children = Vec::new();
    let span = topology.tla_span(name);
    for (cluster, machines) in topology.cluster_sizes() {
        if span.as_ref().is_some_and(|c| !c.contains(&cluster)) {
            continue;
        }
        let proxies = topology.proxies_of(&cluster);
        if proxies.is_empty() {
            return Err(TiersError::Config {
                path: "topology".into(),
                reason: format!(
                    "cluster `{cluster}` has no proxy for TLA `{name}`; add a [proxies.NAME] with cluster = \"{cluster}\""
                ),
            });
        }
        let mut members: Vec<Arc<dyn Child>> = Vec::new();
        for (proxy_name, proxy) in proxies {
            let link = links.link(topology, proxy_name, proxy.flight, "proxy")?;
            members.push(link.child.clone());
            children.push(Linked {
                name: proxy_name.clone(),
                addr: proxy.flight,
                link,
            });
        }
        groups.push(ChildGroup {
            name: cluster.clone(),
            members,
            expected: Some((cluster, machines)),
        });
    }
    if let Some(index) = &entry.static_tables {
        let tables = StaticTables::open(index)?;
        groups.push(ChildGroup::single(Arc::new(tables)));
    }
    let mut config = aggregator_config(topology, name, Role::Tla);
    config.prewarm = entry.prewarm.clone();
    // A table kept in history is collected every tick, asked for or not.
    if let Some(history) = &entry.history {
        config.prewarm.extend(history.tables.iter().cloned());
    }
    if let Some((set_name, set)) = topology.set_of_tla(name) {
        config.span = Some(set_name.clone());
        config.prewarm.extend(set.prewarm.iter().cloned());
    }
    Ok(TierPlan {
        config,
        groups,
        children,
    })
}

/// What a SQL node runs with: its configuration and the TLAs it may read
/// from (it picks one by the clusters each sees plus a locality bonus).
#[derive(Debug)]
pub struct SqlPlan {
    pub config: SqlNodeConfig,
    pub sources: Vec<Arc<dyn Child>>,
    pub children: Vec<Linked>,
}

pub fn sqlnode(topology: &Topology, name: &str, links: &Links) -> Result<SqlPlan> {
    let entry = topology.sqlnode(name)?;
    let set = topology.set_of_sqlnode(name);
    let tlas = topology.sqlnode_tlas(name);
    let mut sources = Vec::new();
    let mut children = Vec::new();
    for tla_name in tlas.keys() {
        let tla = topology
            .tlas
            .get(tla_name)
            .ok_or_else(|| unknown("tla", tla_name, topology.tlas.keys().collect()))?;
        let link = links.link(topology, tla_name, tla.flight, "tla")?;
        sources.push(link.child.clone());
        children.push(Linked {
            name: tla_name.clone(),
            addr: tla.flight,
            link,
        });
    }
    let mut config = SqlNodeConfig::new(name, topology.tick);
    config.locality_bonus = tlas;
    config.prewarm = entry.prewarm.clone();
    config.request_idle_expiry = topology.table_expiry;
    // A set's limits hold for each of its nodes; a node's own setting wins.
    if let Some((set_name, set)) = set {
        config.set = Some(set_name.clone());
        config.prewarm.extend(set.prewarm.iter().cloned());
        config.domain = set.domain.clone();
        if let Some(timeout) = set.query_timeout {
            config.query_timeout = timeout;
        }
        if let Some(mib) = set.query_memory_mib {
            config.memory_limit = mib << 20;
        }
        if let Some(max) = set.max_concurrent_queries {
            config.max_concurrent_queries = Some(max);
        }
        if !set.subsets.is_empty() {
            config.partition = Some(fleetsql_sqlnode::Partition {
                set: set_name.clone(),
                own: set
                    .subsets
                    .iter()
                    .find(|(_, sub)| sub.sqlnodes.contains(name))
                    .map(|(sub_name, _)| sub_name.clone()),
                subsets: set
                    .subsets
                    .iter()
                    .map(|(sub_name, sub)| fleetsql_sqlnode::Subset {
                        name: sub_name.clone(),
                        tables: sub.tables.clone(),
                        nodes: sub
                            .sqlnodes
                            .iter()
                            .map(|n| fleetsql_sqlnode::Peer {
                                name: n.clone(),
                                http: topology.sqlnodes.get(n).and_then(|e| e.http),
                            })
                            .collect(),
                    })
                    .collect(),
            });
        }
    }
    if let Some(max) = entry.max_concurrent_queries {
        config.max_concurrent_queries = Some(max);
    }
    if let Some(max) = entry.max_queued_queries {
        config.max_queued_queries = max;
    }
    if let Some(timeout) = entry.query_timeout {
        config.query_timeout = timeout;
    }
    if let Some(wait) = entry.table_wait {
        config.table_wait = wait;
    }
    if let Some(mib) = entry.query_memory_mib {
        config.memory_limit = mib << 20;
    }
    if let Some(max) = entry.max_requested_tables {
        config.request_limits.max_requested_tables = max;
    }
    if let Some(max) = entry.max_new_tables_per_client_minute {
        config.request_limits.max_new_tables_per_client_minute = max;
    }
    Ok(SqlPlan {
        config,
        sources,
        children,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TREE: &str = r#"
        tick = "1s"
        [agents.a1]
        cluster = "c1"
        flight = "127.0.0.1:7101"
        [agents.a2]
        cluster = "c1"
        flight = "127.0.0.1:7102"
        [agents.b1]
        cluster = "c2"
        flight = "127.0.0.1:7103"
        [proxies.p1]
        cluster = "c1"
        flight = "127.0.0.1:7201"
        [proxies.p1b]
        cluster = "c1"
        flight = "127.0.0.1:7202"
        [proxies.p2]
        cluster = "c2"
        flight = "127.0.0.1:7203"
        [tlas.t1]
        flight = "127.0.0.1:7301"
        prewarm = ["sys"]
        [tlas.t2]
        clusters = ["c2"]
        flight = "127.0.0.1:7302"
        [sqlnodes.s1]
        tlas = { t1 = 3, t2 = 0 }
        query_timeout = "7s"
    "#;

    #[tokio::test]
    async fn one_plan_for_every_tier() {
        let topology = Topology::parse(TREE).unwrap();
        let links = Links::remote();

        let p1 = proxy(&topology, "p1", &links).unwrap();
        assert_eq!(p1.config.offset, Duration::from_millis(200));
        assert_eq!(p1.config.stale_after, Duration::from_secs(3));
        assert_eq!(p1.groups.len(), 2, "one group per agent of c1");
        assert!(
            p1.groups
                .iter()
                .all(|g| g.expected == Some(("c1".to_string(), 1)))
        );
        assert_eq!(clients(&p1.children).len(), 2);

        let t1 = tla(&topology, "t1", &links).unwrap();
        assert_eq!(t1.config.offset, Duration::from_millis(400));
        assert_eq!(t1.config.prewarm.len(), 1);
        let spans: Vec<_> = t1.groups.iter().map(|g| g.expected.clone()).collect();
        assert_eq!(
            spans,
            [Some(("c1".to_string(), 2)), Some(("c2".to_string(), 1))]
        );
        assert_eq!(
            t1.groups[0].members.len(),
            2,
            "c1 fails over between p1, p1b"
        );

        let t2 = tla(&topology, "t2", &links).unwrap();
        assert_eq!(t2.groups.len(), 1, "t2 spans c2 only");

        let s1 = sqlnode(&topology, "s1", &links).unwrap();
        assert_eq!(s1.sources.len(), 2);
        assert_eq!(s1.config.locality_bonus["t1"], 3);
        assert_eq!(s1.config.query_timeout, Duration::from_secs(7));
    }

    #[tokio::test]
    async fn a_proxy_plans_announced_members_and_counts_the_expected_ones() {
        let topology = Topology::parse(
            "[clusters.c1]\nmembers = [\"a\", \"later\"]\nmachines = 5\n\
             [agents.listed]\ncluster = \"c1\"\nflight = \"127.0.0.1:7101\"\n\
             [proxies.p1]\ncluster = \"c1\"",
        )
        .unwrap();
        let announced = BTreeMap::from([
            ("a".to_string(), "127.0.0.1:7102".parse().unwrap()),
            ("b".to_string(), "127.0.0.1:7103".parse().unwrap()),
        ]);
        let plan = proxy_with(&topology, "p1", &announced, &Links::remote()).unwrap();
        let names: Vec<_> = plan.groups.iter().map(|g| g.name.as_str()).collect();
        // Listed and announced agents are children; `later` is expected by
        // name; 5 machines expected, 4 known: one more never answers.
        assert_eq!(names, ["a", "b", "listed", "later", "c1:unannounced"]);
        let expected: u64 = plan
            .groups
            .iter()
            .filter_map(|g| g.expected.as_ref())
            .map(|e| e.1)
            .sum();
        assert_eq!(expected, 5);
        assert_eq!(plan.children.len(), 3);
        // Nothing announced and nothing expected: a proxy with no children.
        let empty = Topology::parse("[clusters.c1]\n[proxies.p1]\ncluster = \"c1\"").unwrap();
        let plan = proxy_with(&empty, "p1", &BTreeMap::new(), &Links::remote()).unwrap();
        assert!(plan.groups.is_empty());
    }

    #[tokio::test]
    async fn a_set_plans_its_span_prewarm_and_limits() {
        let topology = Topology::parse(&format!(
            "{TREE}\n[tlas.t3]\nflight = \"127.0.0.1:7303\"\n[sqlnodes.s3]\nquery_timeout = \"3s\"\n\
             [sets.edge]\nclusters = [\"c1\"]\ntlas = [\"t3\"]\nsqlnodes = [\"s3\"]\nprewarm = [\"filesystem\"]\n\
             domain = [\"reader\"]\nquery_timeout = \"9s\"\nquery_memory_mib = 64\nmax_concurrent_queries = 4\n"
        ))
        .unwrap();
        let links = Links::remote();
        let t3 = tla(&topology, "t3", &links).unwrap();
        let spans: Vec<_> = t3.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(spans, ["c1"], "t3 collects only its set's span");
        assert_eq!(t3.config.span.as_deref(), Some("edge"));
        assert!(t3.config.prewarm.contains("filesystem"));
        let s3 = sqlnode(&topology, "s3", &links).unwrap();
        assert_eq!(s3.sources.len(), 1);
        assert_eq!(s3.config.set.as_deref(), Some("edge"));
        assert_eq!(
            s3.config.query_timeout,
            Duration::from_secs(3),
            "the node's own wins"
        );
        assert_eq!(s3.config.memory_limit, 64 << 20);
        assert_eq!(s3.config.max_concurrent_queries, Some(4));
        assert!(s3.config.prewarm.contains("filesystem"));
        assert_eq!(
            s3.config.domain,
            Some(std::collections::BTreeSet::from([
                fleetsql_auth::Role::Reader
            ]))
        );
        // Nodes outside every set plan as before.
        let t1 = tla(&topology, "t1", &links).unwrap();
        assert_eq!(t1.config.span, None);
        assert_eq!(t1.groups.len(), 2);
    }

    #[tokio::test]
    async fn an_in_process_tree_never_dials_out() {
        let topology = Topology::parse(TREE).unwrap();
        let err = proxy(&topology, "p1", &Links::in_process()).unwrap_err();
        assert!(
            err.to_string().contains("not running in this process"),
            "{err}"
        );
    }
}
