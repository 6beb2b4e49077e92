//! The long-running network service for PID 1: every configured interface
//! concurrently, renewing forever, publishing leases on a watch channel.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::apply::Netlink;
use super::client::{Change, Client, ClientOptions};
use super::config::{InterfaceConfig, Method, NetConfig, StaticConfig};
use super::dhcp::{Lease, Route, Settings};
use super::iface;
use super::resolv::{self, Dns};

/// Current configuration per interface name. Static interfaces appear as a
/// `Lease` with `server` 0.0.0.0 and an infinite `lease_secs`.
pub type Leases = BTreeMap<String, Lease>;

/// Knobs that are not operator configuration (tests, the CLI).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Divide lease times by this (tests); 0 or 1: real time.
    pub time_scale: u32,
    /// Addresses to try first (INIT-REBOOT), per interface.
    pub remembered: BTreeMap<String, Ipv4Addr>,
    /// Only negotiate and publish leases; change nothing on the system.
    pub no_apply: bool,
}

/// Handle on the running service.
#[derive(Debug)]
pub struct NetHandle {
    leases: watch::Receiver<Leases>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl NetHandle {
    /// Current leases; `changed().await` wakes on every bind, renew and loss.
    pub fn leases(&self) -> watch::Receiver<Leases> {
        self.leases.clone()
    }

    /// RELEASE every DHCP lease, deconfigure, and stop (waits at most 3 s).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let all = futures::future::join_all(self.tasks);
        if tokio::time::timeout(Duration::from_secs(3), all)
            .await
            .is_err()
        {
            crate::warn!("network shutdown took longer than 3 s; continuing");
        }
    }
}

/// Starts managing the network. Never fails: problems with one interface are
/// logged and retried without affecting the others.
pub async fn run(cfg: NetConfig) -> NetHandle {
    run_with(cfg, RunOptions::default()).await
}

pub async fn run_with(cfg: NetConfig, opts: RunOptions) -> NetHandle {
    let interfaces = cfg.interfaces.clone().unwrap_or_else(|| {
        iface::wired_interfaces()
            .into_iter()
            .map(|name| InterfaceConfig {
                name,
                method: Method::Dhcp(Default::default()),
            })
            .collect()
    });
    if interfaces.is_empty() {
        crate::warn!("no network interfaces to configure");
    }
    let (tx, rx) = watch::channel(Leases::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for ifc in interfaces {
        let tx = tx.clone();
        let stop = stop_rx.clone();
        let opts = opts.clone();
        let lease_dir = cfg.lease_dir.clone();
        tasks.push(tokio::spawn(async move {
            match ifc.method {
                Method::Dhcp(d) => {
                    dhcp_interface(ifc.name, d.arp_probe, opts, lease_dir, tx, stop).await
                }
                Method::Static(s) => static_interface(ifc.name, s, tx).await,
            }
        }));
    }
    if !opts.no_apply {
        tokio::spawn(resolv_writer(cfg.resolv_conf.clone(), rx.clone()));
    }
    NetHandle {
        leases: rx,
        stop: stop_tx,
        tasks,
    }
}

/// Rewrites resolv.conf whenever the DNS part of the leases changes.
async fn resolv_writer(path: PathBuf, mut rx: watch::Receiver<Leases>) {
    let mut last = None;
    loop {
        let entries: Vec<Dns> = rx
            .borrow_and_update()
            .iter()
            .filter(|(_, l)| !l.dns.is_empty())
            .map(|(name, l)| dns_of(name, l))
            .collect();
        if !entries.is_empty() && last.as_ref() != Some(&entries) {
            match crate::fsutil::write_atomic(&path, &resolv::render(&entries)) {
                Ok(()) => last = Some(entries),
                Err(e) => crate::error!("writing {}: {e}", path.display()),
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

pub fn dns_of(name: &str, l: &Lease) -> Dns {
    Dns {
        interface: name.to_string(),
        servers: l.dns.clone(),
        domain: l.domain.clone(),
        search: l.search.clone(),
    }
}

async fn dhcp_interface(
    name: String,
    probe: bool,
    opts: RunOptions,
    lease_dir: Option<PathBuf>,
    tx: watch::Sender<Leases>,
    mut stop: watch::Receiver<bool>,
) {
    let lease_file = lease_dir.map(|d| d.join(format!("{name}.lease")));
    let remembered = opts.remembered.get(&name).copied().or_else(|| {
        let text = std::fs::read_to_string(lease_file.as_ref()?).ok()?;
        text.trim().parse().ok()
    });
    let client_opts = || ClientOptions {
        settings: Settings {
            time_scale: opts.time_scale.max(1),
            probe,
            ..Settings::default()
        },
        remembered,
        apply: !opts.no_apply,
    };
    // Open the client, retrying while the link or netlink is not there yet.
    let mut warned = false;
    let mut client = loop {
        let opened = match Netlink::connect() {
            Ok(nl) => Client::open(&name, nl, client_opts()).await,
            Err(e) => Err(e),
        };
        match opened {
            Ok(c) => break c,
            Err(e) => {
                if !warned {
                    crate::warn!("{name}: {e}; retrying every second");
                    warned = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    };
    crate::info!("{name}: starting DHCP");
    let publish = |changes: Vec<Change>| {
        for c in changes {
            match c {
                Change::Bound(l) => {
                    crate::info!(
                        "{name}: bound {}/{} from {} (lease {}s)",
                        l.address,
                        l.prefix_len,
                        l.server,
                        l.lease_secs
                    );
                    if let Some(f) = &lease_file {
                        if let Err(e) = crate::fsutil::write_atomic(f, &format!("{}\n", l.address))
                        {
                            crate::warn!("{name}: remembering the lease in {}: {e}", f.display());
                        }
                    }
                    tx.send_modify(|m| {
                        m.insert(name.clone(), l);
                    });
                }
                Change::Lost(l) => {
                    crate::info!(
                        "{name}: removed {}/{} (lease ended)",
                        l.address,
                        l.prefix_len
                    );
                    tx.send_modify(|m| {
                        m.remove(&name);
                    });
                }
            }
        }
    };
    publish(client.start().await);
    loop {
        tokio::select! {
            input = client.wait() => match input {
                Ok(input) => publish(client.handle(input).await),
                Err(e) => {
                    crate::error!("{e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            _ = stop.changed() => {
                publish(client.release().await);
                return;
            }
        }
    }
}

async fn static_interface(name: String, s: StaticConfig, tx: watch::Sender<Leases>) {
    let (address, prefix_len) = s.address;
    let lease = Lease {
        address,
        prefix_len,
        server: Ipv4Addr::UNSPECIFIED,
        routers: s.gateway.into_iter().collect(),
        routes: s
            .gateway
            .map(|gw| Route {
                destination: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
                gateway: Some(gw),
            })
            .into_iter()
            .collect(),
        dns: s.dns,
        domain: None,
        search: s.search,
        hostname: None,
        ntp: Vec::new(),
        mtu: s.mtu,
        lease_secs: u32::MAX,
        lease_time: None,
        t1: None,
        t2: None,
        obtained: Duration::ZERO,
    };
    let mut warned = false;
    loop {
        let result = async {
            let nl = Netlink::connect()?;
            let index = nl
                .index(&name)
                .await?
                .ok_or_else(|| super::NetError::NoInterface(name.clone()))?;
            nl.link_up(index).await?;
            nl.apply_lease(index, &lease).await
        }
        .await;
        match result {
            Ok(()) => {
                crate::info!("{name}: static {address}/{prefix_len}");
                tx.send_modify(|m| {
                    m.insert(name.clone(), lease);
                });
                return;
            }
            Err(e) => {
                if !warned {
                    crate::warn!("{name}: {e}; retrying every second");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
