//! Networking: our own DHCP client (pure state machine on dhcproto), netlink
//! configuration, resolv.conf.

pub mod dhcp;

/// `nomad-init dhcp --once <iface>`: acquire a lease, apply it, print it, exit.
#[derive(Debug, Clone, clap::Args)]
pub struct DhcpArgs {
    /// Acquire one lease, apply it, print it and exit (like `udhcpc -q`).
    #[arg(long)]
    pub once: bool,
    /// Interface to configure.
    pub interface: String,
}

/// Runs the `dhcp` subcommand; returns the process exit code.
pub fn run_dhcp_cli(args: DhcpArgs) -> i32 {
    eprintln!("nomad-init dhcp: not implemented yet ({})", args.interface);
    1
}
