//! Interface configuration over rtnetlink: link up, MTU, address, routes.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::{RouteProtocol, RouteScope};
use rtnetlink::{AddressMessageBuilder, Handle, LinkUnspec, RouteMessageBuilder};

use super::dhcp::{Lease, Route};
use super::NetError;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkFacts {
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub carrier: Option<bool>,
}

/// A netlink connection (its I/O task runs on the current tokio runtime).
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

fn nl(what: String) -> impl FnOnce(rtnetlink::Error) -> NetError {
    move |e| NetError::Netlink {
        what,
        message: e.to_string(),
    }
}

/// Addresses and routes we install carry this protocol, as `ip route` shows `proto dhcp`.
const PROTO: RouteProtocol = RouteProtocol::Dhcp;

/// Route metric of an interface's routes: one per link, so that every link can
/// have its own default route (lower index preferred) and replacing or removing
/// one link's routes never touches another's.
pub fn metric(index: u32) -> u32 {
    1000 + index
}

impl Netlink {
    pub fn connect() -> Result<Netlink, NetError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| NetError::Netlink {
            what: "open netlink socket".into(),
            message: e.to_string(),
        })?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// Index of `name`, or `None` if no such link (yet).
    pub async fn index(&self, name: &str) -> Result<Option<u32>, NetError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(Some(msg.header.index)),
            Ok(None) => Ok(None),
            // ENODEV: not there (yet).
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(nl(format!("look up link {name}"))(e)),
        }
    }

    /// MAC address, MTU and carrier of a link, read over netlink (sysfs shows
    /// the mounting namespace's links, netlink the caller's).
    pub async fn link(&self, index: u32) -> Result<LinkFacts, NetError> {
        let mut links = self.handle.link().get().match_index(index).execute();
        let msg = links
            .try_next()
            .await
            .map_err(nl(format!("read link {index}")))?
            .ok_or_else(|| NetError::Netlink {
                what: format!("read link {index}"),
                message: "no such link".into(),
            })?;
        let mut facts = LinkFacts::default();
        for a in &msg.attributes {
            match a {
                LinkAttribute::Mtu(m) => facts.mtu = Some(*m),
                LinkAttribute::Carrier(c) => facts.carrier = Some(*c != 0),
                LinkAttribute::Address(a) if a.len() == 6 => {
                    let mut mac = [0u8; 6];
                    mac.copy_from_slice(a);
                    facts.mac = Some(mac);
                }
                _ => {}
            }
        }
        Ok(facts)
    }

    pub async fn link_up(&self, index: u32) -> Result<(), NetError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(nl(format!("set link {index} up")))
    }

    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), NetError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).mtu(mtu).build())
            .execute()
            .await
            .map_err(nl(format!("set MTU {mtu} on link {index}")))
    }

    pub async fn add_address(
        &self,
        index: u32,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetError> {
        self.handle
            .address()
            .add(index, IpAddr::V4(addr), prefix)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("add address {addr}/{prefix}")))
    }

    pub async fn del_address(
        &self,
        index: u32,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetError> {
        let msg = AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(addr, prefix)
            .build();
        match self.handle.address().del(msg).execute().await {
            Err(rtnetlink::Error::NetlinkError(e))
                if e.raw_code() == -libc::EADDRNOTAVAIL || e.raw_code() == -libc::ENODEV =>
            {
                Ok(()) // already gone
            }
            r => r.map_err(nl(format!("delete address {addr}/{prefix}"))),
        }
    }

    fn route_message(
        index: u32,
        route: &Route,
        src: Option<Ipv4Addr>,
    ) -> rtnetlink::packet_route::route::RouteMessage {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(route.destination, route.prefix_len)
            .output_interface(index)
            .priority(metric(index))
            .protocol(PROTO);
        if let Some(src) = src {
            b = b.pref_source(src);
        }
        match route.gateway {
            Some(gw) => b.gateway(gw).build(),
            None => b.scope(RouteScope::Link).build(),
        }
    }

    pub async fn add_route(
        &self,
        index: u32,
        route: &Route,
        src: Option<Ipv4Addr>,
    ) -> Result<(), NetError> {
        self.handle
            .route()
            .add(Self::route_message(index, route, src))
            .replace()
            .execute()
            .await
            .map_err(nl(format!("add route {route}")))
    }

    pub async fn del_route(&self, index: u32, route: &Route) -> Result<(), NetError> {
        match self
            .handle
            .route()
            .del(Self::route_message(index, route, None))
            .execute()
            .await
        {
            Err(rtnetlink::Error::NetlinkError(e))
                if e.raw_code() == -libc::ESRCH || e.raw_code() == -libc::ENODEV =>
            {
                Ok(()) // already gone (e.g. removed with its address)
            }
            r => r.map_err(nl(format!("delete route {route}"))),
        }
    }

    /// Configures `lease` on the link: MTU, address, routes (on-link routes first,
    /// so that gateways reached through them resolve).
    pub async fn apply_lease(&self, index: u32, lease: &Lease) -> Result<(), NetError> {
        if let Some(mtu) = lease.mtu {
            self.set_mtu(index, u32::from(mtu)).await?;
        }
        self.add_address(index, lease.address, lease.prefix_len)
            .await?;
        let mut routes: Vec<&Route> = lease.routes.iter().collect();
        routes.sort_by_key(|r| r.gateway.is_some());
        for route in routes {
            self.add_route(index, route, Some(lease.address)).await?;
        }
        Ok(())
    }

    /// Undoes [`Netlink::apply_lease`]; `mtu` is the MTU to restore, if one was changed.
    pub async fn remove_lease(
        &self,
        index: u32,
        lease: &Lease,
        mtu: Option<u32>,
    ) -> Result<(), NetError> {
        for route in lease.routes.iter().rev() {
            self.del_route(index, route).await?;
        }
        self.del_address(index, lease.address, lease.prefix_len)
            .await?;
        if let (Some(_), Some(mtu)) = (lease.mtu, mtu) {
            self.set_mtu(index, mtu).await?;
        }
        Ok(())
    }
}
