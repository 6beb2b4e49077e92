//! Cloud auto-join from the user data, end to end without a cloud: the machine-config
//! child's own code (`machine::run::apply`, a test root with the user data in fw_cfg's
//! place) writes `retry_join` strings such as `provider=aws tag_key=... tag_value=...`
//! into the agent config as they are, JSON and HCL alike; the test double reads that
//! config like Nomad does and never dials such a string (it says it skips it); malformed
//! entries are refused with the entry named. No root needed.

use std::path::Path;
use std::sync::Arc;

use nomad_double::config::AgentConfig;
use nomad_double::peers::Peers;
use nomad_init::machine::paths::Paths;
use nomad_init::machine::render::MACHINE_FRAGMENT;
use nomad_init::machine::run::{self, ApplyOptions, Outcome};
use nomad_init::machine::sources::FW_CFG_USER_DATA;
use nomad_init::sys::root::Root;

const AWS: &str = "provider=aws tag_key=nomad-cluster tag_value=prod region=eu-west-1";
const GCE: &str = "provider=gce project_name=my-project tag_value=nomad-server";
/// Azure's auto-join carries a credential: it must reach Nomad, and nothing else.
const AZURE_SECRET: &str = "c2VjcmV0LXZhbHVl";

fn opts(root: &Path) -> ApplyOptions {
    let agent = root.join("etc/nomad.d/init.json");
    std::fs::create_dir_all(agent.parent().unwrap()).unwrap();
    std::fs::write(&agent, include_str!("../../config/init.json")).unwrap();
    ApplyOptions {
        root: Root::test(root),
        cmdline: "console=ttyS0".into(),
        agent_config: agent,
    }
}

fn user_data(root: &Path, text: &str) {
    let fw = root.join(FW_CFG_USER_DATA.trim_start_matches('/'));
    std::fs::create_dir_all(fw.parent().unwrap()).unwrap();
    std::fs::write(&fw, text).unwrap();
}

/// The agent config as Nomad (and the double) reads it: the base, then the fragments.
fn as_nomad_reads_it(paths: &Paths) -> AgentConfig {
    let mut c = AgentConfig::default();
    c.load_path(&paths.machine_dir.join("agent.json")).unwrap();
    c.load_path(&paths.fragment_dir()).unwrap();
    c
}

#[tokio::test]
async fn auto_join_strings_reach_nomad_verbatim_and_the_double_skips_them() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    let paths = Paths::under(&o.root);
    let azure = format!(
        "provider=azure tag_name=nomad tag_value=server tenant_id=t client_id=c \
         subscription_id=s secret_access_key={AZURE_SECRET}"
    );
    user_data(
        dir.path(),
        &format!(
            "[nomad]\nrole = \"server\"\nbootstrap_expect = 3\n\
             retry_join = [\"{AWS}\", \"127.0.0.1:1\", \"{azure}\"]\n"
        ),
    );
    assert_eq!(run::apply(&o).await, Outcome::Applied);
    let frag = std::fs::read_to_string(paths.fragment_dir().join(MACHINE_FRAGMENT)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&frag).unwrap();
    assert_eq!(
        v["server"]["server_join"]["retry_join"],
        serde_json::json!([AWS, "127.0.0.1:1", azure]),
        "{frag}"
    );
    let c = as_nomad_reads_it(&paths);
    assert_eq!(c.server_join, [AWS, "127.0.0.1:1", &azure]);
    // The double dials the address and only the address; each auto-join string is a
    // note naming its provider, never its credential.
    let (targets, notes) = Peers::join_plan(&c);
    assert_eq!(targets, [("127.0.0.1".to_string(), 1)]);
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[0]
            .starts_with("skipping cloud auto-join provider=aws in server.server_join.retry_join"),
        "{notes:?}"
    );
    assert!(
        notes[1].starts_with("skipping cloud auto-join provider=azure"),
        "{notes:?}"
    );
    assert!(!notes.concat().contains(AZURE_SECRET), "{notes:?}");

    // The HCL form: a client's fragment written in HCL reaches Nomad as written, and the
    // double, with nothing but a provider string to join, dials nobody and returns.
    let hcl = format!("client {{\n  server_join {{\n    retry_join = [\"{GCE}\"]\n  }}\n}}\n");
    user_data(
        dir.path(),
        &format!(
            "[nomad]\nrole = \"client\"\n[[fragments]]\nname = \"join.hcl\"\ncontent = '''\n{hcl}'''\n"
        ),
    );
    assert_eq!(run::apply(&o).await, Outcome::Applied);
    let written = std::fs::read_to_string(paths.fragment_dir().join("50-join.hcl")).unwrap();
    assert_eq!(written, hcl);
    let c = as_nomad_reads_it(&paths);
    assert!(c.client_enabled && !c.server_enabled, "{c:?}");
    assert_eq!(c.client_servers, [GCE]);
    let (targets, notes) = Peers::join_plan(&c);
    assert!(targets.is_empty(), "{targets:?}");
    assert_eq!(
        notes,
        [
            "skipping cloud auto-join provider=gce in client.server_join.retry_join: the double \
          cannot discover cloud instances (Nomad does)"
        ]
    );
    let peers = Arc::new(Peers::new(&c, "node-1", "1.7.7".into(), false));
    nomad_double::peers::run(peers, c).await;
}

#[tokio::test]
async fn malformed_join_entries_are_refused_and_nothing_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    let paths = Paths::under(&o.root);
    for entry in [
        String::new(),
        "10.0.0.1\\u001b[2J".to_string(),
        format!("provider=aws tag_key=nomad tag_value={}", "x".repeat(600)),
        "provider=aws tag_key".to_string(),
    ] {
        user_data(
            dir.path(),
            &format!("[nomad]\nrole = \"client\"\nretry_join = [\"10.0.0.1\", \"{entry}\"]\n"),
        );
        assert_eq!(run::apply(&o).await, Outcome::Refused, "{entry:?}");
        assert!(!paths.machine_dir.exists(), "{entry:?}: nothing applied");
    }
}
