//! Children's output on the console (Nomad, the pack applier).
//!
//! The console is a 115200-baud serial line on most machines: about 100 lines a second.
//! A child must never wait for it, so each child's pipes are read by a thread of their own
//! and its lines are offered to one bounded queue that a single writer thread drains.
//! When the queue is full the line is dropped and counted; the count is reported once the
//! console catches up. Nomad's full log is Nomad's own business (`log_file` in its agent
//! config, with its own rotation): only its warnings and errors, and untagged lines such as
//! its start-up banner or a Go panic, reach the console.

use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::OnceLock;

use tokio::sync::oneshot;

use crate::log::Level;

/// Lines waiting for the console at most; about ten seconds of a serial console.
const QUEUE_LINES: usize = 1024;
/// A child's line longer than this is cut (a runaway line must not become one allocation).
const MAX_LINE_BYTES: usize = 8 * 1024;

struct Line {
    level: Level,
    target: &'static str,
    text: String,
}

/// What the console writer takes from the queue.
enum Entry {
    Line(Line),
    /// Every line queued before this one has been written: say so to the sender.
    Written(std::sync::mpsc::Sender<()>),
}

struct Console {
    queue: SyncSender<Entry>,
    dropped: AtomicU64,
}

static CONSOLE: OnceLock<Option<Console>> = OnceLock::new();

fn console() -> Option<&'static Console> {
    CONSOLE
        .get_or_init(|| {
            let (queue, entries) = sync_channel::<Entry>(QUEUE_LINES);
            let spawned = std::thread::Builder::new()
                .name("console".into())
                .spawn(move || {
                    for entry in entries {
                        match entry {
                            Entry::Line(line) => {
                                report_dropped();
                                let text = format_args!("{}", line.text);
                                crate::log::write(line.level, line.target, text);
                            }
                            Entry::Written(done) => {
                                let _ = done.send(());
                            }
                        }
                    }
                });
            match spawned {
                Ok(_) => Some(Console {
                    queue,
                    dropped: AtomicU64::new(0),
                }),
                Err(e) => {
                    crate::error!(
                        "cannot start the console writer: {e}; children's output is not shown"
                    );
                    None
                }
            }
        })
        .as_ref()
}

fn report_dropped() {
    if let Some(c) = console() {
        let n = c.dropped.swap(0, Ordering::Relaxed);
        if n > 0 {
            crate::warn!("{n} lines of children's output were not shown: the console is slower than they write");
        }
    }
}

impl Console {
    fn offer(&self, line: Line) -> bool {
        match self.queue.try_send(Entry::Line(line)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// Blocks until every line offered so far has been written. A child's pump calls it at
/// end-of-file, so that PID 1's own line about the child's exit (written directly, not
/// queued) comes after the child's last lines.
fn wait_written() {
    if let Some(c) = console() {
        let (done, written) = std::sync::mpsc::channel();
        if c.queue.send(Entry::Written(done)).is_ok() {
            let _ = written.recv();
        }
    }
}

/// Queues a child's line for the console; never blocks. False when it was dropped.
pub fn offer(level: Level, target: &'static str, text: String) -> bool {
    if !crate::log::enabled(level) {
        return true;
    }
    console().is_some_and(|c| {
        c.offer(Line {
            level,
            target,
            text,
        })
    })
}

/// Which of a child's lines reach the console, and at what level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Nomad's log lines: those tagged below `min` (`[INFO]`, `[DEBUG]`...) stay in Nomad's
    /// own log file; untagged lines are shown at info.
    NomadLog { min: Level },
    /// Every line, at this level (the applier's report and errors).
    All(Level),
}

impl Filter {
    /// The level to show `line` at, or `None` to leave it off the console.
    pub fn level_of(self, line: &str) -> Option<Level> {
        match self {
            Filter::All(level) => Some(level),
            Filter::NomadLog { min } => match nomad_level(line) {
                Some(level) if level < min => None,
                Some(level) => Some(level),
                None => Some(Level::Info),
            },
        }
    }
}

/// The level tag of a Nomad (hclog) line: `2024-01-01T00:00:00.000Z [WARN]  agent: ...`.
/// Only a tag near the start counts, so a message quoting `[ERROR]` is not misread.
pub fn nomad_level(line: &str) -> Option<Level> {
    let head = line.get(..line.len().min(48)).unwrap_or(line);
    let open = head.find('[')?;
    let close = open + head[open..].find(']')?;
    match &head[open + 1..close] {
        "TRACE" | "DEBUG" => Some(Level::Debug),
        "INFO" => Some(Level::Info),
        "WARN" => Some(Level::Warn),
        "ERROR" => Some(Level::Error),
        _ => None,
    }
}

/// How long a finished child's last lines may take to reach the log before its exit is
/// reported. The pumps end at end-of-file, at once when nothing else holds the pipes; the
/// bound is for a grandchild that inherited them. 250 ms was too short on a loaded host:
/// the applier's exit line came before its summary.
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits (at most [`DRAIN_WAIT`]) for the pumps of a child that has ended to reach
/// end-of-file, so that its last lines are logged before its exit.
pub async fn until_drained(pumps: Vec<oneshot::Receiver<()>>) {
    let _ = tokio::time::timeout(DRAIN_WAIT, futures::future::join_all(pumps)).await;
}

/// Reads `pipe` line by line on a thread of its own and offers each line that `filter`
/// lets through to the console under `target`. The receiver completes at end of file.
pub fn pump(
    target: &'static str,
    stream: &'static str,
    pipe: impl std::io::Read + Send + 'static,
    filter: Filter,
) -> Option<oneshot::Receiver<()>> {
    let (eof_tx, eof_rx) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("{target}-{stream}"))
        .spawn(move || {
            let mut reader = std::io::BufReader::new(pipe);
            let mut line = Vec::new();
            loop {
                line.clear();
                match read_line_bounded(&mut reader, &mut line, MAX_LINE_BYTES) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\r', '\n']);
                if let Some(level) = filter.level_of(text) {
                    offer(level, target, text.to_string());
                }
            }
            wait_written();
            let _ = eof_tx.send(());
        });
    match spawned {
        Ok(_) => Some(eof_rx),
        Err(e) => {
            crate::error!("cannot start the {target} {stream} reader: {e}");
            None
        }
    }
}

/// Reads one line into `buf`, keeping at most `max` bytes of it (the rest of a longer
/// line is read and discarded). Returns the bytes consumed; 0 at end of file.
fn read_line_bounded(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<usize> {
    let mut consumed = 0;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(consumed);
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..take.min(room)]);
        r.consume(take);
        consumed += take;
        if done {
            return Ok(consumed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nomad_levels_come_from_the_tag_near_the_start() {
        let l = |s| nomad_level(s);
        assert_eq!(
            l("    2024-05-01T10:00:00.000Z [WARN]  agent: no servers"),
            Some(Level::Warn)
        );
        assert_eq!(
            l("2024-05-01T10:00:00Z [ERROR] client: boom"),
            Some(Level::Error)
        );
        assert_eq!(
            l("2024-05-01T10:00:00Z [INFO]  agent: up"),
            Some(Level::Info)
        );
        assert_eq!(
            l("2024-05-01T10:00:00Z [DEBUG] http: request"),
            Some(Level::Debug)
        );
        assert_eq!(
            l("==> Nomad agent started! Log data will stream in below:"),
            None
        );
        assert_eq!(
            l("panic: runtime error: index out of range [3] with length 3"),
            None
        );
        let quoted = format!("{} [ERROR] is only quoted here", "x".repeat(60));
        assert_eq!(l(&quoted), None);
    }

    #[test]
    fn nomad_filter_keeps_warnings_errors_and_untagged_lines() {
        let f = Filter::NomadLog { min: Level::Warn };
        assert_eq!(f.level_of("2024-05-01T10:00:00Z [INFO]  agent: up"), None);
        assert_eq!(f.level_of("2024-05-01T10:00:00Z [DEBUG] x"), None);
        assert_eq!(
            f.level_of("2024-05-01T10:00:00Z [WARN]  x"),
            Some(Level::Warn)
        );
        assert_eq!(
            f.level_of("==> Nomad agent configuration:"),
            Some(Level::Info)
        );
        let verbose = Filter::NomadLog { min: Level::Info };
        assert_eq!(
            verbose.level_of("2024-05-01T10:00:00Z [INFO]  agent: up"),
            Some(Level::Info)
        );
        assert_eq!(
            Filter::All(Level::Warn).level_of("anything"),
            Some(Level::Warn)
        );
    }

    #[test]
    fn long_lines_are_cut_but_fully_consumed() {
        let input = format!("{}\nnext\n", "a".repeat(100));
        let mut r = std::io::BufReader::with_capacity(7, input.as_bytes());
        let mut buf = Vec::new();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 10).unwrap(), 101);
        assert_eq!(buf, b"aaaaaaaaaa");
        buf.clear();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 10).unwrap(), 5);
        assert_eq!(buf, b"next\n");
        buf.clear();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 10).unwrap(), 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        // Nobody drains this queue: a blocking offer would hang the test here.
        let (queue, _lines) = sync_channel(QUEUE_LINES);
        let c = Console {
            queue,
            dropped: AtomicU64::new(0),
        };
        let line = |i: usize| Line {
            level: Level::Info,
            target: "test",
            text: format!("line {i}"),
        };
        let shown = (0..QUEUE_LINES + 10).filter(|&i| c.offer(line(i))).count();
        assert_eq!(shown, QUEUE_LINES);
        assert_eq!(c.dropped.load(Ordering::Relaxed), 10);
    }
}
