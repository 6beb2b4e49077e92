//! JSON Schema (draft 2020-12) of the user data, for editors and for generators of user
//! data. The checks in [`super::check`] stay the authority; the schema gives early hints.

use serde_json::{json, Value};

const NAME: &str = "^[A-Za-z0-9_.-]{1,128}$";

/// The schema of one user-data document.
pub fn json_schema() -> Value {
    let secret = |what: &str| json!({ "type": "string", "minLength": 1, "description": what });
    let pem =
        |what: &str| json!({ "type": "string", "pattern": "-----BEGIN ", "description": what });
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://nomados.invalid/schemas/user-data.json",
        "title": "NomadOS user data",
        "description": "What one machine is told at boot: its init config, Nomad role and \
            peers, agent config fragments, pack set, files and secrets. TOML; every table is \
            optional. See docs/machine-config.md.",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "init": {
                "title": "Init config",
                "description": "A nomados.toml table layered over the baked one (same schema; \
                    `data` acts before the user data is read and is refused; `network` only \
                    from a config drive, fw_cfg or the image's user data).",
                "type": "object",
                "properties": {
                    "hostname": { "type": "string" },
                    "nomad": { "type": "object" },
                    "packs": { "type": "object" },
                    "machine": {
                        "type": "object",
                        "additionalProperties": false,
                        "properties": {
                            "poll_secs": { "type": "integer", "minimum": 0 },
                            "memory_max_mib": { "type": "integer", "minimum": 8 },
                            "deadline_secs": { "type": "integer", "minimum": 1 }
                        }
                    }
                },
                "additionalProperties": false
            },
            "nomad": {
                "title": "Nomad role and peers",
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "role": { "enum": ["server", "client", "both"] },
                    "bootstrap_expect": {
                        "type": "integer", "minimum": 1, "maximum": 255,
                        "description": "Servers to wait for before electing a leader (servers only)."
                    },
                    "retry_join": {
                        "type": "array",
                        "maxItems": 64,
                        "items": { "type": "string", "minLength": 1, "maxLength": 512 },
                        "description": "Addresses (host or host:port) or Nomad cloud auto-join \
                            strings such as \"provider=aws tag_key=nomad tag_value=fleet\"."
                    },
                    "datacenter": { "type": "string", "pattern": NAME },
                    "region": { "type": "string", "pattern": NAME },
                    "name": { "type": "string", "pattern": NAME },
                    "meta": {
                        "type": "object",
                        "propertyNames": { "pattern": "^[A-Za-z0-9_./-]+$" },
                        "additionalProperties": { "type": "string" }
                    }
                }
            },
            "fragments": {
                "title": "Nomad agent config fragments",
                "type": "array",
                "maxItems": 64,
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["name", "content"],
                    "properties": {
                        "name": { "type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*\\.(json|hcl)$" },
                        "content": { "type": "string" }
                    }
                }
            },
            "packs": {
                "title": "Pack set",
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "inline": { "type": "string", "description": "The pack set's TOML text." },
                    "url": { "type": "string", "pattern": "^https?://" },
                    "sha256": { "type": "string", "pattern": "^[0-9a-fA-F]{64}$" }
                },
                "oneOf": [
                    { "required": ["inline"], "not": { "anyOf": [{ "required": ["url"] }, { "required": ["sha256"] }] } },
                    { "required": ["url", "sha256"], "not": { "required": ["inline"] } }
                ]
            },
            "upgrade": {
                "title": "System upgrade",
                "description": "The system this machine should run: a slot payload (the \
                    nomados.slot an image build writes). After a committed boot with Nomad \
                    healthy, the machine upgrades to it when it runs something else, and tries \
                    it once; a payload whose trial was rolled back is not tried again.",
                "type": "object",
                "additionalProperties": false,
                "required": ["url", "sha256"],
                "properties": {
                    "url": { "type": "string", "pattern": "^https?://" },
                    "sha256": { "type": "string", "pattern": "^[0-9a-fA-F]{64}$" },
                    "version": { "type": "string", "pattern": "^[!-~]{1,64}$", "description": "For messages only." }
                }
            },
            "files": {
                "title": "Files to place",
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["path"],
                    "properties": {
                        "path": { "type": "string", "pattern": "^/" },
                        "mode": { "type": "string", "pattern": "^[0-7]{1,4}$" },
                        "owner": { "type": "string", "pattern": "^(root|[0-9]+:[0-9]+)$" },
                        "content": { "type": "string" },
                        "content_base64": { "type": "string" }
                    },
                    "oneOf": [
                        { "required": ["content"], "not": { "required": ["content_base64"] } },
                        { "required": ["content_base64"], "not": { "required": ["content"] } }
                    ]
                }
            },
            "install": {
                "title": "Install to a disk",
                "description": "Write the system to a local disk instead of starting Nomad, \
                    then reboot into it (docs/install.md). `nomados.install=` on the kernel \
                    command line wins over this table.",
                "type": "object",
                "additionalProperties": false,
                "required": ["target"],
                "properties": {
                    "target": { "type": "string", "pattern": "^/dev/[^/]+$", "description": "A whole disk, like /dev/sda." },
                    "image": {
                        "type": "string",
                        "pattern": "^(https?://\\S+|iso|iso:/\\S*)$",
                        "description": "An http(s) URL of the raw or xz-compressed raw image (needs sha256), \"iso\" (default: the booted ISO's IMAGE.XZ) or \"iso:/path\"."
                    },
                    "sha256": { "type": "string", "pattern": "^[0-9a-fA-F]{64}$" },
                    "wipe": { "type": "boolean", "description": "Overwrite partitions and filesystems found on the disk." }
                }
            },
            "secrets": {
                "title": "Secrets",
                "description": "Written root-only under /run/nomados/secrets (the token to \
                    /var/lib/nomad/nomados/nomad-token); never logged.",
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "acl_bootstrap_secret": secret("The ACL bootstrap secret (a UUID)."),
                    "nomad_token": secret("A Nomad ACL token, for a node joining an existing cluster."),
                    "gossip_key": secret("Base64 of 16 or 32 bytes (nomad operator gossip keyring generate)."),
                    "tls": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["ca", "cert", "key"],
                        "properties": {
                            "ca": pem("PEM CA certificate."),
                            "cert": pem("PEM certificate of this agent."),
                            "key": pem("PEM private key of this agent."),
                            "verify_server_hostname": { "type": "boolean" }
                        }
                    }
                }
            }
        }
    })
}
