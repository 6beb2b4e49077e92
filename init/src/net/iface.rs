//! Interface facts from sysfs: which links are wired, MAC addresses, carrier.

use std::path::Path;

const SYS: &str = "/sys/class/net";

/// Wired physical interfaces: not loopback, not wireless, and backed by a
/// device (virtual links such as veth, bridges, bonds and tunnels have no
/// `device` link). Sorted by name.
pub fn wired_interfaces() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(SYS) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_wired(&Path::new(SYS).join(n)))
        .collect();
    names.sort();
    names
}

fn is_wired(dir: &Path) -> bool {
    let type_is_ether = std::fs::read_to_string(dir.join("type")).is_ok_and(|t| t.trim() == "1");
    type_is_ether
        && !dir.join("wireless").exists()
        && !dir.join("phy80211").exists()
        && dir.join("device").exists()
}

/// The interface's Ethernet address.
pub fn mac(interface: &str) -> std::io::Result<[u8; 6]> {
    let text = std::fs::read_to_string(Path::new(SYS).join(interface).join("address"))?;
    parse_mac(text.trim()).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{interface}: not an Ethernet address: {}", text.trim()),
        )
    })
}

pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = text.split(':');
    for b in out.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Whether the link reports carrier (unknown counts as yes).
pub fn has_carrier(interface: &str) -> bool {
    std::fs::read_to_string(Path::new(SYS).join(interface).join("carrier"))
        .map_or(true, |c| c.trim() != "0")
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_macs() {
        assert_eq!(
            super::parse_mac("02:00:0a:ff:00:01"),
            Some([2, 0, 0x0a, 0xff, 0, 1])
        );
        assert_eq!(super::parse_mac("02:00:0a:ff:00"), None);
        assert_eq!(super::parse_mac("02:00:0a:ff:00:01:02"), None);
        assert_eq!(super::parse_mac("zz:00:0a:ff:00:01"), None);
    }
}
