//! Layers: what one file sets, and merging them key by key (a later file wins).

use std::collections::HashMap;

use serde_json::Value;

use crate::diag::Location;
use crate::packs::model::{Auth, Origin};

/// A value and where it was (last) set.
#[derive(Debug, Clone)]
pub(super) struct At<T> {
    pub(super) value: T,
    pub(super) at: Location,
}

/// A setting of one file or of the merge so far.
#[derive(Debug, Clone, Default)]
pub(super) enum Field<T> {
    #[default]
    Unset,
    /// Set, but to something wrong (already reported): later checks stay quiet about it.
    Bad,
    Set(At<T>),
}

impl<T> Field<T> {
    /// A later file's setting replaces this one whole.
    pub(super) fn merge(&mut self, later: Field<T>) {
        if !matches!(later, Field::Unset) {
            *self = later;
        }
    }

    pub(super) fn set(&self) -> Option<&At<T>> {
        match self {
            Field::Set(at) => Some(at),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Layer {
    pub(super) name: Field<String>,
    /// `_empty = true`: a set without packs is meant, not an accident.
    pub(super) empty: Field<bool>,
    pub(super) packs: Keyed<PackLayer>,
}

#[derive(Debug)]
pub(super) struct PackLayer {
    pub(super) key: String,
    /// First declaration.
    pub(super) location: Location,
    pub(super) origin: Field<Origin>,
    pub(super) origin_name: Field<String>,
    pub(super) name: Field<String>,
    pub(super) sha256: Field<String>,
    pub(super) auth: Field<Auth>,
    pub(super) jobs: Keyed<JobLayer>,
}

#[derive(Debug)]
pub(super) struct JobLayer {
    pub(super) key: String,
    /// First declaration.
    pub(super) location: Location,
    pub(super) allow_drivers: Field<Vec<String>>,
    /// Template variables in order of first declaration.
    /// None for a value already reported as wrong. No location: nothing checks a variable
    /// after merging, and placing hundreds of thousands of them is most of a large load.
    pub(super) vars: Keyed<Option<Value>>,
}

/// What a later layer does to an earlier setting of the same key.
pub(super) trait Merge {
    fn merge(&mut self, later: Self);
}

impl<T> Merge for Field<T> {
    fn merge(&mut self, later: Field<T>) {
        Field::merge(self, later);
    }
}

/// A later variable replaces the earlier one whole, a wrong one included.
impl Merge for Option<Value> {
    fn merge(&mut self, later: Self) {
        *self = later;
    }
}

/// Entries in order of first declaration, found by key through a hash index: merging many
/// packs, jobs or variables stays linear (a scan of the entries per key made it quadratic).
#[derive(Debug)]
pub(super) struct Keyed<T> {
    entries: Vec<(String, T)>,
    index: HashMap<String, usize>,
}

impl<T> Default for Keyed<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<T: Merge> Keyed<T> {
    /// Adds `value` under `key`, or merges it into the entry already there.
    pub(super) fn insert(&mut self, key: String, value: T) {
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1.merge(value),
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
            }
        }
    }
}

impl<T> Keyed<T> {
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<T> IntoIterator for Keyed<T> {
    type Item = (String, T);
    type IntoIter = std::vec::IntoIter<(String, T)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl Layer {
    pub(super) fn merge(&mut self, later: Layer) {
        self.name.merge(later.name);
        self.empty.merge(later.empty);
        for (key, pack) in later.packs {
            self.packs.insert(key, pack);
        }
    }
}

impl Merge for PackLayer {
    fn merge(&mut self, later: PackLayer) {
        self.origin.merge(later.origin);
        self.origin_name.merge(later.origin_name);
        self.name.merge(later.name);
        self.sha256.merge(later.sha256);
        self.auth.merge(later.auth);
        for (key, job) in later.jobs {
            self.jobs.insert(key, job);
        }
    }
}

impl Merge for JobLayer {
    fn merge(&mut self, later: JobLayer) {
        self.allow_drivers.merge(later.allow_drivers);
        for (key, value) in later.vars {
            self.vars.insert(key, value);
        }
    }
}
