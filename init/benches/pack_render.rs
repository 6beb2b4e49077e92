//! Prints how long loading a pack and rendering it for many declared jobs takes, and how long
//! loading generated pack sets of 1, 4 and 10 MB takes (it must grow linearly with the size).
//! Run: `cargo bench -p nomad-init --bench pack_render` (add `--profile dev` for quick
//! figures without the release build; debug build: ~25 ms per load, ~0.6 ms per job).

use std::path::Path;
use std::time::Instant;

use nomad_init::diag::Location;
use nomad_init::packs::config;
use nomad_init::packs::model::JobDecl;
use nomad_init::packs::pack;
use nomad_init::packs::render::{render, RenderContext};

fn main() {
    bench_pack_and_render();
    for mb in [1, 4, 10] {
        bench_pack_set_load(mb);
    }
}

/// A pack set of about `bytes` bytes: many packs, each with two jobs and a few variables of
/// different types, the way a large generated set would look.
fn generated_pack_set(bytes: usize) -> String {
    use std::fmt::Write;

    let mut text = String::with_capacity(bytes + 512);
    text.push_str("_name = \"bench\"\n");
    let mut i = 0;
    while text.len() < bytes {
        let _ = write!(
            text,
            "\n[pack-{i}]\n_origin = \"packs\"\n_origin-name = \"web\"\n\
             [pack-{i}.site]\nport = {port}\nhost = \"site-{i}.example.com\"\n\
             tags = [\"a\", \"b\", \"c\"]\ntls = {{ enabled = true, ca = \"/etc/ssl/ca.pem\" }}\n\
             [pack-{i}.worker]\nreplicas = {replicas}\nratio = 0.5\n",
            port = 10000 + i % 50000,
            replicas = i % 7,
        );
        i += 1;
    }
    text
}

fn bench_pack_set_load(mb: usize) {
    let text = generated_pack_set(mb << 20);
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("temp dir: {e}");
            std::process::exit(1);
        }
    };
    let file = tmp.path().join("packs.toml");
    if let Err(e) = std::fs::write(&file, &text) {
        eprintln!("{}: {e}", file.display());
        std::process::exit(1);
    }
    let start = Instant::now();
    match config::load(&file) {
        Ok(set) => println!(
            "load pack set: {mb} MB ({} packs) in {:?}",
            set.packs.len(),
            start.elapsed()
        ),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}

fn bench_pack_and_render() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/packs/web");
    let loads = 100;
    let start = Instant::now();
    for _ in 0..loads {
        if let Err(e) = pack::load("web", &dir) {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
    let per_load = start.elapsed() / loads;

    let pack = match pack::load("web", &dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let ctx = RenderContext {
        datacenters: vec!["dc1".into()],
    };
    let jobs: Vec<JobDecl> = (0..1000)
        .map(|i| JobDecl {
            name: format!("site-{i}"),
            vars: [("port".to_string(), serde_json::json!(10000 + i))].into(),
            allow_drivers: Vec::new(),
            location: Location::new("bench.toml", 1, 1),
        })
        .collect();
    let start = Instant::now();
    let mut artifacts = 0;
    for job in &jobs {
        match render(&pack, job, &ctx) {
            Ok(out) => artifacts += out.jobs.len() + out.variables.len() + out.policies.len(),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
    }
    let elapsed = start.elapsed();
    println!("load web pack: {per_load:?} per load ({loads} loads)");
    println!(
        "render web pack: {:?} per declared job, {} declared jobs ({artifacts} artifacts) in {elapsed:?}",
        elapsed / jobs.len() as u32,
        jobs.len()
    );
}
