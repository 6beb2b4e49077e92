//! Human-readable output of the applier: one line per step, Nomad's own diffs, and the
//! task events that explain a failed allocation. Pure functions over API values.

use std::io::{self, Write};

use serde_json::Value;

use super::model::ObjectKey;
use super::plan::{self, Live, Step};

/// The mark and the verb of a step, as the report and the JSON lines name it.
pub fn action(step: &Step) -> (char, &'static str) {
    match step {
        Step::Create(_) => ('+', "create"),
        Step::Update { .. } => ('~', "update"),
        Step::Unchanged { .. } => ('=', "unchanged"),
        Step::Delete(_) => ('-', "delete"),
        Step::Keep { .. } => ('!', "keep"),
        Step::Refuse { .. } => ('!', "refuse"),
    }
}

/// An object's name without its kind: `web` or `prod/web` for a job, a policy's name, a
/// variable's `<namespace>:<path>`.
pub fn object_name(key: &ObjectKey) -> String {
    match key {
        ObjectKey::Job(job) => job.to_string(),
        ObjectKey::Policy(name) => name.clone(),
        ObjectKey::Variable { namespace, path } => format!("{namespace}:{path}"),
    }
}

/// How a line names an object: a job by its ID alone, the others with their kind first,
/// their name between `quote`s (`policy cache-read` in a step line, ``policy `cache-read` ``
/// in a problem).
fn named(key: &ObjectKey, quote: &str) -> String {
    match key {
        ObjectKey::Job(job) => job.to_string(),
        other => format!(
            "{} {quote}{}{quote}",
            other.kind().name(),
            object_name(other)
        ),
    }
}

/// What a problem with the object at `key` is about.
pub fn problem_subject(key: &ObjectKey) -> String {
    named(key, "`")
}

/// Why an object that exists and is not this owner's is left alone.
pub fn refusal(owner: &str, live: &Live) -> String {
    let theirs = match &live.owner {
        Some(o) => format!(" (owner: {o})"),
        None => String::new(),
    };
    format!("exists and is not managed by `{owner}`; refusing to overwrite it{theirs}")
}

/// One line per planned or performed step.
pub fn write_step(out: &mut dyn Write, step: &Step) -> io::Result<()> {
    let (mark, verb) = action(step);
    let origin = match step {
        Step::Create(d) | Step::Update { desired: d, .. } | Step::Unchanged { desired: d, .. } => {
            from(&d.source.pack, Some(&d.source.job))
        }
        Step::Delete(l) => from(l.pack.as_deref().unwrap_or("?"), l.declared_job.as_deref()),
        Step::Keep { pack, .. } => format!("(pack `{pack}` failed; left as it is)"),
        Step::Refuse { live, .. } => format!(
            "(exists, not managed by this set; owner: {})",
            live.owner.as_deref().unwrap_or("none")
        ),
    };
    let why = if plan::is_drift(step) {
        " changed outside the pack set"
    } else {
        ""
    };
    writeln!(
        out,
        "{mark} {verb:<9} {} {origin}{why}",
        named(step.key(), "")
    )
}

fn from(pack: &str, job: Option<&str>) -> String {
    match job {
        Some(job) => format!("(pack `{pack}`, job `{job}`)"),
        None => format!("(pack `{pack}`)"),
    }
}

/// Renders a Nomad plan `Diff` tree: only what changed, indented by nesting.
pub fn write_diff(out: &mut dyn Write, diff: &Value, indent: &str) -> io::Result<()> {
    for line in diff_lines(diff) {
        writeln!(out, "{indent}{line}")?;
    }
    Ok(())
}

/// The changed fields of a Nomad job diff, one line each, e.g.
/// `Task "t": Config: args[1]: "a" => "b"`.
pub fn diff_lines(diff: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    fields(diff, "", &mut lines);
    objects(diff, "", &mut lines);
    for tg in diff["TaskGroups"].as_array().into_iter().flatten() {
        if tg["Type"] == "None" {
            continue;
        }
        let group = format!("Group {:?}", tg["Name"].as_str().unwrap_or("?"));
        group_line(tg, &group, &mut lines);
        fields(tg, &group, &mut lines);
        objects(tg, &group, &mut lines);
        for task in tg["Tasks"].as_array().into_iter().flatten() {
            if task["Type"] == "None" {
                continue;
            }
            let path = format!("{group}: Task {:?}", task["Name"].as_str().unwrap_or("?"));
            group_line(task, &path, &mut lines);
            for note in task["Annotations"].as_array().into_iter().flatten() {
                if let Some(n) = note.as_str() {
                    lines.push(format!("{path}: ({n})"));
                }
            }
            fields(task, &path, &mut lines);
            objects(task, &path, &mut lines);
        }
    }
    lines
}

fn group_line(v: &Value, path: &str, lines: &mut Vec<String>) {
    match v["Type"].as_str() {
        Some("Added") => lines.push(format!("{path}: added")),
        Some("Deleted") => lines.push(format!("{path}: removed")),
        _ => {}
    }
}

fn fields(v: &Value, path: &str, lines: &mut Vec<String>) {
    for f in v["Fields"].as_array().into_iter().flatten() {
        let kind = f["Type"].as_str().unwrap_or("None");
        if kind == "None" {
            continue;
        }
        let name = f["Name"].as_str().unwrap_or("?");
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}: ")
        };
        let old = f["Old"].as_str().unwrap_or("");
        let new = f["New"].as_str().unwrap_or("");
        lines.push(match kind {
            "Added" => format!("{prefix}{name}: + {new:?}"),
            "Deleted" => format!("{prefix}{name}: - {old:?}"),
            _ => format!("{prefix}{name}: {old:?} => {new:?}"),
        });
    }
}

fn objects(v: &Value, path: &str, lines: &mut Vec<String>) {
    for o in v["Objects"].as_array().into_iter().flatten() {
        if o["Type"] == "None" {
            continue;
        }
        let name = o["Name"].as_str().unwrap_or("?");
        let nested = if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}: {name}")
        };
        fields(o, &nested, lines);
        objects(o, &nested, lines);
    }
}

/// Where the allocations of one job version stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocState {
    /// Every allocation of the version that should run is running.
    Running(usize),
    /// At least one failed; the task events that explain it.
    Failed(Vec<String>),
    Pending,
}

pub fn alloc_state(allocs: &[Value], version: u64) -> AllocState {
    let current: Vec<&Value> = allocs
        .iter()
        .filter(|a| a["JobVersion"].as_u64() == Some(version) && a["DesiredStatus"] == "run")
        .collect();
    let failed: Vec<&&Value> = current
        .iter()
        .filter(|a| matches!(a["ClientStatus"].as_str(), Some("failed" | "lost")))
        .collect();
    if !failed.is_empty() {
        let mut events = Vec::new();
        for a in failed {
            let alloc = a["ID"].as_str().unwrap_or("?");
            let short = &alloc[..alloc.len().min(8)];
            if let Some(states) = a["TaskStates"].as_object() {
                for (task, state) in states {
                    for e in state["Events"].as_array().into_iter().flatten() {
                        let msg = e["DisplayMessage"]
                            .as_str()
                            .filter(|m| !m.is_empty())
                            .or_else(|| e["DriverError"].as_str().filter(|m| !m.is_empty()))
                            .unwrap_or("");
                        events.push(format!(
                            "alloc {short} task {task}: {}: {msg}",
                            e["Type"].as_str().unwrap_or("?")
                        ));
                    }
                }
            }
            if events.is_empty() {
                events.push(format!("alloc {short}: failed with no task events"));
            }
        }
        return AllocState::Failed(events);
    }
    if !current.is_empty() && current.iter().all(|a| a["ClientStatus"] == "running") {
        return AllocState::Running(current.len());
    }
    AllocState::Pending
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn recorded(name: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../nomad-double/recordings/v1.1.2")
            .join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("recorded exchange {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn renders_the_recorded_changed_plan_diff() {
        let plan = recorded("job-plan-changed.json");
        let lines = diff_lines(&plan["response"]["body"]["Diff"]);
        assert_eq!(
            lines,
            [
                r#"Meta[nomados.hash]: + "abc""#,
                r#"Meta[nomados.pack]: + "demo""#,
                r#"Group "g": Task "t": (forces create/destroy update)"#,
                r#"Group "g": Task "t": Config: args[1]: "echo hello-from-raw-exec; sleep 3600" => "echo changed; sleep 3600""#,
            ]
        );
    }

    #[test]
    fn an_unchanged_plan_renders_nothing() {
        let plan = recorded("job-plan-unchanged.json");
        assert!(diff_lines(&plan["response"]["body"]["Diff"]).is_empty());
    }

    #[test]
    fn judges_the_newest_version_by_its_allocations() {
        let allocs = recorded("job-allocations.json");
        let allocs = allocs["response"]["body"].as_array().unwrap().clone();
        // Recorded mid-update: version 1 is pending, version 0 is being stopped.
        assert_eq!(alloc_state(&allocs, 1), AllocState::Pending);
        let mut running = allocs.clone();
        running[0]["ClientStatus"] = json!("running");
        assert_eq!(alloc_state(&running, 1), AllocState::Running(1));
    }

    #[test]
    fn failed_allocations_carry_their_task_events() {
        let allocs = [json!({
            "ID": "0123456789", "JobVersion": 3, "DesiredStatus": "run", "ClientStatus": "failed",
            "TaskStates": {"t": {"Events": [
                {"Type": "Driver Failure", "DisplayMessage": "failed to launch command: no such file"}
            ]}}
        })];
        assert_eq!(
            alloc_state(&allocs, 3),
            AllocState::Failed(vec![
                "alloc 01234567 task t: Driver Failure: failed to launch command: no such file"
                    .into()
            ])
        );
    }
}
