//! Everything PID 1 does once booted: reap, read signals, supervise Nomad, apply packs,
//! and carry out the shutdown that a signal or the power button asks for.

pub mod acl;
pub mod backoff;
pub mod install;
pub mod limited;
pub mod machine;
pub mod network;
pub mod nomad;
pub mod output;
pub mod packs;
pub mod power_button;
pub mod reaper;
pub mod shutdown;
pub mod upgrade;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch, Notify};

use crate::boot::Booted;
use crate::power::{event_for, Event, PowerAction};
use reaper::Reaper;

/// Reads the signalfd forever: SIGCHLD drains the reaper, other signals become events.
/// Also reaps every few seconds in case a SIGCHLD was coalesced away at a bad moment.
async fn signal_loop(reaper: Arc<Reaper>, events: mpsc::UnboundedSender<Event>) {
    let fd = match crate::sys::signals::open_async_signalfd() {
        Ok(fd) => Some(fd),
        Err(e) => {
            crate::error!("{e}; signals are ignored, reaping by timer");
            None
        }
    };
    reaper.reap();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        let Some(fd) = fd.as_ref() else {
            tick.tick().await;
            reaper.reap();
            continue;
        };
        tokio::select! {
            guard = fd.readable() => {
                let Ok(mut guard) = guard else { continue };
                loop {
                    match guard.get_inner().read_signal() {
                        Ok(Some(info)) => {
                            let sig = i32::try_from(info.ssi_signo).ok();
                            let Some(sig) = sig.and_then(|n| Signal::try_from(n).ok()) else {
                                continue;
                            };
                            if sig == Signal::SIGCHLD {
                                reaper.reap();
                            } else if let Some(ev) = event_for(sig) {
                                crate::info!("received {sig} from pid {}", info.ssi_pid);
                                let _ = events.send(ev);
                            } else {
                                crate::debug!("ignoring {sig}");
                            }
                        }
                        Ok(None) => {
                            guard.clear_ready();
                            break;
                        }
                        Err(e) => {
                            crate::error!("read(signalfd): {e}");
                            guard.clear_ready();
                            break;
                        }
                    }
                }
            }
            _ = tick.tick() => { reaper.reap(); }
        }
    }
}

/// Runs the task `make()` builds; if it panics, logs that and runs a fresh one, so a bug
/// cannot silently end reaping or supervision. Returns when a run ends normally.
async fn restarting<F, Fut>(name: &'static str, make: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        match tokio::spawn(make()).await {
            Ok(()) => return,
            Err(e) => {
                crate::error!("{name} crashed ({e}); restarting it");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// `/bin/sh` on the console, for debugging a failed boot (only with `nomados.debug=1`).
fn emergency_shell(reaper: &Arc<Reaper>, root: &crate::sys::root::Root) {
    let sh = std::path::Path::new("/bin/sh");
    if !sh.exists() {
        crate::warn!("no /bin/sh for an emergency shell");
        return;
    }
    let mut cmd = Command::new(sh);
    cmd.stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", nomad::DEFAULT_PATH);
    }
    if root.is_test() {
        // Tests have no console to type into.
        cmd.stdin(Stdio::null());
    }
    match reaper.spawn(&mut cmd) {
        Ok((_child, pid, exited)) => {
            crate::warn!("emergency shell on the console (pid {pid})");
            tokio::spawn(async move {
                if let Ok(status) = exited.await {
                    crate::info!("emergency shell ended with {status}");
                }
            });
        }
        Err(e) => crate::error!("emergency shell: {e}"),
    }
}

/// Runs the booted system until a power action is requested and the processes are
/// stopped; returns that action for the synchronous end.
pub async fn run(booted: Booted) -> PowerAction {
    let reaper = Arc::new(Reaper::new());
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (r, tx) = (reaper.clone(), events_tx.clone());
    tokio::spawn(restarting("signal loop", move || {
        signal_loop(r.clone(), tx.clone())
    }));

    let press_tx = events_tx.clone();
    let buttons = power_button::listen(&booted.root, move || {
        crate::info!("power button pressed");
        let _ = press_tx.send(Event::Power(PowerAction::Poweroff));
    });
    if buttons.is_empty() {
        crate::info!("no power button input device found");
    } else {
        crate::info!("watching power button on {}", buttons.join(", "));
    }
    let acpi_tx = events_tx.clone();
    match power_button::listen_acpi(move || {
        crate::info!("ACPI power button event");
        let _ = acpi_tx.send(Event::Power(PowerAction::Poweroff));
    }) {
        Ok(()) => crate::info!("listening for ACPI power button events"),
        Err(e) => crate::info!("no ACPI events: {e:#}"),
    }

    if booted.options.debug && (!booted.failed.is_empty() || booted.options.shell) {
        emergency_shell(&reaper, &booted.root);
    }

    // Slots first: a boot the loader fell back to is recorded before anything else runs.
    let slots = crate::slots::trial::at_boot(&booted.root);
    let trial = slots.trial;
    let cfg = booted.config.clone();
    if let Some(path) = &cfg.nomad.log_file {
        crate::warn!(
            "nomad.log_file ({}) is ignored: Nomad writes and rotates its own log (log_file in its agent config)",
            path.display()
        );
    }
    // Network first (bounded wait for a lease), so Nomad starts with an address.
    let mut net = network::start(&cfg.network, &booted.root, cfg.hostname.is_some()).await;
    // An install request on the command line wins; without one, the user data's
    // `[install]` (read with the machine configuration) may ask.
    let cmdline_install = install::from_cmdline(&booted.root);
    // In test mode the cgroup tree is the host's: leave it alone.
    let cgroup_root = (!booted.root.is_test()).then(|| booted.root.path("/sys/fs/cgroup"));
    let machine_child = machine::Child {
        reaper: reaper.clone(),
        program: "/proc/self/exe".into(),
        cgroup_root: cgroup_root.clone(),
        root: booted.root.clone(),
    };
    let configured = match cmdline_install {
        Ok(Some(_)) => None,
        _ => Some(machine::configure(&booted, &machine_child).await),
    };
    let decision = crate::install::options::decide(
        cmdline_install,
        configured.as_ref().and_then(|c| c.install.clone()),
        &install::booted_from(&booted.root),
    );
    for note in &decision.notes {
        crate::warn!("install: {note}");
    }
    if let Some((req, origin)) = decision.install {
        // An install boot runs no Nomad: the installer, then a reboot into its result.
        crate::info!("install: requested by the {origin}");
        let deadline = install::deadline(&booted.root);
        let action = if install::run(&reaper, &req, &cfg.data.label, cgroup_root, deadline).await {
            PowerAction::Reboot
        } else {
            loop {
                match events.recv().await {
                    Some(Event::Power(action)) => break action,
                    Some(_) => {}
                    None => std::future::pending::<()>().await,
                }
            }
        };
        shutdown::terminate_all(&booted.root.path("/proc"), Duration::from_secs(5)).await;
        network::stop(net).await;
        return action;
    }
    // The machine's own configuration (issue 10) needs the network and comes before Nomad.
    let configured = match configured {
        Some(c) => c,
        None => machine::configure(&booted, &machine_child).await,
    };
    // `[init.network]` from a drive, fw_cfg or the image's user data (the sources read
    // without the network): the network starts again with it, before Nomad does.
    if configured.config.network != cfg.network {
        crate::info!("network: starting again with the user data's [init.network]");
        network::stop(net).await;
        let c = &configured.config;
        net = network::start(&c.network, &booted.root, c.hostname.is_some()).await;
    }
    // What PID 1 talks to Nomad with: the child's merged view (HCL fragments included).
    let (api_nomad, api_dirs) = configured.for_api();
    let machine::Configured {
        config: cfg,
        mut fragment_dirs,
        ..
    } = configured;
    // The slot (and a rolled-back upgrade) as client meta, after the machine's fragments.
    if let Some(f) = &slots.meta_fragment {
        fragment_dirs.extend(crate::slots::trial::write_meta_fragment(&booted.root, f));
    }
    let api = crate::nomad::Settings::for_local_agent_with_fragments(&api_nomad, &api_dirs);
    // Long-lived mode may move the API: every copy of `api` follows `live_api`.
    let live_api = crate::nomad::Live::default();
    live_api.set(api.clone());
    let api = api.following(live_api.clone());
    let acl_flow = acl::Flow::for_boot(&api_nomad, &api_dirs, &api, &booted.root);
    let (healthy_tx, healthy_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let reapply = Arc::new(Notify::new());
    let restart_nomad = Arc::new(Notify::new());

    let nomad = nomad::Supervisor {
        config: cfg.nomad.clone(),
        api: api.clone(),
        reaper: reaper.clone(),
        healthy: healthy_tx,
        stop: stop_rx.clone(),
        restart: restart_nomad.clone(),
        fragment_dirs,
    };
    let supervisor = tokio::spawn(restarting("nomad supervisor", move || nomad.clone().run()));
    let applier = packs::Applier {
        config: cfg.packs.clone(),
        api: api.clone(),
        reaper: reaper.clone(),
        cgroup_root,
        program: "/proc/self/exe".into(),
    };
    let (applier_stop_tx, applier_stop_rx) = watch::channel(false);
    let (packs_seen_tx, packs_seen_rx) = watch::channel(crate::slots::gate::PacksSeen::NotYet);
    if let Some(t) = trial {
        tokio::spawn(crate::slots::trial::gate(
            t,
            api.clone(),
            crate::slots::trial::PackSetRef::of(&cfg.packs),
            healthy_rx.clone(),
            packs_seen_rx,
            events_tx.clone(),
        ));
    }
    // The applier sees Nomad healthy only once the ACL bootstrap is settled.
    if let Some(wanted) =
        upgrade::requested(&crate::machine::paths::Paths::under(&booted.root).machine_dir)
    {
        let up = upgrade::Upgrader {
            wanted,
            committed: slots.committed.clone(),
            rolled_back_file: booted.root.path(crate::slots::wanted::ROLLED_BACK_FILE),
            reaper: reaper.clone(),
            program: "/proc/self/exe".into(),
        };
        tokio::spawn(up.run(healthy_rx.clone(), events_tx.clone()));
    }
    let (applier_healthy_tx, applier_healthy_rx) = watch::channel(false);
    tokio::spawn(acl::gate(acl_flow, healthy_rx, applier_healthy_tx));
    let applier = tokio::spawn(packs::run(
        applier,
        applier_healthy_rx,
        reapply.clone(),
        applier_stop_rx,
        packs_seen_tx,
    ));

    // Long-lived mode: the user data's URL is asked again on an interval and on SIGHUP.
    let poll_now = Arc::new(Notify::new());
    let (poll_stop_tx, poll_stop_rx) = watch::channel(false);
    let poller = booted.options.config_url.is_some().then(|| {
        let actions = machine::Actions {
            restart_nomad: restart_nomad.clone(),
            reapply_packs: reapply.clone(),
            api: live_api,
            booted: booted.clone(),
        };
        tokio::spawn(machine::poll_loop(
            machine_child,
            cfg.clone(),
            actions,
            poll_now.clone(),
            poll_stop_rx,
        ))
    });

    let action = loop {
        match events.recv().await {
            Some(Event::Power(action)) => break action,
            Some(Event::ReapplyPacks) => {
                reapply.notify_one();
                poll_now.notify_one();
            }
            // Cannot happen (we hold a sender); never shut down by accident.
            None => std::future::pending::<()>().await,
        }
    };
    crate::info!("{action:?} requested: shutting down");

    // The poller and the applier first: neither may change the node while it drains.
    let _ = poll_stop_tx.send(true);
    if let Some(p) = poller {
        if tokio::time::timeout(Duration::from_secs(10), p)
            .await
            .is_err()
        {
            crate::error!("the machine config poller did not stop in 10 s; going on");
        }
    }
    let _ = applier_stop_tx.send(true);
    if tokio::time::timeout(Duration::from_secs(10), applier)
        .await
        .is_err()
    {
        crate::error!("the pack applier did not stop in 10 s; going on");
    }

    shutdown::drain(&api, Duration::from_secs(cfg.nomad.drain_timeout_secs)).await;
    let _ = stop_tx.send(true);
    let bound = Duration::from_secs(cfg.nomad.stop_timeout_secs + 10);
    if tokio::time::timeout(bound, supervisor).await.is_err() {
        crate::error!(
            "nomad supervisor did not stop in {} s; going on",
            bound.as_secs()
        );
    }
    shutdown::terminate_all(&booted.root.path("/proc"), Duration::from_secs(5)).await;
    network::stop(net).await;
    action
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_crashing_task_is_restarted_until_it_ends_normally() {
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r = runs.clone();
        restarting("test task", move || {
            let n = r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if n < 2 {
                    panic!("run {n} fails");
                }
            }
        })
        .await;
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
