//! Power actions and the signals that carry them, both directions in one place: the
//! `poweroff`/`reboot`/`halt` commands send [`PowerAction::signal`], and PID 1 reads each
//! signal back through [`event_for`]. The round-trip test keeps the two tables in step.

use nix::sys::signal::Signal;

/// What `/sbin/poweroff`, `/sbin/reboot` and `/sbin/halt` ask PID 1 to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    Poweroff,
    Reboot,
    Halt,
}

impl PowerAction {
    pub const ALL: [PowerAction; 3] = [
        PowerAction::Poweroff,
        PowerAction::Reboot,
        PowerAction::Halt,
    ];

    /// The signal our PID 1 understands for this action.
    pub fn signal(self) -> Signal {
        match self {
            PowerAction::Poweroff => Signal::SIGTERM,
            PowerAction::Reboot => Signal::SIGINT,
            PowerAction::Halt => Signal::SIGUSR1,
        }
    }
}

/// What a signal (or the power button) asks of PID 1's main loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Power(PowerAction),
    ReapplyPacks,
}

/// The meaning of each signal for PID 1 (SIGCHLD is handled by the reaper).
pub fn event_for(signal: Signal) -> Option<Event> {
    match signal {
        Signal::SIGTERM | Signal::SIGUSR2 | Signal::SIGPWR => {
            Some(Event::Power(PowerAction::Poweroff))
        }
        Signal::SIGINT => Some(Event::Power(PowerAction::Reboot)),
        Signal::SIGUSR1 => Some(Event::Power(PowerAction::Halt)),
        Signal::SIGHUP => Some(Event::ReapplyPacks),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_s_signal_means_that_action() {
        for action in PowerAction::ALL {
            assert_eq!(
                event_for(action.signal()),
                Some(Event::Power(action)),
                "{action:?} is sent as {}",
                action.signal()
            );
        }
    }

    #[test]
    fn every_action_has_a_signal_of_its_own() {
        for a in PowerAction::ALL {
            for b in PowerAction::ALL {
                assert_eq!(a == b, a.signal() == b.signal(), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn signals_map_to_power_actions() {
        assert_eq!(
            event_for(Signal::SIGTERM),
            Some(Event::Power(PowerAction::Poweroff))
        );
        assert_eq!(
            event_for(Signal::SIGUSR2),
            Some(Event::Power(PowerAction::Poweroff))
        );
        assert_eq!(
            event_for(Signal::SIGPWR),
            Some(Event::Power(PowerAction::Poweroff))
        );
        assert_eq!(
            event_for(Signal::SIGINT),
            Some(Event::Power(PowerAction::Reboot))
        );
        assert_eq!(
            event_for(Signal::SIGUSR1),
            Some(Event::Power(PowerAction::Halt))
        );
        assert_eq!(event_for(Signal::SIGHUP), Some(Event::ReapplyPacks));
        assert_eq!(event_for(Signal::SIGCHLD), None);
    }
}
