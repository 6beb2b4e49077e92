//! Layering the user data's init config over the baked `nomados.toml` (pure): only the
//! keys the user data wrote change, tables merge key by key.

use std::path::Path;

use crate::boot::config::{self, InitConfig};
use crate::diag::SourceError;

/// Merges `over` into `base`: tables key by key, anything else replaced.
pub fn layer(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => layer(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The init config from the baked text (`None`: built-in defaults) with `override_text`
/// (the rendered `nomados.toml` of the machine directory) layered on, checked as a whole.
pub fn layered(
    baked: Option<&str>,
    defaults: &InitConfig,
    override_text: &str,
) -> Result<InitConfig, SourceError> {
    let name = Path::new("nomados.toml + user data");
    let mut base: toml::Table = match baked {
        Some(text) => toml::from_str(text).map_err(|e| {
            SourceError::new(
                crate::diag::Location::new("nomados.toml", 1, 1),
                e.message().to_string(),
            )
        })?,
        // The defaults as a table (paths already placed under the root in test mode).
        None => toml::Table::try_from(defaults).unwrap_or_default(),
    };
    let over: toml::Table = toml::from_str(override_text).map_err(|e| {
        SourceError::new(
            crate::diag::Location::new("user data [init]", 1, 1),
            e.message().to_string(),
        )
    })?;
    layer(&mut base, &over);
    let text = toml::to_string(&base).unwrap_or_default();
    config::parse(name, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_written_keys_change() {
        let baked = "[nomad]\nbinary = \"/opt/nomad\"\nstop_timeout_secs = 9\n[packs]\ninterval_secs = 60\n";
        let over = "hostname = \"n1\"\n[nomad]\nconfig = \"/run/nomados/machine/agent.json\"\n";
        let c = layered(Some(baked), &InitConfig::default(), over).unwrap();
        assert_eq!(c.hostname.as_deref(), Some("n1"));
        assert_eq!(c.nomad.binary, Path::new("/opt/nomad"));
        assert_eq!(c.nomad.stop_timeout_secs, 9);
        assert_eq!(c.nomad.config, Path::new("/run/nomados/machine/agent.json"));
        assert_eq!(c.packs.interval_secs, 60);
        // Without a baked file, the defaults are the base.
        let c = layered(None, &InitConfig::default(), over).unwrap();
        assert_eq!(c.nomad.binary, Path::new("/usr/bin/nomad"));
        assert_eq!(c.hostname.as_deref(), Some("n1"));
    }

    #[test]
    fn a_combination_that_does_not_hold_is_an_error() {
        let baked = "[nomad]\nclient_cert_file = \"/a.pem\"\nclient_key_file = \"/k.pem\"\n";
        let over = "[nomad]\nclient_key_file = \"\"\n";
        assert!(layered(Some(baked), &InitConfig::default(), over).is_err());
        assert!(layered(Some(baked), &InitConfig::default(), "[nomad\n").is_err());
    }
}
