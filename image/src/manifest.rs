//! The build manifest (`out/manifest.json`) and the human size table.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::layout::Layout;

#[derive(Debug, Serialize)]
pub struct Manifest {
    pub nomados_version: String,
    pub kernel: FileInfo,
    pub cmdline: String,
    pub root_read_only: bool,
    pub rootfs: Vec<PartRow>,
    pub rootfs_bytes: u64,
    pub disk: Layout,
    pub images: Vec<ImageInfo>,
}

#[derive(Debug, Serialize)]
pub struct FileInfo {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct PartRow {
    pub part: String,
    pub files: usize,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct ImageInfo {
    pub format: String,
    pub file: String,
    /// Bytes the file takes in the directory listing.
    pub bytes: u64,
    /// Bytes actually allocated (raw images are sparse).
    pub allocated_bytes: u64,
    pub sha256: String,
}

/// Writes JSON atomically: temp file in the same directory, then rename.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let mut s = serde_json::to_string_pretty(value)?;
    s.push('\n');
    std::fs::write(&tmp, s).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}

/// Bytes in binary units with one decimal: `1.5 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A left/right aligned text table with a title row.
pub fn table(title: &str, header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(cols) {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::from(" ");
        for (i, c) in cells.iter().enumerate() {
            let pad = w[i] - c.chars().count();
            if i == 0 {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str("  ");
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = format!("{title}\n");
    out += &line(header.to_vec());
    out += &line(
        w.iter()
            .map(|n| "-".repeat(*n))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    );
    for r in rows {
        out += &line(r.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(64 * 1024 * 1024), "64.0 MiB");
        assert_eq!(human(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(
            "Root filesystem",
            &["part", "files", "size"],
            &[
                vec!["nomad".into(), "1".into(), "120.0 MiB".into()],
                vec!["base".into(), "30".into(), "1 B".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "Root filesystem");
        assert_eq!(lines[1], " part   files       size");
        assert_eq!(lines[2], " -----  -----  ---------");
        assert_eq!(lines[3], " nomad      1  120.0 MiB");
        assert_eq!(lines[4], " base      30        1 B");
    }

    #[test]
    fn write_json_is_atomic_and_complete() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("manifest.json");
        write_json(
            &p,
            &PartRow {
                part: "x".into(),
                files: 1,
                bytes: 2,
            },
        )
        .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(v["bytes"], 2);
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
