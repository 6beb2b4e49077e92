//! cgroup v2 set-up for Nomad: PID 1 leaves the root cgroup, controllers are delegated.

use std::path::Path;

use anyhow::Context;

/// What Nomad's exec driver uses.
pub const WANTED: [&str; 5] = ["cpuset", "cpu", "io", "memory", "pids"];

/// The `subtree_control` line enabling those of `wanted` that `available`
/// (the content of `cgroup.controllers`) offers, e.g. `+cpu +memory +pids`.
pub fn subtree_control_line(available: &str, wanted: &[&str]) -> String {
    let have: Vec<&str> = available.split_whitespace().collect();
    wanted
        .iter()
        .filter(|w| have.contains(w))
        .map(|w| format!("+{w}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Moves PID 1 into `<cgroot>/init` (cgroups with enabled controllers may hold no
/// processes of their own, so keeping PID 1 out of the way keeps delegation legal
/// everywhere below) and enables the wanted controllers. Returns the line written.
pub fn setup(cgroot: &Path) -> anyhow::Result<String> {
    let init = cgroot.join("init");
    std::fs::create_dir_all(&init).with_context(|| format!("mkdir {}", init.display()))?;
    let procs = init.join("cgroup.procs");
    std::fs::write(&procs, "0").with_context(|| format!("write {}", procs.display()))?;
    let available = std::fs::read_to_string(cgroot.join("cgroup.controllers"))
        .context("read cgroup.controllers")?;
    let line = subtree_control_line(&available, &WANTED);
    if !line.is_empty() {
        let path = cgroot.join("cgroup.subtree_control");
        std::fs::write(&path, &line)
            .with_context(|| format!("write {:?} to {}", line, path.display()))?;
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enables_only_available_controllers_in_a_fixed_order() {
        assert_eq!(
            subtree_control_line("memory pids cpu io cpuset hugetlb\n", &WANTED),
            "+cpuset +cpu +io +memory +pids"
        );
        assert_eq!(
            subtree_control_line("pids memory\n", &WANTED),
            "+memory +pids"
        );
        assert_eq!(subtree_control_line("", &WANTED), "");
    }
}
