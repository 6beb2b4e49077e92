//! `nomados.*` options on the kernel command line (pure parser).

use std::path::PathBuf;

use crate::log::Level;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
}

/// What the kernel command line asks of the init.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelOptions {
    /// `nomados.config=/path`: the init config file.
    pub config: Option<PathBuf>,
    /// `nomados.config=https://...`: where this machine's user data is fetched from.
    pub config_url: Option<String>,
    /// `nomados.config.sha256=<hex>`: what the fetched user data must hash to.
    pub config_sha256: Option<String>,
    /// `nomados.debug=1`: debug logging and the emergency shell after a boot failure.
    pub debug: bool,
    /// `nomados.shell=1`: with debug, start the emergency shell even when boot went well.
    pub shell: bool,
    /// `nomados.log=json|plain`.
    pub log: Option<LogFormat>,
    /// `nomados.loglevel=debug|info|warn|error`.
    pub loglevel: Option<Level>,
    /// Problems to report once logging is set up (unknown options, bad values).
    pub warnings: Vec<String>,
}

/// Splits the command line into words; double quotes group spaces (`a="b c"`).
pub fn words(cmdline: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

fn parse_bool(v: Option<&str>) -> Option<bool> {
    match v {
        None | Some("1" | "yes" | "true" | "on") => Some(true),
        Some("0" | "no" | "false" | "off") => Some(false),
        _ => None,
    }
}

/// Parses the `nomados.*` words of `cmdline`; other words belong to the kernel and are ignored.
pub fn parse(cmdline: &str) -> KernelOptions {
    let mut o = KernelOptions::default();
    for word in words(cmdline) {
        let Some(opt) = word.strip_prefix("nomados.") else {
            continue;
        };
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        // A config URL may carry credentials: never repeat them in a warning.
        let shown = crate::redact::url(&word);
        let bad = |o: &mut KernelOptions, expected: &str| {
            o.warnings.push(format!(
                "kernel command line: {shown}: expected {expected}; option ignored"
            ))
        };
        match key {
            "config" => match value {
                Some(v) if v.starts_with('/') => o.config = Some(PathBuf::from(v)),
                Some(v) if v.starts_with("http://") || v.starts_with("https://") => {
                    o.config_url = Some(v.to_string())
                }
                _ => bad(&mut o, "an absolute path or an http(s):// URL"),
            },
            "config.sha256" => match value {
                Some(v) if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    o.config_sha256 = Some(v.to_ascii_lowercase())
                }
                _ => bad(&mut o, "64 hexadecimal digits"),
            },
            "debug" => match parse_bool(value) {
                Some(b) => o.debug = b,
                None => bad(&mut o, "0 or 1"),
            },
            "shell" => match parse_bool(value) {
                Some(b) => o.shell = b,
                None => bad(&mut o, "0 or 1"),
            },
            "log" => match value {
                Some("json") => o.log = Some(LogFormat::Json),
                Some("plain") => o.log = Some(LogFormat::Plain),
                _ => bad(&mut o, "json or plain"),
            },
            "loglevel" => match value {
                Some("debug") => o.loglevel = Some(Level::Debug),
                Some("info") => o.loglevel = Some(Level::Info),
                Some("warn") => o.loglevel = Some(Level::Warn),
                Some("error") => o.loglevel = Some(Level::Error),
                _ => bad(&mut o, "debug, info, warn or error"),
            },
            // Read by `crate::install::options`.
            "install" => {}
            k if k.starts_with("install.") => {}
            _ => o.warnings.push(format!(
                "kernel command line: unknown option {shown}; ignored"
            )),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nomados_options_and_ignores_kernel_ones() {
        let o = parse(
            "BOOT_IMAGE=/vmlinuz console=ttyS0 nomados.config=/etc/x.toml nomados.debug=1 \
             nomados.log=json nomados.loglevel=debug quiet\n",
        );
        assert_eq!(o.config, Some(PathBuf::from("/etc/x.toml")));
        assert!(o.debug);
        assert!(!o.shell);
        assert_eq!(o.log, Some(LogFormat::Json));
        assert_eq!(o.loglevel, Some(Level::Debug));
        assert!(o.warnings.is_empty(), "{:?}", o.warnings);
    }

    #[test]
    fn unknown_and_invalid_options_are_warnings_not_errors() {
        let o = parse("nomados.colour=red nomados.log=xml nomados.config=relative nomados.debug");
        assert_eq!(o.warnings.len(), 3, "{:?}", o.warnings);
        assert!(o.warnings[0].contains("unknown option nomados.colour=red"));
        assert!(o.warnings[1].contains("nomados.log=xml: expected json or plain"));
        assert!(o.warnings[2].contains("expected an absolute path or an http(s):// URL"));
        assert!(o.debug, "a bare flag means on");
        assert_eq!(o.log, None);
        assert_eq!(o.config, None);
    }

    #[test]
    fn a_config_url_and_its_sha256_are_the_user_datas_source() {
        let sha = "AB".repeat(32);
        let o = parse(&format!(
            "nomados.config=https://cfg.example/m1.toml?sig=x nomados.config.sha256={sha}"
        ));
        assert_eq!(
            o.config_url.as_deref(),
            Some("https://cfg.example/m1.toml?sig=x")
        );
        assert_eq!(o.config_sha256, Some("ab".repeat(32)));
        assert_eq!(o.config, None, "a URL is not the init config path");
        assert!(o.warnings.is_empty(), "{:?}", o.warnings);
        let o = parse("nomados.config.sha256=xyz nomados.config=ftp://u:pw@h/x");
        assert_eq!(o.warnings.len(), 2, "{:?}", o.warnings);
        assert!(o.warnings[0].contains("64 hexadecimal digits"));
        assert!(!o.warnings[1].contains("pw"), "{:?}", o.warnings);
        assert_eq!((o.config_url, o.config_sha256), (None, None));
    }

    #[test]
    fn quotes_group_words_and_later_options_win() {
        let o = parse(
            r#"foo="a nomados.debug=1 b" nomados.config="/a b.toml" nomados.log=json nomados.log=plain"#,
        );
        assert!(!o.debug, "inside quotes it belongs to foo");
        assert_eq!(o.config, Some(PathBuf::from("/a b.toml")));
        assert_eq!(o.log, Some(LogFormat::Plain));
        assert_eq!(parse(""), KernelOptions::default());
    }
}
