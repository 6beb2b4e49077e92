//! `nomad-init heartbeat`: the shipped `hello` pack's task. It prints
//! `<message> <hostname> <UTC time>` every interval, so the default pack set proves that
//! `raw_exec` works without needing a shell in the image (`TOOLBOX=0` images run it too).

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, clap::Args)]
pub struct HeartbeatArgs {
    /// Text of each line; the node's hostname and the UTC time are appended.
    pub message: String,
    /// Seconds between lines.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub interval: u64,
    /// Stop after this many lines (default: run until stopped).
    #[arg(long)]
    pub count: Option<u64>,
}

/// Prints heartbeat lines until `count` is reached or the process is stopped; returns the
/// exit code (1 once stdout is gone, so Nomad sees the task fail rather than spin).
pub fn run(args: &HeartbeatArgs) -> i32 {
    let mut printed = 0u64;
    loop {
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown-host".into());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{} {host} {}", args.message, utc_timestamp(now))
            .and_then(|()| out.flush())
            .is_err()
        {
            return 1;
        }
        drop(out);
        printed += 1;
        if args.count.is_some_and(|c| printed >= c) {
            return 0;
        }
        std::thread::sleep(Duration::from_secs(args.interval));
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch (what `date -u +%FT%TZ` printed).
pub fn utc_timestamp(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// for non-negative days only).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_date_u() {
        // Reference values from Python's datetime (UTC).
        for (secs, want) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_234_567_890, "2009-02-13T23:31:30Z"),
            (1_798_761_599, "2026-12-31T23:59:59Z"),
            (4_102_444_800, "2100-01-01T00:00:00Z"),
        ] {
            assert_eq!(utc_timestamp(secs), want, "{secs}");
        }
    }
}
