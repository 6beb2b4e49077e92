//! DHCPv4 client core: packets via dhcproto, protocol logic as a pure machine.

pub mod lease;
pub mod state;

pub use lease::{Lease, Route};
pub use state::{Action, Dest, Machine, Settings, State};

#[cfg(test)]
mod tests;
