//! `poweroff`, `reboot`, `halt`: ask the running PID 1 (only if it is nomad-init) to do it.

use crate::power::PowerAction;

/// Is PID 1 this very program? Compares the executables (device and inode), so the
/// `/sbin/poweroff` symlink and the real binary count as the same.
fn pid1_is_nomad_init() -> Result<bool, String> {
    use std::os::unix::fs::MetadataExt;
    let ours = std::fs::metadata("/proc/self/exe").map_err(|e| format!("/proc/self/exe: {e}"))?;
    let theirs = std::fs::metadata("/proc/1/exe").map_err(|e| format!("/proc/1/exe: {e}"))?;
    Ok(ours.dev() == theirs.dev() && ours.ino() == theirs.ino())
}

/// Ask the running PID 1 to perform `action` (by signal). Returns a process exit code.
pub fn request_power_action(action: PowerAction) -> i32 {
    let name = format!("{action:?}").to_lowercase();
    match pid1_is_nomad_init() {
        Ok(true) => {}
        Ok(false) => {
            eprintln!(
                "{name}: PID 1 is not nomad-init; refusing to signal it (use your init's own tool)"
            );
            return 1;
        }
        Err(e) => {
            eprintln!("{name}: cannot tell which program PID 1 is ({e}); are you root?");
            return 1;
        }
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(1), action.signal()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{name}: kill(1, {}): {e}", action.signal());
            1
        }
    }
}
