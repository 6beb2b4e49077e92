//! The repository stands alone: no tracked file outside the docs may point at the `shared`
//! directory that sat beside the first checkouts (a user's clone does not have it). Test data
//! lives in the tree, e.g. `nomad-double/recordings/`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Spelled in pieces so this file does not match itself.
fn forbidden() -> [String; 2] {
    [["..", "/shared"].concat(), ["/work", "/shared"].concat()]
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("nomad-double sits in the workspace")
        .to_path_buf()
}

/// Tracked files (git), or every file below the root minus build output when this is not a
/// git checkout (a source tarball).
fn source_files(root: &Path) -> Vec<PathBuf> {
    let git = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["ls-files", "-z"])
        .output();
    if let Some(out) = git.ok().filter(|o| o.status.success()) {
        return out
            .stdout
            .split(|&b| b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| root.join(String::from_utf8_lossy(p).as_ref()))
            .collect();
    }
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.expect("directory entry").path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if p.is_dir() {
                if !matches!(name, ".git" | "target" | "out") {
                    dirs.push(p);
                }
            } else {
                files.push(p);
            }
        }
    }
    files
}

/// `file:line: text` for every line naming a forbidden path.
fn offending_lines(path: &Path, text: &str) -> Vec<String> {
    let needles = forbidden();
    text.lines()
        .enumerate()
        .filter(|(_, l)| needles.iter().any(|n| l.contains(n.as_str())))
        .map(|(i, l)| format!("{}:{}: {}", path.display(), i + 1, l.trim()))
        .collect()
}

#[test]
fn no_tracked_file_reads_the_shared_directory() {
    let root = workspace_root();
    let mut hits = Vec::new();
    let mut checked = 0;
    for f in source_files(&root) {
        if f.extension().is_some_and(|e| e == "md") {
            continue;
        }
        // Binary or unreadable (a deleted but still tracked file): nothing to reference from.
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        checked += 1;
        hits.extend(offending_lines(f.strip_prefix(&root).unwrap_or(&f), &text));
    }
    assert!(
        checked > 50,
        "only {checked} files checked below {}",
        root.display()
    );
    assert!(
        hits.is_empty(),
        "these lines point outside the repository (copy the data into the tree instead):\n{}",
        hits.join("\n")
    );
}

#[test]
fn the_check_catches_both_spellings() {
    let [up, abs] = forbidden();
    let text = format!("ok\nlet p = \"../{up}/x\";\nread(\"{abs}/nomad-api\")\n");
    let hits = offending_lines(Path::new("f.rs"), &text);
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert!(hits[0].starts_with("f.rs:2: "), "{hits:?}");
    assert!(offending_lines(Path::new("f.rs"), "shared libraries, ./shared\n").is_empty());
}
