//! Interface configuration over route netlink: link up, MTU, address, routes. The
//! requests are built in `rtnl.rs`; the kernel answers each synchronously, so a call holds
//! its thread only for the system call (bounded by a receive timeout all the same).

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::dhcp::{Lease, Route};
use super::rtnl::{self, Change, RTM_NEWLINK};
use super::NetError;
use crate::sys::netlink::NetlinkSocket;

pub use super::rtnl::LinkFacts;

/// How long one request may wait for the kernel's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// A route netlink socket in the caller's network namespace. Clones share it; requests
/// are serialized so that each reads its own answer.
#[derive(Debug, Clone)]
pub struct Netlink {
    socket: Arc<Mutex<Socket>>,
}

#[derive(Debug)]
struct Socket {
    socket: NetlinkSocket,
    seq: u32,
}

fn failed(what: String) -> impl FnOnce(std::io::Error) -> NetError {
    move |e| NetError::Netlink {
        what,
        message: e.to_string(),
    }
}

fn is_errno(e: &std::io::Error, codes: &[i32]) -> bool {
    e.raw_os_error().is_some_and(|c| codes.contains(&c))
}

impl Netlink {
    pub fn connect() -> Result<Netlink, NetError> {
        let open = || {
            let socket = NetlinkSocket::open(libc::NETLINK_ROUTE)?;
            socket.set_recv_timeout(ANSWER_TIMEOUT)?;
            Ok(socket)
        };
        let socket = open().map_err(failed("open netlink socket".into()))?;
        Ok(Netlink {
            socket: Arc::new(Mutex::new(Socket { socket, seq: 0 })),
        })
    }

    /// Builds a request with the next sequence number and returns the kernel's answer.
    fn transact(
        &self,
        build: impl FnOnce(u32) -> std::io::Result<Vec<u8>>,
    ) -> std::io::Result<Vec<(u16, Vec<u8>)>> {
        // A request that panicked cannot have left the socket half-used: each transaction
        // reads up to its own acknowledgement, and later ones skip stale sequence numbers.
        let mut guard = self.socket.lock().unwrap_or_else(PoisonError::into_inner);
        guard.seq = guard.seq.wrapping_add(1);
        let seq = guard.seq;
        let req = build(seq)?;
        guard.socket.transact(&req, seq)
    }

    fn read_link(
        &self,
        build: impl FnOnce(u32) -> std::io::Result<Vec<u8>>,
    ) -> std::io::Result<Option<LinkFacts>> {
        match self.transact(build) {
            Ok(answer) => Ok(answer
                .iter()
                .filter(|(kind, _)| *kind == RTM_NEWLINK)
                .find_map(|(_, payload)| rtnl::parse_link(payload))),
            // ENODEV: not there (yet).
            Err(e) if is_errno(&e, &[libc::ENODEV]) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Index of `name`, or `None` if no such link (yet).
    pub async fn index(&self, name: &str) -> Result<Option<u32>, NetError> {
        self.read_link(|seq| rtnl::get_link_by_name(seq, name))
            .map(|facts| facts.map(|f| f.index))
            .map_err(failed(format!("look up link {name}")))
    }

    /// MAC address, MTU and carrier of a link, read over netlink (sysfs shows
    /// the mounting namespace's links, netlink the caller's).
    pub async fn link(&self, index: u32) -> Result<LinkFacts, NetError> {
        let what = format!("read link {index}");
        self.read_link(|seq| rtnl::get_link(seq, index))
            .map_err(failed(what.clone()))?
            .ok_or_else(|| NetError::Netlink {
                what,
                message: "no such link".into(),
            })
    }

    pub async fn link_up(&self, index: u32) -> Result<(), NetError> {
        self.transact(|seq| rtnl::link_up(seq, index))
            .map(drop)
            .map_err(failed(format!("set link {index} up")))
    }

    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), NetError> {
        self.transact(|seq| rtnl::set_mtu(seq, index, mtu))
            .map(drop)
            .map_err(failed(format!("set MTU {mtu} on link {index}")))
    }

    pub async fn add_address(
        &self,
        index: u32,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetError> {
        self.transact(|seq| rtnl::address(seq, Change::Replace, index, addr, prefix))
            .map(drop)
            .map_err(failed(format!("add address {addr}/{prefix}")))
    }

    pub async fn del_address(
        &self,
        index: u32,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetError> {
        match self.transact(|seq| rtnl::address(seq, Change::Delete, index, addr, prefix)) {
            Err(e) if is_errno(&e, &[libc::EADDRNOTAVAIL, libc::ENODEV]) => Ok(()), // already gone
            r => r
                .map(drop)
                .map_err(failed(format!("delete address {addr}/{prefix}"))),
        }
    }

    pub async fn add_route(
        &self,
        index: u32,
        route: &Route,
        src: Option<Ipv4Addr>,
    ) -> Result<(), NetError> {
        self.transact(|seq| rtnl::route(seq, Change::Replace, index, route, src))
            .map(drop)
            .map_err(failed(format!("add route {route}")))
    }

    pub async fn del_route(&self, index: u32, route: &Route) -> Result<(), NetError> {
        match self.transact(|seq| rtnl::route(seq, Change::Delete, index, route, None)) {
            // Already gone (e.g. removed with its address).
            Err(e) if is_errno(&e, &[libc::ESRCH, libc::ENODEV]) => Ok(()),
            r => r.map(drop).map_err(failed(format!("delete route {route}"))),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(args: &[&str]) -> String {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `body` on a thread of its own in a new, empty network namespace (only `lo`),
    /// so the real kernel answers our requests without touching the host's links.
    fn in_new_netns(body: impl FnOnce() + Send + 'static) {
        std::thread::spawn(move || {
            if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                eprintln!("SKIP: cannot make a network namespace ({e}); needs root");
                return;
            }
            if std::process::Command::new("ip").arg("-V").output().is_err() {
                eprintln!("SKIP: no `ip` command to read the kernel's state back");
                return;
            }
            body();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_kernel_takes_our_links_addresses_and_routes() {
        in_new_netns(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async {
                let nl = Netlink::connect().unwrap();
                assert_eq!(nl.index("no-such0").await.unwrap(), None);
                let lo = nl.index("lo").await.unwrap().unwrap();
                nl.link_up(lo).await.unwrap();
                assert!(ip(&["link", "show", "lo"]).contains(",UP"));
                let facts = nl.link(lo).await.unwrap();
                assert_eq!(facts.index, lo);
                assert_eq!(facts.mtu, Some(65536));
                nl.set_mtu(lo, 9000).await.unwrap();
                assert_eq!(nl.link(lo).await.unwrap().mtu, Some(9000));

                let addr = Ipv4Addr::new(10, 77, 0, 5);
                nl.add_address(lo, addr, 24).await.unwrap();
                nl.add_address(lo, addr, 24).await.unwrap(); // replacing is not an error
                let shown = ip(&["-4", "addr", "show", "dev", "lo"]);
                assert!(
                    shown.contains("inet 10.77.0.5/24 brd 10.77.0.255"),
                    "{shown}"
                );

                let onlink = Route {
                    destination: Ipv4Addr::new(10, 78, 0, 0),
                    prefix_len: 16,
                    gateway: None,
                };
                let via = Route {
                    destination: Ipv4Addr::new(10, 79, 0, 0),
                    prefix_len: 16,
                    gateway: Some(Ipv4Addr::new(10, 77, 0, 1)),
                };
                nl.add_route(lo, &onlink, Some(addr)).await.unwrap();
                nl.add_route(lo, &via, Some(addr)).await.unwrap();
                let routes = ip(&["-4", "route", "show", "dev", "lo"]);
                let metric = rtnl::metric(lo);
                assert!(
                    routes.contains(&format!(
                        "10.78.0.0/16 proto dhcp scope link src 10.77.0.5 metric {metric}"
                    )),
                    "{routes}"
                );
                assert!(
                    routes.contains(&format!(
                        "10.79.0.0/16 via 10.77.0.1 proto dhcp src 10.77.0.5 metric {metric}"
                    )),
                    "{routes}"
                );

                nl.del_route(lo, &via).await.unwrap();
                nl.del_route(lo, &via).await.unwrap(); // already gone
                nl.del_address(lo, addr, 24).await.unwrap();
                nl.del_address(lo, addr, 24).await.unwrap(); // already gone
                assert!(!ip(&["-4", "addr", "show", "dev", "lo"]).contains("10.77.0.5"));
                assert!(!ip(&["-4", "route", "show", "dev", "lo"]).contains("10.79.0.0"));

                // A refusal carries the kernel's reason.
                let e = nl.add_route(lo, &via, None).await.unwrap_err().to_string();
                assert!(e.contains("add route 10.79.0.0/16"), "{e}");
                assert!(e.contains("unreachable"), "{e}");
            });
        });
    }
}
