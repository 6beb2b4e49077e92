//! `nomados-image`: thin CLI over the library (see `buildimg.sh` for the usual entry point).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use nomados_image::disk::{self, Bootloader, DiskOptions};
use nomados_image::formats::{self, Format};
use nomados_image::layout::MIB;
use nomados_image::manifest::{self, human, FileInfo, ImageInfo, Manifest, PartRow};
use nomados_image::rootfs::{self, Init, Inputs, TOOLBOX_APPLETS};
use nomados_image::tools;

/// File name of the slot payload next to the images.
const SLOT_PAYLOAD: &str = "nomados.slot";

#[derive(Parser)]
#[command(
    name = "nomados-image",
    version,
    about = "Build NomadOS root filesystems and disk images"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Stage the root filesystem into a directory and print its size table.
    Rootfs {
        #[command(flatten)]
        rootfs: RootfsArgs,
        /// Staging directory to create (must not exist).
        #[arg(long)]
        staging: PathBuf,
    },
    /// Stage the root filesystem, build the bootable disk and convert it to cloud formats.
    Build(BuildArgs),
}

#[derive(Args)]
struct RootfsArgs {
    /// nomad-init static binary (PID 1).
    #[arg(long, required_unless_present = "test_init")]
    init: Option<PathBuf>,
    /// Script to run as PID 1 instead of nomad-init (boot tests).
    #[arg(long)]
    test_init: Option<PathBuf>,
    /// Nomad binary; omit for an image without Nomad.
    #[arg(long)]
    nomad: Option<PathBuf>,
    /// Pack set directory copied to /etc/nomados/packs.
    #[arg(long)]
    packs: Option<PathBuf>,
    /// Nomad agent config copied to /etc/nomad.d/init.json.
    #[arg(long)]
    init_json: Option<PathBuf>,
    /// NomadOS config copied to /etc/nomados/nomados.toml.
    #[arg(long)]
    nomados_toml: Option<PathBuf>,
    /// busybox binary for the toolbox (/bin/busybox + applet links); omit for none.
    #[arg(long)]
    toolbox: Option<PathBuf>,
    /// The system's version (os-release, manifest, slot payload).
    #[arg(long, env = "NOMADOS_VERSION", default_value = env!("CARGO_PKG_VERSION"))]
    system_version: String,
    /// CA bundle copied to /etc/ssl/certs/ca-certificates.crt.
    #[arg(long, default_value = "/etc/ssl/certs/ca-certificates.crt")]
    ca_bundle: PathBuf,
}

#[derive(Args)]
struct BuildArgs {
    #[command(flatten)]
    rootfs: RootfsArgs,
    /// Kernel bzImage.
    #[arg(long)]
    kernel: PathBuf,
    /// Output directory.
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Formats: all, or a comma list of raw,qcow2,vmdk,vhd,gcp.
    #[arg(long, default_value = "all")]
    formats: String,
    /// Seed for reproducible disk/partition GUIDs (default: random per build).
    #[arg(long)]
    seed: Option<String>,
    /// Minimum ESP size in MiB.
    #[arg(long, default_value_t = 64)]
    esp_mib: u64,
    /// Minimum size of each system slot's root partition in MiB (at least 512 and twice
    /// the root filesystem, so later systems fit when upgrading).
    #[arg(long, default_value_t = 512)]
    slot_mib: u64,
    /// Initial data partition size in MiB (PID 1 grows it to fill the disk).
    #[arg(long, default_value_t = 64)]
    data_mib: u64,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    root_ro: bool,
    /// Extra kernel argument (repeatable).
    #[arg(long = "kernel-arg")]
    kernel_args: Vec<String>,
}

fn stage(a: &RootfsArgs, staging: &Path) -> Result<Vec<rootfs::Placed>> {
    let init = match (&a.init, &a.test_init) {
        (_, Some(t)) => {
            tools::require_file(t, "test init script")?;
            Init::TestScript(t.clone())
        }
        (Some(i), None) => {
            tools::require_file(i, "nomad-init binary")?;
            Init::NomadInit(i.clone())
        }
        (None, None) => bail!("--init or --test-init is required"),
    };
    let nomad_libs = match &a.nomad {
        Some(n) => {
            tools::require_file(n, "Nomad binary")?;
            tools::require("ldd")?;
            // ldd exits non-zero for static binaries; read its output either way.
            let out = Command::new("ldd").arg(n).output().context("run ldd")?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            rootfs::parse_ldd(&text).with_context(|| format!("libraries of {}", n.display()))?
        }
        None => vec![],
    };
    let packs = match &a.packs {
        Some(p) => rootfs::collect_dir(p).with_context(|| format!("pack set {}", p.display()))?,
        None => vec![],
    };
    let toolbox = match &a.toolbox {
        Some(bb) => {
            tools::require_file(bb, "busybox")?;
            let list = tools::run(Command::new(bb).arg("--list"))?;
            let have: Vec<&str> = list.lines().collect();
            let applets = TOOLBOX_APPLETS
                .iter()
                .filter(|x| have.contains(x))
                .map(|s| s.to_string())
                .collect();
            Some((bb.clone(), applets))
        }
        None => None,
    };
    for (f, what) in [
        (&a.init_json, "init.json"),
        (&a.nomados_toml, "nomados.toml"),
    ] {
        if let Some(f) = f {
            tools::require_file(f, what)?;
        }
    }
    if let Some(j) = &a.init_json {
        check_json(j)?;
    }
    let ca = if a.ca_bundle.is_file() {
        Some(a.ca_bundle.clone())
    } else {
        eprintln!(
            "warning: no CA bundle at {}; TLS to remote origins will fail",
            a.ca_bundle.display()
        );
        None
    };
    let inputs = Inputs {
        init,
        nomad: a.nomad.clone(),
        nomad_libs,
        ca_bundle: ca,
        init_json: a.init_json.clone(),
        nomados_toml: a.nomados_toml.clone(),
        packs,
        toolbox,
        version: a.system_version.clone(),
    };
    let mut entries = rootfs::plan(&inputs)?;
    if matches!(inputs.init, Init::NomadInit(_)) {
        add_mkfs_ext4(&mut entries)?;
    }
    rootfs::apply(&entries, staging)
}

/// PID 1 makes the data filesystem on a blank disk (first boot, install): the build
/// host's mke2fs (it builds the image's own filesystems too), its libraries and config.
fn add_mkfs_ext4(entries: &mut Vec<rootfs::Entry>) -> Result<()> {
    let host = ["/usr/sbin/mke2fs", "/sbin/mke2fs"]
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .context("mke2fs not found on the build host (apt-get install e2fsprogs)")?;
    let out = Command::new("ldd").arg(host).output().context("run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let libs =
        rootfs::parse_ldd(&text).with_context(|| format!("libraries of {}", host.display()))?;
    rootfs::add_host_program(entries, "/sbin/mke2fs", host, &libs, &["mkfs.ext4"], "mkfs")?;
    let conf = Path::new("/etc/mke2fs.conf");
    if conf.is_file() && !entries.iter().any(|e| e.path == "/etc/mke2fs.conf") {
        entries.push(rootfs::Entry {
            path: "/etc/mke2fs.conf".into(),
            source: rootfs::Source::Copy(conf.to_path_buf()),
            mode: 0o644,
            part: "mkfs",
        });
    }
    Ok(())
}

/// A broken init.json would only show up as a failed boot; catch it at build time.
fn check_json(path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
        bail!(
            "{}:{}:{}: invalid JSON: {e}",
            path.display(),
            e.line(),
            e.column()
        );
    }
    Ok(())
}

fn rootfs_rows(placed: &[rootfs::Placed]) -> Vec<PartRow> {
    rootfs::totals(placed)
        .into_iter()
        .map(|(part, files, bytes)| PartRow {
            part: part.to_string(),
            files,
            bytes,
        })
        .collect()
}

fn print_rootfs_table(rows: &[PartRow]) {
    let mut t: Vec<Vec<String>> = rows
        .iter()
        .map(|r| vec![r.part.clone(), r.files.to_string(), human(r.bytes)])
        .collect();
    let total: u64 = rows.iter().map(|r| r.bytes).sum();
    t.push(vec![
        "total".into(),
        rows.iter().map(|r| r.files).sum::<usize>().to_string(),
        human(total),
    ]);
    print!(
        "{}",
        manifest::table("Root filesystem content", &["part", "entries", "size"], &t)
    );
}

fn stage_msg(start: Instant, s: &str) {
    println!("==> [{:>5.1}s] {s}", start.elapsed().as_secs_f64());
}

fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

fn build(a: &BuildArgs) -> Result<()> {
    let t0 = Instant::now();
    let fmts = formats::parse_list(&a.formats).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("create {}", a.out.display()))?;
    let work = a.out.join(".work");
    let staging = work.join("rootfs");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("remove old {}", staging.display()))?;
    }
    stage_msg(
        t0,
        &format!("staging root filesystem in {}", staging.display()),
    );
    let placed = stage(&a.rootfs, &staging)?;
    let rows = rootfs_rows(&placed);
    print_rootfs_table(&rows);

    let raw = a.out.join(Format::Raw.file_name());
    let opts = DiskOptions {
        staging: staging.clone(),
        kernel: a.kernel.clone(),
        work_dir: work.clone(),
        out_raw: raw.clone(),
        out_slot: Some(a.out.join(SLOT_PAYLOAD)),
        version: a.rootfs.system_version.clone(),
        seed: a.seed.clone(),
        esp_min_bytes: a.esp_mib * MIB,
        slot_min_bytes: a.slot_mib * MIB,
        data_bytes: a.data_mib * MIB,
        read_only: a.root_ro,
        extra_args: a.kernel_args.clone(),
        bootloader: Bootloader::default(),
    };
    let report = disk::build(&opts, &|s| stage_msg(t0, s))?;
    println!("    kernel cmdline: {}", report.cmdline);

    let mut images = Vec::new();
    for f in &fmts {
        if *f != Format::Raw {
            stage_msg(
                t0,
                &format!("converting to {} ({})", f.name(), f.file_name()),
            );
        }
        let path = formats::convert(&raw, *f, &a.out)?;
        images.push((*f, path));
    }
    stage_msg(t0, "hashing outputs");
    let mut infos = Vec::new();
    for (f, p) in &images {
        infos.push(ImageInfo {
            format: f.name().to_string(),
            file: p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            bytes: std::fs::metadata(p)?.len(),
            allocated_bytes: allocated(p),
            sha256: tools::sha256_file(p)?,
        });
    }

    // The slot payload's SHA-256 is what `nomad-init upgrade --sha256` checks.
    let slot = a.out.join(SLOT_PAYLOAD);
    infos.push(ImageInfo {
        format: "slot".to_string(),
        file: SLOT_PAYLOAD.to_string(),
        bytes: std::fs::metadata(&slot)?.len(),
        allocated_bytes: allocated(&slot),
        sha256: tools::sha256_file(&slot)?,
    });

    let kmeta = std::fs::metadata(&a.kernel)?;
    let m = Manifest {
        nomados_version: a.rootfs.system_version.clone(),
        kernel: FileInfo {
            path: a.kernel.display().to_string(),
            bytes: kmeta.len(),
            sha256: tools::sha256_file(&a.kernel)?,
        },
        cmdline: report.cmdline.clone(),
        root_read_only: a.root_ro,
        rootfs_bytes: rows.iter().map(|r| r.bytes).sum(),
        rootfs: rows,
        disk: report.layout.clone(),
        images: infos,
    };
    let mpath = a.out.join("manifest.json");
    manifest::write_json(&mpath, &m)?;
    let _ = std::fs::remove_dir_all(&work);

    let prow: Vec<Vec<String>> = m
        .disk
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                format!("{} MiB", p.offset_bytes() / MIB),
                human(p.size_bytes()),
                p.uuid.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        manifest::table(
            "Partitions",
            &["partition", "offset", "size", "PARTUUID"],
            &prow
        )
    );
    let irow: Vec<Vec<String>> = m
        .images
        .iter()
        .map(|i| {
            vec![
                i.format.clone(),
                i.file.clone(),
                human(i.bytes),
                human(i.allocated_bytes),
            ]
        })
        .collect();
    print!(
        "{}",
        manifest::table(
            &format!(
                "Images in {} (kernel {})",
                a.out.display(),
                human(m.kernel.bytes)
            ),
            &["format", "file", "size", "on disk"],
            &irow
        )
    );
    stage_msg(t0, &format!("done; manifest {}", mpath.display()));
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let r = match &cli.cmd {
        Cmd::Rootfs { rootfs, staging } => stage(rootfs, staging).map(|placed| {
            print_rootfs_table(&rootfs_rows(&placed));
        }),
        Cmd::Build(a) => build(a),
    };
    if let Err(e) = r {
        eprintln!("nomados-image: error: {e:#}");
        std::process::exit(1);
    }
}
