//! Renders one pack in a child process, so that whatever its templates do is that pack's
//! failure alone.
//!
//! Tera cannot bound itself: a template that includes itself, an include loop or a macro
//! calling itself overflows the stack, `range(end=50000000)` or huge output runs out of
//! memory, and both abort the process. So the applier loads and renders each pack in a
//! child (this same binary, `nomad-init packs render-child`) that has a data limit, a
//! fixed stack and a deadline; the child sends back the rendered files as one JSON
//! message over a pipe, read with a size cap and checked before use. An abort, a kill or a
//! malformed answer becomes one clear reason naming the pack; the other packs go on.
//!
//! The parent side ([`render`]) and the child side ([`serve`]) share the wire types; the
//! checks of an answer ([`check_reply`]) and the reading of a crash ([`explain_exit`]) are
//! pure.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::model::{JobDecl, PackDecl, Rendered};
use super::render::{RenderContext, MAX_RENDERED_BYTES};
use crate::diag::Location;

/// Environment variable that overrides [`Limits::deadline`] (whole seconds).
pub const ENV_RENDER_DEADLINE_SECS: &str = "NOMADOS_PACK_RENDER_DEADLINE_SECS";

/// Set by the parent to its own pid: the child dies with the parent (see [`serve`]).
const ENV_PARENT_PID: &str = "NOMADOS_RENDER_PARENT_PID";

/// Bytes the child's answer may have. One rendered file is at most
/// [`MAX_RENDERED_BYTES`]; JSON escaping may double it; a few files fit.
pub const MAX_REPLY_BYTES: usize = 24 * 1024 * 1024;

/// Bytes the request may have (the declared jobs' variables come from the pack set,
/// itself bounded; this only guards the child against a confused parent).
const MAX_REQUEST_BYTES: u64 = 16 * 1024 * 1024;

/// Stack of the thread that renders: deep enough for any real template nesting, small
/// enough that runaway recursion ends fast.
const RENDER_STACK_BYTES: usize = 8 * 1024 * 1024;

/// Bytes of the child's stderr kept to explain a crash (its last words).
const STDERR_TAIL_BYTES: usize = 4096;

/// Bounds of one pack's render child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// RLIMIT_DATA of the child: heap, stacks and private mappings.
    pub data_bytes: u64,
    /// Wall-clock time for loading and rendering one pack, every job of it.
    pub deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // A pack's files are at most 64 MiB in total, real ones a few KiB; Tera and
            // the rendered text fit many times over.
            data_bytes: 96 * 1024 * 1024,
            deadline: Duration::from_secs(30),
        }
    }
}

impl Limits {
    /// These limits with the deadline the environment sets ([`ENV_RENDER_DEADLINE_SECS`]).
    pub fn with_env_overrides(mut self) -> Result<Self, String> {
        if let Ok(v) = std::env::var(ENV_RENDER_DEADLINE_SECS) {
            let secs: u64 = v.trim().parse().map_err(|_| {
                format!(
                    "{ENV_RENDER_DEADLINE_SECS} must be a whole number, got `{}`",
                    v.escape_debug()
                )
            })?;
            self.deadline = Duration::from_secs(secs);
        }
        Ok(self)
    }
}

/// What the child renders: one pack, every declared job of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub pack: String,
    /// The fetched pack's directory.
    pub dir: PathBuf,
    pub datacenters: Vec<String>,
    pub jobs: Vec<JobRequest>,
}

/// One declared job: its name, variables and where it was declared (for messages).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRequest {
    pub name: String,
    pub vars: BTreeMap<String, Value>,
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl Request {
    pub fn new(decl: &PackDecl, dir: &Path, ctx: &RenderContext) -> Self {
        Self {
            pack: decl.name.clone(),
            dir: dir.to_path_buf(),
            datacenters: ctx.datacenters.clone(),
            jobs: decl
                .jobs
                .iter()
                .map(|j| JobRequest {
                    name: j.name.clone(),
                    vars: j.vars.clone(),
                    file: j.location.file.clone(),
                    line: j.location.line,
                    column: j.location.column,
                })
                .collect(),
        }
    }
}

/// The child's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// The pack could not be loaded (its templates do not parse, a file is refused...).
    LoadFailed(String),
    /// One entry per requested job, in request order.
    Jobs(Vec<JobReply>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobReply {
    pub job: String,
    pub result: Result<Rendered, String>,
}

/// What one declared job rendered to, or why it did not.
pub type JobOutcome = Result<Rendered, String>;

// ---------------------------------------------------------------------------------------
// Parent side.

/// Loads and renders `request`'s pack in a child running `exe` under `limits`. `Err` is
/// the whole pack's failure; otherwise one outcome per requested job, in order.
/// Blocking: call it from a blocking task.
pub fn render(exe: &Path, limits: &Limits, request: &Request) -> Result<Vec<JobOutcome>, String> {
    match run_child(exe, limits, request) {
        Ok(reply) => check_reply(request, reply),
        Err(why) => Err(format!("pack `{}`: {why}", request.pack)),
    }
}

/// Runs the child for `request` and returns its answer, or why there is none.
fn run_child(exe: &Path, limits: &Limits, request: &Request) -> Result<Reply, String> {
    let body = serde_json::to_vec(request)
        .map_err(|e| format!("cannot encode the render request: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(["packs", "render-child"])
        .env(ENV_PARENT_PID, std::process::id().to_string())
        // An abort is expected; a backtrace would map the binary's debug info (tens of
        // MiB in a debug build) just to print it.
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let data_bytes = limits.data_bytes.min(current_data_limit());
    let child_limits = crate::sys::process::ChildLimits {
        cgroup_procs: None,
        data_bytes: Some(data_bytes),
    };
    let mut child = crate::sys::process::spawn_limited(&mut cmd, child_limits)
        .map_err(|e| format!("cannot start the render process {}: {e}", exe.display()))?;

    let too_big = Arc::new(AtomicBool::new(false));
    // Says when the answer is complete (the child closed its stdout: it is exiting), so the
    // wait below ends at once instead of at its next poll.
    let (answered_tx, answered) = std::sync::mpsc::channel::<()>();
    let stdout = child.stdout.take().map(|out| {
        let too_big = Arc::clone(&too_big);
        std::thread::spawn(move || {
            let reply = read_capped(out, MAX_REPLY_BYTES, &too_big);
            let _ = answered_tx.send(());
            reply
        })
    });
    let stderr = child
        .stderr
        .take()
        .map(|err| std::thread::spawn(move || read_tail(err, STDERR_TAIL_BYTES)));
    // The child reads its whole request before anything else; a child that died first
    // makes this fail with EPIPE, and its exit status says why.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&body);
    }

    let started = Instant::now();
    let mut stopped: Option<Stop> = None;
    let mut output_closed = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("cannot wait for the render process: {e}"));
            }
        }
        if stopped.is_none() {
            if too_big.load(Ordering::Relaxed) {
                stopped = Some(Stop::TooBig);
            } else if started.elapsed() > limits.deadline {
                stopped = Some(Stop::Deadline);
            }
            if stopped.is_some() {
                let _ = child.kill();
            }
        }
        if output_closed {
            std::thread::sleep(Duration::from_micros(200));
        } else {
            match answered.recv_timeout(Duration::from_millis(5)) {
                Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    output_closed = true
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    };
    let reply = stdout.and_then(|t| t.join().ok()).unwrap_or_default();
    let tail = stderr.and_then(|t| t.join().ok()).unwrap_or_default();

    match stopped {
        Some(Stop::TooBig) => {
            return Err(format!(
                "rendering produced more than {} MiB in total; stopped",
                MAX_REPLY_BYTES >> 20
            ))
        }
        Some(Stop::Deadline) => {
            return Err(format!(
                "rendering took longer than {} s; stopped (a template that loops for too long?)",
                limits.deadline.as_secs()
            ))
        }
        None => {}
    }
    if !status.success() {
        return Err(explain_exit(
            status,
            &String::from_utf8_lossy(&tail),
            data_bytes,
        ));
    }
    serde_json::from_slice(&reply)
        .map_err(|e| format!("the render process sent a malformed answer: {e}"))
}

enum Stop {
    TooBig,
    Deadline,
}

/// The applier's own RLIMIT_DATA (what PID 1 gave it): a child cannot be given more.
fn current_data_limit() -> u64 {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_DATA) {
        Ok((soft, _)) if soft != nix::sys::resource::RLIM_INFINITY => soft,
        _ => u64::MAX,
    }
}

/// Reads `from` to its end keeping at most `cap` bytes; past that, flags `too_big` and
/// discards the rest (so the writer never blocks before it is killed).
fn read_capped(mut from: impl Read, cap: usize, too_big: &AtomicBool) -> Vec<u8> {
    let mut buf = Vec::new();
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    let _ = (&mut from).take(limit).read_to_end(&mut buf);
    if buf.len() > cap {
        too_big.store(true, Ordering::Relaxed);
        buf = Vec::new();
        let _ = std::io::copy(&mut from, &mut std::io::sink());
    }
    buf
}

/// The last `keep` bytes `from` writes.
fn read_tail(mut from: impl Read, keep: usize) -> Vec<u8> {
    let mut tail = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match from.read(&mut chunk) {
            Ok(0) | Err(_) => return tail,
            Ok(n) => {
                tail.extend_from_slice(&chunk[..n]);
                if tail.len() > 2 * keep {
                    tail.drain(..tail.len() - keep);
                }
            }
        }
    }
}

/// Why a render child that did not exit cleanly failed, in the operator's terms.
pub fn explain_exit(status: ExitStatus, stderr: &str, data_bytes: u64) -> String {
    use std::os::unix::process::ExitStatusExt;
    let mib = data_bytes >> 20;
    if stderr.contains("has overflowed its stack") {
        return "rendering recursed without end and overflowed the stack (a template that \
                includes itself, an include loop, or a macro that calls itself?)"
            .to_string();
    }
    if stderr.contains("memory allocation of") {
        return format!(
            "rendering needed more than the memory limit of {mib} MiB (a huge `range`, or \
             huge output?)"
        );
    }
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| format!(": {}", l.trim()))
        .unwrap_or_default();
    match status.signal() {
        Some(libc::SIGKILL) => {
            format!("the render process was killed (SIGKILL; out of memory?){last}")
        }
        Some(sig) => format!("the render process died of signal {sig}{last}"),
        None => format!(
            "the render process exited with status {}{last}",
            status.code().unwrap_or(-1)
        ),
    }
}

/// Checks that `reply` answers `request`: one entry per requested job, in order, every
/// rendered file attributed to this pack and job and within the size limit. A child
/// that says anything else is not believed.
pub fn check_reply(request: &Request, reply: Reply) -> Result<Vec<JobOutcome>, String> {
    let jobs = match reply {
        Reply::LoadFailed(reason) => return Err(reason),
        Reply::Jobs(jobs) => jobs,
    };
    let malformed = |why: String| {
        Err(format!(
            "pack `{}`: the render process sent a malformed answer: {why}",
            request.pack
        ))
    };
    if jobs.len() != request.jobs.len() {
        return malformed(format!(
            "{} results for {} declared jobs",
            jobs.len(),
            request.jobs.len()
        ));
    }
    let mut out = Vec::with_capacity(jobs.len());
    for (asked, answer) in request.jobs.iter().zip(jobs) {
        if answer.job != asked.name {
            return malformed(format!(
                "a result for job `{}` where `{}` was expected",
                answer.job.escape_debug(),
                asked.name
            ));
        }
        if let Ok(rendered) = &answer.result {
            let sources = rendered
                .jobs
                .iter()
                .map(|j| (&j.source, j.text.len()))
                .chain(rendered.variables.iter().map(|v| (&v.source, 0)))
                .chain(rendered.policies.iter().map(|p| (&p.source, p.rules.len())));
            for (source, len) in sources {
                if source.pack != request.pack || source.job != asked.name {
                    return malformed(format!("a file attributed to {source}"));
                }
                if len > MAX_RENDERED_BYTES {
                    return malformed(format!("{source} is over the size limit"));
                }
            }
        }
        out.push(answer.result);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Child side.

/// `nomad-init packs render-child`: reads a [`Request`] from stdin, writes a [`Reply`] to
/// stdout. Returns the exit code. Aborts (by design) when a template exhausts the stack or
/// the data limit; the parent reads that from the exit status and stderr.
pub fn serve() -> i32 {
    // An abort is expected here; a core dump of it is not wanted.
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    // An applier killed at its deadline takes its render child with it, instead of leaving
    // an orphan that renders on until its own deadline. The parent may already be gone
    // by now: then the parent pid is no longer the one it passed.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let parent = std::env::var(ENV_PARENT_PID).ok();
    // 0 when the parent is outside this PID namespace: not the applier either.
    let ppid = nix::unistd::getppid().to_string();
    if parent.is_some_and(|p| p != ppid) {
        eprintln!("nomad-init render-child: the applier that started it is gone");
        return 1;
    }

    let mut body = Vec::new();
    if let Err(e) = std::io::stdin()
        .take(MAX_REQUEST_BYTES)
        .read_to_end(&mut body)
    {
        eprintln!("nomad-init render-child: cannot read the request: {e}");
        return 1;
    }
    let request: Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nomad-init render-child: malformed request: {e}");
            return 1;
        }
    };
    drop(body);
    // Rendered on a thread with a known stack, so runaway recursion ends at a guard page.
    let worker = std::thread::Builder::new()
        .name("render".into())
        .stack_size(RENDER_STACK_BYTES)
        .spawn(move || answer(&request));
    let reply = match worker.map(|w| w.join()) {
        Ok(Ok(reply)) => reply,
        Ok(Err(_)) => {
            eprintln!("nomad-init render-child: rendering panicked");
            return 1;
        }
        Err(e) => {
            eprintln!("nomad-init render-child: cannot start the render thread: {e}");
            return 1;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let sent = serde_json::to_writer(&mut stdout, &reply)
        .map_err(std::io::Error::from)
        .and_then(|()| stdout.flush());
    match sent {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("nomad-init render-child: cannot send the answer: {e}");
            1
        }
    }
}

/// Loads the pack and renders every requested job: the pure work of the child.
pub fn answer(request: &Request) -> Reply {
    let pack = match super::pack::load(&request.pack, &request.dir) {
        Ok(p) => p,
        Err(e) => return Reply::LoadFailed(e.to_string()),
    };
    let ctx = RenderContext {
        datacenters: request.datacenters.clone(),
    };
    let jobs = request
        .jobs
        .iter()
        .map(|j| {
            let decl = JobDecl {
                name: j.name.clone(),
                vars: j.vars.clone(),
                allow_drivers: Vec::new(),
                location: Location::new(&j.file, j.line, j.column),
            };
            JobReply {
                job: j.name.clone(),
                result: super::render::render(&pack, &decl, &ctx).map_err(|e| e.to_string()),
            }
        })
        .collect();
    Reply::Jobs(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packs::model::{JobFormat, RenderedJob, Source};

    fn request() -> Request {
        Request {
            pack: "p".into(),
            dir: "/nonexistent".into(),
            datacenters: vec!["dc1".into()],
            jobs: ["a", "b"]
                .iter()
                .map(|n| JobRequest {
                    name: n.to_string(),
                    vars: BTreeMap::new(),
                    file: "set.toml".into(),
                    line: 1,
                    column: 1,
                })
                .collect(),
        }
    }

    fn rendered(pack: &str, job: &str, len: usize) -> Rendered {
        Rendered {
            jobs: vec![RenderedJob {
                source: Source {
                    pack: pack.into(),
                    job: job.into(),
                    file: "jobs/x.hcl".into(),
                },
                format: JobFormat::Hcl,
                text: "x".repeat(len),
            }],
            ..Rendered::default()
        }
    }

    fn reply(entries: Vec<(&str, Result<Rendered, String>)>) -> Reply {
        Reply::Jobs(
            entries
                .into_iter()
                .map(|(job, result)| JobReply {
                    job: job.into(),
                    result,
                })
                .collect(),
        )
    }

    #[test]
    fn a_reply_is_believed_only_when_it_answers_the_request() {
        let req = request();
        let ok = reply(vec![
            ("a", Ok(rendered("p", "a", 3))),
            ("b", Err("no".into())),
        ]);
        let out = check_reply(&req, ok).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1], Err("no".to_string()));

        let short = reply(vec![("a", Ok(rendered("p", "a", 3)))]);
        assert!(check_reply(&req, short)
            .unwrap_err()
            .contains("1 results for 2"));
        let swapped = reply(vec![("b", Err("x".into())), ("a", Err("y".into()))]);
        assert!(check_reply(&req, swapped).unwrap_err().contains("job `b`"));
        let foreign = reply(vec![
            ("a", Ok(rendered("other", "a", 3))),
            ("b", Err("x".into())),
        ]);
        assert!(check_reply(&req, foreign)
            .unwrap_err()
            .contains("pack 'other'"));
        let huge = reply(vec![
            ("a", Ok(rendered("p", "a", MAX_RENDERED_BYTES + 1))),
            ("b", Err("x".into())),
        ]);
        assert!(check_reply(&req, huge).unwrap_err().contains("size limit"));
        let failed = Reply::LoadFailed("pack `p`: no jobs/".into());
        assert_eq!(check_reply(&req, failed).unwrap_err(), "pack `p`: no jobs/");
    }

    #[test]
    fn a_crash_is_explained_in_the_operators_terms() {
        use std::os::unix::process::ExitStatusExt;
        let abort = ExitStatus::from_raw(libc::SIGABRT);
        let m = explain_exit(
            abort,
            "\nthread 'render' has overflowed its stack\nfatal runtime error: stack overflow\n",
            96 << 20,
        );
        assert!(m.contains("overflowed the stack"), "{m}");
        let m = explain_exit(
            abort,
            "memory allocation of 1600000000 bytes failed\n",
            96 << 20,
        );
        assert!(m.contains("memory limit of 96 MiB"), "{m}");
        let m = explain_exit(ExitStatus::from_raw(libc::SIGKILL), "", 96 << 20);
        assert!(m.contains("killed (SIGKILL"), "{m}");
        let m = explain_exit(ExitStatus::from_raw(3 << 8), "oops\n\n", 96 << 20);
        assert_eq!(m, "the render process exited with status 3: oops");
    }

    #[test]
    fn output_past_the_cap_is_flagged_and_dropped() {
        let flag = AtomicBool::new(false);
        assert_eq!(read_capped(&b"12345"[..], 5, &flag), b"12345");
        assert!(!flag.load(Ordering::Relaxed));
        assert!(read_capped(&b"123456"[..], 5, &flag).is_empty());
        assert!(flag.load(Ordering::Relaxed));
        let mut noisy = vec![7u8; 10000];
        noisy.extend_from_slice(b"last words");
        let tail = read_tail(&noisy[..], 100);
        assert!(
            tail.len() <= 200 && tail.ends_with(b"last words"),
            "{}",
            tail.len()
        );
    }
}
