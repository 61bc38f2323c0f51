//! What does not change about a simulated machine: name, address, role,
//! hardware, place, and the few flags that make the seed's queries find
//! something (dns machines with a process above 75% RSS, nearly full disks).

use crate::geo;
use crate::rng::{Draw, derive};

/// What a machine is for; `machinerole.role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Web,
    Cache,
    Dns,
    Stream,
    Db,
    Storage,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Web,
        Role::Cache,
        Role::Dns,
        Role::Stream,
        Role::Db,
        Role::Storage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Web => "web",
            Role::Cache => "cache",
            Role::Dns => "dns",
            Role::Stream => "stream",
            Role::Db => "db",
            Role::Storage => "storage",
        }
    }

    /// Roles that serve end-user requests and so publish `load_info` rows.
    pub fn serves_traffic(self) -> bool {
        matches!(self, Role::Web | Role::Cache | Role::Dns | Role::Stream)
    }

    /// The machine's main service process and the user it runs as.
    pub(crate) fn service(self) -> (&'static str, &'static str) {
        match self {
            Role::Web => ("nginx", "www-data"),
            Role::Cache => ("varnishd", "varnish"),
            Role::Dns => ("named", "bind"),
            Role::Stream => ("mediaserver", "media"),
            Role::Db => ("postgres", "postgres"),
            Role::Storage => ("ceph-osd", "ceph"),
        }
    }

    /// The usual share of memory the main service holds, as a range.
    pub(crate) fn service_rss(self) -> (f64, f64) {
        match self {
            Role::Web => (0.08, 0.35),
            Role::Cache => (0.40, 0.70),
            Role::Dns => (0.05, 0.30),
            Role::Stream => (0.10, 0.30),
            Role::Db => (0.30, 0.60),
            Role::Storage => (0.10, 0.30),
        }
    }

    fn pick(u: f64) -> Role {
        // Cumulative shares: web 40%, cache 25%, dns 12%, stream 8%, db 8%,
        // storage 7%.
        const CUT: [(f64, Role); 5] = [
            (0.40, Role::Web),
            (0.65, Role::Cache),
            (0.77, Role::Dns),
            (0.85, Role::Stream),
            (0.93, Role::Db),
        ];
        CUT.iter()
            .find(|(cut, _)| u < *cut)
            .map_or(Role::Storage, |(_, r)| *r)
    }
}

/// Share of dns machines whose `named` holds more than 75% of memory: the
/// condition the seed's first query looks for.
const DNS_HOG_SHARE: f64 = 0.30;
/// Cache machines whose `varnishd` is above 75% too; they are not dns, so
/// the query's role filter visibly matters.
const CACHE_HOG_SHARE: f64 = 0.10;
/// Machines whose `/var` is nearly full (less than 3% available): the
/// seed's disk alert.
const FULL_DISK_SHARE: f64 = 0.015;

/// The static description of one simulated machine.
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    /// Root of every key drawn for this machine.
    pub(crate) key: u64,
    pub(crate) host: String,
    pub(crate) ip: String,
    pub(crate) cluster: String,
    pub(crate) role: Role,
    pub(crate) memtotal_kib: i64,
    pub(crate) ncpus: i64,
    pub(crate) os: &'static str,
    pub(crate) kernel: &'static str,
    /// Seconds since the epoch; `start_time` of processes is after it.
    pub(crate) boot_time_s: i64,
    pub(crate) georegion: i64,
    /// Mean `load_info.hits` of this machine; 0 when it serves no traffic.
    pub(crate) mean_hits: f64,
    pub(crate) rss_hog: bool,
    pub(crate) full_disk: bool,
}

const GIB_KIB: i64 = 1024 * 1024;

impl Profile {
    /// Everything but `mean_hits`, which depends on the whole fleet.
    pub(crate) fn new(
        seed: u64,
        index: usize,
        cluster_index: usize,
        cluster: &str,
        host: String,
    ) -> Self {
        let key = derive(seed, index as u64);
        let mut d = Draw::new(derive(key, 0x5052_4f46));
        let role = Role::pick(d.unit());
        let memtotal_gib = [32, 64, 64, 128, 128, 256][d.int(0, 5) as usize];
        // The kernel keeps some memory for itself: MemTotal is a bit short
        // of the installed size.
        let memtotal_kib = memtotal_gib * GIB_KIB - d.int(150_000, 400_000);
        let ncpus = [16, 24, 32, 48, 64][d.int(0, 4) as usize];
        let (os, kernel) = if d.chance(0.8) {
            ("Linux (Ubuntu 24.04)", "6.8.0-48-generic")
        } else {
            ("Linux (Ubuntu 22.04)", "5.15.0-125-generic")
        };
        // Booted in the three months before 2025-10-01.
        let boot_time_s = 1_759_276_800 - d.int(0, 90 * 86_400);
        let rss_hog = match role {
            Role::Dns => d.chance(DNS_HOG_SHARE),
            Role::Cache => d.chance(CACHE_HOG_SHARE),
            _ => false,
        };
        let full_disk = d.chance(FULL_DISK_SHARE);
        let n = index as u32 + 1;
        let ip = format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
        Profile {
            key,
            host,
            ip,
            cluster: cluster.to_string(),
            role,
            memtotal_kib,
            ncpus,
            os,
            kernel,
            boot_time_s,
            georegion: geo::region_of_cluster(cluster_index).id,
            mean_hits: 0.0,
            rss_hog,
            full_disk,
        }
    }
}
