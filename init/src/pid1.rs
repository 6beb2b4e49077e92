//! Running as PID 1: boot the machine, supervise Nomad, shut down cleanly. Never returns.

/// Entry point when the kernel started us as PID 1.
pub fn main() -> ! {
    loop {
        std::thread::park();
    }
}

/// What `/sbin/poweroff`, `/sbin/reboot` and `/sbin/halt` ask PID 1 to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    Poweroff,
    Reboot,
    Halt,
}

/// Ask the running PID 1 to perform `action` (by signal). Returns a process exit code.
pub fn request_power_action(action: PowerAction) -> i32 {
    eprintln!("nomad-init: {action:?} is not implemented yet");
    1
}
