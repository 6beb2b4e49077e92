//! JSON Schema (draft 2020-12) of one pack-set file, for editors (Taplo / Even Better TOML).
//!
//! It describes a single file of a pack-set directory, so `_origin` is optional here: another
//! file may set it. The loader ([`super::config`]) stays the authority; the schema only gives
//! early hints and completion.

use serde_json::{json, Value};

/// Names that end up in Nomad IDs and meta (pack keys, job keys, `_name`).
const NAME_PATTERN: &str = "^[A-Za-z0-9_.-]+$";
/// Pack and job keys: a name that does not start with `_` (those keys configure).
const TABLE_KEY_PATTERN: &str = "^[A-Za-z0-9.-][A-Za-z0-9_.-]*$";

/// The schema of one pack-set file.
pub fn json_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://nomados.invalid/schemas/pack-set.json",
        "title": "NomadOS pack set",
        "description": "Jobs as configuration: a table per pack, inside it a table per job. \
            Keys starting with `_` configure; other keys declare packs, jobs and template \
            variables. Files of a directory are merged key by key in lexical order. \
            See docs/pack-set.md.",
        "type": "object",
        "properties": {
            "_name": {
                "title": "Pack-set name",
                "description": "Owner recorded in the meta of every managed job (default \
                    `nomados`). Two pack sets with different names never prune each other's jobs.",
                "$ref": "#/$defs/name"
            },
            "_empty": {
                "title": "Empty on purpose",
                "description": "`true` says a set without packs is meant: applying it stops \
                    every job the set manages. Without it a set that declares no packs is an \
                    error, so an emptied file cannot do that by accident. Not allowed together \
                    with packs.",
                "type": "boolean"
            }
        },
        "propertyNames": {
            "description": "`_name`, `_empty`, or a pack name (letters, digits, `_`, `.`, `-`; \
                not starting with `_`).",
            "anyOf": [
                { "enum": ["_name", "_empty"] },
                { "pattern": TABLE_KEY_PATTERN }
            ]
        },
        "additionalProperties": { "$ref": "#/$defs/pack" },
        "$defs": {
            "name": {
                "type": "string",
                "minLength": 1,
                "pattern": NAME_PATTERN
            },
            "pack": {
                "title": "Pack",
                "description": "Where a pack comes from (`_` keys) and the jobs declared from \
                    it (one table per job). `_origin` is required once all files are merged.",
                "type": "object",
                "properties": {
                    "_origin": { "$ref": "#/$defs/origin" },
                    "_origin-name": {
                        "title": "Name at the origin",
                        "description": "The pack's directory name inside the origin (default: \
                            the pack's key).",
                        "type": "string",
                        "minLength": 1,
                        "pattern": NAME_PATTERN,
                        "not": { "enum": [".", ".."] }
                    },
                    "_name": {
                        "title": "Pack name",
                        "description": "Name templates see as `pack` and meta records \
                            (default: the pack's key).",
                        "$ref": "#/$defs/name"
                    },
                    "_sha256": {
                        "title": "Archive pin",
                        "description": "SHA-256 of the downloaded archive, 64 lowercase hex \
                            digits. Only for http(s) origins.",
                        "type": "string",
                        "pattern": "^[0-9a-f]{64}$"
                    },
                    "_auth": { "$ref": "#/$defs/auth" }
                },
                "propertyNames": {
                    "description": "A pack setting, or a job name (letters, digits, `_`, `.`, \
                        `-`; not starting with `_`).",
                    "anyOf": [
                        { "enum": ["_origin", "_origin-name", "_name", "_sha256", "_auth"] },
                        { "pattern": TABLE_KEY_PATTERN }
                    ]
                },
                "additionalProperties": { "$ref": "#/$defs/job" },
                "if": {
                    "required": ["_origin"],
                    "properties": { "_origin": { "not": { "pattern": "^[hH][tT][tT][pP][sS]?://" } } }
                },
                "then": {
                    "description": "A local origin is neither downloaded nor pinned.",
                    "properties": { "_sha256": false, "_auth": false }
                }
            },
            "origin": {
                "title": "Origin",
                "description": "Where the pack comes from: a directory (a path, relative to \
                    this file's directory, or a file:/// URL) or an http(s) URL of a .tar.xz, \
                    .txz, .tar.gz, .tgz or .tar archive. Never put credentials in the URL; use \
                    `_auth`.",
                "type": "string",
                "minLength": 1,
                "anyOf": [
                    {
                        "title": "http(s) archive",
                        "pattern": archive_url_pattern()
                    },
                    { "title": "file:// URL", "pattern": "^[fF][iI][lL][eE]:///" },
                    { "title": "directory", "not": { "pattern": "://" } }
                ]
            },
            "auth": {
                "title": "Origin credentials",
                "description": "How to authenticate downloads. The secret is read at fetch time \
                    from `file` (relative to this file's directory) or the environment variable \
                    `env`; it is never written here.",
                "type": "object",
                "properties": {
                    "type": {
                        "description": "`bearer`: Authorization: Bearer <secret>. `basic`: HTTP \
                            basic; the secret is the password when `username` is set, \
                            `user:password` otherwise.",
                        "enum": ["bearer", "basic"]
                    },
                    "file": {
                        "description": "File holding the secret (a trailing newline is stripped).",
                        "type": "string",
                        "minLength": 1
                    },
                    "env": {
                        "description": "Environment variable holding the secret.",
                        "type": "string",
                        "minLength": 1
                    },
                    "username": {
                        "description": "User name for `basic`.",
                        "type": "string",
                        "minLength": 1
                    }
                },
                "required": ["type"],
                "additionalProperties": false,
                "oneOf": [
                    { "required": ["file"] },
                    { "required": ["env"] }
                ],
                "if": { "properties": { "type": { "const": "bearer" } } },
                "then": { "not": { "required": ["username"] } }
            },
            "job": {
                "title": "Job",
                "description": "Instantiates every job file of the pack once with these \
                    template variables (any keys not starting with `_`; templates also see \
                    `pack` and `jobname`).",
                "type": "object",
                "properties": {
                    "_allow-drivers": {
                        "title": "Extra task drivers",
                        "description": "Task drivers allowed besides exec and raw_exec: an \
                            explicit opt-out of the default restriction.",
                        "type": "array",
                        "items": { "type": "string", "minLength": 1 }
                    }
                },
                "propertyNames": {
                    "description": "`_allow-drivers` or a template variable (not starting \
                        with `_`).",
                    "anyOf": [
                        { "const": "_allow-drivers" },
                        { "pattern": "^[^_]" }
                    ]
                }
            }
        }
    })
}

/// `^https?://HOST/...(.tar.xz|...)` with an optional query or fragment; suffixes match in
/// any case, like the loader (JSON Schema regexes have no case-insensitive flag).
fn archive_url_pattern() -> String {
    let any_case = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphabetic() {
                    format!("[{}{}]", c.to_ascii_lowercase(), c.to_ascii_uppercase())
                } else if c == '.' {
                    "\\.".to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    };
    let suffixes = ["tar.xz", "txz", "tar.gz", "tgz", "tar"]
        .iter()
        .map(|s| any_case(s))
        .collect::<Vec<_>>()
        .join("|");
    format!(
        "^{}{}?://[^/?#@]+/[^?#]*\\.({suffixes})([?#].*)?$",
        any_case("http"),
        any_case("s")
    )
}
