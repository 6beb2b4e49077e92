//! Layers: what one file sets, and merging them key by key (a later file wins).

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
    pub(super) packs: Vec<PackLayer>,
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
    pub(super) jobs: Vec<JobLayer>,
}

#[derive(Debug)]
pub(super) struct JobLayer {
    pub(super) key: String,
    /// First declaration.
    pub(super) location: Location,
    pub(super) allow_drivers: Field<Vec<String>>,
    /// Template variables in order of first declaration.
    pub(super) vars: Vec<(String, Field<Value>)>,
}

impl Layer {
    pub(super) fn merge(&mut self, later: Layer) {
        self.name.merge(later.name);
        for pack in later.packs {
            match self.packs.iter_mut().find(|p| p.key == pack.key) {
                Some(existing) => existing.merge(pack),
                None => self.packs.push(pack),
            }
        }
    }
}

impl PackLayer {
    pub(super) fn merge(&mut self, later: PackLayer) {
        self.origin.merge(later.origin);
        self.origin_name.merge(later.origin_name);
        self.name.merge(later.name);
        self.sha256.merge(later.sha256);
        self.auth.merge(later.auth);
        for job in later.jobs {
            match self.jobs.iter_mut().find(|j| j.key == job.key) {
                Some(existing) => existing.merge(job),
                None => self.jobs.push(job),
            }
        }
    }
}

impl JobLayer {
    pub(super) fn merge(&mut self, later: JobLayer) {
        self.allow_drivers.merge(later.allow_drivers);
        for (key, value) in later.vars {
            match self.vars.iter_mut().find(|(k, _)| *k == key) {
                Some((_, existing)) => existing.merge(value),
                None => self.vars.push((key, value)),
            }
        }
    }
}
