//! reboot(2) and friends.

use std::convert::Infallible;

use nix::sys::reboot::RebootMode;

use crate::power::PowerAction;

/// Makes Ctrl-Alt-Del send SIGINT to PID 1 instead of rebooting at once.
pub fn disable_ctrl_alt_del() -> nix::Result<()> {
    nix::sys::reboot::set_cad_enabled(false)
}

/// Flushes filesystem buffers.
pub fn sync() {
    nix::unistd::sync();
}

/// Performs the power action. Returns only on failure. Inside a PID namespace the kernel
/// ends the namespace instead (its init is killed with SIGINT for power off or halt,
/// SIGHUP for reboot), which the tests rely on.
pub fn reboot(action: PowerAction) -> nix::Result<Infallible> {
    let mode = match action {
        PowerAction::Poweroff => RebootMode::RB_POWER_OFF,
        PowerAction::Reboot => RebootMode::RB_AUTOBOOT,
        PowerAction::Halt => RebootMode::RB_HALT_SYSTEM,
    };
    nix::sys::reboot::reboot(mode)
}
