//! NomadOS's init: PID 1 of the appliance, and the `nomad-init` command line.
//!
//! The pure core (pack-set config, rendering, reconcile planning, the DHCP state
//! machine) lives beside the effects (syscalls, sockets, HTTP) in small modules, so the
//! core is unit tested without a machine and the effects are tested for real.

pub mod boot;
pub mod cli;
pub mod diag;
pub mod fsutil;
pub mod log;
pub mod net;
pub mod nomad;
pub mod packs;
pub mod pid1;
pub mod supervise;
pub mod sys;
