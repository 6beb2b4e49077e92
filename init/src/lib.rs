//! NomadOS's init: PID 1 of the appliance, and the `nomad-init` command line.
//!
//! The pure core (pack-set config, rendering, reconcile planning, the DHCP state
//! machine) lives beside the effects (syscalls, sockets, HTTP) in small modules, so the
//! core is unit tested without a machine and the effects are tested for real.
//!
//! Raw system calls live in [`sys`]; every other module denies `unsafe` code.
//!
//! PID 1 must never exit: outside tests nothing may unwrap, expect or panic. Casts that
//! may truncate or change sign are spelled out as checked or saturating conversions.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![deny(missing_debug_implementations)]
#![deny(
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::cast_possible_truncation
)]

#[deny(unsafe_code)]
pub mod blockdev;
#[deny(unsafe_code)]
pub mod boot;
#[deny(unsafe_code)]
pub mod cli;
#[deny(unsafe_code)]
pub mod diag;
#[deny(unsafe_code)]
pub mod fsutil;
#[deny(unsafe_code)]
pub mod install;
#[deny(unsafe_code)]
pub mod log;
#[deny(unsafe_code)]
pub mod machine;
#[deny(unsafe_code)]
pub mod net;
#[deny(unsafe_code)]
pub mod nomad;
#[deny(unsafe_code)]
pub mod packs;
#[deny(unsafe_code)]
pub mod pid1;
#[deny(unsafe_code)]
pub mod power;
#[deny(unsafe_code)]
pub mod redact;
#[deny(unsafe_code)]
pub mod slots;
#[deny(unsafe_code)]
pub mod supervise;
// The only module allowed `unsafe`; every block there carries a `// SAFETY:` comment.
pub mod sys;
