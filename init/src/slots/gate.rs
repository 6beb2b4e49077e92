//! The health gate of a trial boot, pure: given what PID 1 has seen so far, pass, wait or
//! fail. A trial passes when Nomad's agent is healthy, this node is `ready`, the pack
//! set's last apply ended with no failed pack and every job of the set that should run on
//! this node runs here ([`super::allocs`]); it fails at the deadline, or as soon as an apply
//! ends with a failure (the pack set is the same at every retry of this boot), one of those
//! allocations failed, or Nomad could not place one of the jobs here.

pub use super::allocs::AllocsSeen;

/// What the last pack apply of this boot said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacksSeen {
    /// No apply has ended yet.
    NotYet,
    /// An apply ended with every pack applied.
    Applied,
    /// An apply ended with a failure; the text says how.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub nomad_healthy: bool,
    /// This node's `Status` (`ready`, `initializing`, `down`), None while unknown.
    pub node_status: Option<String>,
    pub packs: PacksSeen,
    /// This node's allocations of the pack set's jobs (read once the set is applied).
    pub allocs: AllocsSeen,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Wait,
    Fail(String),
}

/// The trial's deadline when nothing sets it (`nomados.trial_deadline=` on the command
/// line): long enough for Nomad to start and a pack set to be applied on a slow machine.
pub const DEFAULT_DEADLINE_SECS: u64 = 900;

pub fn evaluate(o: &Observed, deadline_passed: bool) -> Verdict {
    if let PacksSeen::Failed(why) = &o.packs {
        return Verdict::Fail(format!("the pack set failed to apply: {why}"));
    }
    if let AllocsSeen::Failed(why) = &o.allocs {
        return Verdict::Fail(format!("the pack set's jobs do not run here: {why}"));
    }
    let ready = o.node_status.as_deref() == Some("ready");
    let running = matches!(o.allocs, AllocsSeen::Running(_));
    if o.nomad_healthy && ready && o.packs == PacksSeen::Applied && running {
        return Verdict::Pass;
    }
    if !deadline_passed {
        return Verdict::Wait;
    }
    let mut missing = Vec::new();
    if !o.nomad_healthy {
        missing.push("Nomad's agent never became healthy".to_string());
    }
    if !ready {
        missing.push(match &o.node_status {
            Some(s) => format!("this node is `{s}`, not `ready`"),
            None => "this node never registered".to_string(),
        });
    }
    if o.packs == PacksSeen::NotYet {
        missing.push("the pack set was never applied".to_string());
    }
    match &o.allocs {
        AllocsSeen::Starting(which) => {
            missing.push(format!("the pack set's jobs never all ran here: {which}"))
        }
        AllocsSeen::Unknown if o.packs == PacksSeen::Applied => missing
            .push("the pack set's jobs and this node's allocations could not be read".to_string()),
        _ => {}
    }
    Verdict::Fail(format!(
        "health gate deadline passed: {}",
        missing.join("; ")
    ))
}

/// `nomados.trial_deadline=SECS` from the kernel command line (bounded to 1 minute .. 1 day).
pub fn deadline_secs(cmdline: &str) -> u64 {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|w| w.strip_prefix("nomados.trial_deadline="))
        .next_back()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(DEFAULT_DEADLINE_SECS, |s| s.clamp(60, 86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(h: bool, node: Option<&str>, packs: PacksSeen) -> Observed {
        Observed {
            nomad_healthy: h,
            node_status: node.map(str::to_string),
            packs,
            allocs: AllocsSeen::Running(1),
        }
    }

    #[test]
    fn passes_only_with_all_three() {
        assert_eq!(
            evaluate(&seen(true, Some("ready"), PacksSeen::Applied), false),
            Verdict::Pass
        );
        assert_eq!(
            evaluate(&seen(true, Some("ready"), PacksSeen::Applied), true),
            Verdict::Pass
        );
        for o in [
            seen(false, Some("ready"), PacksSeen::Applied),
            seen(true, Some("initializing"), PacksSeen::Applied),
            seen(true, None, PacksSeen::Applied),
            seen(true, Some("ready"), PacksSeen::NotYet),
        ] {
            assert_eq!(evaluate(&o, false), Verdict::Wait, "{o:?}");
            assert!(matches!(evaluate(&o, true), Verdict::Fail(_)), "{o:?}");
        }
    }

    #[test]
    fn a_failed_apply_fails_at_once_and_deadline_failures_say_what_was_missing() {
        let f = evaluate(
            &seen(true, Some("ready"), PacksSeen::Failed("exit 1".into())),
            false,
        );
        assert_eq!(
            f,
            Verdict::Fail("the pack set failed to apply: exit 1".into())
        );
        let Verdict::Fail(why) = evaluate(&seen(false, None, PacksSeen::NotYet), true) else {
            panic!()
        };
        assert!(why.contains("never became healthy"), "{why}");
        assert!(why.contains("never registered"), "{why}");
        assert!(why.contains("never applied"), "{why}");
        let Verdict::Fail(why) = evaluate(&seen(true, Some("down"), PacksSeen::Applied), true)
        else {
            panic!()
        };
        assert!(
            why.contains("`down`") && !why.contains("Nomad's agent"),
            "{why}"
        );
    }

    #[test]
    fn the_sets_allocations_must_run_and_a_failed_one_fails_at_once() {
        let with = |allocs| Observed {
            allocs,
            ..seen(true, Some("ready"), PacksSeen::Applied)
        };
        assert_eq!(
            evaluate(&with(AllocsSeen::Running(0)), false),
            Verdict::Pass
        );
        for a in [
            AllocsSeen::Unknown,
            AllocsSeen::Starting("web.g[0] (pending)".into()),
        ] {
            assert_eq!(evaluate(&with(a.clone()), false), Verdict::Wait, "{a:?}");
        }
        let Verdict::Fail(why) = evaluate(
            &with(AllocsSeen::Starting("web.g[0] (pending)".into())),
            true,
        ) else {
            panic!()
        };
        assert!(
            why.contains("never all ran here: web.g[0] (pending)"),
            "{why}"
        );
        let Verdict::Fail(why) = evaluate(&with(AllocsSeen::Unknown), true) else {
            panic!()
        };
        assert!(why.contains("could not be read"), "{why}");
        assert_eq!(
            evaluate(
                &with(AllocsSeen::Failed(
                    "allocation web.g[0] of job `web` failed: task `t`: exit 1".into()
                )),
                false
            ),
            Verdict::Fail(
                "the pack set's jobs do not run here: allocation web.g[0] of job `web` failed: task `t`: exit 1"
                    .into()
            )
        );
    }

    #[test]
    fn deadline_from_the_command_line_is_bounded() {
        assert_eq!(deadline_secs("root=x"), DEFAULT_DEADLINE_SECS);
        assert_eq!(deadline_secs("nomados.trial_deadline=300"), 300);
        assert_eq!(deadline_secs("nomados.trial_deadline=1"), 60);
        assert_eq!(
            deadline_secs("nomados.trial_deadline=x"),
            DEFAULT_DEADLINE_SECS
        );
    }
}
