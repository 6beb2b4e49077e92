//! Root filesystem staging: a declared list of entries (pure [`plan`]) written into a fresh
//! directory by [`apply`], which `mkfs.ext4 -d` (disk) or cpio (PXE) then consumes.

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Where an entry's content comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Dir,
    Copy(PathBuf),
    Bytes(Vec<u8>),
    Symlink(String),
}

/// One thing in the image, with the table row (`part`) it is counted under.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Absolute path inside the image.
    pub path: String,
    pub source: Source,
    pub mode: u32,
    pub part: &'static str,
}

/// What PID 1 is in this image.
#[derive(Debug, Clone)]
pub enum Init {
    /// nomad-init (static binary): /sbin/init, /init, and the power applets link to it.
    NomadInit(PathBuf),
    /// A test script replacing PID 1 (boot tests); needs the toolbox for /bin/sh.
    TestScript(PathBuf),
}

/// Everything the root filesystem is made of, already resolved on the build host.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub init: Init,
    pub nomad: Option<PathBuf>,
    /// Shared objects the Nomad binary needs (from [`parse_ldd`]), including the ELF
    /// interpreter; each goes to the same absolute path in the image.
    pub nomad_libs: Vec<PathBuf>,
    pub ca_bundle: Option<PathBuf>,
    pub init_json: Option<PathBuf>,
    pub nomados_toml: Option<PathBuf>,
    /// (path relative to the pack set root, file on the host).
    pub packs: Vec<(PathBuf, PathBuf)>,
    /// busybox binary and the applets to link to it.
    pub toolbox: Option<(PathBuf, Vec<String>)>,
    pub version: String,
}

/// Applets linked by the toolbox when busybox has them: a shell and enough to debug a
/// node from the console.
pub const TOOLBOX_APPLETS: &[&str] = &[
    "sh",
    "ash",
    "ls",
    "cat",
    "cp",
    "mv",
    "rm",
    "mkdir",
    "rmdir",
    "ln",
    "chmod",
    "chown",
    "echo",
    "printf",
    "sleep",
    "ps",
    "top",
    "kill",
    "dmesg",
    "mount",
    "umount",
    "df",
    "du",
    "free",
    "grep",
    "sed",
    "awk",
    "head",
    "tail",
    "less",
    "vi",
    "find",
    "xargs",
    "wc",
    "sort",
    "uniq",
    "tr",
    "cut",
    "uname",
    "hostname",
    "date",
    "ip",
    "ifconfig",
    "route",
    "ping",
    "nslookup",
    "wget",
    "nc",
    "netstat",
    "sync",
    "env",
    "id",
    "which",
    "stat",
    "tar",
    "gzip",
    "gunzip",
    "hexdump",
    "uptime",
    "mkfs.ext2",
    "blkid",
    "lsof",
    "pidof",
    "touch",
    "test",
    "[",
];

/// Applets never linked to busybox: PID 1 owns these names.
const RESERVED: &[&str] = &["init", "poweroff", "reboot", "halt"];

const DIRS: &[(&str, u32)] = &[
    ("/bin", 0o755),
    ("/sbin", 0o755),
    ("/usr", 0o755),
    ("/usr/bin", 0o755),
    ("/etc", 0o755),
    ("/etc/nomad.d", 0o755),
    ("/etc/nomados", 0o755),
    ("/etc/ssl", 0o755),
    ("/etc/ssl/certs", 0o755),
    ("/proc", 0o555),
    ("/sys", 0o555),
    ("/dev", 0o755),
    ("/run", 0o755),
    ("/tmp", 0o1777),
    ("/root", 0o700),
    ("/mnt", 0o755),
    ("/var", 0o755),
    ("/var/log", 0o755),
    ("/var/lib", 0o755),
    // Nomad's data_dir; PID 1 mounts the NOMADOS-DATA partition here.
    ("/var/lib/nomad", 0o711),
];

/// Builds the entry list. Pure: every host path has already been resolved.
pub fn plan(inp: &Inputs) -> Result<Vec<Entry>> {
    let mut v: Vec<Entry> = DIRS
        .iter()
        .map(|(p, m)| entry(p, Source::Dir, *m, "base"))
        .collect();

    let base_files: [(&str, String, u32); 6] = [
        ("/etc/os-release", os_release(&inp.version), 0o644),
        (
            "/etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .into(),
            0o644,
        ),
        ("/etc/group", "root:x:0:\nnogroup:x:65534:\n".into(), 0o644),
        (
            "/etc/nsswitch.conf",
            "passwd: files\ngroup: files\nhosts: files dns\n".into(),
            0o644,
        ),
        (
            "/etc/hosts",
            "127.0.0.1 localhost\n::1 localhost\n".into(),
            0o644,
        ),
        ("/etc/hostname", "nomados\n".into(), 0o644),
    ];
    for (p, s, m) in base_files {
        v.push(entry(p, Source::Bytes(s.into_bytes()), m, "base"));
    }

    let toolbox_bin = "/bin/busybox";
    match &inp.init {
        Init::NomadInit(bin) => {
            v.push(entry(
                "/sbin/init",
                Source::Copy(bin.clone()),
                0o755,
                "nomad-init",
            ));
            v.push(entry(
                "/init",
                Source::Symlink("sbin/init".into()),
                0o777,
                "nomad-init",
            ));
            // `nomad-init` by name: the CLI on the machine and the `hello` pack's task.
            for n in ["poweroff", "reboot", "halt", "nomad-init"] {
                v.push(entry(
                    &format!("/sbin/{n}"),
                    Source::Symlink("init".into()),
                    0o777,
                    "nomad-init",
                ));
            }
        }
        Init::TestScript(script) => {
            if inp.toolbox.is_none() {
                bail!("a test init script needs the busybox toolbox for /bin/sh (TOOLBOX=1)");
            }
            v.push(entry(
                "/sbin/init",
                Source::Copy(script.clone()),
                0o755,
                "test-init",
            ));
            v.push(entry(
                "/init",
                Source::Symlink("sbin/init".into()),
                0o777,
                "test-init",
            ));
            for n in ["poweroff", "reboot", "halt"] {
                v.push(entry(
                    &format!("/sbin/{n}"),
                    Source::Symlink(toolbox_bin.into()),
                    0o777,
                    "test-init",
                ));
            }
        }
    }

    if let Some(n) = &inp.nomad {
        v.push(entry(
            "/usr/bin/nomad",
            Source::Copy(n.clone()),
            0o755,
            "nomad",
        ));
        for lib in &inp.nomad_libs {
            let p = lib
                .to_str()
                .filter(|s| s.starts_with('/'))
                .with_context(|| format!("library path {} is not absolute UTF-8", lib.display()))?;
            add_parents(&mut v, p, "nomad libs");
            v.push(entry(p, Source::Copy(lib.clone()), 0o755, "nomad libs"));
        }
    }

    if let Some(ca) = &inp.ca_bundle {
        v.push(entry(
            "/etc/ssl/certs/ca-certificates.crt",
            Source::Copy(ca.clone()),
            0o644,
            "ca bundle",
        ));
    }
    if let Some(j) = &inp.init_json {
        v.push(entry(
            "/etc/nomad.d/init.json",
            Source::Copy(j.clone()),
            0o644,
            "config",
        ));
    }
    if let Some(t) = &inp.nomados_toml {
        v.push(entry(
            "/etc/nomados/nomados.toml",
            Source::Copy(t.clone()),
            0o644,
            "config",
        ));
    }

    if !inp.packs.is_empty() {
        v.push(entry("/etc/nomados/packs", Source::Dir, 0o755, "packs"));
        for (rel, host) in &inp.packs {
            let rel = rel
                .to_str()
                .filter(|s| !s.starts_with('/') && !s.split('/').any(|c| c == ".."))
                .with_context(|| format!("pack file {} has a bad relative path", rel.display()))?;
            let p = format!("/etc/nomados/packs/{rel}");
            add_parents(&mut v, &p, "packs");
            v.push(entry(&p, Source::Copy(host.clone()), 0o644, "packs"));
        }
    }

    if let Some((bb, applets)) = &inp.toolbox {
        v.push(entry(
            toolbox_bin,
            Source::Copy(bb.clone()),
            0o755,
            "toolbox",
        ));
        for a in applets {
            if RESERVED.contains(&a.as_str()) || a.contains('/') || a == "busybox" {
                continue;
            }
            v.push(entry(
                &format!("/bin/{a}"),
                Source::Symlink("busybox".into()),
                0o777,
                "toolbox",
            ));
        }
    }

    check_unique(&v)?;
    Ok(v)
}

/// A dynamically linked host program at `image_path` (plus `links` to it in the same
/// directory) and its shared libraries (from [`parse_ldd`]) at their own absolute paths.
/// Paths already planned (the C library Nomad brought) are kept once.
pub fn add_host_program(
    v: &mut Vec<Entry>,
    image_path: &str,
    host: &Path,
    libs: &[PathBuf],
    links: &[&str],
    part: &'static str,
) -> Result<()> {
    let add = |v: &mut Vec<Entry>, e: Entry| {
        if !v.iter().any(|x| x.path == e.path) {
            add_parents(v, &e.path, part);
            v.push(e);
        }
    };
    add(
        v,
        entry(image_path, Source::Copy(host.to_path_buf()), 0o755, part),
    );
    let (dir, name) = image_path
        .rsplit_once('/')
        .with_context(|| format!("{image_path} is not an absolute path"))?;
    for l in links {
        add(
            v,
            entry(
                &format!("{dir}/{l}"),
                Source::Symlink(name.into()),
                0o777,
                part,
            ),
        );
    }
    for lib in libs {
        let p = lib
            .to_str()
            .filter(|s| s.starts_with('/'))
            .with_context(|| format!("library path {} is not absolute UTF-8", lib.display()))?;
        add(v, entry(p, Source::Copy(lib.clone()), 0o755, part));
    }
    check_unique(v)
}

fn entry(path: &str, source: Source, mode: u32, part: &'static str) -> Entry {
    Entry {
        path: path.to_string(),
        source,
        mode,
        part,
    }
}

/// Adds directory entries for every missing ancestor of `path`.
fn add_parents(v: &mut Vec<Entry>, path: &str, part: &'static str) {
    let mut anc: Vec<&str> = Path::new(path)
        .ancestors()
        .skip(1)
        .filter_map(|a| a.to_str())
        .filter(|a| *a != "/" && !a.is_empty())
        .collect();
    anc.reverse();
    for a in anc {
        if !v.iter().any(|e| e.path == a) {
            v.push(entry(a, Source::Dir, 0o755, part));
        }
    }
}

fn check_unique(v: &[Entry]) -> Result<()> {
    let mut seen = BTreeMap::new();
    for e in v {
        if let Some(prev) = seen.insert(e.path.as_str(), e.part) {
            bail!("{} is provided twice (by {prev} and {})", e.path, e.part);
        }
    }
    Ok(())
}

fn os_release(version: &str) -> String {
    format!(
        "NAME=NomadOS\nID=nomados\nVERSION_ID={version}\nPRETTY_NAME=\"NomadOS {version}\"\n\
         HOME_URL=\"https://github.com/nomados\"\n"
    )
}

/// Shared objects from `ldd` output: `name => /path (addr)` lines and the interpreter line
/// `/lib64/ld-linux-x86-64.so.2 (addr)`. The vDSO has no file and is skipped. A static
/// binary yields an empty list. Missing libraries are an error naming them.
pub fn parse_ldd(out: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    let mut missing = Vec::new();
    for line in out.lines().map(str::trim) {
        if line.is_empty() || line.contains("statically linked") || line.contains("not a dynamic") {
            continue;
        }
        if let Some((name, rest)) = line.split_once("=>") {
            let rest = rest.trim();
            if rest.starts_with("not found") {
                missing.push(name.trim().to_string());
                continue;
            }
            if let Some(p) = rest
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/'))
            {
                libs.push(PathBuf::from(p));
            }
        } else if let Some(p) = line
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
        {
            libs.push(PathBuf::from(p));
        }
    }
    if !missing.is_empty() {
        bail!(
            "shared libraries not found on the build host: {}",
            missing.join(", ")
        );
    }
    libs.sort();
    libs.dedup();
    Ok(libs)
}

/// One written entry with its size on disk (bytes of content; 0 for dirs and links).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Placed {
    pub path: String,
    pub part: &'static str,
    pub bytes: u64,
}

/// Writes `entries` into `staging`, which must not exist yet (no stale files carried over).
pub fn apply(entries: &[Entry], staging: &Path) -> Result<Vec<Placed>> {
    if staging.exists() {
        bail!("staging directory {} already exists", staging.display());
    }
    std::fs::create_dir_all(staging).with_context(|| format!("create {}", staging.display()))?;
    let mut placed = Vec::with_capacity(entries.len());
    for e in entries {
        let dst = staging.join(e.path.trim_start_matches('/'));
        let ctx = || format!("{} -> {}", describe(&e.source), dst.display());
        let bytes = match &e.source {
            Source::Dir => {
                std::fs::create_dir_all(&dst).with_context(ctx)?;
                0
            }
            Source::Copy(src) => std::fs::copy(src, &dst).with_context(ctx)?,
            Source::Bytes(b) => {
                std::fs::write(&dst, b).with_context(ctx)?;
                b.len() as u64
            }
            Source::Symlink(t) => {
                symlink(t, &dst).with_context(ctx)?;
                0
            }
        };
        if !matches!(e.source, Source::Symlink(_)) {
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(e.mode))
                .with_context(ctx)?;
        }
        placed.push(Placed {
            path: e.path.clone(),
            part: e.part,
            bytes,
        });
    }
    Ok(placed)
}

fn describe(s: &Source) -> String {
    match s {
        Source::Dir => "mkdir".into(),
        Source::Copy(p) => p.display().to_string(),
        Source::Bytes(_) => "generated file".into(),
        Source::Symlink(t) => format!("symlink to {t}"),
    }
}

/// Lists the files under a pack set directory as (relative, absolute) pairs, sorted.
/// Hidden files (editor droppings, .git) are skipped.
pub fn collect_dir(root: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, PathBuf)>) -> Result<()> {
        let rd = std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))?;
        for ent in rd {
            let ent = ent.with_context(|| format!("read {}", dir.display()))?;
            if ent.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let p = ent.path();
            let md = std::fs::metadata(&p).with_context(|| format!("stat {}", p.display()))?;
            if md.is_dir() {
                walk(root, &p, out)?;
            } else if md.is_file() {
                let rel = p
                    .strip_prefix(root)
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                out.push((rel, p));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort();
    Ok(out)
}

/// Sums placed bytes per part, in first-seen order: (part, files, bytes).
pub fn totals(placed: &[Placed]) -> Vec<(&'static str, usize, u64)> {
    let mut out: Vec<(&'static str, usize, u64)> = Vec::new();
    for p in placed {
        match out.iter_mut().find(|(n, _, _)| *n == p.part) {
            Some(row) => {
                row.1 += 1;
                row.2 += p.bytes;
            }
            None => out.push((p.part, 1, p.bytes)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_program_shares_libraries_already_planned() {
        // inputs() already has Nomad's libc.
        let mut v = plan(&inputs()).unwrap();
        let libc = PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6");
        let libs = vec![libc, PathBuf::from("/lib/x86_64-linux-gnu/libext2fs.so.2")];
        add_host_program(
            &mut v,
            "/sbin/mke2fs",
            Path::new("/usr/sbin/mke2fs"),
            &libs,
            &["mkfs.ext4"],
            "mkfs",
        )
        .unwrap();
        let find = |p: &str| v.iter().filter(|e| e.path == p).count();
        assert_eq!(find("/lib/x86_64-linux-gnu/libc.so.6"), 1);
        assert_eq!(find("/lib/x86_64-linux-gnu/libext2fs.so.2"), 1);
        assert_eq!(find("/sbin/mke2fs"), 1);
        assert!(v
            .iter()
            .any(|e| e.path == "/sbin/mkfs.ext4" && e.source == Source::Symlink("mke2fs".into())));
    }

    fn inputs() -> Inputs {
        Inputs {
            init: Init::NomadInit("/build/nomad-init".into()),
            nomad: Some("/dl/nomad".into()),
            nomad_libs: vec![
                "/lib/x86_64-linux-gnu/libc.so.6".into(),
                "/lib64/ld-linux-x86-64.so.2".into(),
            ],
            ca_bundle: Some("/etc/ssl/certs/ca-certificates.crt".into()),
            init_json: Some("/src/config/init.json".into()),
            nomados_toml: None,
            packs: vec![
                ("default.toml".into(), "/src/packs/default.toml".into()),
                (
                    "web/job.nomad.tpl".into(),
                    "/src/packs/web/job.nomad.tpl".into(),
                ),
            ],
            toolbox: Some((
                "/bin/busybox".into(),
                vec!["sh".into(), "ls".into(), "poweroff".into()],
            )),
            version: "0.1.0".into(),
        }
    }

    fn find<'a>(v: &'a [Entry], p: &str) -> &'a Entry {
        v.iter()
            .find(|e| e.path == p)
            .unwrap_or_else(|| panic!("{p} missing"))
    }

    #[test]
    fn plan_places_init_nomad_libs_config_packs_and_toolbox() {
        let v = plan(&inputs()).unwrap();
        assert_eq!(
            find(&v, "/sbin/init").source,
            Source::Copy("/build/nomad-init".into())
        );
        assert_eq!(
            find(&v, "/init").source,
            Source::Symlink("sbin/init".into())
        );
        for n in ["poweroff", "reboot", "halt"] {
            assert_eq!(
                find(&v, &format!("/sbin/{n}")).source,
                Source::Symlink("init".into())
            );
        }
        assert_eq!(
            find(&v, "/usr/bin/nomad").source,
            Source::Copy("/dl/nomad".into())
        );
        assert_eq!(find(&v, "/lib64").source, Source::Dir);
        assert_eq!(find(&v, "/lib/x86_64-linux-gnu").source, Source::Dir);
        find(&v, "/lib64/ld-linux-x86-64.so.2");
        find(&v, "/etc/ssl/certs/ca-certificates.crt");
        find(&v, "/etc/nomad.d/init.json");
        find(&v, "/etc/nomados/packs/web/job.nomad.tpl");
        assert_eq!(find(&v, "/etc/nomados/packs/web").source, Source::Dir);
        assert_eq!(
            find(&v, "/bin/sh").source,
            Source::Symlink("busybox".into())
        );
        assert_eq!(find(&v, "/tmp").mode, 0o1777);
        find(&v, "/var/lib/nomad");
        let passwd = match &find(&v, "/etc/passwd").source {
            Source::Bytes(b) => String::from_utf8(b.clone()).unwrap(),
            s => panic!("{s:?}"),
        };
        assert!(
            passwd.contains("nobody:x:65534"),
            "Nomad's exec driver runs tasks as nobody"
        );
        // Parents come before children so apply() can create them in order.
        let pos = |p: &str| v.iter().position(|e| e.path == p).unwrap();
        assert!(pos("/etc/nomados/packs/web") < pos("/etc/nomados/packs/web/job.nomad.tpl"));
        assert!(pos("/lib64") < pos("/lib64/ld-linux-x86-64.so.2"));
    }

    #[test]
    fn busybox_never_takes_pid1_names() {
        let v = plan(&inputs()).unwrap();
        assert!(v.iter().all(|e| e.path != "/bin/poweroff"));
        assert_eq!(find(&v, "/sbin/poweroff").part, "nomad-init");
        // The hello pack's task runs /sbin/nomad-init: the same binary as PID 1.
        assert_eq!(
            find(&v, "/sbin/nomad-init").source,
            Source::Symlink("init".into())
        );
    }

    #[test]
    fn without_nomad_no_nomad_entries() {
        let inp = Inputs {
            nomad: None,
            ..inputs()
        };
        let v = plan(&inp).unwrap();
        assert!(v
            .iter()
            .all(|e| e.part != "nomad" && e.part != "nomad libs"));
    }

    #[test]
    fn test_init_links_power_applets_to_busybox_and_needs_toolbox() {
        let inp = Inputs {
            init: Init::TestScript("/t/init.sh".into()),
            ..inputs()
        };
        let v = plan(&inp).unwrap();
        assert_eq!(
            find(&v, "/sbin/init").source,
            Source::Copy("/t/init.sh".into())
        );
        assert_eq!(
            find(&v, "/sbin/poweroff").source,
            Source::Symlink("/bin/busybox".into())
        );
        let e = plan(&Inputs {
            toolbox: None,
            ..inp
        })
        .unwrap_err();
        assert!(e.to_string().contains("TOOLBOX"), "{e}");
    }

    #[test]
    fn duplicate_and_escaping_paths_are_rejected() {
        let mut inp = inputs();
        inp.packs.push(("../etc/passwd".into(), "/x".into()));
        assert!(plan(&inp)
            .unwrap_err()
            .to_string()
            .contains("bad relative path"));
        let mut inp = inputs();
        inp.nomad_libs.push("/usr/bin/nomad".into());
        let e = plan(&inp).unwrap_err().to_string();
        assert!(e.contains("/usr/bin/nomad is provided twice"), "{e}");
    }

    #[test]
    fn ldd_output_parsing() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd5b9f0000)\n\
                   \tlibpthread.so.0 => /lib/x86_64-linux-gnu/libpthread.so.0 (0x00007f)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(out).unwrap(),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib/x86_64-linux-gnu/libpthread.so.0"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tnot a dynamic executable\n")
            .unwrap()
            .is_empty());
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
        let e = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err();
        assert!(e.to_string().contains("libfoo.so.1"));
    }

    #[test]
    fn apply_writes_files_links_modes_and_refuses_existing_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::write(&src, b"hello").unwrap();
        let entries = vec![
            entry("/sbin", Source::Dir, 0o755, "base"),
            entry("/sbin/init", Source::Copy(src.clone()), 0o755, "nomad-init"),
            entry(
                "/init",
                Source::Symlink("sbin/init".into()),
                0o777,
                "nomad-init",
            ),
            entry("/tmp", Source::Dir, 0o1777, "base"),
            entry("/etc", Source::Dir, 0o755, "base"),
            entry(
                "/etc/hostname",
                Source::Bytes(b"n\n".to_vec()),
                0o644,
                "base",
            ),
        ];
        let st = tmp.path().join("root");
        let placed = apply(&entries, &st).unwrap();
        assert_eq!(std::fs::read(st.join("init")).unwrap(), b"hello");
        assert_eq!(
            std::fs::read_link(st.join("init")).unwrap(),
            PathBuf::from("sbin/init")
        );
        let mode = |p: &str| std::fs::metadata(st.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("tmp"), 0o1777);
        assert_eq!(mode("sbin/init"), 0o755);
        assert_eq!(mode("etc/hostname"), 0o644);
        assert_eq!(totals(&placed), vec![("base", 4, 2), ("nomad-init", 2, 5)]);
        assert!(
            apply(&entries, &st).is_err(),
            "existing staging dir must be refused"
        );
    }

    #[test]
    fn collect_dir_lists_nested_files_and_skips_hidden() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("a/b")).unwrap();
        std::fs::create_dir_all(tmp.path().join(".git")).unwrap();
        std::fs::write(tmp.path().join("a/b/c.toml"), "").unwrap();
        std::fs::write(tmp.path().join("top.toml"), "").unwrap();
        std::fs::write(tmp.path().join(".git/x"), "").unwrap();
        let rels: Vec<PathBuf> = collect_dir(tmp.path())
            .unwrap()
            .into_iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(
            rels,
            vec![PathBuf::from("a/b/c.toml"), PathBuf::from("top.toml")]
        );
    }
}
