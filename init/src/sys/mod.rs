//! The only place PID 1 makes raw system calls (mount, reboot, signals, ioctl, spawn).
//! Everything here is a thin, named wrapper so that error messages say which call failed.

pub mod block;
pub mod fd;
pub mod genetlink;
pub mod mount;
pub mod netdev;
pub mod netlink;
pub mod packet;
pub mod power;
pub mod process;
pub mod root;
pub mod signals;
