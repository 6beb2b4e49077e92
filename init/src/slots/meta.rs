//! What the slots tell Nomad about this node (pure): the slot it runs and, after a rolled
//! back upgrade, why; as client `meta`, so an operator sees a fleet's rollbacks with
//! `nomad node status -verbose` and jobs can be constrained by the slot.

use serde_json::{json, Value};

use super::{classify, Boot, Record, Slot};

/// Meta key: the slot this node runs (`a` or `b`).
pub const SLOT_KEY: &str = "nomados.slot";
/// Meta key: why the last upgrade was rolled back (absent when none was).
pub const ROLLBACK_KEY: &str = "nomados.upgrade_rolled_back";
/// The agent config fragment's file name, in [`FRAGMENT_DIR`].
pub const FRAGMENT_FILE: &str = "20-nomados-slot.json";
/// The directory Nomad is given with `-config=` for this fragment (tmpfs, written each boot).
pub const FRAGMENT_DIR: &str = "/run/nomados/slots.d";

/// The rollback this boot must report: one the loader just did (a trial that never got to
/// commit), else the one the record keeps; none while a trial is under way.
pub fn rollback_reason(record: &Record, booted: Slot) -> Option<String> {
    match classify(record, booted) {
        Boot::FellBack { reason, .. } => Some(format!("slot {}: {reason}", booted.other())),
        Boot::Trial(_) => None,
        Boot::Normal | Boot::Unexpected(_) => record.rolled_back.clone(),
    }
}

/// The Nomad agent config fragment carrying the slot facts as client meta.
pub fn fragment(booted: Slot, rolled_back: Option<&str>) -> Value {
    let mut meta = serde_json::Map::new();
    meta.insert(SLOT_KEY.into(), json!(booted.letter()));
    if let Some(why) = rolled_back {
        meta.insert(ROLLBACK_KEY.into(), json!(why));
    }
    json!({ "client": { "meta": meta } })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(default: Slot, trial: Option<Slot>, rolled_back: Option<&str>) -> Record {
        Record {
            default,
            trial,
            rolled_back: rolled_back.map(str::to_string),
        }
    }

    #[test]
    fn a_trial_that_never_committed_is_reported_on_the_old_slot() {
        let r = record(Slot::A, Some(Slot::B), None);
        let why = rollback_reason(&r, Slot::A).unwrap();
        assert!(
            why.starts_with("slot b: the trial boot of slot b never committed"),
            "{why}"
        );
    }

    #[test]
    fn a_kept_reason_is_reported_until_an_upgrade_commits_and_none_during_a_trial() {
        let failed = record(Slot::A, None, Some("pack web failed"));
        assert_eq!(
            rollback_reason(&failed, Slot::A).as_deref(),
            Some("pack web failed")
        );
        let armed = failed.arm_trial(Slot::B);
        assert_eq!(rollback_reason(&armed, Slot::B), None);
        assert_eq!(rollback_reason(&armed.commit(Slot::B), Slot::B), None);
    }

    #[test]
    fn the_fragment_is_client_meta_with_the_slot_and_only_a_real_reason() {
        assert_eq!(
            fragment(Slot::B, None),
            json!({"client": {"meta": {"nomados.slot": "b"}}})
        );
        let f = fragment(Slot::A, Some("why"));
        assert_eq!(f["client"]["meta"][ROLLBACK_KEY], "why");
        assert_eq!(f["client"]["meta"][SLOT_KEY], "a");
    }
}
