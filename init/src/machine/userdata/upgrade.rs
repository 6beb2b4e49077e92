//! `[upgrade]`: checks of the system the machine should run (docs/machine-config.md).

use toml::Spanned;

use super::model::UpgradeSpec;
use crate::slots::wanted::Wanted;

/// The longest `version` accepted (it only names the payload in messages).
const VERSION_MAX: usize = 64;

/// The request, or each problem with the span it is about.
pub(super) fn check_upgrade(
    u: &Spanned<UpgradeSpec>,
) -> Result<Wanted, Vec<(std::ops::Range<usize>, String)>> {
    let u = u.get_ref();
    let mut errors = Vec::new();
    let url = u.url.get_ref();
    if !matches!(
        url::Url::parse(url).as_ref().map(url::Url::scheme),
        Ok("https" | "http")
    ) {
        errors.push((
            u.url.span(),
            "upgrade.url must be an http:// or https:// URL".to_string(),
        ));
    }
    let sha256 = u.sha256.get_ref().to_ascii_lowercase();
    if !crate::slots::wanted::is_sha256(&sha256) {
        errors.push((
            u.sha256.span(),
            "upgrade.sha256 must be 64 hexadecimal digits (the payload's, from the build manifest)"
                .to_string(),
        ));
    }
    if let Some(v) = &u.version {
        let text = v.get_ref();
        if text.is_empty()
            || text.len() > VERSION_MAX
            || !text.chars().all(|ch| ch.is_ascii_graphic())
        {
            errors.push((
                v.span(),
                format!("upgrade.version must be 1 to {VERSION_MAX} printable characters without spaces"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Wanted {
        url: url.clone(),
        sha256,
        version: u.version.as_ref().map(|v| v.get_ref().clone()),
    })
}
