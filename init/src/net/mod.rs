//! Networking: our own DHCP client (pure state machine on dhcproto), netlink
//! configuration, resolv.conf.
//!
//! - [`dhcp`]: the RFC 2131 machine and lease parsing, no I/O.
//! - [`client`]: one interface's machine wired to a socket and netlink.
//! - [`runtime`]: [`run`] for PID 1, all interfaces, forever.
//! - [`config`]: [`NetConfig`], what operators write.

pub mod apply;
pub mod arp;
pub mod client;
pub mod config;
pub mod dhcp;
pub mod iface;
pub mod resolv;
pub mod rtnl;
pub mod runtime;
pub mod socket;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

pub use config::NetConfig;
pub use dhcp::Lease;
pub use runtime::{run, run_with, Leases, NetHandle, RunOptions};

use client::{Change, Client, ClientOptions};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("interface {0} does not exist")]
    NoInterface(String),
    #[error("interface {interface}: {message}")]
    Interface { interface: String, message: String },
    #[error("{interface}: {call} failed: {source}")]
    Socket {
        call: &'static str,
        interface: String,
        source: std::io::Error,
    },
    #[error("netlink: {what}: {message}")]
    Netlink { what: String, message: String },
}

/// `nomad-init dhcp [--once] <iface>`: acquire a lease, apply it, print it.
#[derive(Debug, Clone, clap::Args)]
pub struct DhcpArgs {
    /// Acquire one lease, apply it, print it and exit (like `udhcpc -q`).
    /// Without it: keep the lease renewed until SIGTERM/SIGINT, then release it.
    #[arg(long)]
    pub once: bool,
    /// Interface to configure.
    pub interface: String,
    /// With --once: give up after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
    /// Print the lease but do not configure the interface or resolv.conf.
    #[arg(long)]
    pub no_apply: bool,
    /// Where to write DNS servers and search domains.
    #[arg(long, value_name = "PATH", default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// Ask for this previously held address first (INIT-REBOOT).
    #[arg(long, value_name = "IP")]
    pub request_address: Option<Ipv4Addr>,
    /// ARP-probe the offered address and DECLINE it if in use.
    #[arg(long)]
    pub arp_probe: bool,
    /// Test mode: divide lease, T1 and T2 by this factor.
    #[arg(long, hide = true, default_value_t = 1)]
    pub lease_scale: u32,
}

/// Runs the `dhcp` subcommand; returns the process exit code.
pub fn run_dhcp_cli(args: DhcpArgs) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nomad-init dhcp: cannot start the async runtime: {e}");
            return 1;
        }
    };
    if args.once {
        rt.block_on(dhcp_once(args))
    } else {
        rt.block_on(dhcp_forever(args))
    }
}

async fn dhcp_once(args: DhcpArgs) -> i32 {
    let name = args.interface.clone();
    let nl = match apply::Netlink::connect() {
        Ok(nl) => nl,
        Err(e) => {
            eprintln!("nomad-init dhcp: {e}");
            return 1;
        }
    };
    let opts = ClientOptions {
        settings: dhcp::Settings {
            time_scale: args.lease_scale.max(1),
            probe: args.arp_probe,
            ..dhcp::Settings::default()
        },
        remembered: args.request_address,
        apply: !args.no_apply,
    };
    let acquire = async {
        let mut client = Client::open(&name, nl, opts).await?;
        let mut changes = client.start().await;
        loop {
            if let Some(lease) = changes.iter().find_map(|c| match c {
                Change::Bound(l) => Some(l.clone()),
                Change::Lost(_) => None,
            }) {
                return Ok::<_, NetError>(lease);
            }
            let input = client.wait().await?;
            changes = client.handle(input).await;
        }
    };
    let lease = match tokio::time::timeout(Duration::from_secs(args.timeout), acquire).await {
        Ok(Ok(lease)) => lease,
        Ok(Err(e)) => {
            eprintln!("nomad-init dhcp: {e}");
            return 1;
        }
        Err(_) => {
            eprintln!(
                "nomad-init dhcp: no lease on {name} after {} s (no DHCP server answered; is the link connected?)",
                args.timeout
            );
            return 1;
        }
    };
    if !args.no_apply && !lease.dns.is_empty() {
        let text = resolv::render(&[runtime::dns_of(&name, &lease)]);
        if let Err(e) = crate::fsutil::write_atomic(&args.resolv_conf, &text) {
            eprintln!(
                "nomad-init dhcp: writing {}: {e}",
                args.resolv_conf.display()
            );
            return 1;
        }
    }
    print!("{}", format_lease(&name, &lease));
    0
}

async fn dhcp_forever(args: DhcpArgs) -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            eprintln!("nomad-init dhcp: cannot install signal handlers");
            return 1;
        }
    };
    let cfg = NetConfig {
        interfaces: Some(vec![config::InterfaceConfig {
            name: args.interface.clone(),
            method: config::Method::Dhcp(config::DhcpConfig {
                arp_probe: args.arp_probe,
            }),
        }]),
        resolv_conf: args.resolv_conf.clone(),
        lease_dir: None,
    };
    let opts = RunOptions {
        time_scale: args.lease_scale,
        remembered: args
            .request_address
            .map(|a| (args.interface.clone(), a))
            .into_iter()
            .collect(),
        no_apply: args.no_apply,
    };
    let handle = run_with(cfg, opts).await;
    let mut leases = handle.leases();
    loop {
        tokio::select! {
            r = leases.changed() => {
                if r.is_err() { break; }
                let text = match leases.borrow_and_update().get(&args.interface) {
                    Some(l) => format_lease(&args.interface, l),
                    None => format!("{}: no lease\n", args.interface),
                };
                print!("{text}");
                let _ = std::io::Write::flush(&mut std::io::stdout());
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    handle.shutdown().await;
    0
}

/// The human-readable lease, one `key value` per line.
pub fn format_lease(name: &str, l: &Lease) -> String {
    let join = |v: &[Ipv4Addr]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        }
    };
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let lease = match (l.lease_time, l.t1, l.t2) {
        (Some(t), Some(t1), Some(t2)) => format!(
            "{}s{} (renew at {:.1}s, rebind at {:.1}s)",
            l.lease_secs,
            scaled_note(t, l.lease_secs),
            t1.as_secs_f64(),
            t2.as_secs_f64()
        ),
        _ => "infinite".to_string(),
    };
    let routes = if l.routes.is_empty() {
        "-".to_string()
    } else {
        l.routes
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "interface {name}\naddress   {}/{}\nrouter    {}\ndns       {}\ndomain    {}\nsearch    {}\nlease     {lease}\nserver    {}\nhostname  {}\nntp       {}\nmtu       {}\nroutes    {routes}\n",
        l.address,
        l.prefix_len,
        l.router().map_or("-".to_string(), |r| r.to_string()),
        join(&l.dns),
        opt(&l.domain),
        if l.search.is_empty() { "-".to_string() } else { l.search.join(" ") },
        l.server,
        opt(&l.hostname),
        join(&l.ntp),
        l.mtu.map_or("-".to_string(), |m| m.to_string()),
    )
}

fn scaled_note(t: Duration, secs: u32) -> String {
    if t.as_secs() == u64::from(secs) {
        String::new()
    } else {
        format!(", scaled to {:.1}s", t.as_secs_f64())
    }
}
