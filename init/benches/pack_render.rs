//! Prints how long loading a pack and rendering it for many declared jobs takes.
//! Run: `cargo bench -p nomad-init --bench pack_render` (add `--profile dev` for quick
//! figures without the release build; debug build: ~25 ms per load, ~0.6 ms per job).

use std::path::Path;
use std::time::Instant;

use nomad_init::diag::Location;
use nomad_init::packs::model::JobDecl;
use nomad_init::packs::pack;
use nomad_init::packs::render::{render, RenderContext};

fn main() {
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
