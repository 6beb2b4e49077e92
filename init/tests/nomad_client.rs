//! The one Nomad client over https and with ACLs, against the Nomad test double serving
//! TLS with certificates made here (rcgen): health, this node's drain and eligibility,
//! a pack apply through the CLI, and every way TLS or a token can be wrong.

mod common;
mod pki;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use nomad_init::nomad::{Client, Eligibility, Settings, TokenSource};
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, SanType};

/// A CA, a server certificate it signed (for `server.global.nomad` and 127.0.0.1), a
/// client certificate it signed, and an unrelated CA; all PEM files in `dir`.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).unwrap();
        let ca = pki::Ca::new("NomadOS test CA");
        write("ca.pem", ca.pem());
        write("wrong-ca.pem", pki::Ca::new("someone else's CA").pem());

        let mut p = CertificateParams::new(vec!["server.global.nomad".to_string()]).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let (cert, key) = ca.sign(p);
        write("server.pem", cert);
        write("server-key.pem", key);

        let mut p = CertificateParams::new(vec!["cli.global.nomad".to_string()]).unwrap();
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let (cert, key) = ca.sign(p);
        write("cli.pem", cert);
        write("cli-key.pem", key);
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn tls(&self, client_ca: bool) -> nomad_double::TlsFiles {
        nomad_double::TlsFiles {
            cert: self.path("server.pem"),
            key: self.path("server-key.pem"),
            client_ca: client_ca.then(|| self.path("ca.pem")),
        }
    }
}

/// The double on a free loopback port (see `common::Nomad::double`), with or without TLS
/// and ACLs (management token [`TOKEN`]).
struct Double(common::Nomad);

const TOKEN: &str = "management-s3cret";

impl Double {
    fn start(tls: Option<nomad_double::TlsFiles>, acl: bool) -> Self {
        Double(common::Nomad::double(common::DoubleConfig {
            acl,
            token: TOKEN.into(),
            tls,
            ..common::DoubleConfig::default()
        }))
    }

    /// The double's host and port.
    fn host_port(&self) -> &str {
        self.0.addr.split_once("://").map_or("", |(_, hp)| hp)
    }

    fn https(&self) -> String {
        format!("https://{}", self.host_port())
    }

    fn http(&self) -> String {
        format!("http://{}", self.host_port())
    }
}

fn with_ca(addr: String, ca: &Path) -> Settings {
    let mut s = Settings::new(addr);
    s.tls.ca_file = Some(ca.to_path_buf());
    s.request_timeout = Duration::from_secs(10);
    s
}

#[tokio::test]
async fn health_drain_and_eligibility_work_over_https_with_the_right_ca() {
    let pki = Pki::new();
    let double = Double::start(Some(pki.tls(false)), false);
    let client = Client::new(&with_ca(double.https(), &pki.path("ca.pem"))).unwrap();
    client.health().await.unwrap();
    let id = client.self_node_id().await.unwrap().expect("a client node");
    // The double is a one-node cluster: PID 1 would not drain it, so drain it directly.
    assert_eq!(
        client.drain_self(Duration::from_secs(1)).await.unwrap(),
        nomad_init::nomad::Drain::AloneInCluster
    );
    client.drain(&id, Duration::from_secs(30)).await.unwrap();
    let node = client.node(&id).await.unwrap();
    assert_eq!(node["SchedulingEligibility"], "ineligible");
    // With no allocations to move the drain is over at once; it is recorded as ours.
    assert_eq!(
        node["LastDrain"]["Meta"]["message"],
        nomad_init::nomad::DRAIN_MESSAGE
    );

    // After the reboot: NomadOS's own drain is undone.
    match client.mark_self_eligible().await.unwrap() {
        Eligibility::MarkedEligible { node, .. } => assert_eq!(node.id, id),
        other => panic!("{other:?}"),
    }
    let node = client.node(&id).await.unwrap();
    assert_eq!(node["SchedulingEligibility"], "eligible");
    assert!(node["DrainStrategy"].is_null());
}

#[tokio::test]
async fn a_wrong_ca_is_a_clear_error_naming_the_address() {
    let pki = Pki::new();
    let double = Double::start(Some(pki.tls(false)), false);
    let client = Client::new(&with_ca(double.https(), &pki.path("wrong-ca.pem"))).unwrap();
    let e = client.health().await.unwrap_err();
    // PID 1 says this one loudly: waiting does not fix it.
    assert!(e.is_tls_failure(), "{e}");
    let e = e.to_string();
    let url = format!("GET {}/v1/agent/health: ", double.https());
    assert!(e.starts_with(&url), "{e}");
    assert!(e.contains("certificate"), "{e}");
    assert!(e.contains("CA file"), "{e}");
    // The system roots are no fallback either.
    let plain = Client::new(&Settings::new(double.https())).unwrap();
    let e = plain.health().await.unwrap_err().to_string();
    assert!(e.contains("certificate"), "{e}");
}

#[tokio::test]
async fn the_tls_server_name_decides_which_name_the_certificate_must_carry() {
    let pki = Pki::new();
    let double = Double::start(Some(pki.tls(false)), false);
    let mut s = with_ca(double.https(), &pki.path("ca.pem"));
    s.tls.server_name = Some("server.global.nomad".into());
    Client::new(&s).unwrap().health().await.unwrap();
    s.tls.server_name = Some("client.global.nomad".into());
    let e = Client::new(&s)
        .unwrap()
        .health()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.starts_with(&format!("GET {}/", double.https())), "{e}");
    assert!(e.contains("certificate"), "{e}");
}

#[tokio::test]
async fn agents_that_verify_clients_need_the_client_certificate() {
    let pki = Pki::new();
    let double = Double::start(Some(pki.tls(true)), false);
    let mut s = with_ca(double.https(), &pki.path("ca.pem"));
    assert!(Client::new(&s).unwrap().health().await.is_err());
    s.tls.client_cert = Some(pki.path("cli.pem"));
    s.tls.client_key = Some(pki.path("cli-key.pem"));
    Client::new(&s).unwrap().health().await.unwrap();
}

#[tokio::test]
async fn https_is_never_downgraded_to_http() {
    // An https address on a plain-http agent fails; nothing retries over http.
    let double = Double::start(None, false);
    let client = Client::new(&Settings::new(double.https())).unwrap();
    let e = client.health().await.unwrap_err();
    assert!(e.is_tls_failure(), "{e}");
    let e = e.to_string();
    assert!(e.starts_with(&format!("GET {}/", double.https())), "{e}");
    assert!(e.contains("does not speak TLS"), "{e}");

    // A redirect (here to plain http) is never followed.
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let elsewhere = axum::Router::new().fallback(move || {
        h.fetch_add(1, Ordering::SeqCst);
        async { "{}" }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}/v1/agent/health", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, elsewhere).await.unwrap() });
    let redirecting = axum::Router::new().fallback(move || {
        let target = target.clone();
        async move { axum::response::Redirect::temporary(&target) }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, redirecting).await.unwrap() });
    let e = Client::new(&Settings::new(addr))
        .unwrap()
        .health()
        .await
        .unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(307), "{e}");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn pid1_drains_and_restores_with_the_token_from_its_file() {
    let double = Double::start(None, true);
    let anonymous = Client::new(&Settings::new(double.http())).unwrap();
    let e = anonymous.mark_self_eligible().await.unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(403), "{e}");
    let text = e.to_string().to_lowercase();
    assert!(
        text.contains("permission denied") && text.contains("token"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let mut s = Settings::new(double.http());
    s.token = TokenSource::File(file);
    let client = Client::new(&s).unwrap();
    let id = client.self_node_id().await.unwrap().unwrap();
    client.drain(&id, Duration::from_secs(30)).await.unwrap();
    assert!(matches!(
        client.mark_self_eligible().await.unwrap(),
        Eligibility::MarkedEligible { .. }
    ));

    let wrong =
        Client::new(&Settings::new(double.http()).with_token(Some("wr0ng-t0ken".into()))).unwrap();
    let e = wrong.node(&id).await.unwrap_err().to_string();
    assert!(e.contains("403") && !e.contains("wr0ng-t0ken"), "{e}");
}

/// `nomad-init packs apply <set>` with only Nomad's own environment variables.
fn apply(set: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nomad-init"));
    cmd.args(["packs", "apply"])
        .arg(set)
        .arg("--cache-dir")
        .arg(set.parent().unwrap().join(".cache"));
    for v in [
        "NOMAD_ADDR",
        "NOMAD_TOKEN",
        "NOMAD_NAMESPACE",
        "NOMAD_REGION",
        "NOMAD_CACERT",
        "NOMAD_CLIENT_CERT",
        "NOMAD_CLIENT_KEY",
        "NOMAD_TLS_SERVER_NAME",
        "NOMAD_SKIP_VERIFY",
    ] {
        cmd.env_remove(v);
    }
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

fn one_pack_set() -> common::Workspace {
    let ws = common::Workspace::new();
    ws.system_pack("web");
    ws.write(
        "set.toml",
        "_name = \"tls-set\"\n\n[web]\n_origin = \"packs\"\n[web.web-a]\n",
    );
    ws
}

#[test]
fn packs_apply_over_https_with_nomads_environment() {
    let pki = Pki::new();
    let double = Double::start(Some(pki.tls(true)), false);
    let ws = one_pack_set();
    let ca = pki.path("ca.pem");
    let (cert, key) = (pki.path("cli.pem"), pki.path("cli-key.pem"));
    let https = double.https();
    let out = apply(
        &ws.path("set.toml"),
        &[
            ("NOMAD_ADDR", &https),
            ("NOMAD_CACERT", ca.to_str().unwrap()),
            ("NOMAD_CLIENT_CERT", cert.to_str().unwrap()),
            ("NOMAD_CLIENT_KEY", key.to_str().unwrap()),
            ("NOMAD_TLS_SERVER_NAME", "server.global.nomad"),
        ],
    );
    assert!(out.status.success(), "{}", common::text(&out));
    assert_eq!(
        common::summary(&out),
        "Apply: 1 created, 0 updated, 0 unchanged, 0 deleted, 0 failed."
    );

    // Skipping verification needs no CA (still the client certificate).
    let out = apply(
        &ws.path("set.toml"),
        &[
            ("NOMAD_ADDR", &https),
            ("NOMAD_SKIP_VERIFY", "1"),
            ("NOMAD_CLIENT_CERT", cert.to_str().unwrap()),
            ("NOMAD_CLIENT_KEY", key.to_str().unwrap()),
        ],
    );
    assert!(out.status.success(), "{}", common::text(&out));
    assert!(
        common::summary(&out).contains("1 unchanged"),
        "{}",
        common::text(&out)
    );

    let out = apply(
        &ws.path("set.toml"),
        &[
            ("NOMAD_ADDR", &https),
            ("NOMAD_CACERT", pki.path("wrong-ca.pem").to_str().unwrap()),
            ("NOMAD_CLIENT_CERT", cert.to_str().unwrap()),
            ("NOMAD_CLIENT_KEY", key.to_str().unwrap()),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", common::text(&out));
    let text = common::text(&out);
    assert!(text.contains(&format!("{https}/v1/agent/self")), "{text}");
    assert!(text.contains("certificate"), "{text}");
    assert!(!text.contains(&double.http()), "{text}");
}

#[test]
fn packs_apply_with_acls_needs_the_token_and_never_prints_it() {
    let double = Double::start(None, true);
    let ws = one_pack_set();
    let http = double.http();
    let out = apply(&ws.path("set.toml"), &[("NOMAD_ADDR", &http)]);
    assert_eq!(out.status.code(), Some(1), "{}", common::text(&out));
    let text = common::text(&out);
    assert!(text.contains("403"), "{text}");
    let lower = text.to_lowercase();
    assert!(
        lower.contains("permission denied") && lower.contains("token"),
        "{text}"
    );

    let out = apply(
        &ws.path("set.toml"),
        &[("NOMAD_ADDR", &http), ("NOMAD_TOKEN", "n0t-the-t0ken")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !common::text(&out).contains("n0t-the-t0ken"),
        "{}",
        common::text(&out)
    );

    let out = apply(
        &ws.path("set.toml"),
        &[("NOMAD_ADDR", &http), ("NOMAD_TOKEN", TOKEN)],
    );
    assert!(out.status.success(), "{}", common::text(&out));
    assert!(!common::text(&out).contains(TOKEN));
    assert_eq!(
        common::summary(&out),
        "Apply: 1 created, 0 updated, 0 unchanged, 0 deleted, 0 failed."
    );
}

#[tokio::test]
async fn an_agent_not_listening_yet_is_no_tls_failure() {
    // What PID 1 sees while Nomad starts: worth waiting for, not an error to shout.
    let addr = format!("https://127.0.0.1:{}", common::free_port());
    let e = Client::new(&Settings::new(addr.clone()))
        .unwrap()
        .health()
        .await
        .unwrap_err();
    assert!(!e.is_tls_failure(), "{e}");
    assert!(e.to_string().starts_with(&format!("GET {addr}/")), "{e}");
}
