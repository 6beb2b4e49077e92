//! Network interface basics PID 1 needs before the network stage: loopback up, MACs.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    #[error("socket(AF_INET, SOCK_DGRAM): {0}")]
    Socket(std::io::Error),
    #[error("ioctl(SIOCGIFFLAGS, {0}): {1}")]
    GetFlags(String, std::io::Error),
    #[error("ioctl(SIOCSIFFLAGS, {0}): {1}")]
    SetFlags(String, std::io::Error),
    #[error("interface name {0:?} is too long")]
    Name(String),
}

// IFF_UP is 1: a compile-time flag that fits the short ifru_flags field.
#[allow(clippy::cast_possible_truncation)]
const IFF_UP_FLAG: libc::c_short = libc::IFF_UP as libc::c_short;

/// Sets IFF_UP on interface `name` (used for `lo`) with the classic ioctl pair.
pub fn link_up(name: &str) -> Result<(), NetdevError> {
    // SAFETY: plain socket(2) call; the returned descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(NetdevError::Socket(std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(NetdevError::Name(name.to_string()));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = libc::c_char::from_ne_bytes([src]);
    }
    // SAFETY: req is a valid ifreq with a NUL-terminated name; the kernel fills ifru_flags.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(NetdevError::GetFlags(
            name.into(),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: SIOCGIFFLAGS succeeded, so the flags member of the union is the one set.
    unsafe {
        req.ifr_ifru.ifru_flags |= IFF_UP_FLAG;
    }
    // SAFETY: same valid ifreq, now with IFF_UP added to the flags the kernel returned.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(NetdevError::SetFlags(
            name.into(),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The MAC of the first (by name) non-loopback interface with a non-zero address.
pub fn first_mac(sys_class_net: &Path) -> Option<[u8; 6]> {
    let mut names: Vec<String> = std::fs::read_dir(sys_class_net)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    names.into_iter().find_map(|n| {
        let text = std::fs::read_to_string(sys_class_net.join(&n).join("address")).ok()?;
        parse_mac(&text).filter(|m| m.iter().any(|&b| b != 0))
    })
}

/// `nomados-` and the last three bytes of the MAC in hex, e.g. `nomados-3a4b5c`.
pub fn hostname_from_mac(mac: [u8; 6]) -> String {
    format!("nomados-{:02x}{:02x}{:02x}", mac[3], mac[4], mac[5])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_hostname_from_last_three_mac_bytes() {
        let mac = parse_mac("52:54:00:3A:4b:5c\n").unwrap();
        assert_eq!(hostname_from_mac(mac), "nomados-3a4b5c");
        assert_eq!(parse_mac("52:54:00:3a:4b"), None);
        assert_eq!(parse_mac("52:54:00:3a:4b:5c:01"), None);
        assert_eq!(parse_mac("zz:54:00:3a:4b:5c"), None);
    }

    #[test]
    fn first_mac_skips_loopback_and_zero_addresses() {
        let dir = tempfile::tempdir().unwrap();
        for (name, addr) in [
            ("lo", "00:00:00:00:00:00"),
            ("dummy0", "00:00:00:00:00:00"),
            ("eth0", "52:54:00:12:34:56"),
            ("eth1", "52:54:00:ab:cd:ef"),
        ] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("address"), format!("{addr}\n")).unwrap();
        }
        assert_eq!(first_mac(dir.path()), parse_mac("52:54:00:12:34:56"));
    }
}
