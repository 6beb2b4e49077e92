//! Loads the example packs under tests/fixtures/packs and the default pack set under packs/,
//! and renders them as the applier would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nomad_init::diag::Location;
use nomad_init::packs::model::{JobDecl, JobFormat};
use nomad_init::packs::pack::{self, Pack, PackError};
use nomad_init::packs::render::{render, RenderContext, RenderError};
use serde_json::{json, Value};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/packs")
        .join(name)
}

fn load(name: &str) -> Pack {
    pack::load(name, &fixture(name)).unwrap_or_else(|e| panic!("{e}"))
}

fn decl(name: &str, vars: Value) -> JobDecl {
    let Value::Object(vars) = vars else {
        panic!("vars must be an object")
    };
    JobDecl {
        name: name.to_string(),
        vars: vars.into_iter().collect(),
        allow_drivers: Vec::new(),
        location: Location::new("set.toml", 7, 1),
    }
}

fn ctx() -> RenderContext {
    RenderContext {
        datacenters: vec!["dc1".into(), "dc2".into()],
    }
}

/// Parses rendered HCL with a real HCL2 parser, evaluating string templates (no variables are
/// defined, so a stray `${...}` fails).
fn hcl_value(text: &str) -> Value {
    hcl::eval::from_str(text, &hcl::eval::Context::new())
        .unwrap_or_else(|e| panic!("rendered HCL does not parse: {e}\n{text}"))
}

fn render_err(pack: &Pack, job: &JobDecl) -> String {
    match render(pack, job, &ctx()) {
        Ok(r) => panic!("expected an error, rendered {r:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn web_pack_renders_jobs_variables_and_policies() {
    let pack = load("web");
    assert_eq!(
        pack.description.as_deref(),
        Some("A tiny HTTP responder, for tests")
    );
    let out = render(&pack, &decl("site", json!({"port": 9090})), &ctx()).unwrap();

    let files: Vec<_> = out.jobs.iter().map(|j| j.source.file.clone()).collect();
    assert_eq!(
        files,
        [
            PathBuf::from("jobs/web.hcl"),
            PathBuf::from("jobs/web.json")
        ]
    );
    let hcl = &out.jobs[0];
    assert_eq!(hcl.format, JobFormat::Hcl);
    assert_eq!(hcl.source.pack, "web");
    assert_eq!(hcl.source.job, "site");
    // Every context key: pack, jobname, datacenters, a job var over a default.
    assert!(
        hcl.text.starts_with("# web / site\njob \"site\" {\n"),
        "{}",
        hcl.text
    );
    assert!(
        hcl.text.contains(r#"datacenters = ["dc1","dc2"]"#),
        "{}",
        hcl.text
    );
    assert!(hcl.text.contains(r#""-p", "9090""#), "{}", hcl.text);
    // include renders the included file with the same context.
    assert!(
        hcl.text.contains("\nhello from site on port 9090\n"),
        "{}",
        hcl.text
    );
    // file() returns the text unrendered; hcl_encode escapes it for HCL.
    assert!(
        hcl.text
            .contains(r#"data        = "{{ env \"NOMAD_ALLOC_ID\" }} $${NOMAD_TASK_NAME}\n""#),
        "{}",
        hcl.text
    );

    let parsed = hcl_value(&hcl.text);
    let task = &parsed["job"]["site"]["group"]["web"]["task"]["httpd"];
    assert_eq!(task["driver"], "raw_exec");
    // The Go template reaches Nomad unchanged, `${` included.
    assert_eq!(
        task["template"][0]["data"],
        "{{ env \"NOMAD_ALLOC_ID\" }} ${NOMAD_TASK_NAME}\n"
    );
    assert_eq!(
        task["template"][1]["data"],
        "hello from site on port 9090\n\n"
    );
    assert_eq!(task["config"]["args"], json!(["httpd", "-f", "-p", "9090"]));

    let json_job = &out.jobs[1];
    assert_eq!(json_job.format, JobFormat::Json);
    let v: Value = serde_json::from_str(&json_job.text).unwrap();
    assert_eq!(v["Job"]["ID"], "site-json");
    assert_eq!(v["Job"]["Datacenters"], json!(["dc1", "dc2"]));
    assert_eq!(v["Job"]["Meta"]["message"], "hello");
    assert_eq!(v["Job"]["Meta"]["replicas"], "a,b");

    assert_eq!(out.variables.len(), 2);
    let config = &out.variables[0];
    assert_eq!(
        config.source.file,
        PathBuf::from("variables/app/config.toml")
    );
    assert_eq!(config.path, "app/config");
    assert_eq!(config.namespace, None);
    assert_eq!(
        config.items,
        BTreeMap::from([
            ("greeting".to_string(), "hello".to_string()),
            ("port".to_string(), "9090".to_string()),
        ])
    );
    let explicit = &out.variables[1];
    assert_eq!(explicit.path, "nomad/jobs/site");
    assert_eq!(explicit.namespace.as_deref(), Some("ops"));
    assert_eq!(explicit.items["owner"], "web");

    assert_eq!(out.policies.len(), 1);
    let policy = &out.policies[0];
    assert_eq!(policy.name, "read");
    assert_eq!(policy.description.as_deref(), Some("Read access for site"));
    assert!(policy.rules.contains("policy = \"read\""));
}

#[test]
fn defaults_apply_when_the_job_sets_nothing() {
    let pack = load("web");
    let out = render(&pack, &decl("plain", json!({})), &ctx()).unwrap();
    assert!(out.jobs[0].text.contains(r#""-p", "8080""#));
    assert_eq!(out.variables[0].items["port"], "8080");
}

#[test]
fn job_vars_override_datacenters_and_pack() {
    let pack = load("web");
    let job = decl(
        "edge",
        json!({"datacenters": ["edge-1"], "pack": "renamed"}),
    );
    let out = render(&pack, &job, &ctx()).unwrap();
    assert!(out.jobs[0].text.starts_with("# renamed / edge\n"));
    assert!(out.jobs[0].text.contains(r#"datacenters = ["edge-1"]"#));
}

#[test]
fn jobname_cannot_be_a_variable() {
    let pack = load("web");
    let err = render(&pack, &decl("site", json!({"jobname": "other"})), &ctx()).unwrap_err();
    assert!(matches!(err, RenderError::ReservedVariable { .. }));
    assert_eq!(
        err.to_string(),
        "set.toml:7:1: `jobname` is set by the applier and cannot be a variable \
         (declared job `site` of pack `web`)"
    );
}

#[test]
fn undefined_variable_names_file_line_and_column() {
    let pack = load("undefined");
    assert_eq!(
        render_err(&pack, &decl("j", json!({}))),
        "pack `undefined`, jobs/a.hcl:3:13: variable `port` is not defined (declared job `j`)"
    );
    // Defined by the job table, it renders.
    let out = render(&pack, &decl("j", json!({"port": 1})), &ctx()).unwrap();
    assert!(out.jobs[0].text.contains("port = 1"));
}

#[test]
fn undefined_variable_in_an_included_file_names_that_file() {
    let pack = load("include-undefined");
    assert_eq!(
        render_err(&pack, &decl("j", json!({}))),
        "pack `include-undefined`, files/part.hcl:2:16: variable `nope` is not defined \
         (included from jobs/a.hcl) (declared job `j`)"
    );
}

#[test]
fn including_a_file_that_is_not_tera_reports_its_syntax_error() {
    let pack = load("include-broken");
    let err = render_err(&pack, &decl("j", json!({})));
    assert!(
        err.starts_with("pack `include-broken`, files/go.tpl:2:"),
        "{err}"
    );
    assert!(err.contains("template syntax error"), "{err}");
    assert!(
        err.ends_with("(included from jobs/a.hcl) (declared job `j`)"),
        "{err}"
    );
}

#[test]
fn json_job_that_renders_invalid_names_the_rendered_position() {
    let pack = load("bad-json");
    let err = render_err(&pack, &decl("j", json!({})));
    assert!(
        err.starts_with("pack `bad-json`, jobs/a.json: rendered output is not valid JSON"),
        "{err}"
    );
    assert!(err.contains("at line 3 column 3"), "{err}");
    assert!(
        err.contains("(rendered line: `\"Type\": \"system\"`)"),
        "{err}"
    );
}

#[test]
fn empty_jobs_dir_renders_nothing() {
    let pack = load("empty");
    let out = render(&pack, &decl("j", json!({})), &ctx()).unwrap();
    assert!(out.jobs.is_empty() && out.variables.is_empty() && out.policies.is_empty());
}

#[test]
fn missing_jobs_dir_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = pack::load("x", dir.path()).unwrap_err();
    assert!(matches!(err, PackError::NoJobsDir { .. }));
    assert!(err
        .to_string()
        .starts_with("pack `x` has no jobs/ directory"));
}

#[test]
fn renders_two_hundred_declared_jobs_from_one_load() {
    let pack = load("web");
    for i in 0..200 {
        let name = format!("site-{i}");
        let out = render(&pack, &decl(&name, json!({"port": 10000 + i})), &ctx()).unwrap();
        assert!(out.jobs[0].text.contains(&format!("job \"{name}\"")));
        assert_eq!(out.variables[0].items["port"], (10000 + i).to_string());
        assert_eq!(out.variables[1].path, format!("nomad/jobs/{name}"));
    }
}

#[test]
fn output_is_deterministic_and_sorted_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    // Created out of order on purpose.
    for name in ["zeta", "alpha", "mid", "beta"] {
        write(&format!("jobs/{name}.hcl"), &format!("job \"{name}\" {{}}"));
        write(
            &format!("variables/{name}.toml"),
            "[items]\na = \"{{ jobname }}\"",
        );
        write(&format!("policies/{name}.hcl"), "");
    }
    let pack = pack::load("order", dir.path()).unwrap();
    let first = render(&pack, &decl("j", json!({})), &ctx()).unwrap();
    let names: Vec<_> = first.jobs.iter().map(|j| j.source.file.clone()).collect();
    let expected: Vec<PathBuf> = ["alpha", "beta", "mid", "zeta"]
        .iter()
        .map(|n| PathBuf::from(format!("jobs/{n}.hcl")))
        .collect();
    assert_eq!(names, expected);
    let policies: Vec<_> = first.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(policies, ["alpha", "beta", "mid", "zeta"]);
    let again = pack::load("order", dir.path()).unwrap();
    assert_eq!(
        render(&again, &decl("j", json!({})), &ctx()).unwrap(),
        first
    );
}

/// Writes a one-off pack and renders it for job `j`.
fn render_inline(files: &[(&str, &str)], vars: Value) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("jobs")).unwrap();
    for (rel, text) in files {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let pack = pack::load("p", dir.path()).map_err(|e| e.to_string())?;
    let out = render(&pack, &decl("j", vars), &ctx()).map_err(|e| e.to_string())?;
    Ok(out
        .jobs
        .iter()
        .map(|j| j.text.as_str())
        .collect::<Vec<_>>()
        .join("\n"))
}

#[test]
fn variable_items_must_be_strings() {
    let err = render_inline(
        &[("variables/app.toml", "[items]\nport = {{ port }}\n")],
        json!({"port": 8080}),
    )
    .unwrap_err();
    assert_eq!(
        err,
        "pack `p`, variables/app.toml: items.port must be a string, found number `8080` \
         (quote it) (declared job `j`)"
    );
}

#[test]
fn variable_toml_that_renders_invalid_names_the_rendered_line() {
    let err = render_inline(
        &[("variables/app.toml", "[items]\na = \"x\"\nb = {{ b }}\n")],
        json!({"b": "two words"}),
    )
    .unwrap_err();
    assert!(
        err.starts_with("pack `p`, variables/app.toml: rendered output is not valid TOML"),
        "{err}"
    );
    assert!(err.contains("at line 3 column"), "{err}");
    assert!(err.contains("(rendered line: `b = two words`)"), "{err}");
}

#[test]
fn syntax_error_is_reported_at_load_with_line() {
    let err = render_inline(
        &[("jobs/a.hcl", "job \"a\" {\n\n  {% if x %}\n}\n")],
        json!({}),
    )
    .unwrap_err();
    assert!(
        err.starts_with("pack `p`, jobs/a.hcl:5:1: template syntax error"),
        "{err}"
    );
}

#[test]
fn unknown_filter_and_failed_function_are_located() {
    let err = render_inline(
        &[("jobs/a.hcl", "a\nb = {{ x | shout }}\n")],
        json!({"x": 1}),
    )
    .unwrap_err();
    assert_eq!(
        err,
        "pack `p`, jobs/a.hcl:2:12: unknown filter `shout` (declared job `j`)"
    );
    let err = render_inline(
        &[("jobs/a.hcl", "a\n\n  {{ file(path=\"files/none\") }}\n")],
        json!({}),
    )
    .unwrap_err();
    assert_eq!(
        err,
        "pack `p`, jobs/a.hcl:3:6: function `file` failed: \
         file(path=\"files/none\"): no such file in the pack (declared job `j`)"
    );
}

#[test]
fn optional_variables_use_if_defined_or_default() {
    let tpl = "a={% if tls %}on{% endif %} b={{ port | default(value=80) }} \
               c={% if name is defined %}{{ name }}{% else %}none{% endif %}";
    let text = render_inline(&[("jobs/a.hcl", tpl)], json!({})).unwrap();
    assert_eq!(text, "a= b=80 c=none");
    let text = render_inline(
        &[("jobs/a.hcl", tpl)],
        json!({"tls": true, "port": 443, "name": "x"}),
    )
    .unwrap();
    assert_eq!(text, "a=on b=443 c=x");
}

#[test]
fn failed_filter_in_an_included_file_is_located_there() {
    let err = render_inline(
        &[
            ("jobs/a.hcl", "job {\n{% include \"files/part\" %}\n}\n"),
            (
                "files/part",
                "# part\nx = {{ n | round(method=\"sideways\") }}\n",
            ),
        ],
        json!({"n": 1.5}),
    )
    .unwrap_err();
    assert!(
        err.starts_with("pack `p`, files/part:2:12: filter `round` failed: "),
        "{err}"
    );
    assert!(
        err.ends_with("(included from jobs/a.hcl) (declared job `j`)"),
        "{err}"
    );
}

#[test]
fn macros_and_extends_come_from_files() {
    let text = render_inline(
        &[
            (
                "files/macros.tera",
                "{% macro port(n) %}port = {{ n }}{% endmacro port %}",
            ),
            (
                "files/base.hcl",
                "job \"{{ jobname }}\" {\n{% block body %}{% endblock body %}\n}",
            ),
            (
                "jobs/a.hcl",
                "{% extends \"files/base.hcl\" %}{% import \"files/macros.tera\" as m %}\
                 {% block body %}  {{ m::port(n=p) }}{% endblock body %}",
            ),
        ],
        json!({"p": 7}),
    )
    .unwrap();
    assert_eq!(text, "job \"j\" {\n  port = 7\n}");
}

#[test]
fn policy_description_longer_than_nomad_accepts_is_an_error() {
    let long = "x".repeat(257);
    let err = render_inline(
        &[("policies/p.hcl", &format!("# description: {long}\n"))],
        json!({}),
    )
    .unwrap_err();
    assert_eq!(
        err,
        "pack `p`, policies/p.hcl:1:1: the description is 257 characters; \
         Nomad accepts at most 256 (declared job `j`)"
    );
}

#[test]
fn get_env_is_disabled_so_packs_render_the_same_everywhere() {
    let err =
        render_inline(&[("jobs/a.hcl", "{{ get_env(name=\"HOME\") }}")], json!({})).unwrap_err();
    assert!(err.contains("get_env is disabled in packs"), "{err}");
}

#[test]
fn throw_reports_the_authors_message() {
    let err = render_inline(
        &[(
            "jobs/a.hcl",
            "x\n{% if n > 3 %}{{ throw(message=\"n is at most 3\") }}{% endif %}",
        )],
        json!({"n": 4}),
    )
    .unwrap_err();
    assert_eq!(
        err,
        "pack `p`, jobs/a.hcl:2:33: n is at most 3 (declared job `j`)"
    );
}

/// The default pack set of the image: `packs/packs.toml` and the packs beside it. The pack-set
/// loader lives elsewhere; this reads just enough of the file (pack tables with `_origin`, job
/// sub-tables) to render every declared job.
#[test]
fn default_pack_set_renders() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packs");
    let text = std::fs::read_to_string(root.join("packs.toml")).unwrap();
    let set: toml::Table = toml::from_str(&text).unwrap();
    let mut rendered = 0;
    for (key, table) in &set {
        let Some(table) = table.as_table() else {
            continue;
        };
        let origin = table["_origin"].as_str().unwrap();
        let name = table.get("_name").and_then(|v| v.as_str()).unwrap_or(key);
        let origin_name = table
            .get("_origin-name")
            .and_then(|v| v.as_str())
            .unwrap_or(key);
        let pack = pack::load(name, &root.join(origin).join(origin_name))
            .unwrap_or_else(|e| panic!("{e}"));
        for (job_name, vars) in table {
            let Some(vars) = vars.as_table() else {
                continue;
            };
            let vars: serde_json::Map<String, Value> = vars
                .iter()
                .filter(|(k, _)| !k.starts_with('_'))
                .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap()))
                .collect();
            let out = render(&pack, &decl(job_name, Value::Object(vars)), &ctx())
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(!out.jobs.is_empty(), "{key}.{job_name} renders no job");
            for job in &out.jobs {
                assert_eq!(job.format, JobFormat::Hcl, "{}", job.source);
                let parsed = hcl_value(&job.text);
                let spec = &parsed["job"][job_name.as_str()];
                assert_eq!(spec["type"], "system", "{}", job.text);
                assert_eq!(spec["datacenters"], json!(["dc1", "dc2"]));
                let groups = spec["group"].as_object().unwrap();
                for group in groups.values() {
                    for task in group["task"].as_object().unwrap().values() {
                        let driver = task["driver"].as_str().unwrap();
                        assert!(["raw_exec", "exec"].contains(&driver), "{driver}");
                    }
                }
            }
            rendered += 1;
        }
    }
    assert!(rendered > 0, "packs/packs.toml declares no job");
}

#[test]
fn hello_pack_checks_its_interval() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packs/hello");
    let pack = pack::load("hello", &root).unwrap();
    let out = render(&pack, &decl("beat", json!({"interval": 5})), &ctx()).unwrap();
    let text = &out.jobs[0].text;
    assert!(text.starts_with("job \"beat\" {"), "{text}");
    let parsed = hcl_value(text);
    let config = &parsed["job"]["beat"]["group"]["beat"]["task"]["heartbeat"]["config"];
    assert_eq!(config["command"], "/sbin/nomad-init");
    assert_eq!(
        config["args"],
        json!(["heartbeat", "NomadOS heartbeat", "--interval", "5"])
    );
    let err = render(&pack, &decl("beat", json!({"interval": "soon"})), &ctx())
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("pack `hello`, jobs/hello.hcl:2:"), "{err}");
    assert!(
        err.contains("`interval` must be a number of seconds"),
        "{err}"
    );
    let err = render(&pack, &decl("beat", json!({"datacenters": []})), &ctx())
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("pack `hello`, jobs/hello.hcl:3:"), "{err}");
    assert!(err.contains("`datacenters` is empty"), "{err}");
}

#[test]
fn a_loaded_pack_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>(_: &T) {}
    let pack = load("web");
    shareable(&pack);
    let pack = std::sync::Arc::new(pack);
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let pack = pack.clone();
            std::thread::spawn(move || render(&pack, &decl(&format!("t{i}"), json!({})), &ctx()))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().unwrap().jobs.len(), 2);
    }
}

/// Runs the hello pack's rendered task as Nomad's raw_exec would (this build's nomad-init
/// standing in for the image's /sbin/nomad-init; no shell involved) and reads its lines.
#[test]
fn hello_pack_task_runs_without_a_shell() {
    use std::process::Command;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packs/hello");
    let pack = pack::load("hello", &root).unwrap();
    // A message a shell would have expanded: it must come out as written.
    let message = "beat $(id) `x` ;";
    let vars = json!({"interval": 1, "message": message});
    let out = render(&pack, &decl("beat", vars), &ctx()).unwrap();
    let parsed = hcl_value(&out.jobs[0].text);
    let config = &parsed["job"]["beat"]["group"]["beat"]["task"]["heartbeat"]["config"];
    assert_eq!(config["command"], "/sbin/nomad-init");
    let args: Vec<String> = config["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();

    let started = std::time::Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_nomad-init"))
        .args(&args)
        .args(["--count", "2"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    let text = String::from_utf8(run.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let host = nix::unistd::gethostname().unwrap();
    for line in lines {
        let rest = line
            .strip_prefix(message)
            .expect(line)
            .strip_prefix(' ')
            .expect(line);
        let (name, stamp) = rest.rsplit_once(' ').expect(line);
        assert_eq!(name, host.to_str().unwrap(), "{line}");
        assert!(
            stamp.len() == 20 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "{line}"
        );
    }
    // Two lines one interval apart: the rendered interval reached the task.
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
}
