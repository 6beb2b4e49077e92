//! The network service supervision starts first: PID 1's glue to the DHCP client (`crate::net`).
//!
//! The `[network]` table of the init config becomes a [`NetConfig`]; a broken table is
//! reported with the field at fault and replaced by the defaults (DHCP on every wired
//! link), because a node that cannot be reached is worse than one with the wrong
//! settings. Nomad is started after the first lease or after [`FIRST_LEASE_WAIT`],
//! whichever comes first (it may start on loopback and learn addresses later); the
//! service keeps running in the background and is released at shutdown.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::net::{Leases, NetConfig, NetHandle};
use crate::sys::root::Root;

/// How long boot waits for a first lease before starting Nomad anyway. Long enough for a
/// DHCP exchange plus the 5 s carrier wait of a freshly raised link, short enough that a
/// machine without DHCP still starts Nomad promptly.
pub const FIRST_LEASE_WAIT: Duration = Duration::from_secs(10);

/// `[network]` as the DHCP client's configuration. The error names the field at fault,
/// e.g. `network.interfaces[0].static.address: "10.0.0.5": expected ADDRESS/PREFIX`.
pub fn net_config(table: &toml::Table) -> Result<NetConfig, String> {
    crate::net::config::from_table(table)
}

/// [`net_config`], falling back to the defaults (and saying so) when the table is broken.
/// Paths are placed under the test root in test mode, so a namespace test never writes
/// the host's `/etc/resolv.conf`.
pub fn config_or_default(table: &toml::Table, root: &Root) -> NetConfig {
    let mut cfg = match net_config(table) {
        Ok(cfg) => cfg,
        Err(e) => {
            crate::error!(
                "init config: {e}; using the network defaults (DHCP on every wired interface)"
            );
            NetConfig::default()
        }
    };
    if root.is_test() {
        cfg.resolv_conf = root.path(&cfg.resolv_conf);
        cfg.lease_dir = cfg.lease_dir.map(|d| root.path(d));
    }
    cfg
}

/// Whether there is anything to wait for: configured links, or wired ones found now.
fn expects_links(cfg: &NetConfig) -> bool {
    match &cfg.interfaces {
        Some(list) => !list.is_empty(),
        None => !crate::net::iface::wired_interfaces().is_empty(),
    }
}

/// The hostname a set of leases offers: the first link (by name) whose lease has one.
pub fn lease_hostname(leases: &Leases) -> Option<(&str, &str)> {
    leases
        .iter()
        .find_map(|(link, l)| l.hostname.as_deref().map(|h| (link.as_str(), h)))
        .filter(|(_, h)| crate::boot::hostname::valid(h))
}

/// NTP servers of all leases, deduplicated, in link order.
pub fn ntp_servers(leases: &Leases) -> Vec<std::net::Ipv4Addr> {
    let mut out = Vec::new();
    for l in leases.values() {
        for s in &l.ntp {
            if !out.contains(s) {
                out.push(*s);
            }
        }
    }
    out
}

/// What the leases mean for PID 1 beyond addresses: hostname and NTP. Remembers what it
/// already did so renewals stay quiet.
struct LeaseEffects {
    set_hostname: bool,
    hostname: Option<String>,
    ntp: Vec<std::net::Ipv4Addr>,
}

impl LeaseEffects {
    fn update(&mut self, leases: &Leases) {
        if self.set_hostname {
            if let Some((link, name)) = lease_hostname(leases) {
                if self.hostname.as_deref() != Some(name) {
                    match nix::unistd::sethostname(name) {
                        Ok(()) => crate::info!("hostname is {name} (from DHCP on {link})"),
                        Err(e) => crate::warn!("sethostname({name}) from DHCP: {e}"),
                    }
                    self.hostname = Some(name.to_string());
                }
            }
        }
        let ntp = ntp_servers(leases);
        if ntp != self.ntp && !ntp.is_empty() {
            let list: Vec<String> = ntp.iter().map(|s| s.to_string()).collect();
            crate::info!("NTP servers from DHCP: {}", list.join(" "));
        }
        self.ntp = ntp;
    }
}

/// Starts the DHCP client, waits (bounded) for a first lease, applies its hostname when
/// the config sets none, and keeps following lease changes in the background.
pub async fn start(table: &toml::Table, root: &Root, configured_hostname: bool) -> NetHandle {
    let cfg = config_or_default(table, root);
    let wait = expects_links(&cfg);
    let started = Instant::now();
    let handle = crate::net::run(cfg).await;
    let mut leases = handle.leases();
    let mut effects = LeaseEffects {
        set_hostname: !configured_hostname,
        hostname: None,
        ntp: Vec::new(),
    };
    if wait {
        let first = tokio::time::timeout(FIRST_LEASE_WAIT, first_lease(&mut leases)).await;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        match first {
            Ok(true) => crate::info!("network: first lease after {ms:.1} ms"),
            _ => crate::warn!(
                "network: no lease after {} s; starting Nomad anyway, DHCP goes on in the background",
                FIRST_LEASE_WAIT.as_secs()
            ),
        }
    } else {
        crate::info!("network: no interface to configure; not waiting for a lease");
    }
    effects.update(&leases.borrow_and_update());
    tokio::spawn(async move {
        while leases.changed().await.is_ok() {
            effects.update(&leases.borrow_and_update());
        }
    });
    handle
}

/// Resolves to `true` once any link holds a lease (`false` if the service went away).
async fn first_lease(leases: &mut watch::Receiver<Leases>) -> bool {
    loop {
        if !leases.borrow_and_update().is_empty() {
            return true;
        }
        if leases.changed().await.is_err() {
            return false;
        }
    }
}

/// Releases every lease (bounded by `NetHandle::shutdown`), logged as a shutdown stage.
pub async fn stop(handle: NetHandle) {
    let start = Instant::now();
    handle.shutdown().await;
    crate::log::write(
        crate::log::Level::Info,
        "shutdown",
        format_args!(
            "released the network in {:.1} ms",
            start.elapsed().as_secs_f64() * 1e3
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::config::Method;

    fn table(text: &str) -> toml::Table {
        text.parse().expect("test TOML parses")
    }

    #[test]
    fn empty_table_means_dhcp_on_every_wired_link() {
        let cfg = net_config(&toml::Table::new()).unwrap();
        assert_eq!(cfg, NetConfig::default());
        assert_eq!(cfg.interfaces, None);
    }

    #[test]
    fn interfaces_static_and_dhcp_convert() {
        let cfg = net_config(&table(
            r#"
resolv_conf = "/run/resolv.conf"
lease_dir = "/var/lib/nomad/leases"
[[interfaces]]
name = "eth0"
dhcp = { arp_probe = true }
[[interfaces]]
name = "eth1"
static = { address = "10.0.0.5/24", gateway = "10.0.0.1", dns = ["10.0.0.1"] }
"#,
        ))
        .unwrap();
        assert_eq!(
            cfg.resolv_conf,
            std::path::PathBuf::from("/run/resolv.conf")
        );
        assert_eq!(
            cfg.lease_dir.as_deref(),
            Some(std::path::Path::new("/var/lib/nomad/leases"))
        );
        let ifs = cfg.interfaces.unwrap();
        assert_eq!(ifs[0].name, "eth0");
        assert!(matches!(&ifs[0].method, Method::Dhcp(d) if d.arp_probe));
        match &ifs[1].method {
            Method::Static(s) => {
                assert_eq!(s.address, ("10.0.0.5".parse().unwrap(), 24));
                assert_eq!(s.gateway, Some("10.0.0.1".parse().unwrap()));
            }
            other => panic!("eth1 should be static, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        let e = net_config(&table("resolv = \"/x\"")).unwrap_err();
        assert!(e.starts_with("network"), "{e}");
        assert!(e.contains("unknown field `resolv`"), "{e}");

        let e = net_config(&table(
            "[[interfaces]]\nname = \"eth1\"\nstatic = { address = \"10.0.0.5\" }",
        ))
        .unwrap_err();
        assert!(e.starts_with("network.interfaces[0]"), "{e}");
        assert!(e.contains("ADDRESS/PREFIX"), "{e}");

        let e = net_config(&table("resolv_conf = 3")).unwrap_err();
        assert!(e.starts_with("network.resolv_conf:"), "{e}");
    }

    #[test]
    fn broken_table_falls_back_to_defaults_under_the_test_root() {
        let root = Root::test("/tmp/nomados-test-root");
        let cfg = config_or_default(&table("interfaces = 5"), &root);
        assert_eq!(cfg.interfaces, None);
        assert_eq!(
            cfg.resolv_conf,
            std::path::PathBuf::from("/tmp/nomados-test-root/etc/resolv.conf")
        );
        let cfg = config_or_default(&table("interfaces = 5"), &Root::real());
        assert_eq!(cfg, NetConfig::default());
    }

    fn lease(hostname: Option<&str>, ntp: &[&str]) -> crate::net::Lease {
        crate::net::Lease {
            address: "10.0.2.15".parse().unwrap(),
            prefix_len: 24,
            server: "10.0.2.2".parse().unwrap(),
            routers: vec![],
            routes: vec![],
            dns: vec![],
            domain: None,
            search: vec![],
            hostname: hostname.map(str::to_string),
            ntp: ntp.iter().map(|s| s.parse().unwrap()).collect(),
            mtu: None,
            lease_secs: 3600,
            lease_time: None,
            t1: None,
            t2: None,
            obtained: Duration::ZERO,
        }
    }

    #[test]
    fn hostname_comes_from_the_first_link_that_offers_a_valid_one() {
        let mut leases = Leases::new();
        leases.insert("eth0".into(), lease(None, &[]));
        assert_eq!(lease_hostname(&leases), None);
        leases.insert("eth1".into(), lease(Some("node-7"), &[]));
        leases.insert("eth2".into(), lease(Some("other"), &[]));
        assert_eq!(lease_hostname(&leases), Some(("eth1", "node-7")));

        let mut bad = Leases::new();
        bad.insert("eth0".into(), lease(Some("bad name;rm"), &[]));
        assert_eq!(lease_hostname(&bad), None);
        assert!(crate::boot::hostname::valid("a-b.example.org"));
        assert!(!crate::boot::hostname::valid("-a"));
        assert!(!crate::boot::hostname::valid(""));
    }

    #[test]
    fn ntp_servers_are_merged_without_duplicates() {
        let mut leases = Leases::new();
        leases.insert("eth0".into(), lease(None, &["10.0.0.3", "10.0.0.4"]));
        leases.insert("eth1".into(), lease(None, &["10.0.0.4", "10.1.0.1"]));
        let got: Vec<String> = ntp_servers(&leases).iter().map(|s| s.to_string()).collect();
        assert_eq!(got, ["10.0.0.3", "10.0.0.4", "10.1.0.1"]);
    }
}
