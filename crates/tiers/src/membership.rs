//! Agents that join their cluster by themselves (issue 22): an agent knows
//! only its cluster and its proxies' addresses and announces itself to
//! each proxy, again every `announce_every` (a heartbeat); a proxy's
//! cluster is then the topology's agents of that cluster, plus every agent
//! that announced itself, plus the members the topology expects
//! (`[clusters.NAME]`). Each member is a child like a listed agent: fetched
//! from the next tick, counted missing while it does not answer.
//!
//! A member not heard from for `member_expiry` leaves the expected set:
//! logged, and kept as a `left` row of the proxy's `fleet_members` table
//! for another `member_expiry`, so "which machines went away" is a query.
//!
//! Announcements go to the proxy's HTTP port (`POST /v1/announce`, JSON,
//! [`ANNOUNCE_FORMAT`] versions it as the wire format versions a ticket),
//! not its Flight port: there, mutual TLS admits only the proxy's parents,
//! and an announcing agent is its child.
//!
//! Members survive a proxy restart in `<state_dir>/members-<proxy>.json`:
//! an agent that is down when its proxy restarts never announces again,
//! so only the file keeps it expected (and counted missing) until it
//! expires. Re-announcing within a heartbeat would lose exactly the
//! machines that are down.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray};
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use fleetsql_aggregator::OwnTables;
use fleetsql_flight::{FlightChild, FlightChildOptions, TlsContext, is_dns_name};
use fleetsql_model::{Table, Visibility, now_ms};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::topology::Topology;

/// The announcement format this version writes and reads; a proxy refuses
/// any other instead of guessing.
pub const ANNOUNCE_FORMAT: u32 = 1;

/// Where a proxy takes announcements (on its HTTP address).
pub const ANNOUNCE_PATH: &str = "/v1/announce";

/// A proxy as a joining agent is told of it: its HTTP address, and
/// optionally the name its certificate carries (`NAME@host:port`).
///
/// Under mutual TLS an agent serves only its proxies, by name. A name
/// learned from the proxy's answer comes over plain HTTP, where anyone on
/// the path could say it is another name the fleet CA certified (another
/// agent's, say) and so be served this machine's tables; a pinned name is
/// the only one served for that address, whatever the answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyAddress {
    pub name: Option<String>,
    pub http: SocketAddr,
}

/// A `--proxy` value that is neither `host:port` nor `NAME@host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{given}` is not a proxy address: give its HTTP `ip:port`, or `NAME@ip:port` to pin the name on its certificate (NAME: letters, digits, `-` and `.`)"
)]
pub struct ProxyAddressError {
    pub given: String,
}

impl std::str::FromStr for ProxyAddress {
    type Err = ProxyAddressError;

    fn from_str(text: &str) -> Result<ProxyAddress, ProxyAddressError> {
        let refused = || ProxyAddressError {
            given: text.chars().take(300).collect(),
        };
        let (name, addr) = match text.rsplit_once('@') {
            Some((name, addr)) if is_dns_name(name) => (Some(name.to_string()), addr),
            Some(_) => return Err(refused()),
            None => (None, text),
        };
        let http = addr.parse().map_err(|_| refused())?;
        Ok(ProxyAddress { name, http })
    }
}

impl std::fmt::Display for ProxyAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name}@{}", self.http),
            None => write!(f, "{}", self.http),
        }
    }
}

/// The table a proxy adds to its generations: one row per member.
pub const FLEET_MEMBERS: &str = "fleet_members";

/// Longest member name accepted (a DNS name's limit).
pub const MAX_NAME_LEN: usize = 253;

const MAX_VERSION_LEN: usize = 64;

/// Larger bodies are refused before they are read.
const MAX_BODY_BYTES: usize = 4096;

/// An agent saying it exists: the body of `POST /v1/announce`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// [`ANNOUNCE_FORMAT`].
    pub format: u32,
    /// The agent's name: unique in its cluster, its child name at the proxy.
    pub name: String,
    pub cluster: String,
    /// Where its proxies fetch from it.
    pub flight: String,
    /// The agent's fleetsql version.
    pub version: String,
}

/// A proxy's answer to an accepted announcement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceReply {
    pub format: u32,
    pub proxy: String,
    pub cluster: String,
    /// Announce again within this (a fraction of the member expiry).
    pub announce_every_ms: u64,
    /// The proxy's tick; an agent ticking otherwise delays its data.
    pub tick_ms: u64,
    /// This announcement made the agent a member (it was not one).
    pub joined: bool,
}

/// `GET /v1/announce`: who the proxy is, so an agent serving Flight over
/// mutual TLS lets this proxy in before announcing (the proxy dials it
/// back to verify the announcement).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyInfo {
    pub format: u32,
    pub proxy: String,
    pub cluster: String,
    /// It takes members over mutual TLS only.
    pub tls: bool,
}

/// How long a proxy waits for an announced agent to prove itself.
const PROOF_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an announcement was refused; each says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceError {
    #[error(
        "announcement format {got} is not supported (this proxy reads format {ANNOUNCE_FORMAT}); run the same fleetsql version on agents and proxies, or upgrade the proxies first"
    )]
    Format { got: u32 },
    #[error(
        "member name `{name}` is not accepted: use 1 to {MAX_NAME_LEN} characters of letters, digits, `.`, `-` and `_` (pass --name)"
    )]
    Name { name: String },
    #[error(
        "agent `{name}` announced Flight address `{flight}`, which a proxy cannot reach: give an IP address and port it listens on (pass --advertise ADDR when it listens on 0.0.0.0)"
    )]
    Address { name: String, flight: String },
    #[error(
        "agent `{name}` announced version `{version}`: at most {MAX_VERSION_LEN} printable characters"
    )]
    Version { name: String, version: String },
    #[error(
        "proxy `{proxy}` serves cluster `{serves}`, but agent `{name}` announced cluster `{announced}`: check the agent's --cluster and --proxy"
    )]
    WrongCluster {
        proxy: String,
        serves: String,
        name: String,
        announced: String,
    },
    #[error(
        "proxy `{proxy}` already has {max} members (the topology's `max_members`), so agent `{name}` is refused: raise `max_members`, split the cluster, or wait for members that went away to expire"
    )]
    Full {
        proxy: String,
        max: usize,
        name: String,
    },
    #[error(
        "agent `{name}` is listed in the topology with Flight address {listed}, but announced {announced}: correct the topology entry or the agent's --advertise"
    )]
    ListedElsewhere {
        name: String,
        listed: SocketAddr,
        announced: SocketAddr,
    },
    #[error(
        "proxy `{proxy}` takes members over mutual TLS only, and could not verify agent `{name}` at {flight}: {reason}. Start the agent with --tls-ca (the fleet CA), --tls-cert and --tls-key of a certificate issued for `{name}` (`fleetsql certs issue {name}`)"
    )]
    Unverified {
        proxy: String,
        name: String,
        flight: SocketAddr,
        reason: String,
    },
}

impl AnnounceError {
    fn status(&self) -> StatusCode {
        match self {
            AnnounceError::WrongCluster { .. }
            | AnnounceError::Full { .. }
            | AnnounceError::ListedElsewhere { .. } => StatusCode::CONFLICT,
            AnnounceError::Unverified { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The `reason` label of `fleetsql_announce_refusals_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            AnnounceError::Format { .. } => "format",
            AnnounceError::Name { .. } => "name",
            AnnounceError::Address { .. } => "address",
            AnnounceError::Version { .. } => "version",
            AnnounceError::WrongCluster { .. } => "wrong_cluster",
            AnnounceError::Full { .. } => "full",
            AnnounceError::ListedElsewhere { .. } => "listed_elsewhere",
            AnnounceError::Unverified { .. } => "unverified",
        }
    }
}

/// What a proxy's topology says about its cluster's membership.
#[derive(Debug, Clone, PartialEq)]
pub struct MembershipRules {
    pub proxy: String,
    pub cluster: String,
    pub expiry: Duration,
    pub max_members: usize,
    pub tick: Duration,
    /// The topology's agents of the cluster, with their Flight addresses.
    pub listed: BTreeMap<String, Option<SocketAddr>>,
    /// Members expected by name (`[clusters.NAME].members`).
    pub expected: BTreeSet<String>,
    /// Machines expected at least (`machines` of the cluster or proxy).
    pub machines: u64,
}

impl MembershipRules {
    /// The rules of proxy `proxy` (which must be in `topology`).
    pub fn of(topology: &Topology, proxy: &str) -> Option<MembershipRules> {
        let entry = topology.proxies.get(proxy)?;
        let cluster = topology.clusters.get(&entry.cluster);
        Some(MembershipRules {
            proxy: proxy.to_string(),
            cluster: entry.cluster.clone(),
            expiry: topology.member_expiry,
            max_members: topology.max_members,
            tick: topology.tick,
            listed: topology
                .agents
                .iter()
                .filter(|(_, a)| a.cluster == entry.cluster)
                .map(|(name, a)| (name.clone(), a.flight))
                .collect(),
            expected: cluster.map(|c| c.members.clone()).unwrap_or_default(),
            machines: cluster
                .and_then(|c| c.machines)
                .unwrap_or(0)
                .max(entry.machines.unwrap_or(0)),
        })
    }

    /// How often members should announce themselves: often enough that
    /// a few lost announcements do not make a live member expire.
    pub fn announce_every(&self) -> Duration {
        (self.expiry / 6).clamp(Duration::from_millis(250), Duration::from_secs(60))
    }
}

/// A member known from its announcements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub flight: SocketAddr,
    pub version: String,
    /// Wall-clock ms of its first and its latest announcement.
    pub first_ms: i64,
    pub last_ms: i64,
}

/// A member that expired, kept for `fleet_members` for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    pub member: Member,
    pub left_ms: i64,
}

/// What an accepted announcement changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// A new member: the proxy's children change.
    Joined,
    /// A member announced another address: its child is dialled anew.
    Moved { from: SocketAddr },
    /// A heartbeat (or a listed agent): nothing changes.
    Heard,
}

/// The state file's contents.
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    format: u32,
    cluster: String,
    members: Vec<Member>,
}

/// One proxy's view of its cluster's announced members (pure: time is
/// passed in, so the rules are tested without waiting).
#[derive(Debug)]
pub struct Membership {
    rules: MembershipRules,
    members: BTreeMap<String, Member>,
    left: VecDeque<Left>,
    state_file: Option<PathBuf>,
    /// Heartbeats not yet written (joins and leaves are written at once).
    unsaved: bool,
    saved_ms: i64,
}

impl Membership {
    pub fn new(rules: MembershipRules) -> Membership {
        Membership {
            rules,
            members: BTreeMap::new(),
            left: VecDeque::new(),
            state_file: None,
            unsaved: false,
            saved_ms: 0,
        }
    }

    /// The members kept in `dir` by a previous run of this proxy, kept
    /// there from now on. A file that cannot be read is logged and left
    /// alone until the next change overwrites it: the members it held
    /// announce themselves again within a heartbeat, except those down.
    pub fn with_state_dir(rules: MembershipRules, dir: &Path) -> Membership {
        let file = dir.join(format!("members-{}.json", rules.proxy));
        let mut membership = Membership::new(rules);
        match std::fs::read(&file) {
            Ok(bytes) => match serde_json::from_slice::<StateFile>(&bytes) {
                Ok(state)
                    if state.format == ANNOUNCE_FORMAT
                        && state.cluster == membership.rules.cluster =>
                {
                    for member in state.members {
                        membership.members.insert(member.name.clone(), member);
                    }
                    tracing::info!(file = %file.display(), members = membership.members.len(), "cluster members restored");
                }
                Ok(state) => tracing::warn!(
                    file = %file.display(),
                    cluster = %state.cluster,
                    format = state.format,
                    "cluster members file is of another cluster or format; starting without it (it is replaced at the next change)"
                ),
                Err(e) => tracing::error!(
                    file = %file.display(),
                    error = %e,
                    "cluster members file is not readable; starting without it: members that are down now are not expected until they announce again (it is replaced at the next change)"
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(file = %file.display(), error = %e, "cannot read the cluster members file; starting without it")
            }
        }
        membership.state_file = Some(file);
        membership
    }

    pub fn rules(&self) -> &MembershipRules {
        &self.rules
    }

    /// New rules from a re-read topology; members of a cluster this proxy
    /// no longer serves are forgotten.
    pub fn set_rules(&mut self, rules: MembershipRules) {
        if rules.cluster != self.rules.cluster {
            self.members.clear();
            self.left.clear();
            self.unsaved = true;
        }
        self.rules = rules;
    }

    /// The announced Flight address, when the announcement is well formed,
    /// of this proxy's cluster, and not at odds with the topology.
    fn validate(&self, a: &Announcement) -> Result<SocketAddr, AnnounceError> {
        if a.format != ANNOUNCE_FORMAT {
            return Err(AnnounceError::Format { got: a.format });
        }
        if !valid_name(&a.name) {
            return Err(AnnounceError::Name {
                name: a.name.chars().take(MAX_NAME_LEN + 1).collect(),
            });
        }
        if a.version.len() > MAX_VERSION_LEN || a.version.chars().any(|c| c.is_control()) {
            return Err(AnnounceError::Version {
                name: a.name.clone(),
                version: a.version.chars().take(MAX_VERSION_LEN).collect(),
            });
        }
        let flight: SocketAddr = match a.flight.parse() {
            Ok(addr) if reachable(addr) => addr,
            _ => {
                return Err(AnnounceError::Address {
                    name: a.name.clone(),
                    flight: a.flight.chars().take(100).collect(),
                });
            }
        };
        if a.cluster != self.rules.cluster {
            return Err(AnnounceError::WrongCluster {
                proxy: self.rules.proxy.clone(),
                serves: self.rules.cluster.clone(),
                name: a.name.clone(),
                announced: a.cluster.chars().take(MAX_NAME_LEN).collect(),
            });
        }
        if let Some(listed) = self.rules.listed.get(&a.name) {
            return match listed {
                Some(listed) if *listed != flight => Err(AnnounceError::ListedElsewhere {
                    name: a.name.clone(),
                    listed: *listed,
                    announced: flight,
                }),
                _ => Ok(flight),
            };
        }
        Ok(flight)
    }

    /// What an announcement would change, or why it is refused, without
    /// taking it: a proxy with `[tls]` proves a join or a move before
    /// taking it ([`Registry`]).
    pub fn check(&self, a: &Announcement) -> Result<Accepted, AnnounceError> {
        let flight = self.validate(a)?;
        if self.rules.listed.contains_key(&a.name) {
            return Ok(Accepted::Heard);
        }
        match self.members.get(&a.name) {
            Some(member) if member.flight != flight => Ok(Accepted::Moved {
                from: member.flight,
            }),
            Some(_) => Ok(Accepted::Heard),
            None if self.members.len() + self.rules.listed.len() >= self.rules.max_members => {
                Err(self.full(&a.name))
            }
            None => Ok(Accepted::Joined),
        }
    }

    fn full(&self, name: &str) -> AnnounceError {
        AnnounceError::Full {
            proxy: self.rules.proxy.clone(),
            max: self.rules.max_members,
            name: name.to_string(),
        }
    }

    /// Takes an announcement made at `now_ms`.
    pub fn announce(&mut self, a: &Announcement, now_ms: i64) -> Result<Accepted, AnnounceError> {
        let flight = self.validate(a)?;
        if self.rules.listed.contains_key(&a.name) {
            return Ok(Accepted::Heard);
        }
        if let Some(member) = self.members.get_mut(&a.name) {
            member.last_ms = now_ms;
            member.version.clone_from(&a.version);
            self.unsaved = true;
            if member.flight != flight {
                let from = member.flight;
                member.flight = flight;
                self.save(now_ms, true);
                return Ok(Accepted::Moved { from });
            }
            return Ok(Accepted::Heard);
        }
        if self.members.len() + self.rules.listed.len() >= self.rules.max_members {
            return Err(self.full(&a.name));
        }
        self.left.retain(|l| l.member.name != a.name);
        self.members.insert(
            a.name.clone(),
            Member {
                name: a.name.clone(),
                flight,
                version: a.version.clone(),
                first_ms: now_ms,
                last_ms: now_ms,
            },
        );
        self.save(now_ms, true);
        Ok(Accepted::Joined)
    }

    /// Members not heard from for `expiry` at `now_ms` leave (returned);
    /// left members older than another `expiry` are forgotten.
    pub fn sweep(&mut self, now_ms: i64) -> Vec<Member> {
        let expiry = self.rules.expiry.as_millis() as i64;
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| now_ms - m.last_ms > expiry)
            .map(|m| m.name.clone())
            .collect();
        let mut left = Vec::new();
        for name in gone {
            if let Some(member) = self.members.remove(&name) {
                self.left.push_back(Left {
                    member: member.clone(),
                    left_ms: now_ms,
                });
                left.push(member);
            }
        }
        self.left.retain(|l| now_ms - l.left_ms <= expiry);
        while self.left.len() > self.rules.max_members {
            self.left.pop_front();
        }
        self.save(now_ms, !left.is_empty());
        left
    }

    /// Announced members (not listed in the topology): name → address.
    pub fn announced(&self) -> BTreeMap<String, SocketAddr> {
        self.members
            .values()
            .filter(|m| !self.rules.listed.contains_key(&m.name))
            .map(|m| (m.name.clone(), m.flight))
            .collect()
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn left(&self) -> impl Iterator<Item = &Left> {
        self.left.iter()
    }

    /// Writes the state file: `now` for joins, leaves and moves; otherwise
    /// heard-from times at most every tenth of the expiry (a crash loses
    /// that much of them, so a member may leave that much early).
    fn save(&mut self, now_ms: i64, now: bool) {
        let Some(file) = self.state_file.clone() else {
            return;
        };
        let every = (self.rules.expiry.as_millis() as i64 / 10).max(1000);
        let due = now || (self.unsaved && now_ms - self.saved_ms >= every);
        if !due {
            return;
        }
        let state = StateFile {
            format: ANNOUNCE_FORMAT,
            cluster: self.rules.cluster.clone(),
            members: self.members.values().cloned().collect(),
        };
        match write_atomically(&file, &state) {
            Ok(()) => {
                self.unsaved = false;
                self.saved_ms = now_ms;
            }
            Err(e) => tracing::error!(
                file = %file.display(),
                error = %e,
                "cannot write the cluster members file; members are kept in memory, and a restart now forgets those that are down. Check the proxy's state_dir"
            ),
        }
    }

    /// Writes heard-from times not yet written (a clean stop).
    pub fn flush(&mut self, now_ms: i64) {
        if self.unsaved {
            self.save(now_ms, true);
        }
    }

    /// `fleet_members`: every member this proxy knows, with whether the
    /// generation being made (`visibility`) merged it.
    pub fn table(&self, visibility: &Visibility) -> Option<Table> {
        let status: BTreeMap<&str, &fleetsql_model::ChildStatus> = visibility
            .children
            .iter()
            .map(|c| (c.name.as_str(), c))
            .collect();
        let mut rows = Rows::default();
        let state_of = |name: &str| match status.get(name) {
            Some(c) if c.merged => ("present", None),
            Some(c) => ("missing", c.error.clone()),
            None => ("missing", None),
        };
        for (name, addr) in &self.rules.listed {
            let (state, error) = state_of(name);
            rows.push(RowValues {
                member: name,
                flight: addr.map(|a| a.to_string()),
                version: None,
                source: "topology",
                state,
                first: None,
                last: None,
                left: None,
                error,
            });
        }
        for m in self.members.values() {
            if self.rules.listed.contains_key(&m.name) {
                continue;
            }
            let (state, error) = state_of(&m.name);
            rows.push(RowValues {
                member: &m.name,
                flight: Some(m.flight.to_string()),
                version: Some(&m.version),
                source: "announced",
                state,
                first: Some(m.first_ms),
                last: Some(m.last_ms),
                left: None,
                error,
            });
        }
        for name in &self.rules.expected {
            if self.members.contains_key(name) || self.rules.listed.contains_key(name) {
                continue;
            }
            rows.push(RowValues {
                member: name,
                flight: None,
                version: None,
                source: "expected",
                state: "unannounced",
                first: None,
                last: None,
                left: None,
                error: Some("has not announced itself yet".to_string()),
            });
        }
        for l in &self.left {
            let m = &l.member;
            if self.members.contains_key(&m.name) {
                continue;
            }
            rows.push(RowValues {
                member: &m.name,
                flight: Some(m.flight.to_string()),
                version: Some(&m.version),
                source: "announced",
                state: "left",
                first: Some(m.first_ms),
                last: Some(m.last_ms),
                left: Some(l.left_ms),
                error: Some(format!(
                    "not heard from for more than member_expiry ({:?})",
                    self.rules.expiry
                )),
            });
        }
        rows.table(&self.rules.cluster, &self.rules.proxy)
    }
}

struct RowValues<'a> {
    member: &'a str,
    flight: Option<String>,
    version: Option<&'a str>,
    source: &'static str,
    state: &'static str,
    first: Option<i64>,
    last: Option<i64>,
    left: Option<i64>,
    error: Option<String>,
}

#[derive(Default)]
struct Rows {
    member: Vec<String>,
    flight: Vec<Option<String>>,
    version: Vec<Option<String>>,
    source: Vec<&'static str>,
    state: Vec<&'static str>,
    first: Vec<Option<i64>>,
    last: Vec<Option<i64>>,
    left: Vec<Option<i64>>,
    error: Vec<Option<String>>,
}

impl Rows {
    fn push(&mut self, r: RowValues<'_>) {
        self.member.push(r.member.to_string());
        self.flight.push(r.flight);
        self.version.push(r.version.map(str::to_string));
        self.source.push(r.source);
        self.state.push(r.state);
        self.first.push(r.first);
        self.last.push(r.last);
        self.left.push(r.left);
        self.error.push(r.error);
    }

    fn table(self, cluster: &str, proxy: &str) -> Option<Table> {
        let n = self.member.len();
        let strings = |v: Vec<Option<String>>| Arc::new(StringArray::from(v)) as ArrayRef;
        let times = |v: Vec<Option<i64>>| {
            Arc::new(TimestampMillisecondArray::from(v).with_timezone("UTC")) as ArrayRef
        };
        let batch = RecordBatch::try_from_iter([
            (
                "cluster",
                Arc::new(StringArray::from(vec![cluster; n])) as ArrayRef,
            ),
            (
                "member",
                Arc::new(StringArray::from(self.member)) as ArrayRef,
            ),
            (
                "proxy",
                Arc::new(StringArray::from(vec![proxy; n])) as ArrayRef,
            ),
            ("flight", strings(self.flight)),
            ("version", strings(self.version)),
            (
                "source",
                Arc::new(StringArray::from(self.source)) as ArrayRef,
            ),
            ("state", Arc::new(StringArray::from(self.state)) as ArrayRef),
            ("first_heard_at", times(self.first)),
            ("last_heard_at", times(self.last)),
            ("left_at", times(self.left)),
            ("error", strings(self.error)),
        ])
        .ok()?;
        Table::new(FLEET_MEMBERS, batch.schema(), vec![batch]).ok()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

fn reachable(addr: SocketAddr) -> bool {
    !addr.ip().is_unspecified() && addr.port() != 0
}

fn write_atomically(file: &Path, state: &StateFile) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    let temporary = file.with_extension("json.new");
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, file)
}

/// A proxy's membership shared by its announce route, its sweeper and its
/// aggregator (`fleet_members`); `changed` wakes the proxy to re-plan its
/// children.
#[derive(Debug, Clone)]
pub struct Registry {
    pub membership: Arc<parking_lot::Mutex<Membership>>,
    pub changed: Arc<Notify>,
    /// The proxy's mTLS identity when its topology has `[tls]`: a join or
    /// a move is taken only once the announced address proved over it.
    tls: Option<Arc<TlsContext>>,
    /// Announcements refused, by [`AnnounceError::reason`].
    refusals: Arc<parking_lot::Mutex<BTreeMap<&'static str, u64>>>,
    /// When each member last proved its name over mutual TLS. Heartbeats
    /// come over plain HTTP; one is taken without a dial only while the
    /// last proof is recent, so forged heartbeats cannot keep a machine
    /// that went away counted as a member.
    proven_at: Arc<parking_lot::Mutex<BTreeMap<String, i64>>>,
}

impl Registry {
    pub fn new(membership: Membership) -> Registry {
        Registry {
            membership: Arc::new(parking_lot::Mutex::new(membership)),
            changed: Arc::new(Notify::new()),
            tls: None,
            refusals: Arc::default(),
            proven_at: Arc::default(),
        }
    }

    /// A heartbeat from `name` must prove itself again: no proof within
    /// half the member expiry (a few heartbeats).
    fn proof_due(&self, name: &str, now_ms: i64, expiry: Duration) -> bool {
        let every = (expiry.as_millis() / 2) as i64;
        self.proven_at
            .lock()
            .get(name)
            .is_none_or(|at| now_ms - at >= every)
    }

    /// Announced agents must prove their name over mutual TLS with `tls`
    /// (the proxy's identity) before they join or move.
    pub fn with_tls(mut self, tls: Option<Arc<TlsContext>>) -> Registry {
        self.tls = tls;
        self
    }

    /// Takes `a`. Under `[tls]`, an announcement that would add a member or
    /// change a member's address is first proved: the proxy dials the
    /// announced address over mutual TLS expecting a certificate for the
    /// announced name (the verifier of topology children), so a forged one
    /// changes nothing. A heartbeat of a member at its known address is
    /// not dialled again (its fetches are over mTLS anyway).
    async fn take(&self, a: &Announcement) -> Result<AnnounceReply, AnnounceError> {
        let mut proven = self.tls.is_none();
        let (accepted, reply) = loop {
            // The lock is never held across the dial; what the dial proved
            // (this name at this address) stays true if members changed
            // meanwhile, so one proof suffices.
            {
                let mut membership = self.membership.lock();
                let change = membership.check(a)?;
                let heard_recently = change == Accepted::Heard
                    && !self.proof_due(&a.name, now_ms(), membership.rules().expiry);
                if proven || heard_recently {
                    let accepted = membership.announce(a, now_ms())?;
                    let rules = membership.rules();
                    let reply = AnnounceReply {
                        format: ANNOUNCE_FORMAT,
                        proxy: rules.proxy.clone(),
                        cluster: rules.cluster.clone(),
                        announce_every_ms: rules.announce_every().as_millis() as u64,
                        tick_ms: rules.tick.as_millis() as u64,
                        joined: accepted == Accepted::Joined,
                    };
                    break (accepted, reply);
                }
            }
            if let Some(tls) = &self.tls {
                self.prove(tls, a).await?;
                self.proven_at.lock().insert(a.name.clone(), now_ms());
            }
            proven = true;
        };
        match accepted {
            Accepted::Joined => {
                tracing::info!(member = %a.name, cluster = %a.cluster, flight = %a.flight, version = %a.version, verified = self.tls.is_some(), "agent joined the cluster");
                self.changed.notify_one();
            }
            Accepted::Moved { from } => {
                tracing::warn!(member = %a.name, cluster = %a.cluster, %from, to = %a.flight, "member announced a new Flight address; fetching from there");
                self.changed.notify_one();
            }
            Accepted::Heard => {}
        }
        Ok(reply)
    }

    /// Dials `a.flight` as child `a.name` over mutual TLS and asks for its
    /// health: the handshake checks the certificate there against the
    /// fleet CA and the name (refusals counted by `tls` as for any child),
    /// and the call checks that the agent serves this proxy.
    async fn prove(&self, tls: &Arc<TlsContext>, a: &Announcement) -> Result<(), AnnounceError> {
        let proxy = self.membership.lock().rules().proxy.clone();
        let flight: SocketAddr = a.flight.parse().map_err(|_| AnnounceError::Address {
            name: a.name.clone(),
            flight: a.flight.chars().take(100).collect(),
        })?;
        let unverified = |reason: String| AnnounceError::Unverified {
            proxy: proxy.clone(),
            name: a.name.clone(),
            flight,
            reason,
        };
        if !is_dns_name(&a.name) {
            return Err(unverified(format!(
                "`{}` is not a DNS name, which a certificate must name",
                a.name
            )));
        }
        let child = FlightChild::new(
            a.name.clone(),
            format!("http://{flight}"),
            FlightChildOptions {
                connect_timeout: PROOF_TIMEOUT,
                request_timeout: PROOF_TIMEOUT,
                tls: Some(tls.clone()),
                ..FlightChildOptions::default()
            },
        )
        .map_err(|e| unverified(e.to_string()))?;
        child
            .health()
            .await
            .map(|_| ())
            .map_err(|e| unverified(e.to_string()))
    }

    fn refused(&self, reason: &'static str) {
        *self.refusals.lock().entry(reason).or_default() += 1;
    }

    /// `fleetsql_announce_refusals_total`, each sample with `labels`.
    pub fn render_prometheus(&self, out: &mut String, labels: &str) {
        let _ = writeln!(
            out,
            "# HELP fleetsql_announce_refusals_total Announcements (POST /v1/announce) refused, by reason (unverified: not proved over mutual TLS)"
        );
        let _ = writeln!(out, "# TYPE fleetsql_announce_refusals_total counter");
        for (reason, count) in self.refusals.lock().iter() {
            let _ = writeln!(
                out,
                "fleetsql_announce_refusals_total{{{labels},reason=\"{reason}\"}} {count}"
            );
        }
    }

    /// This proxy's name and cluster, and whether it takes members over
    /// mutual TLS only.
    fn info(&self) -> ProxyInfo {
        let membership = self.membership.lock();
        let rules = membership.rules();
        ProxyInfo {
            format: ANNOUNCE_FORMAT,
            proxy: rules.proxy.clone(),
            cluster: rules.cluster.clone(),
            tls: self.tls.is_some(),
        }
    }

    /// Expires members now; true when some left (logged).
    pub fn sweep(&self) -> bool {
        let (left, rules) = {
            let mut membership = self.membership.lock();
            let left = membership.sweep(now_ms());
            (left, membership.rules().clone())
        };
        if !left.is_empty() {
            let mut proven_at = self.proven_at.lock();
            for member in &left {
                proven_at.remove(&member.name);
            }
        }
        for member in &left {
            tracing::warn!(
                member = %member.name,
                cluster = %rules.cluster,
                flight = %member.flight,
                last_heard_s_ago = (now_ms() - member.last_ms) / 1000,
                member_expiry = ?rules.expiry,
                "member left the cluster: not heard from for longer than member_expiry; no longer expected (its row in fleet_members says state = 'left')"
            );
        }
        !left.is_empty()
    }

    /// `POST /v1/announce`.
    pub fn router(&self) -> Router {
        Router::new()
            .route(ANNOUNCE_PATH, post(announce).get(info))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(self.clone())
    }
}

impl OwnTables for Registry {
    fn names(&self) -> Vec<String> {
        vec![FLEET_MEMBERS.to_string()]
    }

    fn table(&self, name: &str, visibility: &Visibility) -> Option<Table> {
        (name == FLEET_MEMBERS)
            .then(|| self.membership.lock().table(visibility))
            .flatten()
    }
}

async fn info(State(registry): State<Registry>) -> Response {
    axum::Json(registry.info()).into_response()
}

async fn announce(State(registry): State<Registry>, body: axum::body::Bytes) -> Response {
    let refused = |status: StatusCode, error: String| {
        (status, axum::Json(serde_json::json!({ "error": error }))).into_response()
    };
    let announcement: Announcement = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            registry.refused("invalid_json");
            tracing::warn!(error = %e, "announcement refused: not valid JSON");
            return refused(
                StatusCode::BAD_REQUEST,
                format!(
                    "announcement is not valid JSON of format {ANNOUNCE_FORMAT} ({{format, name, cluster, flight, version}}): {e}"
                ),
            );
        }
    };
    match registry.take(&announcement).await {
        Ok(reply) => axum::Json(reply).into_response(),
        Err(e) => {
            registry.refused(e.reason());
            tracing::warn!(member = %announcement.name.chars().take(MAX_NAME_LEN).collect::<String>(), flight = %announcement.flight.chars().take(100).collect::<String>(), reason = e.reason(), error = %e, "announcement refused");
            refused(e.status(), e.to_string())
        }
    }
}

/// Why an agent could not start announcing itself.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("an agent that joins by itself needs at least one --proxy address")]
    NoProxy,
    #[error(
        "agent `{name}` listens on {bound}, which proxies cannot dial: pass --advertise ADDR, the address they reach it at"
    )]
    Unreachable { name: String, bound: SocketAddr },
    #[error("{0}")]
    Announcement(#[from] AnnounceError),
    #[error("cannot make an HTTP client for announcements: {0}")]
    Client(String),
    #[error(
        "agent name `{name}` is not a DNS name, which its TLS certificate must name: pass --name with letters, digits, `-` and `.`"
    )]
    NotDnsName { name: String },
}

/// An agent's announcements, one task per proxy, until dropped.
#[derive(Debug)]
pub struct Announcer {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Announcer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Announcer {
    /// Announces `announcement` to each proxy's HTTP address in `proxies`,
    /// then again as often as each proxy asks. A proxy that cannot be
    /// reached is tried again with back-off (1 s to 30 s); one that refuses
    /// logs why and is tried again every 30 s (its topology may change).
    ///
    /// `tls`: the agent's Flight server speaks mutual TLS with it. It serves
    /// no parent until a proxy says its name (`GET` before the first
    /// announcement, then each reply): the proxy dials it back to verify
    /// the announcement, so it must be let in first. Names learned are
    /// kept while the agent runs (a proxy that restarts keeps its name).
    pub fn start(
        announcement: Announcement,
        proxies: &[ProxyAddress],
        tls: Option<Arc<TlsContext>>,
    ) -> Result<Announcer, JoinError> {
        if proxies.is_empty() {
            return Err(JoinError::NoProxy);
        }
        // The same checks a proxy makes, so a bad name fails at start.
        let mut check = Membership::new(MembershipRules {
            proxy: "check".into(),
            cluster: announcement.cluster.clone(),
            expiry: Duration::from_secs(1),
            max_members: 1,
            tick: Duration::from_secs(1),
            listed: BTreeMap::new(),
            expected: BTreeSet::new(),
            machines: 0,
        });
        check.announce(&announcement, 0)?;
        if tls.is_some() && !is_dns_name(&announcement.name) {
            return Err(JoinError::NotDnsName {
                name: announcement.name,
            });
        }
        let client = reqwest::Client::builder()
            // Proving an announcement takes the proxy a dial back.
            .timeout(PROOF_TIMEOUT * 2 + Duration::from_secs(5))
            .build()
            .map_err(|e| JoinError::Client(e.to_string()))?;
        let parents = tls.map(|tls| Parents {
            tls,
            names: Arc::default(),
            pinned: proxies
                .iter()
                .filter_map(|p| Some((p.http, p.name.clone()?)))
                .collect(),
        });
        if let Some(parents) = &parents {
            let unpinned: Vec<String> = proxies
                .iter()
                .filter(|p| p.name.is_none())
                .map(|p| p.http.to_string())
                .collect();
            if !unpinned.is_empty() {
                tracing::warn!(proxies = ?unpinned, "these proxies' names will be learned from their plain-HTTP answers, which anyone on the path could forge: give each as --proxy NAME@ADDR (the name on its certificate) to pin it");
            }
            // A pinned name is served from the start: nothing to ask.
            for (proxy, name) in parents.pinned.clone() {
                parents.learn(proxy, &name);
            }
        }
        let tasks = proxies
            .iter()
            .map(|proxy| {
                let (client, announcement, proxy, parents) = (
                    client.clone(),
                    announcement.clone(),
                    proxy.http,
                    parents.clone(),
                );
                tokio::spawn(announce_forever(client, announcement, proxy, parents))
            })
            .collect();
        Ok(Announcer { tasks })
    }
}

/// The parents a joining agent's Flight server lets in: the names its
/// proxies gave, by proxy address.
#[derive(Debug, Clone)]
struct Parents {
    tls: Arc<TlsContext>,
    names: Arc<parking_lot::Mutex<BTreeMap<SocketAddr, String>>>,
    /// Names given with `--proxy NAME@ADDR`: the only ones served there.
    pinned: BTreeMap<SocketAddr, String>,
}

impl Parents {
    fn knows(&self, proxy: SocketAddr) -> bool {
        self.names.lock().contains_key(&proxy)
    }

    /// Proxy `proxy` says it is `name`: from now on a certificate for
    /// `name` may fetch (the one check of `TlsContext::set_parents`, as for
    /// an agent in a topology).
    fn learn(&self, proxy: SocketAddr, name: &str) {
        if let Some(pinned) = self.pinned.get(&proxy)
            && pinned != name
        {
            tracing::error!(%proxy, pinned = %pinned, answered = %name, "the proxy at this address answered with another name than the one pinned with --proxy NAME@ADDR; still serving only the pinned name (a proxy moved, or someone on the path answered for it)");
            return;
        }
        let mut names = self.names.lock();
        if names.get(&proxy).map(String::as_str) == Some(name) {
            return;
        }
        names.insert(proxy, name.to_string());
        let parents: BTreeSet<String> = names.values().cloned().collect();
        drop(names);
        tracing::info!(%proxy, proxy_name = %name, parents = ?parents, "serving this proxy over mutual TLS");
        self.tls.set_parents(parents);
    }
}

/// Asks the proxy at `url` who it is (`GET /v1/announce`).
async fn ask_who(client: &reqwest::Client, url: &str) -> Result<ProxyInfo, String> {
    let response = client.get(url).send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("{status} (an older proxy?)"));
    }
    response
        .json::<ProxyInfo>()
        .await
        .map_err(|e| format!("answer not understood: {e}"))
}

async fn announce_forever(
    client: reqwest::Client,
    announcement: Announcement,
    proxy: SocketAddr,
    parents: Option<Parents>,
) {
    let url = format!("http://{proxy}{ANNOUNCE_PATH}");
    let mut backoff = Duration::from_secs(1);
    let mut announced = false;
    // A pinned name is served already; asking once still tells the
    // operator, in the log, when the proxy answers to another name.
    let mut asked = false;
    loop {
        if let Some(parents) = &parents
            && (!parents.knows(proxy) || !asked)
        {
            asked = true;
            match ask_who(&client, &url).await {
                Ok(info) => {
                    if !info.tls {
                        tracing::error!(%proxy, proxy_name = %info.proxy, "this agent serves Flight over mutual TLS but the proxy has no [tls]: it cannot fetch from here. Give the proxy's topology [tls], or start this agent without --tls-*");
                    }
                    parents.learn(proxy, &info.proxy);
                }
                // Announced all the same: the proxy's refusal says more.
                Err(e) => {
                    tracing::warn!(%proxy, error = %e, "cannot ask the proxy its name before announcing")
                }
            }
        }
        let sent = client.post(&url).json(&announcement).send().await;
        let wait = match sent {
            Ok(response) if response.status().is_success() => {
                backoff = Duration::from_secs(1);
                match response.json::<AnnounceReply>().await {
                    Ok(reply) => {
                        if let Some(parents) = &parents {
                            parents.learn(proxy, &reply.proxy);
                        }
                        if !announced {
                            tracing::info!(%proxy, proxy_name = %reply.proxy, cluster = %reply.cluster, "announced to proxy");
                            announced = true;
                        }
                        Duration::from_millis(reply.announce_every_ms.max(100))
                    }
                    Err(e) => {
                        tracing::warn!(%proxy, error = %e, "proxy's answer to the announcement is not understood; announcing again in 30 s");
                        Duration::from_secs(30)
                    }
                }
            }
            Ok(response) => {
                let status = response.status();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                tracing::error!(
                    %proxy,
                    %status,
                    error = body["error"].as_str().unwrap_or("(no reason given)"),
                    "proxy refused this agent's announcement; trying again in 30 s"
                );
                announced = false;
                Duration::from_secs(30)
            }
            Err(e) => {
                tracing::warn!(%proxy, error = %e, retry_in = ?backoff, "cannot announce to proxy");
                announced = false;
                let wait = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> MembershipRules {
        MembershipRules {
            proxy: "p1".into(),
            cluster: "c1".into(),
            expiry: Duration::from_secs(60),
            max_members: 3,
            tick: Duration::from_secs(1),
            listed: BTreeMap::from([("listed".to_string(), "10.0.0.9:7101".parse().ok())]),
            expected: BTreeSet::from(["later".to_string()]),
            machines: 0,
        }
    }

    fn hello(name: &str, flight: &str) -> Announcement {
        Announcement {
            format: ANNOUNCE_FORMAT,
            name: name.into(),
            cluster: "c1".into(),
            flight: flight.into(),
            version: "0.1.0".into(),
        }
    }

    #[test]
    fn proxy_addresses_read_with_or_without_a_pinned_name() {
        let plain: ProxyAddress = "10.0.0.5:7200".parse().unwrap();
        assert_eq!((plain.name, plain.http.port()), (None, 7200));
        let pinned: ProxyAddress = "proxy-eu-1.fleet@10.0.0.5:7200".parse().unwrap();
        assert_eq!(pinned.name.as_deref(), Some("proxy-eu-1.fleet"));
        assert_eq!(pinned.to_string(), "proxy-eu-1.fleet@10.0.0.5:7200");
        for bad in [
            "",
            "proxy",
            "bad name@10.0.0.5:7200",
            "@10.0.0.5:7200",
            "p@host",
        ] {
            let e = bad.parse::<ProxyAddress>().unwrap_err();
            assert!(e.to_string().contains("NAME@ip:port"), "{e}");
        }
    }

    #[test]
    fn a_heartbeat_proves_itself_again_after_half_the_expiry() {
        let registry = Registry::new(Membership::new(rules()));
        let expiry = Duration::from_secs(60);
        assert!(registry.proof_due("a", 0, expiry), "never proved");
        registry.proven_at.lock().insert("a".into(), 1_000);
        assert!(!registry.proof_due("a", 30_999, expiry));
        assert!(registry.proof_due("a", 31_000, expiry));
    }

    #[test]
    fn members_join_are_heard_move_and_leave_after_the_expiry() {
        let mut m = Membership::new(rules());
        assert_eq!(
            m.announce(&hello("a", "10.0.0.1:7101"), 0),
            Ok(Accepted::Joined)
        );
        assert_eq!(
            m.announce(&hello("a", "10.0.0.1:7101"), 50_000),
            Ok(Accepted::Heard)
        );
        assert_eq!(
            m.announce(&hello("a", "10.0.0.2:7101"), 51_000),
            Ok(Accepted::Moved {
                from: "10.0.0.1:7101".parse().unwrap()
            })
        );
        assert_eq!(
            m.announce(&hello("b", "10.0.0.3:7101"), 1_000),
            Ok(Accepted::Joined)
        );
        assert_eq!(m.announced().len(), 2);
        // b was last heard at 1 s: gone after 61 s; a (51 s) stays.
        assert!(m.sweep(61_000).is_empty());
        let left = m.sweep(61_001);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].name, "b");
        assert_eq!(m.announced().keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(m.left().count(), 1);
        // Left rows are kept for another expiry, then forgotten.
        assert_eq!(
            m.announce(&hello("a", "10.0.0.2:7101"), 110_000),
            Ok(Accepted::Heard)
        );
        assert!(m.sweep(121_001).is_empty());
        assert_eq!(m.left().count(), 1);
        m.sweep(121_002);
        assert_eq!(m.left().count(), 0);
        assert_eq!(m.announced().len(), 1);
        // A member that left and comes back joins again.
        assert_eq!(
            m.announce(&hello("b", "10.0.0.3:7101"), 200_000),
            Ok(Accepted::Joined)
        );
    }

    #[test]
    fn refusals_name_what_to_change() {
        let mut m = Membership::new(rules());
        let refused = |m: &mut Membership, a: Announcement| m.announce(&a, 0).unwrap_err();
        let mut other = hello("a", "10.0.0.1:7101");
        other.cluster = "c2".into();
        let e = refused(&mut m, other);
        assert!(matches!(e, AnnounceError::WrongCluster { .. }));
        assert!(
            e.to_string().contains("`c1`") && e.to_string().contains("`c2`"),
            "{e}"
        );
        assert_eq!(e.status(), StatusCode::CONFLICT);
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            refused(&mut m, hello(&long, "10.0.0.1:1")),
            AnnounceError::Name { .. }
        ));
        assert!(matches!(
            refused(&mut m, hello("a b", "10.0.0.1:1")),
            AnnounceError::Name { .. }
        ));
        assert!(matches!(
            refused(&mut m, hello("", "10.0.0.1:1")),
            AnnounceError::Name { .. }
        ));
        assert!(
            m.announce(&hello(&"x".repeat(MAX_NAME_LEN), "10.0.0.1:1"), 0)
                .is_ok()
        );
        assert!(matches!(
            refused(&mut m, hello("a", "0.0.0.0:7101")),
            AnnounceError::Address { .. }
        ));
        assert!(matches!(
            refused(&mut m, hello("a", "web-1")),
            AnnounceError::Address { .. }
        ));
        let mut future = hello("a", "10.0.0.1:7101");
        future.format = 2;
        assert_eq!(refused(&mut m, future), AnnounceError::Format { got: 2 });
        assert!(matches!(
            refused(&mut m, hello("listed", "10.0.0.1:7101")),
            AnnounceError::ListedElsewhere { .. }
        ));
        assert_eq!(
            m.announce(&hello("listed", "10.0.0.9:7101"), 0),
            Ok(Accepted::Heard)
        );
        assert!(m.announced().len() == 1, "a listed agent is not announced");
    }

    #[test]
    fn check_says_what_an_announcement_would_change_and_changes_nothing() {
        let mut m = Membership::new(rules());
        let a = hello("a", "10.0.0.1:1");
        assert_eq!(m.check(&a), Ok(Accepted::Joined));
        assert_eq!(m.check(&a), Ok(Accepted::Joined), "not taken by check");
        assert!(m.announced().is_empty());
        m.announce(&a, 0).unwrap();
        assert_eq!(m.check(&a), Ok(Accepted::Heard));
        let moved = hello("a", "10.0.0.2:1");
        assert_eq!(
            m.check(&moved),
            Ok(Accepted::Moved {
                from: "10.0.0.1:1".parse().unwrap()
            })
        );
        assert_eq!(
            m.announced()["a"],
            "10.0.0.1:1".parse::<SocketAddr>().unwrap(),
            "a checked move moves nothing"
        );
        assert_eq!(
            m.check(&hello("listed", "10.0.0.9:7101")),
            Ok(Accepted::Heard)
        );
        m.announce(&hello("b", "10.0.0.3:1"), 0).unwrap();
        assert!(matches!(
            m.check(&hello("c", "10.0.0.4:1")),
            Err(AnnounceError::Full { .. })
        ));
        let mut other = hello("a", "10.0.0.1:1");
        other.cluster = "c2".into();
        assert_eq!(m.check(&other).unwrap_err().reason(), "wrong_cluster");
    }

    #[test]
    fn a_proxy_takes_at_most_max_members() {
        // max 3, one of which is the listed agent.
        let mut m = Membership::new(rules());
        assert!(m.announce(&hello("a", "10.0.0.1:1"), 0).is_ok());
        assert!(m.announce(&hello("b", "10.0.0.2:1"), 0).is_ok());
        let e = m.announce(&hello("c", "10.0.0.3:1"), 0).unwrap_err();
        assert!(matches!(e, AnnounceError::Full { max: 3, .. }), "{e}");
        assert!(e.to_string().contains("max_members"));
        // Members already in are still heard.
        assert_eq!(
            m.announce(&hello("a", "10.0.0.1:1"), 1),
            Ok(Accepted::Heard)
        );
        // One leaves: room again.
        m.sweep(60_001);
        assert!(m.announce(&hello("c", "10.0.0.3:1"), 60_002).is_ok());
    }

    #[test]
    fn members_survive_a_restart_in_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Membership::with_state_dir(rules(), dir.path());
        m.announce(&hello("a", "10.0.0.1:1"), 1_000).unwrap();
        m.announce(&hello("b", "10.0.0.2:1"), 2_000).unwrap();
        drop(m);
        let again = Membership::with_state_dir(rules(), dir.path());
        assert_eq!(again.announced().len(), 2);
        let b = again.members().find(|m| m.name == "b").unwrap();
        assert_eq!(
            b.last_ms, 2_000,
            "heard-from times are kept, so expiry goes on"
        );
        // Another cluster's file is not taken.
        let mut moved = rules();
        moved.cluster = "c9".into();
        assert_eq!(
            Membership::with_state_dir(moved, dir.path())
                .announced()
                .len(),
            0
        );
        // A damaged file: start without it.
        std::fs::write(dir.path().join("members-p1.json"), "{").unwrap();
        assert_eq!(
            Membership::with_state_dir(rules(), dir.path())
                .announced()
                .len(),
            0
        );
    }

    #[test]
    fn fleet_members_says_who_is_present_missing_expected_and_left() {
        let mut m = Membership::new(rules());
        m.announce(&hello("a", "10.0.0.1:1"), now_ms()).unwrap();
        m.announce(&hello("b", "10.0.0.2:1"), 0).unwrap();
        m.sweep(now_ms());
        let mut v = Visibility::default();
        v.children.push(fleetsql_model::ChildStatus {
            name: "a".into(),
            merged: true,
            generation_id: Some(1),
            data_age_ms: Some(0),
            error: None,
        });
        let table = m.table(&v).unwrap();
        let batch = &table.batches()[0];
        let column = |name: &str| {
            arrow::array::as_string_array(batch.column_by_name(name).unwrap())
                .iter()
                .map(|v| v.unwrap_or("").to_string())
                .collect::<Vec<_>>()
        };
        let states: BTreeMap<String, String> =
            column("member").into_iter().zip(column("state")).collect();
        assert_eq!(states["a"], "present");
        assert_eq!(states["listed"], "missing");
        assert_eq!(states["later"], "unannounced");
        assert_eq!(states["b"], "left");
    }

    #[test]
    fn heartbeats_come_often_enough_for_the_expiry() {
        let mut r = rules();
        assert_eq!(r.announce_every(), Duration::from_secs(10));
        r.expiry = Duration::from_secs(3600);
        assert_eq!(r.announce_every(), Duration::from_secs(60));
        r.expiry = Duration::from_secs(1);
        assert_eq!(r.announce_every(), Duration::from_millis(250));
    }
}
