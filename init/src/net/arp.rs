//! Address conflict detection (RFC 5227 style probe, shortened for boot):
//! broadcast ARP requests for the address with sender address 0.0.0.0 and
//! report a conflict if any other host claims or probes the same address.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::sys::packet::PacketSocket;

const ETH_P_ARP: u16 = 0x0806;
const ARP_REQUEST: u16 = 1;

/// How long to listen for an answer; two probes go out in that time.
pub const PROBE_WAIT: Duration = Duration::from_millis(500);

/// The 28-byte ARP payload of a probe for `target` from `mac`.
pub fn probe_packet(mac: [u8; 6], target: Ipv4Addr) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    p[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&ARP_REQUEST.to_be_bytes());
    p[8..14].copy_from_slice(&mac);
    // sender IP 0.0.0.0 (bytes 14..18), target MAC zero (18..24)
    p[24..28].copy_from_slice(&target.octets());
    p
}

/// Whether a received ARP packet shows another host using or probing `addr`.
pub fn is_conflict(packet: &[u8], our_mac: [u8; 6], addr: Ipv4Addr) -> bool {
    if packet.len() < 28
        || packet[0..2] != [0, 1]
        || packet[2..4] != [8, 0]
        || packet[4] != 6
        || packet[5] != 4
    {
        return false;
    }
    let sha = &packet[8..14];
    let spa = Ipv4Addr::new(packet[14], packet[15], packet[16], packet[17]);
    let tpa = Ipv4Addr::new(packet[24], packet[25], packet[26], packet[27]);
    if sha == our_mac {
        return false; // our own probe looped back
    }
    // Someone has the address, or is probing for it at the same time.
    spa == addr
        || (spa.is_unspecified() && tpa == addr && packet[6..8] == ARP_REQUEST.to_be_bytes())
}

/// Probes `addr` on interface `ifindex`; `Ok(true)` if it is in use.
pub async fn probe(ifindex: u32, mac: [u8; 6], addr: Ipv4Addr) -> std::io::Result<bool> {
    let sock = PacketSocket::bind(ifindex, ETH_P_ARP)?;
    let packet = probe_packet(mac, addr);
    let send = || sock.send_to(&packet, [0xff; 6]);
    send()?;
    let listen = async {
        let mut buf = [0u8; 64];
        loop {
            let n = sock.recv(&mut buf).await?;
            if is_conflict(&buf[..n], mac, addr) {
                return Ok::<bool, std::io::Error>(true);
            }
        }
    };
    let second_probe = async {
        tokio::time::sleep(PROBE_WAIT / 3).await;
        let _ = send();
        std::future::pending::<()>().await;
    };
    tokio::select! {
        r = tokio::time::timeout(PROBE_WAIT, listen) => r.unwrap_or(Ok(false)),
        _ = second_probe => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 50);

    fn reply_from(sha: [u8; 6], spa: Ipv4Addr) -> [u8; 28] {
        let mut p = probe_packet(sha, Ipv4Addr::new(0, 0, 0, 0));
        p[6..8].copy_from_slice(&2u16.to_be_bytes());
        p[14..18].copy_from_slice(&spa.octets());
        p
    }

    #[test]
    fn probe_has_zero_sender_address() {
        let p = probe_packet(MAC, ADDR);
        assert_eq!(&p[8..14], &MAC);
        assert_eq!(&p[14..18], &[0, 0, 0, 0]);
        assert_eq!(&p[24..28], &ADDR.octets());
    }

    #[test]
    fn conflicts() {
        let other = [2, 0, 0, 0, 0, 9];
        assert!(is_conflict(&reply_from(other, ADDR), MAC, ADDR));
        assert!(!is_conflict(
            &reply_from(other, Ipv4Addr::new(10, 0, 0, 51)),
            MAC,
            ADDR
        ));
        assert!(
            !is_conflict(&probe_packet(MAC, ADDR), MAC, ADDR),
            "our own probe"
        );
        assert!(
            is_conflict(&probe_packet(other, ADDR), MAC, ADDR),
            "simultaneous probe"
        );
        assert!(!is_conflict(&[0u8; 10], MAC, ADDR));
    }
}
