//! Validating the merge: what only the whole set can tell (missing origins, unique pack
//! names, settings that do not fit the origin), then building the model.

use std::path::Path;

use std::collections::HashMap;

use super::error::{excerpt, Problem};
use super::layer::{At, Field, Layer};
use super::source::Doc;
use crate::diag::{Location, SourceError};
use crate::packs::model::{JobDecl, Origin, PackDecl, PackSet, DEFAULT_OWNER};

/// Checks what only the merged set can tell and builds the model. `complete` is false when
/// some file was left out (unreadable or broken): a missing `_origin` may be set there.
pub(super) fn finish(
    merged: Layer,
    complete: bool,
    docs: &[Doc<'_>],
    problems: &mut Vec<Problem>,
) -> PackSet {
    let by_file: HashMap<&Path, &Doc<'_>> = docs.iter().map(|d| (d.file, d)).collect();
    let name = merged
        .name
        .set()
        .map_or_else(|| DEFAULT_OWNER.to_string(), |n| n.value.clone());
    check_empty(&merged, complete, docs, &by_file, problems);
    let mut packs = Vec::new();
    let mut names: std::collections::BTreeMap<String, (String, Location)> = Default::default();
    for (_, pack) in merged.packs {
        let origin = match pack.origin {
            Field::Set(o) => Some(o),
            Field::Bad => None,
            Field::Unset => {
                if complete {
                    problems.push(located(
                        &by_file,
                        pack.location.clone(),
                        format!(
                            "pack `{}` has no `_origin`; set it to a directory or an http(s) archive URL",
                            pack.key
                        ),
                    ));
                }
                None
            }
        };
        let local = matches!(
            origin,
            Some(At {
                value: Origin::Local(_),
                ..
            })
        );
        if local {
            if let Some(sha) = pack.sha256.set() {
                problems.push(located(
                    &by_file,
                    sha.at.clone(),
                    format!(
                        "`_sha256` in pack `{}`: _sha256 pins downloaded archives; a local origin cannot be pinned",
                        pack.key
                    ),
                ));
            }
            if let Some(auth) = pack.auth.set() {
                problems.push(located(
                    &by_file,
                    auth.at.clone(),
                    format!(
                        "`_auth` in pack `{}`: a local origin needs no credentials; _auth is for http(s) origins",
                        pack.key
                    ),
                ));
            }
        }
        let Some(origin) = origin else { continue };
        let pack_name = pack
            .name
            .set()
            .map_or_else(|| pack.key.clone(), |n| n.value.clone());
        // The name marks the jobs a pack owns in Nomad; two packs sharing one would
        // prune and protect each other's jobs.
        if let Some((first_key, first_at)) = names.get(&pack_name) {
            let at = pack.name.set().map_or(&pack.location, |n| &n.at).clone();
            problems.push(located(
                &by_file,
                at,
                format!(
                    "pack `{}` is named `{pack_name}` like pack `{first_key}` ({first_at}); pack names must be unique",
                    pack.key
                ),
            ));
            continue;
        }
        names.insert(pack_name.clone(), (pack.key.clone(), pack.location.clone()));
        let jobs = pack
            .jobs
            .into_iter()
            .map(|(_, job)| JobDecl {
                name: job.key,
                vars: job
                    .vars
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, v?)))
                    .collect(),
                allow_drivers: job
                    .allow_drivers
                    .set()
                    .map_or_else(Vec::new, |d| d.value.clone()),
                location: job.location,
            })
            .collect();
        packs.push(PackDecl {
            name: pack_name,
            origin_name: pack
                .origin_name
                .set()
                .map_or_else(|| pack.key.clone(), |n| n.value.clone()),
            sha256: pack.sha256.set().map(|s| s.value.clone()),
            auth: pack.auth.set().map(|a| a.value.clone()),
            key: pack.key,
            origin: origin.value,
            location: pack.location,
            jobs,
        });
    }
    PackSet {
        name,
        packs,
        files: docs.iter().map(|d| d.file.to_path_buf()).collect(),
    }
}

/// A problem at a location found after merging, with the line it points at.
fn located(by_file: &HashMap<&Path, &Doc<'_>>, at: Location, message: String) -> Problem {
    let line = by_file
        .get(at.file.as_path())
        .map(|doc| doc.line_text(at.line));
    Problem::Source {
        excerpt: line.and_then(|l| excerpt(l, 1)),
        error: SourceError::new(at, message),
    }
}

/// A set without packs makes the applier stop every job it manages, which a truncated or
/// emptied file must not do by accident: it has to be said with `_empty = true`.
fn check_empty(
    merged: &Layer,
    complete: bool,
    docs: &[Doc<'_>],
    by_file: &HashMap<&Path, &Doc<'_>>,
    problems: &mut Vec<Problem>,
) {
    match (&merged.empty, merged.packs.is_empty()) {
        // A left-out file may declare packs, and a key that failed to be a pack (or a mistyped
        // `_empty`) is already reported: the emptiness may be that mistake's doing.
        (Field::Unset | Field::Set(At { value: false, .. }), true)
            if complete && problems.is_empty() =>
        {
            problems.push(Problem::EmptySet {
                files: docs.iter().map(|d| d.file.to_path_buf()).collect(),
            });
        }
        (Field::Set(At { value: true, at }), false) => problems.push(located(
            by_file,
            at.clone(),
            "`_empty = true` but the set declares packs; remove `_empty` or the packs".to_string(),
        )),
        _ => {}
    }
}
