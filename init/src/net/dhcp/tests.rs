//! Every transition of the machine, driven with dhcproto-built server packets.

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};

use super::{Action, Dest, Lease, Machine, Settings, State};

const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x42];
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 50);

fn s(secs: f64) -> Duration {
    Duration::from_secs_f64(secs)
}

fn machine() -> Machine {
    Machine::new(MAC, Settings::default(), 7, None)
}

/// The one packet among the actions, round-tripped through the wire format.
fn sent(actions: &[Action]) -> (Message, Dest) {
    let sends: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { msg, to } => Some((msg, *to)),
            _ => None,
        })
        .collect();
    assert_eq!(sends.len(), 1, "expected one packet in {actions:?}");
    let bytes = sends[0].0.to_vec().expect("encodes");
    (Message::from_bytes(&bytes).expect("decodes"), sends[0].1)
}

fn kind(msg: &Message) -> MessageType {
    msg.opts().msg_type().expect("has a message type")
}

fn reply(to: &Message, kind: MessageType, yiaddr: Ipv4Addr, lease_secs: u32) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootReply)
        .set_xid(to.xid())
        .set_chaddr(&MAC)
        .set_yiaddr(yiaddr);
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::ServerIdentifier(SERVER));
    if kind != MessageType::Nak {
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![SERVER]));
        o.insert(DhcpOption::DomainNameServer(vec![
            SERVER,
            Ipv4Addr::new(9, 9, 9, 9),
        ]));
        o.insert(DhcpOption::AddressLeaseTime(lease_secs));
    }
    // Round-trip so the machine sees what a socket would deliver.
    Message::from_bytes(&m.to_vec().expect("encodes")).expect("decodes")
}

fn applied(actions: &[Action]) -> Lease {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Apply(l) => Some((**l).clone()),
            _ => None,
        })
        .expect("an Apply action")
}

/// Drives a fresh machine to BOUND at t=0 with a lease of `lease_secs`.
fn bound(lease_secs: u32) -> (Machine, Message) {
    let mut m = machine();
    let (disc, _) = sent(&m.start(Duration::ZERO));
    let (req, _) = sent(&m.on_packet(
        &reply(&disc, MessageType::Offer, ADDR, lease_secs),
        Duration::ZERO,
    ));
    let out = m.on_packet(
        &reply(&req, MessageType::Ack, ADDR, lease_secs),
        Duration::ZERO,
    );
    applied(&out);
    (m, req)
}

#[test]
fn start_sends_discover_immediately_with_broadcast_flag() {
    let mut m = machine();
    let (msg, to) = sent(&m.start(Duration::ZERO));
    assert_eq!(kind(&msg), MessageType::Discover);
    assert_eq!(to, Dest::Broadcast);
    assert!(msg.flags().broadcast());
    assert_eq!(msg.chaddr(), &MAC);
    assert_eq!(m.state(), &State::Selecting);
    let Some(DhcpOption::ParameterRequestList(prl)) =
        msg.opts().get(OptionCode::ParameterRequestList)
    else {
        panic!("no parameter request list");
    };
    assert!(prl.contains(&OptionCode::ClasslessStaticRoute));
    assert!(prl.contains(&OptionCode::InterfaceMtu));
}

#[test]
fn discover_retransmits_with_exponential_backoff_and_jitter() {
    let mut m = machine();
    m.start(Duration::ZERO);
    let mut now = Duration::ZERO;
    let mut waits = Vec::new();
    let first_xid = m.xid();
    for _ in 0..7 {
        let d = m.deadline().expect("a deadline");
        waits.push((d - now).as_secs_f64());
        now = d;
        let (msg, _) = sent(&m.on_timeout(now));
        assert_eq!(kind(&msg), MessageType::Discover);
        assert_eq!(msg.xid(), first_xid, "retransmissions keep the xid");
    }
    for (w, base) in waits.iter().zip([4.0, 8.0, 16.0, 32.0, 64.0, 64.0, 64.0]) {
        assert!(
            (base - 1.0..=base + 1.0).contains(w),
            "wait {w} not within {base}±1 ({waits:?})"
        );
    }
}

#[test]
fn timeout_before_deadline_does_nothing() {
    let mut m = machine();
    m.start(Duration::ZERO);
    assert!(m.on_timeout(s(2.0)).is_empty());
}

#[test]
fn offer_leads_to_broadcast_request_for_the_offered_address() {
    let mut m = machine();
    let (disc, _) = sent(&m.start(Duration::ZERO));
    let (req, to) = sent(&m.on_packet(&reply(&disc, MessageType::Offer, ADDR, 600), s(0.1)));
    assert_eq!(kind(&req), MessageType::Request);
    assert_eq!(to, Dest::Broadcast);
    assert_eq!(
        req.opts().get(OptionCode::RequestedIpAddress),
        Some(&DhcpOption::RequestedIpAddress(ADDR))
    );
    assert_eq!(
        req.opts().get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert!(req.ciaddr().is_unspecified());
    assert_eq!(
        m.state(),
        &State::Requesting {
            address: ADDR,
            server: SERVER
        }
    );
}

#[test]
fn replies_for_other_transactions_or_clients_are_ignored() {
    let mut m = machine();
    let (disc, _) = sent(&m.start(Duration::ZERO));
    let mut other = reply(&disc, MessageType::Offer, ADDR, 600);
    other.set_xid(disc.xid().wrapping_add(1));
    assert!(m.on_packet(&other, s(0.1)).is_empty());
    let mut other = reply(&disc, MessageType::Offer, ADDR, 600);
    other.set_chaddr(&[2, 0, 0, 0, 0, 0x43]);
    assert!(m.on_packet(&other, s(0.1)).is_empty());
    // An ACK while selecting is not ours to take either.
    assert!(m
        .on_packet(&reply(&disc, MessageType::Ack, ADDR, 600), s(0.1))
        .is_empty());
    assert_eq!(m.state(), &State::Selecting);
}

#[test]
fn ack_binds_and_applies_the_lease_with_t1_t2() {
    let mut m = machine();
    let (disc, _) = sent(&m.start(Duration::ZERO));
    let (req, _) = sent(&m.on_packet(&reply(&disc, MessageType::Offer, ADDR, 600), s(0.0)));
    let out = m.on_packet(&reply(&req, MessageType::Ack, ADDR, 600), s(0.2));
    let lease = applied(&out);
    assert_eq!(lease.address, ADDR);
    assert_eq!(lease.prefix_len, 24);
    assert_eq!(lease.router(), Some(SERVER));
    assert_eq!(lease.dns, vec![SERVER, Ipv4Addr::new(9, 9, 9, 9)]);
    assert_eq!(lease.t1, Some(s(300.0)));
    assert_eq!(lease.t2, Some(s(525.0)));
    assert!(matches!(m.state(), State::Bound(_)));
    assert_eq!(
        m.deadline(),
        Some(s(300.0)),
        "T1 counts from when the REQUEST was sent"
    );
}

#[test]
fn ack_from_another_server_is_ignored_while_requesting() {
    let mut m = machine();
    let (disc, _) = sent(&m.start(Duration::ZERO));
    let (req, _) = sent(&m.on_packet(&reply(&disc, MessageType::Offer, ADDR, 600), s(0.0)));
    let mut ack = reply(&req, MessageType::Ack, ADDR, 600);
    ack.opts_mut()
        .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 2)));
    assert!(m.on_packet(&ack, s(0.1)).is_empty());
}

#[test]
fn request_gives_up_after_four_attempts_and_rediscovers() {
    let mut m = machine();
    let (disc, _) = sent(&m.start(Duration::ZERO));
    sent(&m.on_packet(&reply(&disc, MessageType::Offer, ADDR, 600), s(0.0)));
    for _ in 0..3 {
        let d = m.deadline().expect("deadline");
        let (msg, _) = sent(&m.on_timeout(d));
        assert_eq!(kind(&msg), MessageType::Request);
    }
    let d = m.deadline().expect("deadline");
    let (msg, _) = sent(&m.on_timeout(d));
    assert_eq!(kind(&msg), MessageType::Discover);
    assert_eq!(m.state(), &State::Selecting);
}

#[test]
fn nak_goes_back_to_init_after_a_short_wait() {
    let mut m = machine();
    let (disc, _) = sent(&m.start(Duration::ZERO));
    let (req, _) = sent(&m.on_packet(&reply(&disc, MessageType::Offer, ADDR, 600), s(0.0)));
    let out = m.on_packet(
        &reply(&req, MessageType::Nak, Ipv4Addr::UNSPECIFIED, 0),
        s(0.5),
    );
    assert!(
        out.is_empty(),
        "nothing was applied, nothing to undo: {out:?}"
    );
    assert_eq!(m.state(), &State::Init);
    assert_eq!(m.deadline(), Some(s(1.5)));
    let (msg, _) = sent(&m.on_timeout(s(1.5)));
    assert_eq!(kind(&msg), MessageType::Discover);
    assert_ne!(msg.xid(), req.xid(), "a new exchange gets a new xid");
}

#[test]
fn probe_in_use_declines_and_waits_ten_seconds() {
    let settings = Settings {
        probe: true,
        ..Settings::default()
    };
    let mut m = Machine::new(MAC, settings, 3, None);
    let (disc, _) = sent(&m.start(Duration::ZERO));
    let (req, _) = sent(&m.on_packet(&reply(&disc, MessageType::Offer, ADDR, 600), s(0.0)));
    let out = m.on_packet(&reply(&req, MessageType::Ack, ADDR, 600), s(0.1));
    assert_eq!(out, vec![Action::Probe(ADDR)]);
    assert!(matches!(m.state(), State::Checking(_)));
    let (decline, to) = sent(&m.on_probe(true, s(1.0)));
    assert_eq!(kind(&decline), MessageType::Decline);
    assert_eq!(to, Dest::Broadcast);
    assert_eq!(
        decline.opts().get(OptionCode::RequestedIpAddress),
        Some(&DhcpOption::RequestedIpAddress(ADDR))
    );
    assert_eq!(
        decline.opts().get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(m.state(), &State::Init);
    assert_eq!(m.deadline(), Some(s(11.0)));
}

#[test]
fn probe_free_binds() {
    let settings = Settings {
        probe: true,
        ..Settings::default()
    };
    let mut m = Machine::new(MAC, settings, 3, None);
    let (disc, _) = sent(&m.start(Duration::ZERO));
    let (req, _) = sent(&m.on_packet(&reply(&disc, MessageType::Offer, ADDR, 600), s(0.0)));
    m.on_packet(&reply(&req, MessageType::Ack, ADDR, 600), s(0.1));
    assert_eq!(applied(&m.on_probe(false, s(0.3))).address, ADDR);
    assert!(matches!(m.state(), State::Bound(_)));
}

#[test]
fn t1_unicasts_renew_to_the_server() {
    let (mut m, _) = bound(600);
    let (renew, to) = sent(&m.on_timeout(s(300.0)));
    assert_eq!(kind(&renew), MessageType::Request);
    assert_eq!(to, Dest::Unicast(SERVER));
    assert_eq!(renew.ciaddr(), ADDR);
    assert!(!renew.flags().broadcast());
    assert!(renew.opts().get(OptionCode::ServerIdentifier).is_none());
    assert!(renew.opts().get(OptionCode::RequestedIpAddress).is_none());
    assert!(matches!(m.state(), State::Renewing(_)));
    // Half the time to T2 (112.5 s) is more than the 60 s floor.
    assert_eq!(m.deadline(), Some(s(412.5)));
}

#[test]
fn renew_ack_extends_the_lease() {
    let (mut m, _) = bound(600);
    let (renew, _) = sent(&m.on_timeout(s(300.0)));
    let out = m.on_packet(&reply(&renew, MessageType::Ack, ADDR, 600), s(300.1));
    assert_eq!(
        out.len(),
        1,
        "same address: refresh only, no deconfigure: {out:?}"
    );
    assert_eq!(applied(&out).obtained, s(300.0));
    assert_eq!(m.deadline(), Some(s(600.0)));
}

#[test]
fn renew_ack_with_a_new_address_deconfigures_the_old_one_first() {
    let (mut m, _) = bound(600);
    let (renew, _) = sent(&m.on_timeout(s(300.0)));
    let new = Ipv4Addr::new(10, 0, 0, 51);
    let out = m.on_packet(&reply(&renew, MessageType::Ack, new, 600), s(300.1));
    assert!(matches!(&out[0], Action::Deconfigure(l) if l.address == ADDR));
    assert!(matches!(&out[1], Action::Apply(l) if l.address == new));
}

#[test]
fn renew_retransmits_with_sixty_second_floor_then_rebinds_at_t2() {
    let (mut m, _) = bound(600);
    sent(&m.on_timeout(s(300.0)));
    let (again, to) = sent(&m.on_timeout(s(412.5)));
    assert_eq!(to, Dest::Unicast(SERVER));
    assert_eq!(kind(&again), MessageType::Request);
    // 112.5 s left to T2 at 412.5: half is 56.25 s, below the floor; clamp to T2.
    assert_eq!(m.deadline(), Some(s(472.5)));
    sent(&m.on_timeout(s(472.5)));
    assert_eq!(m.deadline(), Some(s(525.0)));
    let (rebind, to) = sent(&m.on_timeout(s(525.0)));
    assert_eq!(to, Dest::Broadcast);
    assert_eq!(rebind.ciaddr(), ADDR);
    assert!(matches!(m.state(), State::Rebinding(_)));
    // 75 s to expiry: half is below the 60 s floor.
    assert_eq!(m.deadline(), Some(s(585.0)));
    sent(&m.on_timeout(s(585.0)));
    assert_eq!(m.deadline(), Some(s(600.0)), "never past expiry");
}

#[test]
fn rebind_ack_rebinds() {
    let (mut m, _) = bound(600);
    sent(&m.on_timeout(s(300.0)));
    let (rebind, _) = sent(&m.on_timeout(s(525.0)));
    assert!(matches!(m.state(), State::Rebinding(_)));
    let out = m.on_packet(&reply(&rebind, MessageType::Ack, ADDR, 600), s(525.5));
    assert_eq!(applied(&out).address, ADDR);
    assert!(matches!(m.state(), State::Bound(_)));
}

#[test]
fn expiry_deconfigures_and_restarts_discovery() {
    let (mut m, _) = bound(600);
    sent(&m.on_timeout(s(300.0)));
    sent(&m.on_timeout(s(525.0)));
    let out = m.on_timeout(s(600.0));
    assert!(matches!(&out[0], Action::Deconfigure(l) if l.address == ADDR));
    let (disc, _) = sent(&out);
    assert_eq!(kind(&disc), MessageType::Discover);
    assert_eq!(m.state(), &State::Selecting);
}

#[test]
fn nak_while_renewing_deconfigures() {
    let (mut m, _) = bound(600);
    let (renew, _) = sent(&m.on_timeout(s(300.0)));
    let out = m.on_packet(
        &reply(&renew, MessageType::Nak, Ipv4Addr::UNSPECIFIED, 0),
        s(300.1),
    );
    assert!(matches!(&out[..], [Action::Deconfigure(l)] if l.address == ADDR));
    assert_eq!(m.state(), &State::Init);
}

#[test]
fn init_reboot_requests_the_remembered_address_and_binds_on_ack() {
    let mut m = Machine::new(MAC, Settings::default(), 9, Some(ADDR));
    let (req, to) = sent(&m.start(Duration::ZERO));
    assert_eq!(kind(&req), MessageType::Request);
    assert_eq!(to, Dest::Broadcast);
    assert_eq!(
        req.opts().get(OptionCode::RequestedIpAddress),
        Some(&DhcpOption::RequestedIpAddress(ADDR))
    );
    assert!(req.opts().get(OptionCode::ServerIdentifier).is_none());
    assert_eq!(m.state(), &State::Rebooting(ADDR));
    let out = m.on_packet(&reply(&req, MessageType::Ack, ADDR, 600), s(0.1));
    assert_eq!(applied(&out).address, ADDR);
}

#[test]
fn init_reboot_nak_rediscovers_at_once() {
    let mut m = Machine::new(
        MAC,
        Settings::default(),
        9,
        Some(Ipv4Addr::new(192, 168, 9, 9)),
    );
    let (req, _) = sent(&m.start(Duration::ZERO));
    let (disc, _) = sent(&m.on_packet(
        &reply(&req, MessageType::Nak, Ipv4Addr::UNSPECIFIED, 0),
        s(0.1),
    ));
    assert_eq!(kind(&disc), MessageType::Discover);
    assert_eq!(m.state(), &State::Selecting);
}

#[test]
fn init_reboot_without_answer_falls_back_to_discovery() {
    let mut m = Machine::new(MAC, Settings::default(), 9, Some(ADDR));
    m.start(Duration::ZERO);
    let d = m.deadline().expect("deadline");
    let (again, _) = sent(&m.on_timeout(d));
    assert_eq!(kind(&again), MessageType::Request);
    let d = m.deadline().expect("deadline");
    let (disc, _) = sent(&m.on_timeout(d));
    assert_eq!(kind(&disc), MessageType::Discover);
}

#[test]
fn release_unicasts_release_and_deconfigures() {
    let (mut m, _) = bound(600);
    let out = m.release(s(10.0));
    let (rel, to) = sent(&out);
    assert_eq!(kind(&rel), MessageType::Release);
    assert_eq!(to, Dest::Unicast(SERVER));
    assert_eq!(rel.ciaddr(), ADDR);
    assert_eq!(
        rel.opts().get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert!(matches!(out.last(), Some(Action::Deconfigure(_))));
    assert_eq!(m.state(), &State::Released);
    assert_eq!(m.deadline(), None);
}

#[test]
fn release_without_lease_sends_nothing() {
    let mut m = machine();
    m.start(Duration::ZERO);
    assert!(m.release(s(1.0)).is_empty());
}

#[test]
fn time_scale_divides_lease_times_and_the_floor() {
    let mut m = Machine::new(
        MAC,
        Settings {
            time_scale: 10,
            ..Settings::default()
        },
        1,
        None,
    );
    let (disc, _) = sent(&m.start(Duration::ZERO));
    let (req, _) = sent(&m.on_packet(&reply(&disc, MessageType::Offer, ADDR, 120), s(0.0)));
    let lease = applied(&m.on_packet(&reply(&req, MessageType::Ack, ADDR, 120), s(0.0)));
    assert_eq!(lease.lease_time, Some(s(12.0)));
    assert_eq!(lease.t1, Some(s(6.0)));
    assert_eq!(lease.t2, Some(s(10.5)));
    sent(&m.on_timeout(s(6.0)));
    assert_eq!(m.deadline(), Some(s(10.5)), "6 s floor, clamped to T2");
}

#[test]
fn infinite_lease_never_renews() {
    let (m, _) = bound(u32::MAX);
    assert_eq!(m.deadline(), None);
}

#[test]
fn classless_routes_override_the_router_option() {
    let mut ack = Message::default();
    ack.set_opcode(Opcode::BootReply).set_yiaddr(ADDR);
    let o = ack.opts_mut();
    o.insert(DhcpOption::MessageType(MessageType::Ack));
    o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 0, 0)));
    o.insert(DhcpOption::Router(vec![SERVER]));
    o.insert(DhcpOption::ClasslessStaticRoute(vec![
        (
            "10.9.0.0/16".parse().expect("net"),
            Ipv4Addr::new(10, 0, 0, 2),
        ),
        (
            "0.0.0.0/0".parse().expect("net"),
            Ipv4Addr::new(10, 0, 0, 3),
        ),
        (
            "192.168.5.0/24".parse().expect("net"),
            Ipv4Addr::UNSPECIFIED,
        ),
    ]));
    o.insert(DhcpOption::InterfaceMtu(1400));
    o.insert(DhcpOption::NtpServers(vec![Ipv4Addr::new(10, 0, 0, 4)]));
    o.insert(DhcpOption::Hostname("node1".into()));
    o.insert(DhcpOption::DomainName("example.test".into()));
    o.insert(DhcpOption::DomainSearch(vec!["a.example.test"
        .parse()
        .expect("name")]));
    let ack = Message::from_bytes(&ack.to_vec().expect("enc")).expect("dec");
    let lease = Lease::from_ack(&ack, Duration::ZERO, 1).expect("lease");
    assert_eq!(lease.prefix_len, 16);
    assert_eq!(lease.routes.len(), 3);
    assert_eq!(
        lease.router(),
        Some(Ipv4Addr::new(10, 0, 0, 3)),
        "option 121 default wins over option 3"
    );
    assert_eq!(lease.routes[2].gateway, None);
    assert_eq!(lease.mtu, Some(1400));
    assert_eq!(lease.ntp, vec![Ipv4Addr::new(10, 0, 0, 4)]);
    assert_eq!(lease.hostname.as_deref(), Some("node1"));
    assert_eq!(lease.domain.as_deref(), Some("example.test"));
    assert_eq!(lease.search, vec!["a.example.test".to_string()]);
    assert_eq!(lease.lease_time, None, "no option 51: infinite");
}

#[test]
fn mask_to_prefix_rejects_holes() {
    use super::lease::mask_to_prefix;
    assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
    assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
    assert_eq!(mask_to_prefix(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
    assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 0, 255, 0)), None);
}
