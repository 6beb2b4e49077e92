//! The applier end to end: the real `nomad-init packs ...` binary against the Nomad test
//! double (always) and against a real Nomad (when NOMAD_BIN is set).

mod common;

use common::{packs, summary, text, DoubleConfig, Nomad, Workspace};
use serde_json::json;

/// `nomad-init packs <cmd> <set>` against `nomad` with the token in the environment (as
/// PID 1 passes it), the workspace's cache.
fn packs_with_token(
    cmd: &str,
    set: &std::path::Path,
    nomad: &Nomad,
    ws: &Workspace,
    token: &str,
) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_nomad-init"))
        .args(["packs", cmd])
        .arg(set)
        .args(["--nomad-addr", &nomad.addr, "--cache-dir"])
        .arg(ws.path(".cache"))
        .env("NOMAD_TOKEN", token)
        .output()
        .unwrap()
}

fn two_pack_set(ws: &Workspace) -> std::path::PathBuf {
    ws.system_pack("web").system_pack("cache");
    ws.write(
        "set.toml",
        r#"_name = "test-set"

[web]
_origin = "packs"
[web.web-a]
message = "a"
[web.web-b]
message = "b"

[cache]
_origin = "packs"
[cache.cache-1]
"#,
    );
    ws.path("set.toml")
}

/// Cold apply creates everything; the unchanged re-apply writes nothing.
fn cold_then_noop(nomad: &Nomad) {
    let ws = Workspace::new();
    let set = two_pack_set(&ws);
    let out = packs("apply", &set, nomad, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        summary(&out),
        "Apply: 3 created, 0 updated, 0 unchanged, 0 deleted, 0 failed."
    );
    assert_eq!(nomad.job_ids(), ["cache-1", "web-a", "web-b"]);

    let job = nomad.get("/v1/job/web-b").unwrap();
    assert_eq!(job["Meta"]["nomados.owner"], "test-set");
    // PID 1's trial gate learns whose allocations to look at from the cache.
    assert_eq!(
        std::fs::read_to_string(ws.path(".cache/owner")).unwrap(),
        "test-set\n"
    );
    assert_eq!(job["Meta"]["nomados.pack"], "web");
    assert_eq!(job["Meta"]["nomados.job"], "web-b");
    assert_eq!(job["Meta"]["nomados.hash"].as_str().unwrap().len(), 64);
    assert_eq!(
        job["TaskGroups"][0]["Tasks"][0]["Config"]["args"][1],
        "echo b; sleep 3600"
    );

    let before = nomad.job_indexes();
    let writes = nomad.is_double().then(|| nomad.writes());
    let out = packs("apply", &set, nomad, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        summary(&out),
        "Apply: 0 created, 0 updated, 3 unchanged, 0 deleted, 0 failed."
    );
    assert_eq!(
        nomad.job_indexes(),
        before,
        "a no-op re-apply must not modify any job"
    );
    if let Some(w) = writes {
        assert_eq!(
            nomad.writes(),
            w,
            "a no-op re-apply must perform zero writes"
        );
    }
}

#[test]
fn cold_apply_then_noop_reapply_against_the_double() {
    cold_then_noop(&Nomad::double(DoubleConfig::default()));
}

#[test]
fn cold_apply_then_noop_reapply_against_real_nomad() {
    if let Some(nomad) = Nomad::real("cold_apply_then_noop_reapply") {
        cold_then_noop(&nomad);
    }
}

/// A managed job changed in Nomad by hand, its meta (and so its hash) kept as `nomad job
/// inspect` would give it back, is shown by plan and put back by apply. Losing this
/// machine's record of what it saw costs dry runs only, never a write.
fn drift_is_detected_and_reverted(nomad: &Nomad) {
    let ws = Workspace::new();
    let set = two_pack_set(&ws);
    let out = packs("apply", &set, nomad, &[]);
    assert!(out.status.success(), "{}", text(&out));

    let mut job = nomad.get("/v1/job/web-b").unwrap();
    let args = &mut job["TaskGroups"][0]["Tasks"][0]["Config"]["args"];
    assert_eq!(args[1], "echo b; sleep 3600");
    args[1] = "echo edited by hand; sleep 3600".into();
    nomad
        .post("/v1/jobs", &json!({ "Job": job }), None)
        .unwrap();
    let edited = nomad.get("/v1/job/web-b").unwrap();
    assert_eq!(edited["Meta"]["nomados.hash"], job["Meta"]["nomados.hash"]);

    let out = packs("plan", &set, nomad, &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("~ update    web-b (pack `web`, job `web-b`) changed outside the pack set"),
        "{t}"
    );
    assert!(
        t.contains("echo edited by hand"),
        "Nomad's diff is shown: {t}"
    );
    assert!(t.contains("= unchanged web-a"), "{t}");
    assert!(
        t.contains("Plan: 0 to create, 1 to update, 2 unchanged"),
        "{t}"
    );

    let out = packs("apply", &set, nomad, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        summary(&out),
        "Apply: 0 created, 1 updated, 2 unchanged, 0 deleted, 0 failed."
    );
    let back = nomad.get("/v1/job/web-b").unwrap();
    assert_eq!(
        back["TaskGroups"][0]["Tasks"][0]["Config"]["args"][1],
        "echo b; sleep 3600"
    );

    // Without the record (a fresh cache dir, a PXE boot), every job gets a dry run and
    // nothing is written.
    let before = nomad.job_indexes();
    let writes = nomad.is_double().then(|| nomad.writes());
    std::fs::remove_dir_all(ws.path(".cache/applied")).unwrap();
    let out = packs("apply", &set, nomad, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        summary(&out),
        "Apply: 0 created, 0 updated, 3 unchanged, 0 deleted, 0 failed."
    );
    assert_eq!(nomad.job_indexes(), before);
    if let Some(w) = writes {
        assert_eq!(nomad.writes(), w, "dry runs are not writes");
    }
}

#[test]
fn drift_is_detected_and_reverted_against_the_double() {
    drift_is_detected_and_reverted(&Nomad::double(DoubleConfig::default()));
}

#[test]
fn drift_is_detected_and_reverted_against_real_nomad() {
    if let Some(nomad) = Nomad::real("drift_is_detected_and_reverted") {
        drift_is_detected_and_reverted(&nomad);
    }
}

/// Plan shows create / update with Nomad's diff / unchanged / delete, and writes nothing.
fn plan_shows_every_kind_of_step(nomad: &Nomad) {
    let ws = Workspace::new();
    let set = two_pack_set(&ws);
    assert!(packs("apply", &set, nomad, &[]).status.success());
    ws.write(
        "set.toml",
        r#"_name = "test-set"
[web]
_origin = "packs"
[web.web-a]
message = "changed"
[web.web-c]
[cache]
_origin = "packs"
[cache.cache-1]
"#,
    );
    let before = nomad.job_indexes();
    let out = packs("plan", &set, nomad, &["--detailed-exitcode"]);
    let t = text(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "plan with changes exits 2 under --detailed-exitcode: {t}"
    );
    assert!(
        t.contains("+ create    web-c (pack `web`, job `web-c`)"),
        "{t}"
    );
    assert!(
        t.contains("~ update    web-a (pack `web`, job `web-a`)"),
        "{t}"
    );
    assert!(t.contains("= unchanged cache-1"), "{t}");
    assert!(
        t.contains("- delete    web-b (pack `web`, job `web-b`)"),
        "{t}"
    );
    assert!(
        t.contains(r#"args[1]: "echo a; sleep 3600" => "echo changed; sleep 3600""#),
        "Nomad's diff is shown: {t}"
    );
    assert!(
        t.contains("Plan: 1 to create, 1 to update, 1 unchanged, 1 to delete, 0 failed."),
        "{t}"
    );
    assert_eq!(nomad.job_indexes(), before, "plan writes nothing");

    let out = packs("apply", &set, nomad, &[]);
    assert_eq!(
        summary(&out),
        "Apply: 1 created, 1 updated, 1 unchanged, 1 deleted, 0 failed.",
        "{}",
        text(&out)
    );
    assert_eq!(nomad.job_ids(), ["cache-1", "web-a", "web-c"]);
    let out = packs("plan", &set, nomad, &["--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn plan_shows_every_kind_of_step_against_the_double() {
    plan_shows_every_kind_of_step(&Nomad::double(DoubleConfig::default()));
}

#[test]
fn plan_shows_every_kind_of_step_against_real_nomad() {
    if let Some(nomad) = Nomad::real("plan_shows_every_kind_of_step") {
        plan_shows_every_kind_of_step(&nomad);
    }
}

/// A pack whose origin is gone fails alone; the jobs it applied before stay.
fn failed_pack_keeps_its_jobs(nomad: &Nomad) {
    let ws = Workspace::new();
    let set = two_pack_set(&ws);
    assert!(packs("apply", &set, nomad, &[]).status.success());
    let before = nomad.job_indexes();
    ws.remove("packs/web");
    ws.write(
        "packs/cache/jobs/main.hcl",
        &common::SYSTEM_JOB.replace("sleep 3600", "sleep 7200"),
    );
    let out = packs("apply", &set, nomad, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("! pack `web` failed"), "{t}");
    assert!(
        t.contains("! keep      web-a (pack `web` failed; left as it is)"),
        "{t}"
    );
    assert_eq!(
        summary(&out),
        "Apply: 0 created, 1 updated, 0 unchanged, 0 deleted, 1 failed.",
        "{t}"
    );
    let after = nomad.job_indexes();
    assert_eq!(
        after
            .iter()
            .filter(|(id, _)| id.starts_with("web"))
            .collect::<Vec<_>>(),
        before
            .iter()
            .filter(|(id, _)| id.starts_with("web"))
            .collect::<Vec<_>>(),
        "the failed pack's jobs are left exactly as they were"
    );
}

#[test]
fn failed_pack_keeps_its_jobs_against_the_double() {
    failed_pack_keeps_its_jobs(&Nomad::double(DoubleConfig::default()));
}

#[test]
fn failed_pack_keeps_its_jobs_against_real_nomad() {
    if let Some(nomad) = Nomad::real("failed_pack_keeps_its_jobs") {
        failed_pack_keeps_its_jobs(&nomad);
    }
}

#[test]
fn foreign_and_other_owners_jobs_are_never_touched() {
    let nomad = Nomad::double(DoubleConfig::default());
    // A job someone ran by hand, under an ID our set also declares.
    let hand = nomad.post("/v1/jobs/parse", &json!({"JobHCL": common::SYSTEM_JOB.replace("{{ jobname }}", "web-a").replace("{{ datacenters | json_encode() }}", "[\"dc1\"]").replace("{{ message | default(value='hello') }}", "by hand"), "Canonicalize": true}), None).unwrap();
    nomad.post("/v1/jobs", &json!({"Job": hand}), None).unwrap();
    // Another pack set's job.
    let ws_other = Workspace::new();
    ws_other.system_pack("other");
    ws_other.write(
        "set.toml",
        "_name = \"other-set\"\n[other]\n_origin = \"packs\"\n[other.theirs]\n",
    );
    assert!(packs("apply", &ws_other.path("set.toml"), &nomad, &[])
        .status
        .success());

    let ws = Workspace::new();
    let set = two_pack_set(&ws);
    let out = packs("apply", &set, &nomad, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(
            "! web-a (pack 'web', job 'web-a', file jobs/main.hcl): \
             exists and is not managed by `test-set`; refusing to overwrite it"
        ),
        "{t}"
    );
    assert_eq!(
        nomad.get("/v1/job/web-a").unwrap()["TaskGroups"][0]["Tasks"][0]["Config"]["args"][1],
        "echo by hand; sleep 3600"
    );
    // Removing everything from our set deletes only our jobs.
    ws.write("set.toml", "_name = \"test-set\"\n_empty = true\n");
    let out = packs("apply", &set, &nomad, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(nomad.job_ids(), ["theirs", "web-a"]);
}

#[test]
fn clashing_job_ids_fail_both_packs_and_name_both_sources() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    ws.system_pack("one").system_pack("two").system_pack("fine");
    ws.write("set.toml", "[one]\n_origin = \"packs\"\n[one.same]\n[two]\n_origin = \"packs\"\n[two.same]\n[fine]\n_origin = \"packs\"\n[fine.ok]\n");
    let out = packs("apply", &ws.path("set.toml"), &nomad, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("job ID `same` is rendered twice: by pack 'one', job 'same', file jobs/main.hcl and by pack 'two', job 'same', file jobs/main.hcl"), "{t}");
    assert_eq!(
        nomad.job_ids(),
        ["ok"],
        "the clashing packs are not applied, the others are"
    );
}

#[test]
fn only_system_jobs_on_exec_drivers_unless_opted_out() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    ws.write(
        "packs/svc/jobs/main.hcl",
        &common::SYSTEM_JOB.replace("\"system\"", "\"service\""),
    );
    ws.write(
        "packs/dock/jobs/main.hcl",
        &common::SYSTEM_JOB.replace("\"raw_exec\"", "\"docker\""),
    );
    ws.write(
        "set.toml",
        "[svc]\n_origin = \"packs\"\n[svc.s]\n[dock]\n_origin = \"packs\"\n[dock.d]\n",
    );
    let out = packs("validate", &ws.path("set.toml"), &nomad, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("job `s` has type `service`; NomadOS applies only `system` jobs"),
        "{t}"
    );
    assert!(t.contains("task `t` uses driver `docker`"), "{t}");
    ws.write(
        "set.toml",
        "[dock]\n_origin = \"packs\"\n[dock.d]\n_allow-drivers = [\"docker\"]\n",
    );
    let out = packs("apply", &ws.path("set.toml"), &nomad, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(nomad.job_ids(), ["d"]);
}

#[test]
fn concurrent_appliers_converge_without_fighting() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    let set = two_pack_set(&ws);
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let set = set.clone();
            let addr = nomad.addr.clone();
            let cache = ws.path(".cache");
            std::thread::spawn(move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_nomad-init"))
                    .args(["packs", "apply"])
                    .arg(&set)
                    .args(["--nomad-addr", &addr, "--cache-dir"])
                    .arg(cache)
                    .output()
                    .unwrap()
            })
        })
        .collect();
    for r in runs {
        let out = r.join().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    assert_eq!(nomad.job_ids(), ["cache-1", "web-a", "web-b"]);
    for id in ["cache-1", "web-a", "web-b"] {
        assert_eq!(
            nomad.get(&format!("/v1/job/{id}")).unwrap()["Version"],
            0,
            "{id} was registered once, not overwritten"
        );
    }
    let out = packs("apply", &set, &nomad, &[]);
    assert_eq!(
        summary(&out),
        "Apply: 0 created, 0 updated, 3 unchanged, 0 deleted, 0 failed."
    );
}

#[test]
fn wait_prints_the_task_events_of_a_failed_allocation() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    ws.write(
        "packs/bad/jobs/main.hcl",
        &common::SYSTEM_JOB.replace("/bin/sh", "/nonexistent/binary"),
    );
    ws.system_pack("good");
    ws.write(
        "set.toml",
        "[bad]\n_origin = \"packs\"\n[bad.bad]\n[good]\n_origin = \"packs\"\n[good.good]\n",
    );
    let out = packs("apply", &ws.path("set.toml"), &nomad, &["--wait"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("good: 1 allocations running"), "{t}");
    assert!(t.contains("! bad: allocation failed"), "{t}");
    assert!(
        t.contains("/nonexistent/binary"),
        "the task event explains the failure: {t}"
    );
}

#[test]
fn old_agents_without_meta_filter_or_variables_still_reconcile() {
    let nomad = Nomad::double(DoubleConfig {
        version: "1.1.2".into(),
        ..DoubleConfig::default()
    });
    let ws = Workspace::new();
    let set = two_pack_set(&ws);
    ws.write(
        "packs/web/variables/web/config.json",
        r#"{"path": "web/{{ jobname }}", "items": {"greeting": "hi"}}"#,
    );
    let out = packs("apply", &set, &nomad, &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("variables not applied: Nomad 1.1.2 has no Variables"),
        "{t}"
    );
    let writes = nomad.writes();
    let out = packs("apply", &set, &nomad, &[]);
    assert_eq!(
        summary(&out),
        "Apply: 0 created, 0 updated, 3 unchanged, 0 deleted, 0 failed.",
        "{}",
        text(&out)
    );
    assert_eq!(nomad.writes(), writes);
}

#[test]
fn variables_and_policies_are_reconciled_with_acls_on() {
    let cfg = DoubleConfig {
        acl: true,
        ..DoubleConfig::default()
    };
    let token = cfg.token.clone();
    let nomad = Nomad::double(cfg);
    let ws = Workspace::new();
    let set = two_pack_set(&ws);
    ws.write(
        "packs/web/variables/shared.toml",
        "path = \"apps/{{ jobname }}\"\n[items]\ngreeting = \"{{ message }}\"\n",
    );
    ws.write(
        "packs/cache/policies/cache-read.hcl",
        "# description: read cache\nnamespace \"default\" { policy = \"read\" }\n",
    );
    let run = |cmd: &str| packs_with_token(cmd, &set, &nomad, &ws, &token);
    let out = run("apply");
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let var = nomad.get_with_token("/v1/var/apps/web-a", &token).unwrap();
    assert_eq!(var["Items"]["greeting"], "a");
    let policy = nomad
        .get_with_token("/v1/acl/policy/cache-read", &token)
        .unwrap();
    assert!(
        policy["Description"]
            .as_str()
            .unwrap()
            .starts_with("read cache [nomados owner=test-set"),
        "{policy}"
    );
    let writes = nomad.writes();
    let out = run("apply");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        nomad.writes(),
        writes,
        "unchanged variables and policies are not rewritten"
    );
    assert_eq!(
        summary(&out),
        "Apply: 0 created, 0 updated, 6 unchanged, 0 deleted, 0 failed.",
        "three jobs, two variables and a policy: {}",
        text(&out)
    );
    // A changed variable is planned like a job, then written over the index it was read at.
    let before = var["ModifyIndex"].as_u64().unwrap();
    ws.write(
        "packs/web/variables/shared.toml",
        "path = \"apps/{{ jobname }}\"\n[items]\ngreeting = \"{{ message }}!\"\n",
    );
    let out = run("plan");
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("~ update    variable default:apps/web-a (pack `web`, job `web-a`)"),
        "{t}"
    );
    assert!(
        t.contains("= unchanged policy cache-read (pack `cache`, job `cache-1`)"),
        "{t}"
    );
    assert!(
        t.contains("Plan: 0 to create, 2 to update, 4 unchanged, 0 to delete, 0 failed."),
        "{t}"
    );
    assert_eq!(nomad.writes(), writes, "plan writes nothing");
    let out = run("apply");
    assert!(out.status.success(), "{}", text(&out));
    let var = nomad.get_with_token("/v1/var/apps/web-a", &token).unwrap();
    assert_eq!(var["Items"]["greeting"], "a!");
    assert!(var["ModifyIndex"].as_u64().unwrap() > before);
    // Dropping the cache pack deletes its policy.
    ws.write("set.toml", "_name = \"test-set\"\n[web]\n_origin = \"packs\"\n[web.web-a]\nmessage = \"a\"\n[web.web-b]\nmessage = \"b\"\n");
    let out = run("apply");
    assert!(
        text(&out).contains("- delete    policy cache-read"),
        "{}",
        text(&out)
    );
    assert!(nomad
        .get_with_token("/v1/acl/policy/cache-read", &token)
        .is_err());
    // Dropping every variable deletes them and the owner's registry.
    ws.write("set.toml", "_name = \"test-set\"\n_empty = true\n");
    let out = run("apply");
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("- delete    variable default:apps/web-a"), "{t}");
    assert!(nomad.get_with_token("/v1/var/apps/web-a", &token).is_err());
    assert!(nomad
        .get_with_token("/v1/var/nomados/owners/test-set", &token)
        .is_err());
}

#[test]
fn hcl_errors_from_nomad_name_the_pack_and_file() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    ws.write("packs/broken/jobs/main.hcl", "job \"x\" {\n  type = \n}\n");
    ws.write("set.toml", "[broken]\n_origin = \"packs\"\n[broken.b]\n");
    let out = packs("validate", &ws.path("set.toml"), &nomad, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("pack 'broken', job 'b', file jobs/main.hcl: input.hcl:2"),
        "{t}"
    );
}

#[test]
fn render_prints_every_rendered_job_with_its_source() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    let set = two_pack_set(&ws);
    let out = packs("render", &set, &nomad, &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("# pack 'web', job 'web-a', file jobs/main.hcl\njob \"web-a\" {"),
        "{t}"
    );
    assert!(
        t.contains("datacenters = [\"dc1\"]"),
        "datacenters come from the agent: {t}"
    );
    assert!(nomad.job_ids().is_empty());
}

#[test]
fn an_unreachable_nomad_is_a_clear_error() {
    let ws = Workspace::new();
    let set = two_pack_set(&ws);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nomad-init"))
        .args(["packs", "apply"])
        .arg(&set)
        .args([
            "--nomad-addr",
            &format!("http://127.0.0.1:{}", common::free_port()),
        ])
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("cannot reach the Nomad agent at http://127.0.0.1:"),
        "{t}"
    );
}

#[test]
fn jobs_in_other_namespaces_are_reconciled_in_their_namespace() {
    let nomad = Nomad::double(DoubleConfig {
        namespaces: vec!["prod".into()],
        ..DoubleConfig::default()
    });
    let ws = Workspace::new();
    ws.write(
        "packs/web/jobs/main.hcl",
        &common::SYSTEM_JOB.replace(
            "  type = \"system\"",
            "  type = \"system\"\n  namespace = \"prod\"",
        ),
    );
    ws.system_pack("plain");
    ws.write(
        "set.toml",
        "[web]\n_origin = \"packs\"\n[web.web]\n[plain]\n_origin = \"packs\"\n[plain.web]\n",
    );
    let out = packs("apply", &ws.path("set.toml"), &nomad, &[]);
    assert!(
        out.status.success(),
        "the same ID in two namespaces is no clash: {}",
        text(&out)
    );
    assert_eq!(
        nomad.get("/v1/job/web?namespace=prod").unwrap()["Namespace"],
        "prod"
    );
    assert_eq!(nomad.get("/v1/job/web").unwrap()["Namespace"], "default");
    let out = packs("apply", &ws.path("set.toml"), &nomad, &[]);
    assert_eq!(
        summary(&out),
        "Apply: 0 created, 0 updated, 2 unchanged, 0 deleted, 0 failed."
    );
    ws.write("set.toml", "[plain]\n_origin = \"packs\"\n[plain.web]\n");
    let out = packs("apply", &ws.path("set.toml"), &nomad, &[]);
    assert!(
        text(&out).contains("- delete    prod/web (pack `web`, job `web`)"),
        "{}",
        text(&out)
    );
    assert!(nomad.get("/v1/job/web?namespace=prod").is_err());
    assert!(nomad.get("/v1/job/web").is_ok());
}

#[test]
fn the_rendered_source_is_submitted_where_nomad_keeps_it() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    let set = two_pack_set(&ws);
    assert!(packs("apply", &set, &nomad, &[]).status.success());
    let sub = nomad.get("/v1/job/web-a/submission?version=0").unwrap();
    assert_eq!(sub["Format"], "hcl2");
    assert!(
        sub["Source"].as_str().unwrap().contains("job \"web-a\" {"),
        "{sub}"
    );
    // Agents before 1.6 keep no submissions; applying to them still works.
    let old = Nomad::double(DoubleConfig {
        version: "1.5.3".into(),
        ..DoubleConfig::default()
    });
    let out = packs("apply", &set, &old, &[]);
    assert!(out.status.success(), "{}", text(&out));
}

/// After an apply (never a plan), cached downloads the set no longer names are removed
/// once idle for a week; fresh ones and foreign files stay.
#[test]
fn apply_collects_cached_downloads_the_set_no_longer_uses() {
    use sha2::{Digest, Sha256};
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    let set = two_pack_set(&ws);
    let cache = ws.path(".cache");
    let hex = |s: &str| hex::encode(Sha256::digest(s.as_bytes()));
    // Two downloads of a pack the set used to name: one idle for 8 days, one fresh.
    let seed = |name: &str, age_days: u64| {
        let digest = hex(name);
        let blob = cache.join("blobs/sha256").join(&digest);
        let tree = cache.join("unpacked").join(&digest);
        let index = cache.join("index").join(format!("{}.json", hex(name)));
        std::fs::create_dir_all(tree.join("jobs")).unwrap();
        std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
        std::fs::create_dir_all(index.parent().unwrap()).unwrap();
        std::fs::write(&blob, vec![7u8; 4096]).unwrap();
        std::fs::write(tree.join("jobs/old.hcl"), "job").unwrap();
        let url = format!("https://packs.example/{name}");
        std::fs::write(
            &index,
            json!({"url": url, "etag": null, "last_modified": null, "digest": digest}).to_string(),
        )
        .unwrap();
        let then = std::time::SystemTime::now() - std::time::Duration::from_secs(age_days * 86400);
        for p in [&blob, &tree, &index] {
            std::fs::File::open(p).unwrap().set_modified(then).unwrap();
        }
        (blob, tree, index)
    };
    let (old_blob, old_tree, old_index) = seed("old.tar.gz", 8);
    let (fresh_blob, fresh_tree, _) = seed("fresh.tar.gz", 0);
    std::fs::write(cache.join("blobs/sha256/NOTES"), "an operator's file").unwrap();

    let out = packs("plan", &set, &nomad, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(old_blob.exists(), "plan never removes anything");

    let out = packs("apply", &set, &nomad, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("Cache: removed 1 downloaded archive the pack set no longer uses (0.0 MiB)."),
        "{t}"
    );
    assert_eq!(
        summary(&out),
        "Apply: 3 created, 0 updated, 0 unchanged, 0 deleted, 0 failed."
    );
    assert!(!old_blob.exists() && !old_tree.exists() && !old_index.exists());
    assert!(fresh_blob.exists() && fresh_tree.exists());
    assert!(cache.join("blobs/sha256/NOTES").exists());

    // Nothing left to collect: the re-apply says nothing about the cache.
    let out = packs("apply", &set, &nomad, &[]);
    assert!(!text(&out).contains("Cache:"), "{}", text(&out));
}

/// A proxy in front of the double that never answers the registration of job `slow`.
fn proxy_holding_job(
    upstream: String,
    held: &'static str,
) -> (String, std::thread::JoinHandle<()>) {
    use axum::body::Bytes;
    use axum::http::{Method, StatusCode, Uri};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = reqwest::Client::new();
            let app = axum::Router::new().fallback(move |method: Method, uri: Uri, body: Bytes| {
                let client = client.clone();
                let upstream = upstream.clone();
                async move {
                    if method == Method::POST && uri.path() == "/v1/jobs" {
                        let v: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or_default();
                        if v["Job"]["ID"] == held {
                            std::future::pending::<()>().await;
                        }
                    }
                    let url = format!(
                        "{upstream}{}",
                        uri.path_and_query().map_or("", |p| p.as_str())
                    );
                    let resp = client
                        .request(method, url)
                        .header("Content-Type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
                    (status, resp.bytes().await.unwrap())
                }
            });
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (addr, handle)
}

/// An apply interrupted while a write hangs has already reported the writes that were done.
#[test]
fn every_write_is_reported_as_it_completes() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    ws.system_pack("p");
    ws.write(
        "set.toml",
        "[p]\n_origin = \"packs\"\n[p.a-fast]\n[p.slow]\n",
    );
    let (proxy, _server) = proxy_holding_job(nomad.addr.clone(), "slow");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_nomad-init"))
        .args(["packs", "apply"])
        .arg(ws.path("set.toml"))
        .args(["--nomad-addr", &proxy, "--cache-dir"])
        .arg(ws.path(".cache"))
        .env_remove("NOMAD_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // `a-fast` is registered at once (the double has it); `slow` hangs in the proxy.
    let start = std::time::Instant::now();
    while !nomad.job_ids().contains(&"a-fast".to_string()) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "a-fast never registered"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("+ create    a-fast"),
        "the finished write was not reported:\n{t}"
    );
    assert!(!t.contains("slow (pack"), "{t}");
}

/// `--json` prints one object per line: what scripts read instead of the text report.
#[test]
fn json_lines_report_pack_failures_steps_and_the_summary() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    ws.system_pack("good");
    ws.write("packs/bad/jobs/main.hcl", "{{ nope }}");
    ws.write(
        "set.toml",
        "[good]\n_origin = \"packs\"\n[good.web]\n[bad]\n_origin = \"packs\"\n[bad.bad]\n",
    );
    let out = packs("apply", &ws.path("set.toml"), &nomad, &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let events: Vec<serde_json::Value> = String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let of = |kind: &str| -> Vec<&serde_json::Value> {
        events.iter().filter(|e| e["event"] == kind).collect()
    };
    let failed = of("pack_failed");
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(failed[0]["pack"], "bad");
    assert!(
        failed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("variable `nope` is not defined"),
        "{events:?}"
    );
    let steps = of("step");
    assert_eq!(steps.len(), 1, "{events:?}");
    assert_eq!(
        *steps[0],
        json!({"event": "step", "action": "create", "namespace": "default", "job": "web",
            "pack": "good", "declared_job": "web", "drift": false})
    );
    let summary = of("summary");
    assert_eq!(summary.len(), 1, "{events:?}");
    assert_eq!(summary[0]["mode"], "apply");
    assert_eq!(summary[0]["created"], 1);
    assert_eq!(summary[0]["failed"], 1);
    assert_eq!(events.last(), Some(summary[0]), "the summary comes last");

    // A broken pack set is one typed event too, on stdout.
    ws.write("set.toml", "[good]\n_origin = 3\n");
    let out = packs("apply", &ws.path("set.toml"), &nomad, &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["event"], "config_error", "{line}");
    let problem = line["problems"][0].as_str().unwrap();
    assert!(problem.contains("set.toml:2:"), "{problem}");
}

#[test]
fn a_policy_someone_else_made_is_refused_and_the_variables_still_written() {
    let cfg = DoubleConfig {
        acl: true,
        ..DoubleConfig::default()
    };
    let token = cfg.token.clone();
    let nomad = Nomad::double(cfg);
    let ws = Workspace::new();
    let set = two_pack_set(&ws);
    ws.write(
        "packs/cache/policies/cache-read.hcl",
        "# description: read cache\nnamespace \"default\" { policy = \"read\" }\n",
    );
    ws.write(
        "packs/web/variables/shared.toml",
        "path = \"apps/{{ jobname }}\"\n[items]\ngreeting = \"{{ message }}\"\n",
    );
    // A person made `cache-read` by hand: no owner marker in its description.
    let by_hand = serde_json::json!({
        "Name": "cache-read", "Description": "made by hand", "Rules": "namespace \"default\" { policy = \"write\" }"
    });
    // Nomad answers a policy write with an empty body, which this helper cannot parse.
    let _ = nomad.post("/v1/acl/policy/cache-read", &by_hand, Some(&token));
    let before = nomad.get_with_token("/v1/acl/policy/cache-read", &token);
    assert_eq!(before.unwrap()["Description"], "made by hand");
    let run = |cmd: &str| packs_with_token(cmd, &set, &nomad, &ws, &token);
    let out = run("plan");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "a refusal is a failure: {t}");
    assert!(
        t.contains("! refuse    policy cache-read (exists, not managed by this set; owner: none)"),
        "{t}"
    );
    assert!(
        t.contains("Plan: 5 to create, 0 to update, 0 unchanged, 0 to delete, 1 failed."),
        "{t}"
    );
    let out = run("apply");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("policy `cache-read` (pack 'cache'")
            && t.contains("exists and is not managed by `test-set`; refusing to overwrite it"),
        "{t}"
    );
    assert!(t.contains("+ create    variable default:apps/web-a"), "{t}");
    let kept = nomad
        .get_with_token("/v1/acl/policy/cache-read", &token)
        .unwrap();
    assert_eq!(kept["Description"], "made by hand");
    let var = nomad.get_with_token("/v1/var/apps/web-b", &token).unwrap();
    assert_eq!(var["Items"]["greeting"], "b");
}
