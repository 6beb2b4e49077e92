//! Which links are wired (sysfs), for the default interface list.

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
