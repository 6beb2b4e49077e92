//! Hostname and loopback.

use crate::sys::netdev;
use crate::sys::root::Root;

/// Picks the hostname: configured, else (later) from DHCP, else from the first MAC.
/// An RFC 1123 host name the kernel accepts (at most 64 bytes, HOST_NAME_MAX). Config
/// and DHCP option 12 are both checked with it: a server could send anything.
pub fn valid(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 64
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

pub fn choose(configured: Option<&str>, first_mac: Option<[u8; 6]>) -> String {
    match (configured, first_mac) {
        (Some(h), _) => h.to_string(),
        (None, Some(mac)) => netdev::hostname_from_mac(mac),
        (None, None) => "nomados".to_string(),
    }
}

/// Sets the hostname and brings `lo` up. Returns the name set.
pub fn apply(root: &Root, configured: Option<&str>) -> anyhow::Result<String> {
    let name = choose(configured, netdev::first_mac(&root.path("/sys/class/net")));
    nix::unistd::sethostname(&name).map_err(|e| anyhow::anyhow!("sethostname({name}): {e}"))?;
    netdev::link_up("lo")?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_name_wins_then_mac_then_fallback() {
        let mac = Some([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]);
        assert_eq!(choose(Some("edge"), mac), "edge");
        assert_eq!(choose(None, mac), "nomados-aabbcc");
        assert_eq!(choose(None, None), "nomados");
    }
}
