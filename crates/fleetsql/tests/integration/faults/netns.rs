//! Network namespaces and veth links a test creates for itself, so a test
//! can cut, slow or rate-limit one link between two real processes and
//! nothing else. Everything is named per lab (process id plus a counter),
//! lives in a `10.X.0.0/16` no interface of the host uses, and is removed
//! on drop, panics included. Needs root: [`Lab::new`] says why it cannot
//! run, and the test skips with that message.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static LABS: AtomicU32 = AtomicU32::new(0);

/// Namespaces, links and service addresses of one test.
#[derive(Debug)]
pub(crate) struct Lab {
    /// Interface and namespace names start with it (`fq` + 5 hex digits):
    /// interface names have at most 15 bytes.
    prefix: String,
    /// The second octet of every address of this lab.
    octet: u8,
    next_subnet: u8,
    namespaces: Vec<String>,
    /// Root-side ends of veth pairs (deleting one deletes its peer).
    devices: Vec<String>,
    /// The root-namespace device that holds service addresses.
    anchor: Option<String>,
    next_service: u8,
    /// Routes added over links, put back when a cut link comes back up.
    routes: Vec<(Link, IpAddr)>,
}

/// Which side of a link opens its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialer {
    /// A process in the namespace dials out (a TLA in its namespace).
    Namespace,
    /// A process in the root namespace dials in (a proxy to its agent).
    Root,
}

/// One veth pair between the root namespace and `ns`, a /24 of its own:
/// `root_ip` on the root side, `ns_ip` in the namespace.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub(crate) ns: String,
    pub(crate) root_dev: String,
    pub(crate) ns_dev: String,
    pub(crate) root_ip: Ipv4Addr,
    pub(crate) ns_ip: Ipv4Addr,
}

fn run(args: &[&str]) -> Result<(), String> {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn must(args: &[&str]) {
    if let Err(e) = run(args) {
        panic!("{e}");
    }
}

fn add_route(link: &Link, dest: IpAddr) {
    must(&[
        "ip",
        "netns",
        "exec",
        &link.ns,
        "ip",
        "route",
        "replace",
        &format!("{dest}/32"),
        "via",
        &link.root_ip.to_string(),
        "dev",
        &link.ns_dev,
    ]);
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

impl Lab {
    /// A lab, or why this machine cannot make one (not root, no `ip`, no
    /// network namespaces): the caller prints it and skips.
    pub(crate) fn new() -> Result<Lab, String> {
        if !is_root() {
            return Err("needs root for network namespaces (CI runs as root)".into());
        }
        let n = LABS.fetch_add(1, Ordering::SeqCst);
        let id = (std::process::id() * 16 + n) & 0xfffff;
        let prefix = format!("fq{id:05x}");
        // A lock across test processes while choosing the octet, so two
        // labs never share addresses.
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(std::env::temp_dir().join("fleetsql-netns.lock"))
            .map_err(|e| format!("netns lock: {e}"))?;
        lock.lock().map_err(|e| format!("netns lock: {e}"))?;
        let used = Command::new("ip")
            .args(["-o", "addr"])
            .output()
            .map_err(|e| format!("`ip` is missing (apt iproute2): {e}"))?;
        let routes = Command::new("ip").arg("route").output().ok();
        let used = String::from_utf8_lossy(&used.stdout).to_string()
            + &routes
                .map(|r| String::from_utf8_lossy(&r.stdout).to_string())
                .unwrap_or_default();
        let start = 64 + (id % 150) as u8;
        let octet = (0..150u8)
            .map(|k| 64 + (start - 64 + k) % 150)
            .find(|o| !used.contains(&format!("10.{o}.")))
            .ok_or("no free 10.X.0.0/16 for a test lab")?;
        let mut lab = Lab {
            prefix,
            octet,
            next_subnet: 1,
            namespaces: Vec::new(),
            devices: Vec::new(),
            anchor: None,
            next_service: 1,
            routes: Vec::new(),
        };
        // Claim the octet before the lock is released: the anchor's address.
        let anchor = format!("{}an", lab.prefix);
        run(&[
            "ip",
            "link",
            "add",
            &anchor,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{}ap", lab.prefix),
        ])?;
        lab.devices.push(anchor.clone());
        run(&["ip", "link", "set", &anchor, "up"])?;
        run(&["ip", "link", "set", &format!("{}ap", lab.prefix), "up"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("10.{octet}.0.254/32"),
            "dev",
            &anchor,
        ])?;
        lab.anchor = Some(anchor);
        drop(lock);
        Ok(lab)
    }

    /// A new namespace with loopback up; returns its name.
    pub(crate) fn namespace(&mut self, short: &str) -> String {
        let name = format!("{}-{short}", self.prefix);
        must(&["ip", "netns", "add", &name]);
        self.namespaces.push(name.clone());
        must(&[
            "ip", "netns", "exec", &name, "ip", "link", "set", "lo", "up",
        ]);
        name
    }

    /// A veth pair from the root namespace into `ns`.
    pub(crate) fn link(&mut self, ns: &str) -> Link {
        let k = self.next_subnet;
        self.next_subnet += 1;
        let root_dev = format!("{}r{k}", self.prefix);
        let ns_dev = format!("{}n{k}", self.prefix);
        let root_ip = Ipv4Addr::new(10, self.octet, k, 1);
        let ns_ip = Ipv4Addr::new(10, self.octet, k, 2);
        must(&[
            "ip", "link", "add", &root_dev, "type", "veth", "peer", "name", &ns_dev,
        ]);
        self.devices.push(root_dev.clone());
        must(&["ip", "link", "set", &ns_dev, "netns", ns]);
        must(&[
            "ip",
            "addr",
            "add",
            &format!("{root_ip}/24"),
            "dev",
            &root_dev,
        ]);
        must(&["ip", "link", "set", &root_dev, "up"]);
        let exec = |args: &[&str]| {
            let mut full = vec!["ip", "netns", "exec", ns];
            full.extend_from_slice(args);
            must(&full);
        };
        exec(&["ip", "addr", "add", &format!("{ns_ip}/24"), "dev", &ns_dev]);
        exec(&["ip", "link", "set", &ns_dev, "up"]);
        Link {
            ns: ns.to_string(),
            root_dev,
            ns_dev,
            root_ip,
            ns_ip,
        }
    }

    /// An address of the root namespace not tied to any link (a process
    /// there listens on it); namespaces reach it by a route over one of
    /// their links ([`Lab::route`]), so each namespace's way to it can be
    /// cut on its own.
    pub(crate) fn service_address(&mut self) -> IpAddr {
        let k = self.next_service;
        self.next_service += 1;
        let ip = Ipv4Addr::new(10, self.octet, 0, k);
        let anchor = self.anchor.clone().expect("anchor");
        must(&["ip", "addr", "add", &format!("{ip}/32"), "dev", &anchor]);
        IpAddr::V4(ip)
    }

    /// In `link`'s namespace, `dest` is reached over `link`.
    pub(crate) fn route(&mut self, link: &Link, dest: IpAddr) {
        self.routes.push((link.clone(), dest));
        add_route(link, dest);
    }

    /// Cuts (`false`) or restores (`true`) `link`. The end away from the
    /// side that dials goes down: the dialer's end loses carrier but keeps
    /// its routes and sends into nothing, so packets are dropped silently
    /// and no reset or "unreachable" reaches either process, as when a
    /// router between sites fails. (Taking the dialer's own end down would
    /// fail its connections at once, which a real partition does not.)
    pub(crate) fn set_link(&self, link: &Link, up: bool, dialer: Dialer) {
        let state = if up { "up" } else { "down" };
        match dialer {
            Dialer::Namespace => must(&["ip", "link", "set", &link.root_dev, state]),
            Dialer::Root => must(&[
                "ip",
                "netns",
                "exec",
                &link.ns,
                "ip",
                "link",
                "set",
                &link.ns_dev,
                state,
            ]),
        }
        if up {
            // Routes over a link go when its own end goes down.
            for (l, dest) in &self.routes {
                if l.ns_dev == link.ns_dev {
                    add_route(l, *dest);
                }
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for dev in &self.devices {
            let _ = run(&["ip", "link", "del", dev]);
        }
        for ns in &self.namespaces {
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}
