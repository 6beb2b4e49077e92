//! Raw system calls live in `sys/`: every other top-level module of init is declared with
//! `#[deny(unsafe_code)]` in lib.rs, so a new module cannot slip in without it.

#[test]
fn every_top_level_module_but_sys_denies_unsafe_code() {
    let lib = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/lib.rs")).unwrap();
    let lines: Vec<&str> = lib.lines().map(str::trim).collect();
    let mut modules = Vec::new();
    let mut missing = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line
            .strip_prefix("pub mod ")
            .or_else(|| line.strip_prefix("mod "))
            .and_then(|rest| rest.strip_suffix(';'))
        else {
            continue;
        };
        modules.push(name);
        let denied = lines[..i]
            .iter()
            .rev()
            .take_while(|l| l.starts_with("#[") || l.starts_with("//"))
            .any(|l| *l == "#[deny(unsafe_code)]" || *l == "#[forbid(unsafe_code)]");
        if name != "sys" && !denied {
            missing.push(format!("src/lib.rs:{}: `{line}`", i + 1));
        }
    }
    assert!(
        modules.len() > 5 && modules.contains(&"sys"),
        "lib.rs not read: {modules:?}"
    );
    assert!(
        missing.is_empty(),
        "modules outside sys/ must carry #[deny(unsafe_code)]:\n{}",
        missing.join("\n")
    );
}
