//! The route netlink requests that configure an interface (link, address, route) and the
//! parser of the kernel's link answer. Pure: bytes in, bytes out; `apply.rs` sends them.
//! Layouts are the kernel's `ifinfomsg`, `ifaddrmsg` and `rtmsg` (linux/rtnetlink.h).

use std::net::Ipv4Addr;

use super::dhcp::Route;

use crate::sys::netlink::{
    attributes, Request, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};

pub const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_CARRIER: u16 = 33;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;

const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const IFF_UP: u32 = 0x1;
const RT_TABLE_MAIN: u8 = 254;
/// Addresses and routes we install carry this protocol, as `ip route` shows `proto dhcp`.
const RTPROT_DHCP: u8 = 16;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
/// `ifinfomsg` is 16 bytes: family, pad, type, index, flags, change.
const IFINFOMSG_LEN: usize = 16;
/// Longest interface name the kernel accepts, without its terminating NUL (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// What we read of a link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkFacts {
    pub index: u32,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub carrier: Option<bool>,
}

/// Whether a request adds (or replaces) an object or deletes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Replace,
    Delete,
}

/// Route metric of an interface's routes: one per link, so that every link can
/// have its own default route (lower index preferred) and replacing or removing
/// one link's routes never touches another's.
pub fn metric(index: u32) -> u32 {
    1000 + index
}

fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; IFINFOMSG_LEN] {
    let mut m = [0u8; IFINFOMSG_LEN];
    m[0] = AF_UNSPEC;
    m[4..8].copy_from_slice(&index.to_ne_bytes());
    m[8..12].copy_from_slice(&flags.to_ne_bytes());
    m[12..16].copy_from_slice(&change.to_ne_bytes());
    m
}

fn flags_for(change: Change) -> u16 {
    match change {
        Change::Replace => NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        Change::Delete => NLM_F_REQUEST | NLM_F_ACK,
    }
}

/// Asks for the link named `name` (the kernel answers ENODEV when there is none).
pub fn get_link_by_name(seq: u32, name: &str) -> std::io::Result<Vec<u8>> {
    if name.is_empty() || name.len() > IFNAME_MAX || name.contains('\0') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{name:?} is not an interface name (1 to {IFNAME_MAX} bytes)"),
        ));
    }
    let mut value = name.as_bytes().to_vec();
    value.push(0);
    Request::new(
        RTM_GETLINK,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        &ifinfomsg(0, 0, 0),
    )
    .attr(IFLA_IFNAME, &value)?
    .finish()
}

/// Asks for the link with index `index`.
pub fn get_link(seq: u32, index: u32) -> std::io::Result<Vec<u8>> {
    Request::new(
        RTM_GETLINK,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        &ifinfomsg(index, 0, 0),
    )
    .finish()
}

/// Sets link `index` up (the other flags are left as they are).
pub fn link_up(seq: u32, index: u32) -> std::io::Result<Vec<u8>> {
    setlink(seq, &ifinfomsg(index, IFF_UP, IFF_UP)).finish()
}

/// Sets the MTU of link `index` (its flags are left as they are: change mask 0).
pub fn set_mtu(seq: u32, index: u32, mtu: u32) -> std::io::Result<Vec<u8>> {
    setlink(seq, &ifinfomsg(index, 0, 0))
        .attr(IFLA_MTU, &mtu.to_ne_bytes())?
        .finish()
}

fn setlink(seq: u32, ifinfomsg: &[u8]) -> Request {
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE;
    Request::new(RTM_SETLINK, flags, seq, ifinfomsg)
}

/// Adds (replacing) or deletes IPv4 address `addr/prefix_len` on link `index`, with its
/// broadcast address as `ip addr add ... brd +` sets it.
pub fn address(
    seq: u32,
    change: Change,
    index: u32,
    addr: Ipv4Addr,
    prefix_len: u8,
) -> std::io::Result<Vec<u8>> {
    let kind = match change {
        Change::Replace => RTM_NEWADDR,
        Change::Delete => RTM_DELADDR,
    };
    // ifaddrmsg: family, prefix length, flags, scope, index.
    let mut fixed = [0u8; 8];
    fixed[0] = AF_INET;
    fixed[1] = prefix_len;
    fixed[3] = RT_SCOPE_UNIVERSE;
    fixed[4..8].copy_from_slice(&index.to_ne_bytes());
    let mut req = Request::new(kind, flags_for(change), seq, &fixed)
        .attr(IFA_ADDRESS, &addr.octets())?
        .attr(IFA_LOCAL, &addr.octets())?;
    if prefix_len < 31 {
        let host_bits = u32::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
        let broadcast = Ipv4Addr::from(u32::from(addr) | host_bits);
        req = req.attr(IFA_BROADCAST, &broadcast.octets())?;
    }
    req.finish()
}

/// Adds (replacing) or deletes `route` on link `index` in the main table, tagged
/// `proto dhcp`, with the link's [`metric`] and preferred source `source`; a route
/// without a gateway is on-link (scope link).
pub fn route(
    seq: u32,
    change: Change,
    index: u32,
    route: &Route,
    source: Option<Ipv4Addr>,
) -> std::io::Result<Vec<u8>> {
    let kind = match change {
        Change::Replace => RTM_NEWROUTE,
        Change::Delete => RTM_DELROUTE,
    };
    let scope = if route.gateway.is_some() {
        RT_SCOPE_UNIVERSE
    } else {
        RT_SCOPE_LINK
    };
    // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32).
    let fixed = [
        AF_INET,
        route.prefix_len,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_DHCP,
        scope,
        RTN_UNICAST,
        0,
        0,
        0,
        0,
    ];
    let mut req = Request::new(kind, flags_for(change), seq, &fixed)
        .attr(RTA_DST, &route.destination.octets())?
        .attr(RTA_OIF, &index.to_ne_bytes())?
        .attr(RTA_PRIORITY, &metric(index).to_ne_bytes())?;
    if let Some(src) = source {
        req = req.attr(RTA_PREFSRC, &src.octets())?;
    }
    if let Some(gw) = route.gateway {
        req = req.attr(RTA_GATEWAY, &gw.octets())?;
    }
    req.finish()
}

fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
}

/// Reads an `RTM_NEWLINK` payload (the kernel's answer to [`get_link`]).
pub fn parse_link(payload: &[u8]) -> Option<LinkFacts> {
    let index = u32_of(payload.get(4..8)?)?;
    let mut facts = LinkFacts {
        index,
        ..LinkFacts::default()
    };
    for (kind, value) in attributes(payload.get(IFINFOMSG_LEN..)?) {
        match kind {
            IFLA_MTU => facts.mtu = u32_of(value),
            IFLA_CARRIER => facts.carrier = value.first().map(|&c| c != 0),
            IFLA_ADDRESS => facts.mac = value.try_into().ok(),
            _ => {}
        }
    }
    Some(facts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::netlink::messages;

    fn one(req: &[u8]) -> (u16, u16, Vec<u8>) {
        let msgs = messages(req);
        assert_eq!(msgs.len(), 1, "{req:?}");
        (msgs[0].kind, msgs[0].flags, msgs[0].payload.to_vec())
    }

    #[test]
    fn a_link_is_asked_for_by_name_with_a_terminated_ifname() {
        let (kind, flags, payload) = one(&get_link_by_name(3, "eth0").unwrap());
        assert_eq!(kind, RTM_GETLINK);
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(&payload[..IFINFOMSG_LEN], &[0; IFINFOMSG_LEN]);
        assert_eq!(
            attributes(&payload[IFINFOMSG_LEN..]),
            vec![(IFLA_IFNAME, &b"eth0\0"[..])]
        );
        for bad in ["", "a-name-longer-than-15", "nul\0"] {
            assert!(get_link_by_name(3, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn link_up_sets_and_masks_iff_up_and_mtu_leaves_the_flags() {
        let (kind, _, payload) = one(&link_up(1, 7).unwrap());
        assert_eq!(kind, RTM_SETLINK);
        assert_eq!(u32_of(&payload[4..8]), Some(7));
        assert_eq!(u32_of(&payload[8..12]), Some(IFF_UP));
        assert_eq!(u32_of(&payload[12..16]), Some(IFF_UP));
        assert!(attributes(&payload[IFINFOMSG_LEN..]).is_empty());
        // MTU only: the flags are left alone (change mask 0).
        let (kind, _, payload) = one(&set_mtu(1, 7, 9000).unwrap());
        assert_eq!(kind, RTM_SETLINK);
        assert_eq!(u32_of(&payload[12..16]), Some(0));
        let attrs = attributes(&payload[IFINFOMSG_LEN..]);
        assert_eq!(attrs, vec![(IFLA_MTU, &9000u32.to_ne_bytes()[..])]);
    }

    #[test]
    fn an_address_carries_local_address_and_broadcast() {
        let addr = Ipv4Addr::new(10, 0, 2, 15);
        let (kind, flags, payload) = one(&address(2, Change::Replace, 3, addr, 24).unwrap());
        assert_eq!(kind, RTM_NEWADDR);
        assert_eq!(flags & NLM_F_REPLACE, NLM_F_REPLACE);
        assert_eq!(&payload[..4], &[AF_INET, 24, 0, RT_SCOPE_UNIVERSE]);
        assert_eq!(u32_of(&payload[4..8]), Some(3));
        let attrs = attributes(&payload[8..]);
        assert_eq!(
            attrs,
            vec![
                (IFA_ADDRESS, &[10, 0, 2, 15][..]),
                (IFA_LOCAL, &[10, 0, 2, 15][..]),
                (IFA_BROADCAST, &[10, 0, 2, 255][..]),
            ]
        );
        // A /31 or /32 has no broadcast address; /0 broadcasts everywhere.
        let (kind, _, p31) = one(&address(2, Change::Delete, 3, addr, 31).unwrap());
        assert_eq!(kind, RTM_DELADDR);
        assert_eq!(attributes(&p31[8..]).len(), 2);
        let (_, _, p0) = one(&address(2, Change::Replace, 3, addr, 0).unwrap());
        assert_eq!(attributes(&p0[8..])[2], (IFA_BROADCAST, &[255u8; 4][..]));
    }

    #[test]
    fn routes_are_dhcp_routes_in_the_main_table() {
        let mut default = Route {
            destination: Ipv4Addr::UNSPECIFIED,
            prefix_len: 0,
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
        };
        let source = Some(Ipv4Addr::new(10, 0, 2, 15));
        let (kind, _, payload) = one(&route(5, Change::Replace, 2, &default, source).unwrap());
        assert_eq!(kind, RTM_NEWROUTE);
        assert_eq!(
            &payload[..8],
            &[
                AF_INET,
                0,
                0,
                0,
                RT_TABLE_MAIN,
                RTPROT_DHCP,
                RT_SCOPE_UNIVERSE,
                RTN_UNICAST
            ]
        );
        let attrs = attributes(&payload[12..]);
        assert_eq!(attrs.len(), 5);
        assert_eq!(attrs[2], (RTA_PRIORITY, &1002u32.to_ne_bytes()[..]));
        assert_eq!(attrs[4], (RTA_GATEWAY, &[10, 0, 2, 2][..]));
        // On-link, as deleted: scope link, no gateway, no preferred source.
        default.gateway = None;
        let (kind, _, payload) = one(&route(5, Change::Delete, 2, &default, None).unwrap());
        assert_eq!(kind, RTM_DELROUTE);
        assert_eq!(payload[6], RT_SCOPE_LINK);
        assert_eq!(attributes(&payload[12..]).len(), 3);
    }

    #[test]
    fn link_answers_are_read_and_short_ones_refused() {
        let mut payload = ifinfomsg(4, 0, 0).to_vec();
        let answer = Request::new(RTM_NEWLINK, 0, 0, &[])
            .attr(IFLA_MTU, &1500u32.to_ne_bytes())
            .unwrap()
            .attr(IFLA_ADDRESS, &[2, 0, 0, 0, 0, 1])
            .unwrap()
            .attr(IFLA_CARRIER, &[1])
            .unwrap()
            .attr(IFLA_IFNAME, b"eth0\0")
            .unwrap()
            .finish()
            .unwrap();
        payload.extend_from_slice(&answer[16..]);
        let facts = parse_link(&payload).unwrap();
        assert_eq!(
            facts,
            LinkFacts {
                index: 4,
                mac: Some([2, 0, 0, 0, 0, 1]),
                mtu: Some(1500),
                carrier: Some(true),
            }
        );
        assert_eq!(parse_link(&payload[..10]), None);
    }
}
