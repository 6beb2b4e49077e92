//! No source file outside tests grows past 800 lines: a file that long holds more than one
//! job and is split by what it does (issue 7's rule, kept by this test rather than by memory).

use std::path::{Path, PathBuf};

const MAX_LINES: usize = 800;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "tests" {
                sources(&path, out);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" {
            out.push(path);
        }
    }
}

#[test]
fn no_source_file_outside_tests_is_over_800_lines() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for krate in ["init", "image", "nomad-double", "gpt"] {
        sources(&workspace.join(krate).join("src"), &mut files);
    }
    assert!(files.len() > 50, "sources not found: {files:?}");
    let mut long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            (lines > MAX_LINES).then(|| {
                let shown = f.strip_prefix(workspace).unwrap_or(f).display();
                format!("{shown}: {lines} lines")
            })
        })
        .collect();
    long.sort();
    assert!(
        long.is_empty(),
        "split these by what they do (at most {MAX_LINES} lines outside tests):\n{}",
        long.join("\n")
    );
}
