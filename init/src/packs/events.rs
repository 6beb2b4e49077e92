//! What the applier tells its user, as typed events, and the sinks that render them: text
//! for people (`nomad-init packs apply`) and JSON lines for scripts (`--json`). The applier
//! only emits events; how they look is decided here, in one place.

use std::io::{self, Write};

use serde_json::{json, Value};

use super::model::{JobKey, Mode, ObjectKey, Source, Summary};
use super::plan::{self, Step};
use super::report;

/// One thing the applier has to say.
#[derive(Debug)]
pub enum Event<'a> {
    /// A pack could not be used this run (fetch, load, render, parse, checks, clash).
    PackFailed { pack: &'a str, reason: &'a str },
    /// A step of a job, policy or variable: planned (`plan`) or performed (`apply`).
    Step(&'a Step),
    /// A job was changed outside the pack set; its step brings it back.
    Drift { job: &'a JobKey },
    /// Nomad's diff for a planned update, one changed field per line.
    Diff { job: &'a JobKey, lines: Vec<String> },
    /// Something about `subject` went wrong; the run goes on.
    Problem { subject: &'a str, message: &'a str },
    /// A line for people that scripts need not parse (notes, progress).
    Note(&'a str),
    /// A rendered job (`render`).
    Rendered { source: &'a Source, text: &'a str },
    /// The end of the run.
    Summary {
        mode: Mode,
        counts: &'a Summary,
        /// Jobs rendered from the packs that did not fail (`validate`).
        jobs: usize,
        /// Packs that did not fail (`validate`).
        packs_ok: usize,
        /// Packs that failed.
        packs_failed: usize,
    },
}

/// Where events go.
pub trait Sink: Send {
    fn emit(&mut self, event: &Event<'_>) -> io::Result<()>;
}

/// Renders events as the applier's text report.
#[derive(Debug)]
pub struct Text<W>(pub W);

/// Renders events as JSON lines, one object per event, `"event"` naming its kind.
#[derive(Debug)]
pub struct JsonLines<W>(pub W);

impl<W: Write + Send> Sink for Text<W> {
    fn emit(&mut self, event: &Event<'_>) -> io::Result<()> {
        let out = &mut self.0;
        match event {
            Event::PackFailed { pack, reason } => writeln!(out, "! pack `{pack}` failed: {reason}"),
            Event::Step(step) => report::write_step(out, step),
            // The step line says "changed outside the pack set".
            Event::Drift { .. } => Ok(()),
            Event::Diff { lines, .. } => {
                for line in lines {
                    writeln!(out, "    {line}")?;
                }
                Ok(())
            }
            Event::Problem { subject, message } => writeln!(out, "! {subject}: {message}"),
            Event::Note(text) => writeln!(out, "{text}"),
            Event::Rendered { source, text } => {
                writeln!(out, "# {source}")?;
                writeln!(out, "{}", text.trim_end())
            }
            Event::Summary {
                mode,
                counts: c,
                jobs,
                packs_ok,
                packs_failed,
            } => match mode {
                Mode::Validate => writeln!(
                    out,
                    "Validate: {} from {} valid, {} failed.",
                    plural(*jobs, "job"),
                    plural(*packs_ok, "pack"),
                    plural(*packs_failed, "pack"),
                ),
                Mode::Render => Ok(()),
                Mode::Plan => writeln!(
                    out,
                    "Plan: {} to create, {} to update, {} unchanged, {} to delete, {} failed.",
                    c.created, c.updated, c.unchanged, c.deleted, c.failed
                ),
                Mode::Apply => writeln!(out, "Apply: {c}."),
            },
        }
    }
}

impl<W: Write + Send> Sink for JsonLines<W> {
    fn emit(&mut self, event: &Event<'_>) -> io::Result<()> {
        let value = to_json(event);
        serde_json::to_writer(&mut self.0, &value)?;
        writeln!(self.0)
    }
}

/// The JSON object of one event.
pub fn to_json(event: &Event<'_>) -> Value {
    match event {
        Event::PackFailed { pack, reason } => {
            json!({"event": "pack_failed", "pack": pack, "reason": reason})
        }
        Event::Step(step) => step_json(step),
        Event::Drift { job } => {
            json!({"event": "drift", "namespace": job.namespace, "job": job.id})
        }
        Event::Diff { job, lines } => {
            json!({"event": "diff", "namespace": job.namespace, "job": job.id, "lines": lines})
        }
        Event::Problem { subject, message } => {
            json!({"event": "problem", "subject": subject, "message": message})
        }
        Event::Note(text) => json!({"event": "note", "message": text.trim()}),
        Event::Rendered { source, text } => json!({
            "event": "rendered", "pack": source.pack, "declared_job": source.job,
            "file": source.file, "text": text
        }),
        Event::Summary {
            mode,
            counts: c,
            jobs,
            packs_ok,
            packs_failed,
        } => json!({
            "event": "summary",
            "mode": mode_name(*mode),
            "created": c.created,
            "updated": c.updated,
            "unchanged": c.unchanged,
            "deleted": c.deleted,
            "failed": c.failed,
            "jobs": jobs,
            "packs_ok": packs_ok,
            "packs_failed": packs_failed,
        }),
    }
}

/// A job's step is a `step` event; a policy's or a variable's is named by its kind.
fn step_json(step: &Step) -> Value {
    let (_, action) = report::action(step);
    let (pack, declared_job) = match step {
        Step::Create(d)
        | Step::Update { desired: d, .. }
        | Step::Unchanged { desired: d, .. }
        | Step::Refuse { desired: d, .. } => {
            (Some(d.source.pack.as_str()), Some(d.source.job.as_str()))
        }
        Step::Delete(l) => (l.pack.as_deref(), l.declared_job.as_deref()),
        Step::Keep { pack, .. } => (Some(pack.as_str()), None),
    };
    match step.key() {
        ObjectKey::Job(key) => json!({
            "event": "step",
            "action": action,
            "namespace": key.namespace,
            "job": key.id,
            "pack": pack,
            "declared_job": declared_job,
            "drift": plan::is_drift(step),
        }),
        other => json!({
            "event": other.kind().name(),
            "action": action,
            "name": report::object_name(other),
            "pack": pack,
            "declared_job": declared_job,
        }),
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Validate => "validate",
        Mode::Render => "render",
        Mode::Plan => "plan",
        Mode::Apply => "apply",
    }
}

pub(crate) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(event: Event<'_>) -> (String, Value) {
        let mut text = Text(Vec::new());
        text.emit(&event).unwrap();
        let mut lines = JsonLines(Vec::new());
        lines.emit(&event).unwrap();
        let line = String::from_utf8(lines.0).unwrap();
        assert_eq!(line.matches('\n').count(), 1, "one line per event: {line}");
        (
            String::from_utf8(text.0).unwrap(),
            serde_json::from_str(&line).unwrap(),
        )
    }

    #[test]
    fn each_event_is_a_line_for_people_and_an_object_for_scripts() {
        let (t, j) = both(Event::PackFailed {
            pack: "web",
            reason: "pack `web`: boom",
        });
        assert_eq!(t, "! pack `web` failed: pack `web`: boom\n");
        assert_eq!(
            j,
            json!({"event": "pack_failed", "pack": "web", "reason": "pack `web`: boom"})
        );

        let gone = plan::Live {
            key: ObjectKey::Variable {
                namespace: "default".into(),
                path: "app/x".into(),
            },
            owner: Some("set".into()),
            pack: Some("web".into()),
            declared_job: None,
            hash: None,
            index: 0,
            child: false,
            stopped: false,
        };
        let (t, j) = both(Event::Step(&Step::Delete(gone)));
        assert_eq!(t, "- delete    variable default:app/x (pack `web`)\n");
        assert_eq!(
            j,
            json!({"event": "variable", "action": "delete", "name": "default:app/x",
                   "pack": "web", "declared_job": null})
        );

        let counts = Summary {
            created: 1,
            updated: 2,
            unchanged: 3,
            deleted: 4,
            failed: 5,
        };
        let (t, j) = both(Event::Summary {
            mode: Mode::Apply,
            counts: &counts,
            jobs: 0,
            packs_ok: 0,
            packs_failed: 0,
        });
        assert_eq!(
            t,
            "Apply: 1 created, 2 updated, 3 unchanged, 4 deleted, 5 failed.\n"
        );
        assert_eq!(j["mode"], "apply");
        assert_eq!(j["failed"], 5);

        let (t, j) = both(Event::Note("  two\nlines"));
        assert_eq!(t, "  two\nlines\n");
        assert_eq!(j["message"], "two\nlines");
    }
}
