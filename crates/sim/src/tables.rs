//! The simulated tables: schemas, how each row is sampled, and the per
//! machine cache that rebuilds only what churned.
//!
//! Columns are split into *fixed* ones (identity: ip, pid, mount point, ...)
//! built once per machine and shared by every later generation, and
//! *dynamic* ones (measurements) kept as plain vectors. At each tick only
//! rows whose version moved are re-sampled, and a dynamic array is rebuilt
//! only when one of its rows changed; `_published_at` is the one column
//! made fresh every tick.

use std::cell::RefCell;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use fleetsql_model::{ModelError, Table, origin};

use crate::churn::{Slots, away, slots};
use crate::config::RowChurn;
use crate::profile::{Profile, Role};
use crate::rng::{Draw, derive, mix, phase, row_version, version_start};

/// The tables every simulated machine publishes, by name.
pub const TABLES: [&str; 5] = ["sys", "processes", "filesystem", "machinerole", "load_info"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Sys,
    Processes,
    Filesystem,
    MachineRole,
    LoadInfo,
}

impl Kind {
    pub(crate) const ALL: [Kind; 5] = [
        Kind::Sys,
        Kind::Processes,
        Kind::Filesystem,
        Kind::MachineRole,
        Kind::LoadInfo,
    ];

    pub(crate) fn name(self) -> &'static str {
        TABLES[self as usize]
    }

    pub(crate) fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub(crate) fn schema(self) -> &'static SchemaRef {
        &SCHEMAS[self as usize]
    }

    /// Where each schema column comes from, in schema order (origin
    /// columns follow and are not listed).
    fn layout(self) -> &'static [Slot] {
        use Slot::{Dyn, Fixed};
        match self {
            // ip, hostname, memtotal, memfree, memavail, swaptotal, swapfree,
            // cpu_pct, load1, load5, load15, uptime, boot_time, ncpus, os,
            // kernel
            Kind::Sys => &[
                Fixed(0),
                Fixed(1),
                Fixed(2),
                Dyn(0),
                Dyn(1),
                Fixed(3),
                Dyn(2),
                Dyn(3),
                Dyn(4),
                Dyn(5),
                Dyn(6),
                Dyn(7),
                Fixed(4),
                Fixed(5),
                Fixed(6),
                Fixed(7),
            ],
            // ip, pid, ppid, procname, rss, vsz, cpu_pct, uid, user, state,
            // start_time (pid and start time are a slot's, which a new
            // process takes over when a short-lived one exits)
            Kind::Processes => &[
                Fixed(0),
                Dyn(4),
                Fixed(1),
                Fixed(2),
                Dyn(0),
                Dyn(1),
                Dyn(2),
                Fixed(3),
                Fixed(4),
                Dyn(3),
                Dyn(5),
            ],
            // machineip, mountp, fstype, device, bsize, blocks, bfree,
            // bavail, files, ffree
            Kind::Filesystem => &[
                Fixed(0),
                Fixed(1),
                Fixed(2),
                Fixed(3),
                Fixed(4),
                Fixed(5),
                Dyn(0),
                Dyn(1),
                Fixed(6),
                Dyn(2),
            ],
            // ip, role
            Kind::MachineRole => &[Fixed(0), Fixed(1)],
            // ip, georegion, hits, bytes, connections
            Kind::LoadInfo => &[Fixed(0), Fixed(1), Dyn(0), Dyn(1), Dyn(2)],
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Fixed(usize),
    Dyn(usize),
}

fn schema(columns: &[(&str, DataType, bool)]) -> SchemaRef {
    let mut fields: Vec<Field> = columns
        .iter()
        .map(|(name, t, nullable)| Field::new(*name, t.clone(), *nullable))
        .collect();
    fields.extend(origin::fields());
    Arc::new(Schema::new(fields))
}

/// The same columns, types, order and nullability as the real host
/// collectors of `fleetsql-agent`, so simulated and real rows merge without
/// widening or copying, and a query means the same on either.
static SCHEMAS: LazyLock<[SchemaRef; 5]> = LazyLock::new(|| {
    use DataType::{Float64 as F, Int64 as I, Utf8 as S};
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    [
        schema(&[
            ("ip", S, false),
            ("hostname", S, false),
            ("memtotal", I, true),
            ("memfree", I, true),
            ("memavail", I, true),
            ("swaptotal", I, true),
            ("swapfree", I, true),
            ("cpu_pct", F, true),
            ("load1", F, true),
            ("load5", F, true),
            ("load15", F, true),
            ("uptime", I, true),
            ("boot_time", I, true),
            ("ncpus", I, true),
            ("os", S, false),
            ("kernel", S, false),
        ]),
        schema(&[
            ("ip", S, false),
            ("pid", I, false),
            ("ppid", I, true),
            ("procname", S, false),
            ("rss", I, false),
            ("vsz", I, false),
            ("cpu_pct", F, false),
            ("uid", I, true),
            ("user", S, true),
            ("state", S, false),
            ("start_time", ts, false),
        ]),
        schema(&[
            ("machineip", S, false),
            ("mountp", S, false),
            ("fstype", S, false),
            ("device", S, false),
            ("bsize", I, false),
            ("blocks", I, false),
            ("bfree", I, false),
            ("bavail", I, false),
            ("files", I, false),
            ("ffree", I, false),
        ]),
        schema(&[("ip", S, false), ("role", S, false)]),
        schema(&[
            ("ip", S, false),
            ("georegion", I, false),
            ("hits", I, false),
            ("bytes", I, false),
            ("connections", I, false),
        ]),
    ]
});

/// The schema of a simulated table (origin columns included), or `None`
/// for a name the simulator does not publish.
pub fn table_schema(name: &str) -> Option<SchemaRef> {
    Kind::from_name(name).map(|k| k.schema().clone())
}

/// Values of one dynamic column, one per row.
#[derive(Debug, Clone)]
enum DynCol {
    I(Vec<i64>),
    F(Vec<f64>),
    S(Vec<&'static str>),
    /// Milliseconds since the epoch, UTC.
    T(Vec<i64>),
}

impl DynCol {
    fn to_array(&self) -> ArrayRef {
        match self {
            DynCol::I(v) => Arc::new(Int64Array::from(v.clone())),
            DynCol::F(v) => Arc::new(Float64Array::from(v.clone())),
            DynCol::S(v) => Arc::new(StringArray::from_iter_values(v.iter())),
            DynCol::T(v) => {
                Arc::new(TimestampMillisecondArray::from(v.clone()).with_timezone("UTC"))
            }
        }
    }
}

/// One row's freshly sampled dynamic values, in `Dyn` slot order.
type Sample = [Val; 8];

#[derive(Debug, Clone, Copy)]
enum Val {
    I(i64),
    F(f64),
    S(&'static str),
}

const NO: Val = Val::I(0);

/// Writes one row's sample, marking in `dirty` the columns whose value
/// changed (only those get a new array).
fn store(cols: &mut [DynCol], dirty: &mut [bool], row: usize, sample: &Sample) {
    for ((col, val), dirty) in cols.iter_mut().zip(sample).zip(dirty.iter_mut()) {
        let changed = match (col, *val) {
            (DynCol::I(v) | DynCol::T(v), Val::I(x)) => std::mem::replace(&mut v[row], x) != x,
            (DynCol::F(v), Val::F(x)) => std::mem::replace(&mut v[row], x).to_bits() != x.to_bits(),
            (DynCol::S(v), Val::S(x)) => std::mem::replace(&mut v[row], x) != x,
            // Kinds and samples are written together below; a mismatch is a
            // bug caught by the tests, never input.
            _ => {
                debug_assert!(false, "sample type does not match its column");
                false
            }
        };
        *dirty |= changed;
    }
}

/// Static per-row facts of `processes`.
#[derive(Debug, Clone, Copy)]
struct ProcSpec {
    name: &'static str,
    user: &'static str,
    /// RSS range in KiB; `None` means a share of memory (main service and
    /// its workers, sized by the machine).
    rss_kib: Option<(i64, i64)>,
    cpu_max: f64,
}

/// Daemons every machine runs, after its main service.
const DAEMONS: [ProcSpec; 15] = [
    ProcSpec {
        name: "systemd",
        user: "root",
        rss_kib: Some((8_000, 16_000)),
        cpu_max: 0.5,
    },
    ProcSpec {
        name: "systemd-journald",
        user: "root",
        rss_kib: Some((30_000, 120_000)),
        cpu_max: 1.0,
    },
    ProcSpec {
        name: "systemd-udevd",
        user: "root",
        rss_kib: Some((5_000, 12_000)),
        cpu_max: 0.2,
    },
    ProcSpec {
        name: "sshd",
        user: "root",
        rss_kib: Some((5_000, 9_000)),
        cpu_max: 0.1,
    },
    ProcSpec {
        name: "cron",
        user: "root",
        rss_kib: Some((2_000, 4_000)),
        cpu_max: 0.1,
    },
    ProcSpec {
        name: "rsyslogd",
        user: "syslog",
        rss_kib: Some((4_000, 20_000)),
        cpu_max: 0.5,
    },
    ProcSpec {
        name: "dbus-daemon",
        user: "messagebus",
        rss_kib: Some((3_000, 6_000)),
        cpu_max: 0.1,
    },
    ProcSpec {
        name: "chronyd",
        user: "_chrony",
        rss_kib: Some((2_000, 4_000)),
        cpu_max: 0.1,
    },
    ProcSpec {
        name: "node_exporter",
        user: "prometheus",
        rss_kib: Some((15_000, 40_000)),
        cpu_max: 1.0,
    },
    ProcSpec {
        name: "fleetsql",
        user: "fleetsql",
        rss_kib: Some((40_000, 200_000)),
        cpu_max: 2.0,
    },
    ProcSpec {
        name: "containerd",
        user: "root",
        rss_kib: Some((30_000, 90_000)),
        cpu_max: 1.0,
    },
    ProcSpec {
        name: "snmpd",
        user: "Debian-snmp",
        rss_kib: Some((6_000, 12_000)),
        cpu_max: 0.2,
    },
    ProcSpec {
        name: "agetty",
        user: "root",
        rss_kib: Some((1_000, 2_000)),
        cpu_max: 0.0,
    },
    ProcSpec {
        name: "bash",
        user: "ops",
        rss_kib: Some((4_000, 8_000)),
        cpu_max: 0.0,
    },
    ProcSpec {
        name: "python3",
        user: "ops",
        rss_kib: Some((20_000, 90_000)),
        cpu_max: 3.0,
    },
];

/// Short-lived processes (cron jobs, shells, health checks), one per
/// transient slot (round robin past the end).
const TRANSIENT: [ProcSpec; 8] = [
    ProcSpec {
        name: "sh",
        user: "root",
        rss_kib: Some((600, 1_500)),
        cpu_max: 1.0,
    },
    ProcSpec {
        name: "python3",
        user: "ops",
        rss_kib: Some((9_000, 40_000)),
        cpu_max: 40.0,
    },
    ProcSpec {
        name: "curl",
        user: "prometheus",
        rss_kib: Some((5_000, 12_000)),
        cpu_max: 5.0,
    },
    ProcSpec {
        name: "logrotate",
        user: "root",
        rss_kib: Some((2_000, 4_000)),
        cpu_max: 10.0,
    },
    ProcSpec {
        name: "sshd",
        user: "ops",
        rss_kib: Some((5_000, 9_000)),
        cpu_max: 1.0,
    },
    ProcSpec {
        name: "bash",
        user: "ops",
        rss_kib: Some((4_000, 8_000)),
        cpu_max: 2.0,
    },
    ProcSpec {
        name: "apt-get",
        user: "root",
        rss_kib: Some((30_000, 80_000)),
        cpu_max: 30.0,
    },
    ProcSpec {
        name: "sleep",
        user: "root",
        rss_kib: Some((500, 900)),
        cpu_max: 0.0,
    },
];

/// The spec of `processes` row `row` of a machine with `base` long-lived
/// processes (rows past them are transient slots).
fn row_spec(role: Role, base: usize, row: usize) -> (ProcSpec, bool) {
    if row >= base {
        return (TRANSIENT[(row - base) % TRANSIENT.len()], false);
    }
    proc_spec(role, row)
}

/// The spec of `processes` row `row` (`None` name: a kernel worker whose
/// name is made from the row number).
fn proc_spec(role: Role, row: usize) -> (ProcSpec, bool) {
    let (service, user) = role.service();
    let main = ProcSpec {
        name: service,
        user,
        rss_kib: None,
        cpu_max: 60.0,
    };
    match row {
        0 => (main, true),
        r if r <= DAEMONS.len() => (DAEMONS[r - 1], false),
        // Past the daemons: service workers and kernel threads, alternating.
        r if r % 2 == 1 => (
            ProcSpec {
                cpu_max: 25.0,
                ..main
            },
            false,
        ),
        _ => (
            ProcSpec {
                name: "kworker",
                user: "root",
                rss_kib: Some((0, 0)),
                cpu_max: 0.5,
            },
            false,
        ),
    }
}

#[derive(Debug, Clone, Copy)]
struct Mount {
    mountp: &'static str,
    fstype: &'static str,
    device: &'static str,
    bsize: i64,
}

/// Mounts that come and go, past the four every machine has: a user
/// session's tmpfs and an automounted backup share.
pub(crate) const EXTRA_MOUNTS: usize = 2;

const MOUNTS: [Mount; 4 + EXTRA_MOUNTS] = [
    Mount {
        mountp: "/",
        fstype: "ext4",
        device: "/dev/nvme0n1p2",
        bsize: 4096,
    },
    Mount {
        mountp: "/boot",
        fstype: "ext4",
        device: "/dev/nvme0n1p1",
        bsize: 4096,
    },
    Mount {
        mountp: "/var",
        fstype: "xfs",
        device: "/dev/md0",
        bsize: 4096,
    },
    Mount {
        mountp: "/data",
        fstype: "xfs",
        device: "/dev/md1",
        bsize: 4096,
    },
    Mount {
        mountp: "/run/user/1000",
        fstype: "tmpfs",
        device: "tmpfs",
        bsize: 4096,
    },
    Mount {
        mountp: "/mnt/backup",
        fstype: "nfs4",
        device: "backup:/export",
        bsize: 1_048_576,
    },
];

/// Mounts every machine has.
const BASE_MOUNTS: usize = MOUNTS.len() - EXTRA_MOUNTS;

/// Swap of every simulated machine, KiB.
const SWAP_KIB: i64 = 8 * 1024 * 1024;

const GIB: i64 = 1 << 30;

fn mount_size_bytes(profile: &Profile, row: usize) -> i64 {
    match row {
        0 => 50 * GIB,
        1 => GIB,
        2 => 400 * GIB,
        4 => 3 * GIB,
        5 => 64 * 1024 * GIB,
        _ => match profile.role {
            Role::Cache | Role::Storage => 8 * 1024 * GIB,
            Role::Db => 4 * 1024 * GIB,
            _ => 1024 * GIB,
        },
    }
}

/// Blocks and inodes of mount `row`: fixed for the machine's life.
fn mount_geometry(profile: &Profile, row: usize) -> (i64, i64) {
    let mut d = Draw::new(derive(profile.key, 0x4653_0000 + row as u64));
    let bsize = MOUNTS[row].bsize;
    // Formatted sizes are a little under the nominal one.
    let blocks = mount_size_bytes(profile, row) / bsize * d.int(960, 999) / 1000;
    let files = if MOUNTS[row].fstype == "ext4" {
        blocks / 4
    } else {
        blocks / 16
    };
    (blocks, files)
}

/// Long-lived rows of one machine's table (transient slots follow them).
fn row_count(kind: Kind, profile: &Profile, processes: usize) -> usize {
    match kind {
        Kind::Sys | Kind::MachineRole => 1,
        Kind::Processes => processes,
        Kind::Filesystem => BASE_MOUNTS,
        Kind::LoadInfo => usize::from(profile.role.serves_traffic()),
    }
}

fn string_array<S: AsRef<str>>(values: impl IntoIterator<Item = S>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn int_array(values: impl IntoIterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(values))
}

/// The uid of a simulated user, as on a Debian/Ubuntu host.
fn uid_of(user: &str) -> i64 {
    match user {
        "root" => 0,
        "www-data" => 33,
        "messagebus" => 102,
        "syslog" => 104,
        "_chrony" => 105,
        "Debian-snmp" => 110,
        "bind" => 111,
        "varnish" => 112,
        "postgres" => 113,
        "ceph" => 114,
        "media" => 115,
        "prometheus" => 116,
        "fleetsql" => 999,
        _ => 1000,
    }
}

/// The columns that never change, built on a machine's first request for
/// the table. `ip` is the origin `_ip` array itself, shared.
/// The pid of a machine's main service (`base` long-lived processes).
fn main_pid(p: &Profile, base: usize) -> i64 {
    300 + 17 * base as i64 + (derive(p.key, 0x4d41_494e) % 1000) as i64
}

/// Pid and start time (ms) of long-lived process `row`: fixed for the
/// machine's life. Increasing pids in start order; systemd is 1, the main
/// service started last of the boot-time processes.
fn base_proc_identity(p: &Profile, base: usize, row: usize) -> (i64, i64) {
    let (_, main) = proc_spec(p.role, row);
    let mut d = Draw::new(derive(p.key, 0x5049_0000 + row as u64));
    let pid = match row {
        0 => main_pid(p, base),
        1 => 1,
        r => 300 + 17 * r as i64 + d.int(0, 16),
    };
    let start_s = if main || row <= DAEMONS.len() {
        p.boot_time_s + d.int(1, 60)
    } else {
        p.boot_time_s + d.int(60, 30 * 86_400)
    };
    (pid, start_s * 1000)
}

/// `base` long-lived rows then transient slots, `rows` in all.
fn fixed_columns(
    kind: Kind,
    p: &Profile,
    base: usize,
    rows: usize,
    ip: &ArrayRef,
) -> Vec<ArrayRef> {
    match kind {
        Kind::Sys => vec![
            ip.clone(),
            string_array([p.host.as_str()]),
            int_array([p.memtotal_kib]),
            int_array([SWAP_KIB]),
            int_array([p.boot_time_s]),
            int_array([p.ncpus]),
            string_array([p.os]),
            string_array([p.kernel]),
        ],
        Kind::Processes => {
            let mut ppids = Vec::with_capacity(rows);
            let mut names = Vec::with_capacity(rows);
            let mut uids = Vec::with_capacity(rows);
            let mut users = Vec::with_capacity(rows);
            let main_pid = main_pid(p, base);
            for row in 0..rows {
                let (spec, _) = row_spec(p.role, base, row);
                let kworker = row < base && spec.name == "kworker";
                let ppid = match row {
                    1 => None,
                    _ if kworker => Some(2),
                    // Jobs are started by cron or a shell, both under init.
                    r if r >= base => Some(1),
                    r if r > DAEMONS.len() => Some(main_pid),
                    _ => Some(1),
                };
                let name = if kworker {
                    format!("kworker/{}:{}", row as i64 % p.ncpus, row as i64 / p.ncpus)
                } else {
                    spec.name.to_string()
                };
                ppids.push(ppid);
                names.push(name);
                uids.push(uid_of(spec.user));
                users.push(spec.user);
            }
            vec![
                ip.clone(),
                Arc::new(Int64Array::from(ppids)),
                string_array(names),
                int_array(uids),
                string_array(users),
            ]
        }
        Kind::Filesystem => {
            let geometry: Vec<(i64, i64)> = (0..rows).map(|r| mount_geometry(p, r)).collect();
            let mounts = || MOUNTS.iter().take(rows);
            vec![
                ip.clone(),
                string_array(mounts().map(|m| m.mountp)),
                string_array(mounts().map(|m| m.fstype)),
                string_array(mounts().map(|m| m.device)),
                int_array(mounts().map(|m| m.bsize)),
                int_array(geometry.iter().map(|g| g.0)),
                int_array(geometry.iter().map(|g| g.1)),
            ]
        }
        Kind::MachineRole => vec![ip.clone(), string_array([p.role.name()])],
        Kind::LoadInfo => vec![
            ip.clone(),
            int_array(std::iter::repeat_n(p.georegion, rows)),
        ],
    }
}

fn empty_dyn(kind: Kind, rows: usize) -> Vec<DynCol> {
    let i = || DynCol::I(vec![0; rows]);
    let f = || DynCol::F(vec![0.0; rows]);
    match kind {
        Kind::Sys => vec![i(), i(), i(), f(), f(), f(), f(), i()],
        Kind::Processes => vec![
            i(),
            i(),
            f(),
            DynCol::S(vec![""; rows]),
            i(),
            DynCol::T(vec![0; rows]),
        ],
        Kind::Filesystem => vec![i(), i(), i()],
        Kind::MachineRole => vec![],
        Kind::LoadInfo => vec![i(), i(), i()],
    }
}

/// Where a row sits and who it is, beside its values' version.
#[derive(Debug, Clone, Copy)]
struct RowAt {
    row: usize,
    /// Long-lived rows of the machine's table.
    base: usize,
    /// `processes` only: pid and start time (ms).
    ident: (i64, i64),
}

/// The dynamic values of `at.row` at `version`, sampled at `sampled_at_s`.
fn sample(
    kind: Kind,
    p: &Profile,
    at: RowAt,
    key: u64,
    version: u64,
    sampled_at_s: Option<i64>,
) -> Sample {
    let row = at.row;
    let mut d = Draw::new(derive(key, version));
    match kind {
        Kind::Sys => {
            let total = p.memtotal_kib as f64;
            let free = if p.rss_hog {
                d.range(0.01, 0.05)
            } else {
                d.range(0.10, 0.50)
            };
            let avail = (free + d.range(0.02, 0.20)).min(0.95);
            let busy = match p.role {
                Role::Cache | Role::Stream => d.range(20.0, 85.0),
                Role::Web => d.range(10.0, 70.0),
                _ => d.range(2.0, 40.0),
            };
            let cpus = p.ncpus as f64;
            let load1 = busy / 100.0 * cpus * d.range(0.8, 1.3);
            let load5 = load1 * d.range(0.85, 1.1);
            let load15 = load5 * d.range(0.9, 1.05);
            let swapfree = (SWAP_KIB as f64 * d.range(0.7, 1.0)) as i64;
            [
                Val::I((total * free) as i64),
                Val::I((total * avail) as i64),
                Val::I(swapfree),
                Val::F(round2(busy)),
                Val::F(round2(load1)),
                Val::F(round2(load5)),
                Val::F(round2(load15)),
                // A fleet without churn is a snapshot taken a month after boot.
                Val::I(sampled_at_s.map_or(30 * 86_400, |t| (t - p.boot_time_s).max(0))),
            ]
        }
        Kind::Processes => {
            let (spec, main) = row_spec(p.role, at.base, row);
            let rss = match spec.rss_kib {
                Some((lo, hi)) => d.int(lo, hi),
                None if main => {
                    let (lo, hi) = if p.rss_hog {
                        (0.76, 0.88)
                    } else {
                        p.role.service_rss()
                    };
                    (p.memtotal_kib as f64 * d.range(lo, hi)) as i64
                }
                None => (p.memtotal_kib as f64 * d.range(0.0005, 0.002)) as i64,
            };
            let vsz = if rss == 0 {
                0
            } else {
                (rss as f64 * d.range(1.2, 3.0)) as i64 + 4_096
            };
            let cpu = round2(d.range(0.0, spec.cpu_max));
            // The words sysinfo uses on a real host.
            let state = if d.chance(0.01) {
                "UninterruptibleDiskSleep"
            } else if cpu > spec.cpu_max * 0.7 && cpu > 1.0 {
                "Runnable"
            } else {
                "Sleeping"
            };
            [
                Val::I(rss),
                Val::I(vsz),
                Val::F(cpu),
                Val::S(state),
                Val::I(at.ident.0),
                Val::I(at.ident.1),
                NO,
                NO,
            ]
        }
        Kind::Filesystem => {
            let (blocks, files) = mount_geometry(p, row);
            let avail = if p.full_disk && MOUNTS[row].mountp == "/var" {
                d.range(0.002, 0.029)
            } else {
                match row {
                    0 => d.range(0.40, 0.85),
                    1 => d.range(0.50, 0.80),
                    2 => d.range(0.20, 0.80),
                    _ => d.range(0.10, 0.70),
                }
            };
            let bavail = (blocks as f64 * avail) as i64;
            // ext4 keeps 5% of blocks for root: free but not available.
            let reserved = if MOUNTS[row].fstype == "ext4" {
                blocks / 20
            } else {
                0
            };
            let bfree = (bavail + reserved).min(blocks);
            let ffree = (files as f64 * d.range(0.90, 0.995)) as i64;
            [
                Val::I(bfree),
                Val::I(bavail),
                Val::I(ffree),
                NO,
                NO,
                NO,
                NO,
                NO,
            ]
        }
        Kind::MachineRole => [NO; 8],
        Kind::LoadInfo => {
            let hits = (p.mean_hits * d.range(0.9, 1.1)).round() as i64;
            let object_size = d.range(20_000.0, 120_000.0);
            let bytes = (hits as f64 * object_size) as i64;
            let connections = (hits as f64 * d.range(0.2, 0.4)) as i64;
            [
                Val::I(hits),
                Val::I(bytes),
                Val::I(connections),
                NO,
                NO,
                NO,
                NO,
                NO,
            ]
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// What the simulator needs to know about time and churn for one build.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    pub(crate) tick: u64,
    pub(crate) tick_ms: i64,
    pub(crate) churn: f64,
    pub(crate) rows: RowChurn,
}

impl Clock {
    pub(crate) fn tick_start_ms(&self) -> i64 {
        (self.tick as i64).saturating_mul(self.tick_ms)
    }
}

/// Rows per Arrow batch of a table covering many machines: the batches a
/// real proxy's merge makes (see `fleetsql_model::merge_tables`).
const BATCH_ROWS: usize = 8192;

/// One table of a set of machines (one machine for a simulated agent, a
/// whole cluster for a simulated proxy), as last built. Rows are the
/// machines' rows one after the other, in the order of `profiles`: each
/// machine's long-lived rows, then its transient slots (rows that exist at
/// some ticks only; see `crate::churn`). A built table holds only the rows
/// that exist at its tick.
#[derive(Debug)]
pub(crate) struct TableState {
    kind: Kind,
    /// Slot rows, whether they exist now or not.
    rows: usize,
    /// Where each machine's slot rows begin; one entry per machine plus the
    /// end.
    offsets: Vec<usize>,
    /// Long-lived rows per machine; the rest of its slot rows are transient.
    base: Vec<usize>,
    /// Each row's churn phase, kept so that finding the rows that churned
    /// costs a multiply per row instead of four hashes.
    phases: Vec<f64>,
    /// The version each row's dynamic values were sampled at (for a
    /// transient row, mixed with the slot's epoch: a new process).
    versions: Vec<u64>,
    /// Rows that exist at the last build's tick.
    present: Vec<bool>,
    /// Machines with at least one row at the last build's tick.
    with_rows: u64,
    fixed: Vec<ArrayRef>,
    values: Vec<DynCol>,
    /// Arrays of `values` as of the last build, each rebuilt only when one
    /// of its values changed.
    arrays: Vec<ArrayRef>,
    /// `_host`, `_ip`, `_cluster`.
    origin: [ArrayRef; 3],
    built: Option<(u64, Arc<Table>)>,
}

/// One column made of every machine's part of it.
fn concat_parts(table: Kind, parts: &[ArrayRef]) -> Result<ArrayRef, ModelError> {
    if let [only] = parts {
        return Ok(only.clone());
    }
    let refs: Vec<&dyn arrow::array::Array> = parts.iter().map(|a| a.as_ref()).collect();
    arrow::compute::concat(&refs).map_err(|source| ModelError::Arrow {
        table: table.name().to_string(),
        source,
    })
}

/// A version no sample has: a row not sampled yet.
const UNSAMPLED: u64 = u64::MAX;

impl TableState {
    pub(crate) fn new(
        kind: Kind,
        profiles: &[&Profile],
        processes: usize,
        clock: Clock,
    ) -> Result<Self, ModelError> {
        let extra = slots(kind, &clock.rows);
        let base: Vec<usize> = profiles
            .iter()
            .map(|p| row_count(kind, p, processes))
            .collect();
        let mut offsets = Vec::with_capacity(profiles.len() + 1);
        offsets.push(0);
        for b in &base {
            // A machine without long-lived rows (load_info off a serving
            // role) has no transient ones either.
            let own = if *b == 0 { 0 } else { b + extra };
            offsets.push(offsets[offsets.len() - 1] + own);
        }
        let rows = offsets[profiles.len()];
        let each = |value: fn(&Profile) -> &str| {
            let values: Vec<&str> = profiles
                .iter()
                .enumerate()
                .flat_map(|(m, p)| std::iter::repeat_n(value(p), offsets[m + 1] - offsets[m]))
                .collect();
            string_array(values)
        };
        let ip = each(|p| p.ip.as_str());
        let origin = [
            each(|p| p.host.as_str()),
            ip.clone(),
            each(|p| p.cluster.as_str()),
        ];
        let mut fixed_parts: Vec<Vec<ArrayRef>> = Vec::new();
        for (m, p) in profiles.iter().enumerate() {
            let machine_rows = offsets[m + 1] - offsets[m];
            let machine_ip = if profiles.len() == 1 {
                ip.clone()
            } else {
                string_array(std::iter::repeat_n(p.ip.as_str(), machine_rows))
            };
            for (c, column) in fixed_columns(kind, p, base[m], machine_rows, &machine_ip)
                .into_iter()
                .enumerate()
            {
                if fixed_parts.len() <= c {
                    fixed_parts.push(Vec::with_capacity(profiles.len()));
                }
                fixed_parts[c].push(column);
            }
        }
        let mut fixed = fixed_parts
            .iter()
            .map(|parts| concat_parts(kind, parts))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(first) = fixed.first_mut() {
            // The table's own ip column is the origin `_ip` array itself.
            *first = ip;
        }
        let mut phases = Vec::with_capacity(rows);
        for (m, p) in profiles.iter().enumerate() {
            for row in 0..offsets[m + 1] - offsets[m] {
                phases.push(phase(row_key(kind, p, row)));
            }
        }
        let mut state = TableState {
            kind,
            rows,
            offsets,
            base,
            phases,
            versions: vec![UNSAMPLED; rows],
            present: vec![false; rows],
            with_rows: 0,
            fixed,
            values: empty_dyn(kind, rows),
            arrays: Vec::new(),
            origin,
            built: None,
        };
        state.refresh(profiles, clock);
        state.arrays = state.values.iter().map(DynCol::to_array).collect();
        Ok(state)
    }

    /// Machines (of this state's set) with at least one row.
    pub(crate) fn machines_with_rows(&self) -> u64 {
        self.with_rows
    }

    /// Brings every existing row to `clock.tick`: which rows exist, and new
    /// values for rows whose version moved. Returns which dynamic columns
    /// changed.
    fn refresh(&mut self, profiles: &[&Profile], clock: Clock) -> Vec<bool> {
        let mut dirty = vec![false; self.values.len()];
        let mut with_rows = 0;
        for (m, p) in profiles.iter().enumerate() {
            let first = self.offsets[m];
            let base = self.base[m];
            let gone = away(p, clock.tick, &clock.rows);
            let slots = Slots::at(self.kind, p, clock.tick, &clock.rows);
            let mut any = false;
            for row in 0..self.offsets[m + 1] - first {
                let at = first + row;
                let transient = row.checked_sub(base);
                let present = !gone && transient.is_none_or(|slot| slots.in_use(slot));
                self.present[at] = present;
                if !present {
                    continue;
                }
                any = true;
                let phase = self.phases[at];
                let value_version = row_version(phase, clock.tick, clock.churn);
                let mut key = row_key(self.kind, p, row);
                let epoch = transient.map(|slot| slots.epoch(slot));
                let version = match epoch {
                    // A process that took the slot over has values of its own.
                    Some(epoch) => {
                        key = derive(key, epoch);
                        mix(derive(epoch, value_version))
                    }
                    None => value_version,
                };
                if version == self.versions[at] {
                    continue;
                }
                let ident = match (self.kind, epoch) {
                    (Kind::Processes, Some(epoch)) => (
                        // pid_max is 4,194,304 on 64-bit Linux.
                        32_768 + (derive(key, 0x5049_4400) % 4_000_000) as i64,
                        (slots.epoch_start(epoch, clock.tick) as i64).saturating_mul(clock.tick_ms),
                    ),
                    (Kind::Processes, None) => base_proc_identity(p, base, row),
                    _ => (0, 0),
                };
                let sampled = sampled_at_s(phase, value_version, clock);
                let at_row = RowAt { row, base, ident };
                store(
                    &mut self.values,
                    &mut dirty,
                    at,
                    &sample(self.kind, p, at_row, key, value_version, sampled),
                );
                self.versions[at] = version;
            }
            with_rows += u64::from(any);
        }
        self.with_rows = with_rows;
        dirty
    }

    /// The table at `clock.tick`, re-sampling only rows that churned.
    /// `profiles` are the ones the state was made from, in the same order.
    pub(crate) fn table_at(
        &mut self,
        profiles: &[&Profile],
        clock: Clock,
    ) -> Result<Arc<Table>, ModelError> {
        if let Some((tick, table)) = &self.built
            && *tick == clock.tick
        {
            return Ok(table.clone());
        }
        let dirty = self.refresh(profiles, clock);
        for (c, changed) in dirty.into_iter().enumerate() {
            if changed {
                self.arrays[c] = self.values[c].to_array();
            }
        }
        let schema = self.kind.schema();
        let mut batch = if self.rows == 0 {
            None
        } else {
            Some(self.batch(clock.tick_start_ms())?)
        };
        if let Some(all) = &batch
            && self.present.iter().any(|p| !p)
        {
            let mask = BooleanArray::from(self.present.clone());
            let kept = arrow::compute::filter_record_batch(all, &mask).map_err(|source| {
                ModelError::Arrow {
                    table: self.kind.name().to_string(),
                    source,
                }
            })?;
            batch = Some(kept);
        }
        let table = match batch.filter(|b| b.num_rows() > 0) {
            None => Table::empty(schema.clone()),
            Some(batch) => {
                let rows = batch.num_rows();
                let batches = (0..rows)
                    .step_by(BATCH_ROWS)
                    .map(|start| batch.slice(start, BATCH_ROWS.min(rows - start)))
                    .collect();
                Table::new(self.kind.name(), schema.clone(), batches)?
            }
        };
        let table = Arc::new(table);
        self.built = Some((clock.tick, table.clone()));
        Ok(table)
    }

    fn batch(&self, published_at_ms: i64) -> Result<RecordBatch, ModelError> {
        let layout = self.kind.layout();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(layout.len() + 4);
        for slot in layout {
            columns.push(match slot {
                Slot::Fixed(i) => self.fixed[*i].clone(),
                Slot::Dyn(i) => self.arrays[*i].clone(),
            });
        }
        columns.extend(self.origin.iter().cloned());
        columns.push(published_at(published_at_ms, self.rows));
        RecordBatch::try_new(self.kind.schema().clone(), columns).map_err(|source| {
            ModelError::Arrow {
                table: self.kind.name().to_string(),
                source,
            }
        })
    }
}

thread_local! {
    /// `_published_at` arrays of the current tick by length. Every machine
    /// of a tick stamps the same instant and most have the same row counts,
    /// so they share one immutable array instead of allocating their own.
    static PUBLISHED_AT: RefCell<(i64, Vec<(usize, ArrayRef)>)> =
        const { RefCell::new((i64::MIN, Vec::new())) };
}

fn published_at(ms: i64, rows: usize) -> ArrayRef {
    PUBLISHED_AT.with_borrow_mut(|(at, arrays)| {
        if *at != ms {
            *at = ms;
            arrays.clear();
        }
        if let Some((_, array)) = arrays.iter().find(|(n, _)| *n == rows) {
            return array.clone();
        }
        let array: ArrayRef =
            Arc::new(TimestampMillisecondArray::from(vec![ms; rows]).with_timezone("UTC"));
        // Only a handful of distinct lengths exist; keep the list short
        // anyway so an odd fleet cannot grow it without bound.
        if arrays.len() >= 16 {
            arrays.remove(0);
        }
        arrays.push((rows, array.clone()));
        array
    })
}

fn row_key(kind: Kind, p: &Profile, row: usize) -> u64 {
    derive(derive(p.key, kind as u64 + 1), row as u64)
}

/// When the row's current values were sampled, in seconds since the epoch:
/// a row that did not churn keeps the sample (and uptime) it had.
/// `None` without churn: rows then never change, so they have no sample time.
fn sampled_at_s(phase: f64, version: u64, clock: Clock) -> Option<i64> {
    if clock.churn <= 0.0 {
        return None;
    }
    let start = version_start(phase, version, clock.tick, clock.churn);
    Some((start as i64).saturating_mul(clock.tick_ms) / 1000)
}
