//! The RFC 2131 client state machine. No I/O and no clock: the caller passes
//! the time (a monotonic `Duration` since any origin) and every incoming
//! packet, and carries out the [`Action`]s it gets back.
//!
//! ```text
//!  INIT-REBOOT ──REQUEST──▶ REBOOTING ──ACK──┐
//!       │ no answer / NAK                     │
//!       ▼                                     ▼
//!  INIT ─DISCOVER─▶ SELECTING ─OFFER─▶ REQUESTING ─ACK─▶ (CHECKING) ─▶ BOUND
//!   ▲                                   │ NAK/timeout        │ in use: DECLINE
//!   └───────────────────────────────────┴────────────────────┘
//!  BOUND ─T1─▶ RENEWING (unicast) ─T2─▶ REBINDING (broadcast) ─expiry─▶ INIT
//! ```

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};

use super::lease::Lease;

/// Where a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// 255.255.255.255:67 out of the interface.
    Broadcast,
    /// The server's address, port 67 (RENEWING, RELEASE).
    Unicast(Ipv4Addr),
}

/// What the caller must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Send {
        msg: Box<Message>,
        to: Dest,
    },
    /// Check the address is unused (ARP probe), then call [`Machine::on_probe`].
    Probe(Ipv4Addr),
    /// Configure (or refresh) the interface with this lease.
    Apply(Box<Lease>),
    /// Remove what an earlier `Apply` configured.
    Deconfigure(Box<Lease>),
}

/// Protocol state (RFC 2131 figure 5, plus CHECKING for the ARP probe).
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Init,
    InitReboot(Ipv4Addr),
    Rebooting(Ipv4Addr),
    Selecting,
    Requesting { address: Ipv4Addr, server: Ipv4Addr },
    Checking(Box<Lease>),
    Bound(Box<Lease>),
    Renewing(Box<Lease>),
    Rebinding(Box<Lease>),
    Released,
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Init => "INIT",
            State::InitReboot(_) => "INIT-REBOOT",
            State::Rebooting(_) => "REBOOTING",
            State::Selecting => "SELECTING",
            State::Requesting { .. } => "REQUESTING",
            State::Checking(_) => "CHECKING",
            State::Bound(_) => "BOUND",
            State::Renewing(_) => "RENEWING",
            State::Rebinding(_) => "REBINDING",
            State::Released => "RELEASED",
        }
    }
}

/// Tunables. Defaults follow RFC 2131.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Divide lease, T1, T2 and the 60 s renew floor by this (tests: 10).
    pub time_scale: u32,
    /// Ask for an ARP probe before using an acknowledged address.
    pub probe: bool,
    /// REQUEST transmissions in REQUESTING before starting over.
    pub request_attempts: u32,
    /// REQUEST transmissions in REBOOTING before falling back to INIT.
    pub reboot_attempts: u32,
    /// Wait after a NAK before the next DISCOVER.
    pub nak_wait: Duration,
    /// Wait after a DECLINE (RFC 2131 3.1.5: at least 10 s).
    pub decline_wait: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            time_scale: 1,
            probe: false,
            request_attempts: 4,
            reboot_attempts: 2,
            nak_wait: Duration::from_secs(1),
            decline_wait: Duration::from_secs(10),
        }
    }
}

/// Options every DISCOVER/REQUEST asks for.
const WANTED: [OptionCode; 13] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::Hostname,
    OptionCode::DomainName,
    OptionCode::InterfaceMtu,
    OptionCode::BroadcastAddr,
    OptionCode::NtpServers,
    OptionCode::AddressLeaseTime,
    OptionCode::Renewal,
    OptionCode::Rebinding,
    OptionCode::DomainSearch,
    OptionCode::ClasslessStaticRoute,
];

/// One DHCP client for one interface.
#[derive(Debug)]
pub struct Machine {
    mac: [u8; 6],
    settings: Settings,
    state: State,
    rng: u64,
    xid: u32,
    /// When the current exchange began (for `secs`) and the last send (lease start).
    exchange_start: Duration,
    last_send: Duration,
    /// Transmissions in the current state.
    sent: u32,
    deadline: Option<Duration>,
}

impl Machine {
    /// `seed` feeds xids and backoff jitter; `remembered` starts in INIT-REBOOT.
    pub fn new(mac: [u8; 6], settings: Settings, seed: u64, remembered: Option<Ipv4Addr>) -> Self {
        Machine {
            mac,
            settings,
            state: match remembered {
                Some(ip) => State::InitReboot(ip),
                None => State::Init,
            },
            rng: seed | 1,
            xid: 0,
            exchange_start: Duration::ZERO,
            last_send: Duration::ZERO,
            sent: 0,
            deadline: Some(Duration::ZERO),
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn xid(&self) -> u32 {
        self.xid
    }

    /// When [`Machine::on_timeout`] must be called next; `None`: only on a packet.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// The lease in use, if any.
    pub fn lease(&self) -> Option<&Lease> {
        match &self.state {
            State::Bound(l) | State::Renewing(l) | State::Rebinding(l) => Some(l),
            _ => None,
        }
    }

    /// Begin: the first packet goes out at once (no start-up delay).
    pub fn start(&mut self, now: Duration) -> Vec<Action> {
        match self.state.clone() {
            State::InitReboot(ip) => self.enter_rebooting(ip, now),
            _ => self.enter_selecting(now),
        }
    }

    /// Call when `now >= deadline()`.
    pub fn on_timeout(&mut self, now: Duration) -> Vec<Action> {
        match self.deadline {
            Some(d) if now >= d => {}
            _ => return Vec::new(),
        }
        match self.state.clone() {
            State::Init => self.enter_selecting(now),
            State::InitReboot(ip) => self.enter_rebooting(ip, now),
            State::Rebooting(ip) => {
                if self.sent >= self.settings.reboot_attempts {
                    self.enter_selecting(now)
                } else {
                    let msg = self.request_reboot(ip, now);
                    self.retransmit(msg, Dest::Broadcast, now)
                }
            }
            State::Selecting => {
                let msg = self.discover(now);
                self.retransmit(msg, Dest::Broadcast, now)
            }
            State::Requesting { address, server } => {
                if self.sent >= self.settings.request_attempts {
                    self.enter_selecting(now)
                } else {
                    let msg = self.request_selecting(address, server, now);
                    self.retransmit(msg, Dest::Broadcast, now)
                }
            }
            State::Checking(_) | State::Released => {
                self.deadline = None;
                Vec::new()
            }
            State::Bound(lease) => self.enter_renewing(*lease, now),
            State::Renewing(lease) => {
                if lease.t2_at().is_some_and(|t2| now >= t2) {
                    self.enter_rebinding(*lease, now)
                } else {
                    let msg = self.request_renew(&lease, now);
                    let server = lease.server;
                    self.deadline = self.renew_deadline(now, lease.t2_at());
                    self.send(msg, Dest::Unicast(server), now)
                }
            }
            State::Rebinding(lease) => {
                if lease.expires_at().is_some_and(|e| now >= e) {
                    // Lease gone: take the address away and start over.
                    let mut out = vec![Action::Deconfigure(lease)];
                    out.extend(self.enter_selecting(now));
                    out
                } else {
                    let msg = self.request_renew(&lease, now);
                    self.deadline = self.renew_deadline(now, lease.expires_at());
                    self.send(msg, Dest::Broadcast, now)
                }
            }
        }
    }

    /// Feed a received BOOTP reply (already decoded).
    pub fn on_packet(&mut self, msg: &Message, now: Duration) -> Vec<Action> {
        if msg.opcode() != Opcode::BootReply
            || msg.xid() != self.xid
            || msg.chaddr().get(..6) != Some(&self.mac[..])
        {
            return Vec::new();
        }
        let Some(kind) = msg.opts().msg_type() else {
            return Vec::new();
        };
        let server_id = match msg.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
            _ => None,
        };
        match (self.state.clone(), kind) {
            (State::Selecting, MessageType::Offer) => {
                let address = msg.yiaddr();
                let Some(server) = server_id else {
                    return Vec::new(); // RFC 2131: an OFFER must carry option 54
                };
                if address.is_unspecified() {
                    return Vec::new();
                }
                // Take the first offer, as udhcpc and dhcpcd do.
                self.state = State::Requesting { address, server };
                self.sent = 0;
                let req = self.request_selecting(address, server, now);
                self.retransmit(req, Dest::Broadcast, now)
            }
            (State::Requesting { server, .. }, MessageType::Ack | MessageType::Nak)
                if server_id.is_some_and(|s| s != server) =>
            {
                Vec::new() // another server's answer to someone else's choice
            }
            (State::Requesting { .. } | State::Rebooting(_), MessageType::Ack) => {
                match Lease::from_ack(msg, self.last_send, self.settings.time_scale) {
                    Ok(lease) if self.settings.probe => {
                        let ip = lease.address;
                        self.state = State::Checking(Box::new(lease));
                        self.deadline = None;
                        vec![Action::Probe(ip)]
                    }
                    Ok(lease) => self.enter_bound(lease, None),
                    Err(_) => Vec::new(),
                }
            }
            (State::Renewing(old) | State::Rebinding(old), MessageType::Ack) => {
                match Lease::from_ack(msg, self.last_send, self.settings.time_scale) {
                    Ok(lease) => self.enter_bound(lease, Some(*old)),
                    Err(_) => Vec::new(),
                }
            }
            (State::Rebooting(_), MessageType::Nak) => {
                // The remembered address is stale (moved network, expired):
                // the common case at boot, so rediscover at once.
                self.enter_selecting(now)
            }
            (
                State::Requesting { .. } | State::Renewing(_) | State::Rebinding(_),
                MessageType::Nak,
            ) => {
                let mut out = Vec::new();
                if let Some(l) = self.lease() {
                    out.push(Action::Deconfigure(Box::new(l.clone())));
                }
                self.enter_init(now + self.settings.nak_wait);
                out
            }
            _ => Vec::new(),
        }
    }

    /// Result of the [`Action::Probe`]: `in_use` if someone answered for the address.
    pub fn on_probe(&mut self, in_use: bool, now: Duration) -> Vec<Action> {
        let State::Checking(lease) = self.state.clone() else {
            return Vec::new();
        };
        if !in_use {
            return self.enter_bound(*lease, None);
        }
        let decline = self.decline(&lease, now);
        self.enter_init(now + self.settings.decline_wait);
        vec![Action::Send {
            msg: Box::new(decline),
            to: Dest::Broadcast,
        }]
    }

    /// Shutdown: RELEASE the lease (if any) and deconfigure. The machine stops.
    pub fn release(&mut self, now: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(lease) = self.lease().cloned() {
            self.xid = self.next_xid();
            let mut msg = self.base(MessageType::Release, now, false);
            msg.set_ciaddr(lease.address);
            msg.opts_mut()
                .insert(DhcpOption::ServerIdentifier(lease.server));
            out.push(Action::Send {
                msg: Box::new(msg),
                to: Dest::Unicast(lease.server),
            });
            out.push(Action::Deconfigure(Box::new(lease)));
        }
        self.state = State::Released;
        self.deadline = None;
        out
    }

    // ---- transitions ----

    fn enter_init(&mut self, wake: Duration) {
        self.state = State::Init;
        self.sent = 0;
        self.deadline = Some(wake);
    }

    fn enter_selecting(&mut self, now: Duration) -> Vec<Action> {
        self.state = State::Selecting;
        self.xid = self.next_xid();
        self.exchange_start = now;
        self.sent = 0;
        let msg = self.discover(now);
        self.retransmit(msg, Dest::Broadcast, now)
    }

    fn enter_rebooting(&mut self, ip: Ipv4Addr, now: Duration) -> Vec<Action> {
        self.state = State::Rebooting(ip);
        self.xid = self.next_xid();
        self.exchange_start = now;
        self.sent = 0;
        let msg = self.request_reboot(ip, now);
        self.retransmit(msg, Dest::Broadcast, now)
    }

    fn enter_bound(&mut self, lease: Lease, old: Option<Lease>) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(old) = old {
            if old.address != lease.address || old.prefix_len != lease.prefix_len {
                out.push(Action::Deconfigure(Box::new(old)));
            }
        }
        out.push(Action::Apply(Box::new(lease.clone())));
        self.deadline = lease.t1_at();
        self.sent = 0;
        self.state = State::Bound(Box::new(lease));
        out
    }

    fn enter_renewing(&mut self, lease: Lease, now: Duration) -> Vec<Action> {
        self.xid = self.next_xid();
        self.exchange_start = now;
        self.sent = 0;
        let msg = self.request_renew(&lease, now);
        let server = lease.server;
        self.deadline = self.renew_deadline(now, lease.t2_at());
        self.state = State::Renewing(Box::new(lease));
        self.send(msg, Dest::Unicast(server), now)
    }

    fn enter_rebinding(&mut self, lease: Lease, now: Duration) -> Vec<Action> {
        self.xid = self.next_xid();
        self.exchange_start = now;
        self.sent = 0;
        let msg = self.request_renew(&lease, now);
        self.deadline = self.renew_deadline(now, lease.expires_at());
        self.state = State::Rebinding(Box::new(lease));
        self.send(msg, Dest::Broadcast, now)
    }

    // ---- timers ----

    /// RFC 2131 4.1: 4 s, 8 s, ... capped at 64 s, each ±1 s at random.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let base_ms = 4000u64 << attempt.min(4);
        // base_ms ≥ 4000 and the jitter is within ±1000, so this never underflows.
        let jitter = self.next_rand() % 2001;
        Duration::from_millis(base_ms + jitter - 1000)
    }

    /// RFC 2131 4.4.5: in RENEWING/REBINDING wait half the time left until
    /// `limit`, but at least 60 s (scaled), and never past `limit`.
    fn renew_deadline(&self, now: Duration, limit: Option<Duration>) -> Option<Duration> {
        let limit = limit?;
        let floor = Duration::from_secs(60) / self.settings.time_scale.max(1);
        let left = limit.saturating_sub(now);
        Some((now + (left / 2).max(floor)).min(limit))
    }

    fn retransmit(&mut self, msg: Message, to: Dest, now: Duration) -> Vec<Action> {
        let wait = self.backoff(self.sent);
        self.deadline = Some(now + wait);
        self.send(msg, to, now)
    }

    fn send(&mut self, msg: Message, to: Dest, now: Duration) -> Vec<Action> {
        self.sent += 1;
        self.last_send = now;
        vec![Action::Send {
            msg: Box::new(msg),
            to,
        }]
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*: plenty for xids and jitter, and deterministic in tests.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn next_xid(&mut self) -> u32 {
        (self.next_rand() >> 32) as u32
    }

    // ---- packets ----

    fn base(&self, kind: MessageType, now: Duration, broadcast: bool) -> Message {
        let mut msg = Message::default();
        msg.set_opcode(Opcode::BootRequest)
            .set_htype(HType::Eth)
            .set_chaddr(&self.mac)
            .set_xid(self.xid)
            .set_secs(
                now.saturating_sub(self.exchange_start)
                    .as_secs()
                    .min(0xffff) as u16,
            );
        if broadcast {
            // We have no address yet: ask the server to broadcast its answer.
            msg.set_flags(Flags::default().set_broadcast());
        }
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        let mut id = vec![1u8];
        id.extend_from_slice(&self.mac);
        opts.insert(DhcpOption::ClientIdentifier(id));
        msg
    }

    fn with_wanted(mut msg: Message) -> Message {
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::ParameterRequestList(WANTED.to_vec()));
        opts.insert(DhcpOption::MaxMessageSize(1500));
        msg
    }

    fn discover(&self, now: Duration) -> Message {
        Self::with_wanted(self.base(MessageType::Discover, now, true))
    }

    fn request_selecting(&self, address: Ipv4Addr, server: Ipv4Addr, now: Duration) -> Message {
        let mut msg = Self::with_wanted(self.base(MessageType::Request, now, true));
        msg.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(address));
        msg.opts_mut().insert(DhcpOption::ServerIdentifier(server));
        msg
    }

    fn request_reboot(&self, address: Ipv4Addr, now: Duration) -> Message {
        let mut msg = Self::with_wanted(self.base(MessageType::Request, now, true));
        msg.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(address));
        msg
    }

    /// RENEWING/REBINDING: ciaddr filled, no server id, no requested address.
    fn request_renew(&self, lease: &Lease, now: Duration) -> Message {
        let mut msg = Self::with_wanted(self.base(MessageType::Request, now, false));
        msg.set_ciaddr(lease.address);
        msg
    }

    fn decline(&self, lease: &Lease, now: Duration) -> Message {
        let mut msg = self.base(MessageType::Decline, now, false);
        msg.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(lease.address));
        msg.opts_mut()
            .insert(DhcpOption::ServerIdentifier(lease.server));
        msg
    }
}
