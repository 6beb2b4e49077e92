//! GRUB's environment block: exactly 1024 bytes, `# GRUB Environment Block\n`, then
//! `name=value\n` lines, padded with `#`. GRUB's `save_env` rewrites it in place (it never
//! allocates), so we do the same: same size, same file.

pub const GRUBENV_BYTES: usize = 1024;
const HEADER: &str = "# GRUB Environment Block\n";

/// The variables of a block, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GrubEnv {
    pub vars: Vec<(String, String)>,
}

impl GrubEnv {
    pub fn parse(bytes: &[u8]) -> Result<GrubEnv, String> {
        if bytes.len() != GRUBENV_BYTES {
            return Err(format!(
                "a GRUB environment block is {GRUBENV_BYTES} bytes; this one is {}",
                bytes.len()
            ));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| format!("GRUB environment block is not UTF-8: {e}"))?;
        let body = text
            .strip_prefix(HEADER)
            .ok_or("GRUB environment block does not start with its header")?;
        let mut vars = Vec::new();
        for (n, line) in body.split('\n').enumerate() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("GRUB environment block line {}: no `=`", n + 2))?;
            vars.push((k.to_string(), v.to_string()));
        }
        Ok(GrubEnv { vars })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets a variable (an empty value keeps the name, as `save_env` of an empty one does).
    pub fn set(&mut self, name: &str, value: &str) {
        match self.vars.iter_mut().find(|(k, _)| k == name) {
            Some(v) => v.1 = value.to_string(),
            None => self.vars.push((name.to_string(), value.to_string())),
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let mut s = HEADER.to_string();
        for (k, v) in &self.vars {
            let bad = |x: &str| x.contains(['\n', '\\', '#']) || x.contains(char::is_control);
            if k.is_empty() || k.contains('=') || bad(k) || bad(v) {
                return Err(format!(
                    "cannot store `{k}={v}` in a GRUB environment block"
                ));
            }
            s += &format!("{k}={v}\n");
        }
        if s.len() > GRUBENV_BYTES {
            return Err(format!(
                "GRUB environment needs {} bytes; the block has {GRUBENV_BYTES}",
                s.len()
            ));
        }
        let mut b = s.into_bytes();
        b.resize(GRUBENV_BYTES, b'#');
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_grub_writes_and_writes_the_same_shape() {
        let mut grub = b"# GRUB Environment Block\nnext_entry=\nsaved_entry=x\n".to_vec();
        grub.resize(1024, b'#');
        let mut env = GrubEnv::parse(&grub).unwrap();
        assert_eq!(env.get("next_entry"), Some(""));
        assert_eq!(env.get("saved_entry"), Some("x"));
        assert_eq!(
            env.encode().unwrap(),
            grub,
            "unchanged block encodes byte for byte"
        );
        env.set("next_entry", "slot-b");
        let out = env.encode().unwrap();
        assert_eq!(out.len(), 1024);
        assert!(out.starts_with(b"# GRUB Environment Block\nnext_entry=slot-b\nsaved_entry=x\n#"));
        assert_eq!(
            GrubEnv::parse(&out).unwrap().get("next_entry"),
            Some("slot-b")
        );
    }

    #[test]
    fn bad_blocks_and_values_are_refused_with_the_reason() {
        assert!(GrubEnv::parse(b"# GRUB Environment Block\n")
            .unwrap_err()
            .contains("1024"));
        let mut junk = b"hello".to_vec();
        junk.resize(1024, b'#');
        assert!(GrubEnv::parse(&junk).unwrap_err().contains("header"));
        let mut env = GrubEnv::default();
        env.set("next_entry", "a\nb");
        assert!(env.encode().is_err());
        let mut big = GrubEnv::default();
        big.set("x", &"y".repeat(1000));
        assert!(big.encode().unwrap_err().contains("1024"));
    }
}
