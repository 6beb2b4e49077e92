//! Restart delays: 1 s doubling up to a cap, back to 1 s after a long enough run.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    reset_after: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, reset_after: Duration) -> Self {
        Self {
            initial,
            max,
            reset_after,
            next: initial.min(max),
        }
    }

    /// The supervisor's schedule: 1 s doubling up to `max`, reset after 60 s of uptime.
    pub fn for_nomad(max: Duration) -> Self {
        Self::new(Duration::from_secs(1), max, Duration::from_secs(60))
    }

    /// The child exited after running for `uptime`: how long to wait before restarting.
    pub fn on_exit(&mut self, uptime: Duration) -> Duration {
        if uptime >= self.reset_after {
            self.next = self.initial.min(self.max);
        }
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(d: Duration) -> u64 {
        d.as_secs()
    }

    #[test]
    fn doubles_to_the_cap_and_resets_after_a_long_run() {
        let mut b = Backoff::for_nomad(Duration::from_secs(30));
        let quick = Duration::from_millis(100);
        let seq: Vec<u64> = (0..7).map(|_| secs(b.on_exit(quick))).collect();
        assert_eq!(seq, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(secs(b.on_exit(Duration::from_secs(59))), 30);
        assert_eq!(secs(b.on_exit(Duration::from_secs(60))), 1);
        assert_eq!(secs(b.on_exit(quick)), 2);
    }

    #[test]
    fn a_cap_below_the_initial_delay_wins() {
        let mut b = Backoff::new(
            Duration::from_secs(4),
            Duration::from_secs(3),
            Duration::from_secs(60),
        );
        assert_eq!(secs(b.on_exit(Duration::ZERO)), 3);
        assert_eq!(secs(b.on_exit(Duration::ZERO)), 3);
    }
}
