//! The modules of init form no import cycle: each module's references to others
//! (`use crate::x`, `crate::x::f()`, `super::x`, the log macros) are read from the source,
//! and the graph between the top-level modules, and between the siblings inside each
//! module directory, must have no cycle. A failure prints the cycle with one reference per
//! step (file:line), so the offending import is easy to find.
//!
//! A parent and its own children may refer to each other (`mod.rs` declares them, they use
//! its types); only references between siblings count inside a directory.
//! `#[cfg(test)]` code is left out: it is not part of the architecture.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type ModPath = Vec<String>;

struct SourceFile {
    module: ModPath,
    path: PathBuf,
    text: String,
}

fn collect(dir: &Path, prefix: &[String], out: &mut Vec<SourceFile>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            let mut sub = prefix.to_vec();
            sub.push(name);
            collect(&path, &sub, out);
            continue;
        }
        let Some(stem) = name.strip_suffix(".rs") else {
            continue;
        };
        let mut module = prefix.to_vec();
        match stem {
            "lib" | "main" if prefix.is_empty() => continue,
            // Test-only file modules (`#[cfg(test)] mod tests;`).
            "tests" => continue,
            "mod" => {}
            _ => module.push(stem.to_string()),
        }
        let text = std::fs::read_to_string(&path).unwrap();
        out.push(SourceFile { module, path, text });
    }
}

/// The text without line comments and without the trailing `#[cfg(test)] mod ...` block.
fn code_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut iter = text.lines().peekable();
    while let Some(line) = iter.next() {
        if line.trim() == "#[cfg(test)]"
            && iter
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            break; // by convention the test module ends the file
        }
        lines.push(strip_comment(line).to_string());
    }
    lines
}

/// Cuts a `//` comment off, ignoring `//` inside string literals (as in URLs).
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_string => i += 1,
            b'"' => in_string = !in_string,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path that starts with `crate::`, `super::` or `self::` in `line`, as its
/// segments (a `{a, b::c}` group gives one path per member, with the prefix).
fn paths_in(line: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for anchor in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(pos) = line[from..].find(anchor) {
            let start = from + pos;
            from = start + anchor.len();
            let before = line[..start].chars().next_back();
            if before.is_some_and(|c| is_ident_char(c) || c == '$' || c == ':') {
                continue; // `$crate::`, `foo_crate::`, or the middle of `super::super::`
            }
            found.extend(expand(&line[start..]));
        }
    }
    found
}

/// Reads one path (with groups) from the start of `s`.
fn expand(s: &str) -> Vec<Vec<String>> {
    let mut segments = Vec::new();
    let mut rest = s;
    loop {
        let len = rest.find(|c: char| !is_ident_char(c)).unwrap_or(rest.len());
        if len == 0 {
            break;
        }
        segments.push(rest[..len].to_string());
        rest = &rest[len..];
        if let Some(after) = rest.strip_prefix("::") {
            rest = after;
            if let Some(group) = rest.strip_prefix('{') {
                let mut out = Vec::new();
                for member in split_group(group) {
                    for tail in expand(member.trim()) {
                        let mut p = segments.clone();
                        p.extend(tail);
                        out.push(p);
                    }
                }
                return if out.is_empty() { vec![segments] } else { out };
            }
        } else {
            break;
        }
    }
    vec![segments]
}

/// The top-level members of a `{...}` group (the text after `{`), split at depth-0 commas.
fn split_group(group: &str) -> Vec<&str> {
    let mut members = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                members.push(&group[start..i]);
                return members;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                members.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    members.push(&group[start..]);
    members
}

struct Graph {
    modules: BTreeSet<ModPath>,
    /// Exported macro name -> the module defining it.
    macros: BTreeMap<String, ModPath>,
}

impl Graph {
    /// The module a reference from `from` lands in (the longest known module prefix).
    fn resolve(&self, from: &ModPath, path: &[String]) -> Option<ModPath> {
        let mut base: ModPath = Vec::new();
        let mut rest = path;
        match path.first().map(String::as_str) {
            Some("crate") => rest = &path[1..],
            Some("self") | Some("super") => {
                base = from.clone();
                while let Some(first) = rest.first() {
                    match first.as_str() {
                        "self" => {}
                        "super" => {
                            base.pop()?;
                        }
                        _ => break,
                    }
                    rest = &rest[1..];
                }
            }
            _ => return None,
        }
        if base.is_empty() {
            if let Some(m) = rest.first().and_then(|name| self.macros.get(name)) {
                return Some(m.clone());
            }
        }
        let mut target = base;
        for segment in rest {
            let mut longer = target.clone();
            longer.push(segment.clone());
            if !self.modules.contains(&longer) {
                break;
            }
            target = longer;
        }
        Some(target)
    }
}

/// An edge with one place that makes it, e.g. `src/pid1.rs:12`.
type Edges = BTreeMap<String, BTreeMap<String, String>>;

/// The first cycle found, as the list of nodes (first repeated at the end).
fn find_cycle(edges: &Edges) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &Edges,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flat_map(|m| m.keys()) {
            if let Some(c) = visit(next, edges, done, stack) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut done, &mut Vec::new()))
}

#[test]
fn init_modules_have_no_import_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    collect(&root.join("src"), &[], &mut files);
    let mut graph = Graph {
        modules: files.iter().map(|f| f.module.clone()).collect(),
        macros: BTreeMap::new(),
    };
    for f in &files {
        let lines: Vec<&str> = f.text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let exported = i > 0 && lines[i - 1].trim() == "#[macro_export]";
            if let (true, Some(rest)) = (exported, line.trim().strip_prefix("macro_rules! ")) {
                let name: String = rest.chars().take_while(|c| is_ident_char(*c)).collect();
                graph.macros.insert(name, f.module.clone());
            }
        }
    }
    assert!(
        graph.modules.len() > 10 && graph.macros.contains_key("info"),
        "the source tree was not read: {:?}",
        graph.modules
    );

    // For every directory module (and the crate root): the edges between its children.
    let parents: BTreeSet<ModPath> = graph
        .modules
        .iter()
        .map(|m| m[..m.len() - 1].to_vec())
        .collect();
    let mut by_parent: BTreeMap<ModPath, Edges> = BTreeMap::new();
    for f in &files {
        for (n, line) in code_lines(&f.text).iter().enumerate() {
            for path in paths_in(line) {
                let Some(target) = graph.resolve(&f.module, &path) else {
                    continue;
                };
                for parent in &parents {
                    let depth = parent.len();
                    let (Some(a), Some(b)) = (f.module.get(depth), target.get(depth)) else {
                        continue;
                    };
                    if a == b || !f.module.starts_with(parent) || !target.starts_with(parent) {
                        continue;
                    }
                    let place = format!(
                        "{}:{}",
                        f.path.strip_prefix(root).unwrap_or(&f.path).display(),
                        n + 1
                    );
                    by_parent
                        .entry(parent.clone())
                        .or_default()
                        .entry(a.clone())
                        .or_default()
                        .entry(b.clone())
                        .or_insert(place);
                }
            }
        }
    }
    let top = by_parent.get(&Vec::new()).map_or(0, |e| e.len());
    assert!(
        top > 5,
        "too few top-level edges found ({top}): the scan is broken"
    );

    let mut cycles = Vec::new();
    for (parent, edges) in &by_parent {
        if let Some(cycle) = find_cycle(edges) {
            let scope = if parent.is_empty() {
                "crate".to_string()
            } else {
                format!("crate::{}", parent.join("::"))
            };
            let mut text = format!("import cycle between the modules of {scope}:\n");
            for pair in cycle.windows(2) {
                text += &format!(
                    "  {} -> {}   ({})\n",
                    pair[0], pair[1], edges[&pair[0]][&pair[1]]
                );
            }
            cycles.push(text);
        }
    }
    assert!(cycles.is_empty(), "{}", cycles.join("\n"));
}

#[test]
fn the_scanner_reads_groups_super_and_comments() {
    let p = |s: &str| -> Vec<String> { paths_in(s).iter().map(|p| p.join("::")).collect() };
    assert_eq!(
        p("use crate::{boot::{self, stage}, sys::root::Root};"),
        [
            "crate::boot::self",
            "crate::boot::stage",
            "crate::sys::root::Root"
        ]
    );
    assert_eq!(
        p("use super::super::dhcp::Dest;"),
        ["super::super::dhcp::Dest"]
    );
    assert_eq!(p("$crate::log::write(x)"), Vec::<String>::new());
    assert_eq!(
        strip_comment(r#"let u = "http://x"; crate::a::b(); // crate::c"#),
        r#"let u = "http://x"; crate::a::b(); "#
    );
    let edges: Edges = [("a", "b"), ("b", "c"), ("c", "a")]
        .iter()
        .map(|(f, t)| {
            (
                f.to_string(),
                BTreeMap::from([(t.to_string(), String::new())]),
            )
        })
        .collect();
    assert_eq!(find_cycle(&edges).unwrap(), ["a", "b", "c", "a"]);
}
