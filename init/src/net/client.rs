//! Drives one [`Machine`] on one interface: waits for packets and timers,
//! carries out the actions (socket sends, netlink changes).

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::Message;
use tokio::time::Instant;

use super::apply::Netlink;
use super::dhcp::{Action, Lease, Machine, Settings};
use super::socket::DhcpSocket;
use super::NetError;

/// What changed on the interface after handling one input.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Bound(Lease),
    Lost(Lease),
}

#[derive(Debug)]
pub enum Input {
    Packet(Message),
    Timeout,
}

#[derive(Debug)]
pub struct Client {
    pub name: String,
    index: u32,
    mac: [u8; 6],
    machine: Machine,
    sock: DhcpSocket,
    netlink: Netlink,
    /// Apply leases to the interface (false: `--no-apply`).
    apply: bool,
    base: Instant,
    /// MTU before we changed it, restored on deconfigure.
    original_mtu: Option<u32>,
}

#[derive(Debug)]
pub struct ClientOptions {
    pub settings: Settings,
    pub remembered: Option<Ipv4Addr>,
    pub apply: bool,
}

impl Client {
    /// Brings the link up and opens the socket. Fails if the link is missing.
    pub async fn open(
        name: &str,
        netlink: Netlink,
        opts: ClientOptions,
    ) -> Result<Client, NetError> {
        let index = netlink
            .index(name)
            .await?
            .ok_or_else(|| NetError::NoInterface(name.to_string()))?;
        netlink.link_up(index).await?;
        let facts = netlink.link(index).await?;
        let mac = facts.mac.ok_or_else(|| NetError::Interface {
            interface: name.to_string(),
            message: "has no Ethernet address (DHCP needs an Ethernet link)".into(),
        })?;
        // A freshly raised link needs a moment for carrier; DISCOVERs sent
        // before it are lost and cost a 4 s retransmission.
        let until = Instant::now() + Duration::from_secs(5);
        let mut carrier = facts.carrier;
        while carrier == Some(false) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
            carrier = netlink.link(index).await?.carrier;
        }
        let sock = DhcpSocket::bind(name)?;
        let original_mtu = facts.mtu;
        Ok(Client {
            name: name.to_string(),
            index,
            mac,
            machine: Machine::new(mac, opts.settings, seed(), opts.remembered),
            sock,
            netlink,
            apply: opts.apply,
            base: Instant::now(),
            original_mtu,
        })
    }

    fn now(&self) -> Duration {
        self.base.elapsed()
    }

    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    pub async fn start(&mut self) -> Vec<Change> {
        let actions = self.machine.start(self.now());
        self.execute(actions).await
    }

    /// Waits for the next packet or timer. Cancel-safe.
    pub async fn wait(&mut self) -> Result<Input, NetError> {
        let deadline = self.machine.deadline().map(|d| self.base + d);
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = self.sock.recv() => r.map(Input::Packet).map_err(|source| NetError::Socket {
                call: "recvfrom",
                interface: self.name.clone(),
                source,
            }),
            _ = sleep => Ok(Input::Timeout),
        }
    }

    pub async fn handle(&mut self, input: Input) -> Vec<Change> {
        let now = self.now();
        let actions = match input {
            Input::Packet(msg) => self.machine.on_packet(&msg, now),
            Input::Timeout => self.machine.on_timeout(now),
        };
        self.execute(actions).await
    }

    /// RELEASE the lease (if any) and deconfigure.
    pub async fn release(&mut self) -> Vec<Change> {
        let actions = self.machine.release(self.now());
        self.execute(actions).await
    }

    async fn execute(&mut self, actions: Vec<Action>) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Send { msg, to } => {
                    crate::debug!(
                        "{}: {} send {:?} to {:?}",
                        self.name,
                        self.machine.state().name(),
                        msg.opts().msg_type(),
                        to
                    );
                    if let Err(e) = self.sock.send(&msg, to).await {
                        crate::warn!(
                            "{}: sending DHCP {:?} failed: {e}",
                            self.name,
                            msg.opts().msg_type()
                        );
                    }
                }
                Action::Probe(addr) => {
                    let in_use = match super::arp::probe(self.index, self.mac, addr).await {
                        Ok(in_use) => in_use,
                        Err(e) => {
                            // Cannot probe (no AF_PACKET?): use the address rather than never bind.
                            crate::warn!(
                                "{}: ARP probe for {addr} failed: {e}; assuming it is free",
                                self.name
                            );
                            false
                        }
                    };
                    if in_use {
                        crate::warn!(
                            "{}: {addr} is already in use on the link; declining it",
                            self.name
                        );
                    }
                    let now = self.now();
                    queue.extend(self.machine.on_probe(in_use, now));
                }
                Action::Apply(lease) => {
                    if self.apply {
                        if let Err(e) = self.netlink.apply_lease(self.index, &lease).await {
                            crate::error!(
                                "{}: applying lease {}/{}: {e}",
                                self.name,
                                lease.address,
                                lease.prefix_len
                            );
                        }
                    }
                    changes.push(Change::Bound(*lease));
                }
                Action::Deconfigure(lease) => {
                    if self.apply {
                        if let Err(e) = self
                            .netlink
                            .remove_lease(self.index, &lease, self.original_mtu)
                            .await
                        {
                            crate::error!(
                                "{}: removing lease {}/{}: {e}",
                                self.name,
                                lease.address,
                                lease.prefix_len
                            );
                        }
                    }
                    changes.push(Change::Lost(*lease));
                }
            }
        }
        changes
    }
}

/// Seed for xids and jitter: the kernel's randomness, else time and pid.
fn seed() -> u64 {
    let mut buf = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .is_ok()
    {
        return u64::from_ne_bytes(buf);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    t ^ (u64::from(std::process::id()) << 32)
}
