//! Running as PID 1: boot the machine, supervise Nomad, shut down cleanly. Never returns.
//!
//! Order matters: signals are blocked before any thread exists (so every thread inherits
//! the mask), the boot stages run synchronously, then a small current-thread runtime runs
//! supervision until a power action; the end (sync, unmount, reboot) is synchronous again.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::boot::{self, stage};
use crate::power::Event;
use crate::sys::root::Root;

mod finish;
pub use finish::finish;

/// Entry point when the kernel started us as PID 1.
pub fn main() -> ! {
    if let Err(e) = crate::sys::signals::block_handled() {
        crate::error!("cannot block signals: {e}");
    }
    crate::info!("nomad-init {} starting", env!("CARGO_PKG_VERSION"));
    let cad = crate::sys::power::disable_ctrl_alt_del();
    match &cad {
        Ok(()) => crate::debug!("Ctrl-Alt-Del sends SIGINT"),
        Err(e) => crate::debug!("reboot(CAD_OFF): {e}"),
    }
    // The kernel turns unknown `KEY=value` command line words into init's environment, so
    // the test switch is only honoured where reboot(CAD_OFF) says EINVAL: inside a child
    // PID namespace, never on a real machine.
    let in_pid_namespace = cad == Err(nix::errno::Errno::EINVAL);
    let root = match Root::from_env() {
        r if r.is_test() && !in_pid_namespace => {
            crate::warn!(
                "{} ignored: not in a PID namespace",
                crate::sys::root::TEST_ROOT_ENV
            );
            Root::real()
        }
        r => r,
    };

    let booted = match catch_unwind(AssertUnwindSafe(|| boot::run(root.clone()))) {
        Ok(b) => b,
        Err(p) => {
            crate::error!(
                "boot panicked: {}; supervising with defaults",
                stage::panic_message(&p)
            );
            boot::Booted {
                root: root.clone(),
                options: Default::default(),
                config: boot::config::InitConfig::defaults_under(&root),
                config_source: boot::ConfigSource::Defaults,
                data: None,
                hostname: None,
                failed: vec![stage::Stage::Boot],
            }
        }
    };
    crate::info!("boot finished; config from {:?}", booted.config_source);

    let action = catch_unwind(AssertUnwindSafe(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        anyhow::Ok(rt.block_on(crate::supervise::run(booted)))
    }));
    match action {
        Ok(Ok(action)) => finish(action, &root),
        Ok(Err(e)) => crate::error!("cannot start the async runtime: {e:#}"),
        Err(p) => crate::error!("supervision panicked: {}", stage::panic_message(&p)),
    }
    // Supervision is gone; still honour power signals and keep reaping.
    idle_with_signals(&root)
}

/// Last resort without the runtime: reap, and act on power signals synchronously.
fn idle_with_signals(root: &Root) -> ! {
    crate::error!("entering the minimal loop: reaping, and SIGTERM/SIGINT/SIGUSR1 still work");
    let fd = crate::sys::signals::open_signalfd().ok();
    loop {
        reap_all();
        if let Some(Ok(Some(info))) = fd.as_ref().map(|fd| fd.read_signal()) {
            if let Some(sig) = i32::try_from(info.ssi_signo)
                .ok()
                .and_then(|n| Signal::try_from(n).ok())
            {
                if let Some(Event::Power(action)) = crate::power::event_for(sig) {
                    let _ = catch_unwind(|| {
                        crate::sys::process::signal_all(Signal::SIGTERM).ok();
                        std::thread::sleep(Duration::from_secs(2));
                        crate::sys::process::signal_all(Signal::SIGKILL).ok();
                    });
                    finish(action, root);
                }
            }
            continue;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn reap_all() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Where everything ends when even reboot(2) failed: reap forever, never exit.
pub fn idle_forever() -> ! {
    crate::error!("nothing left to do; idling and reaping");
    loop {
        reap_all();
        std::thread::sleep(Duration::from_secs(1));
    }
}
