//! Who this machine is: its hostname and the address rows are stamped with.

use std::net::{IpAddr, Ipv4Addr};

/// The machine's hostname, or `localhost` when it cannot be read.
pub(crate) fn hostname() -> String {
    sysinfo::System::host_name()
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The first non-loopback IPv4 address (interfaces in name order, so the
/// choice is stable across restarts), else 127.0.0.1.
pub(crate) fn primary_ipv4() -> IpAddr {
    let Ok(networks) = sysinfo::Networks::new_with_refreshed_list() else {
        return IpAddr::V4(Ipv4Addr::LOCALHOST);
    };
    let mut interfaces: Vec<_> = networks.iter().collect();
    interfaces.sort_by(|a, b| a.0.cmp(b.0));
    interfaces
        .iter()
        .flat_map(|(_, data)| data.ip_networks().iter())
        .map(|n| n.addr)
        .find(|a| a.is_ipv4() && !a.is_loopback() && !a.is_unspecified())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}
