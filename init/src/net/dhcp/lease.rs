//! A lease as the rest of the system sees it, parsed from a DHCPACK.

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Message, OptionCode};
use serde::Serialize;

/// One IPv4 route the lease asks for. `gateway == None` means on-link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub destination: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.destination, self.prefix_len)?;
        match self.gateway {
            Some(gw) => write!(f, " via {gw}"),
            None => write!(f, " on-link"),
        }
    }
}

/// What a DHCPACK granted. Durations are already divided by the time scale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    /// Server identifier (option 54): where renewals are unicast and releases sent.
    pub server: Ipv4Addr,
    /// Routers of option 3, in server order.
    pub routers: Vec<Ipv4Addr>,
    /// Routes to install: option 121 if present (it then overrides option 3,
    /// RFC 3442), otherwise a default route via the first router.
    pub routes: Vec<Route>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub search: Vec<String>,
    pub hostname: Option<String>,
    pub ntp: Vec<Ipv4Addr>,
    pub mtu: Option<u16>,
    /// Lease time as the server sent it, in seconds (`u32::MAX` is infinite).
    pub lease_secs: u32,
    /// Lease, T1 and T2 after time scaling; `None` for an infinite lease.
    #[serde(skip)]
    pub lease_time: Option<Duration>,
    #[serde(skip)]
    pub t1: Option<Duration>,
    #[serde(skip)]
    pub t2: Option<Duration>,
    /// Monotonic time (machine clock) the lease started: when the request went out.
    #[serde(skip)]
    pub obtained: Duration,
}

impl Lease {
    /// The default gateway, if any route is a default route.
    pub fn router(&self) -> Option<Ipv4Addr> {
        self.routes
            .iter()
            .find(|r| r.prefix_len == 0)
            .and_then(|r| r.gateway)
    }

    pub fn t1_at(&self) -> Option<Duration> {
        self.t1.map(|t| self.obtained + t)
    }
    pub fn t2_at(&self) -> Option<Duration> {
        self.t2.map(|t| self.obtained + t)
    }
    pub fn expires_at(&self) -> Option<Duration> {
        self.lease_time.map(|t| self.obtained + t)
    }

    /// Parses a DHCPACK. `scale` divides every lease duration (test mode).
    pub fn from_ack(ack: &Message, obtained: Duration, scale: u32) -> Result<Lease, String> {
        let address = ack.yiaddr();
        if address.is_unspecified() {
            return Err("DHCPACK without an address (yiaddr 0.0.0.0)".into());
        }
        let opts = ack.opts();
        let prefix_len = match opts.get(OptionCode::SubnetMask) {
            Some(DhcpOption::SubnetMask(mask)) => mask_to_prefix(*mask)
                .ok_or_else(|| format!("subnet mask {mask} is not contiguous"))?,
            _ => classful_prefix(address),
        };
        let server = match opts.get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => *ip,
            _ => ack.siaddr(),
        };
        let ips = |code| match opts.get(code) {
            Some(
                DhcpOption::Router(v) | DhcpOption::DomainNameServer(v) | DhcpOption::NtpServers(v),
            ) => v.clone(),
            _ => Vec::new(),
        };
        let routers = ips(OptionCode::Router);
        let classless: Vec<Route> = match opts.get(OptionCode::ClasslessStaticRoute) {
            Some(DhcpOption::ClasslessStaticRoute(routes)) => routes
                .iter()
                .map(|(net, gw)| Route {
                    destination: net.network(),
                    prefix_len: net.prefix_len(),
                    gateway: (!gw.is_unspecified()).then_some(*gw),
                })
                .collect(),
            _ => Vec::new(),
        };
        let routes = if !classless.is_empty() {
            classless
        } else {
            routers
                .first()
                .map(|gw| Route {
                    destination: Ipv4Addr::UNSPECIFIED,
                    prefix_len: 0,
                    gateway: Some(*gw),
                })
                .into_iter()
                .collect()
        };
        let text = |code| match opts.get(code) {
            Some(DhcpOption::DomainName(s) | DhcpOption::Hostname(s)) => Some(s.clone()),
            _ => None,
        };
        let search = match opts.get(OptionCode::DomainSearch) {
            Some(DhcpOption::DomainSearch(names)) => names
                .iter()
                .map(|n| n.to_utf8().trim_end_matches('.').to_string())
                .collect(),
            _ => Vec::new(),
        };
        let mtu = match opts.get(OptionCode::InterfaceMtu) {
            // RFC 2132: the minimum legal MTU is 68; ignore nonsense.
            Some(DhcpOption::InterfaceMtu(m)) if *m >= 68 => Some(*m),
            _ => None,
        };
        let secs = |code| match opts.get(code) {
            Some(
                DhcpOption::AddressLeaseTime(s) | DhcpOption::Renewal(s) | DhcpOption::Rebinding(s),
            ) => Some(*s),
            _ => None,
        };
        let lease_secs = secs(OptionCode::AddressLeaseTime).unwrap_or(u32::MAX);
        let scaled = |s: u32| Duration::from_millis(u64::from(s) * 1000 / u64::from(scale.max(1)));
        let (lease_time, t1, t2) = if lease_secs == u32::MAX {
            (None, None, None)
        } else {
            let lease = scaled(lease_secs);
            // RFC 2131 4.4.5 defaults: T1 = 0.5, T2 = 0.875 of the lease.
            let mut t1 = secs(OptionCode::Renewal).map(scaled).unwrap_or(lease / 2);
            let mut t2 = secs(OptionCode::Rebinding)
                .map(scaled)
                .unwrap_or(lease * 7 / 8);
            if t2 > lease {
                t2 = lease * 7 / 8;
            }
            if t1 > t2 {
                t1 = t2 * 4 / 7;
            }
            (Some(lease), Some(t1), Some(t2))
        };
        Ok(Lease {
            address,
            prefix_len,
            server,
            routers,
            routes,
            dns: ips(OptionCode::DomainNameServer),
            domain: text(OptionCode::DomainName),
            search,
            hostname: text(OptionCode::Hostname),
            ntp: ips(OptionCode::NtpServers),
            mtu,
            lease_secs,
            lease_time,
            t1,
            t2,
            obtained,
        })
    }
}

pub fn mask_to_prefix(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    let prefix = u8::try_from(ones).ok()?;
    (m.checked_shl(ones).unwrap_or(0) == 0).then_some(prefix)
}

fn classful_prefix(addr: Ipv4Addr) -> u8 {
    match addr.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}
