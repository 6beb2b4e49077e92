use super::*;
use std::os::unix::fs::PermissionsExt;

const CHOSEN: &str = "2b778dd9-f5f1-6f29-b4b4-9a5fa948757a";

fn facts() -> Facts {
    Facts {
        acl_enabled: true,
        server: true,
        token_present: false,
        secret_given: false,
        version: None,
    }
}

#[test]
fn the_decision_follows_acls_role_token_secret_and_version() {
    assert_eq!(plan(&facts()), Plan::Bootstrap(SecretChoice::Generated));
    let f = |change: fn(&mut Facts)| {
        let mut f = facts();
        change(&mut f);
        plan(&f)
    };
    assert_eq!(f(|f| f.acl_enabled = false), Plan::AclsOff);
    assert_eq!(f(|f| f.token_present = true), Plan::UseToken);
    assert_eq!(f(|f| f.server = false), Plan::ClientWithoutToken);
    assert_eq!(
        f(|f| f.secret_given = true),
        Plan::Bootstrap(SecretChoice::Operator)
    );
    assert_eq!(
        f(|f| {
            f.secret_given = true;
            f.version = Some(Version::new(1, 4, 0));
        }),
        Plan::Bootstrap(SecretChoice::Operator)
    );
    assert_eq!(
        f(|f| {
            f.secret_given = true;
            f.version = Some(Version::new(1, 3, 9));
        }),
        Plan::Bootstrap(SecretChoice::Nomads {
            version: Version::new(1, 3, 9)
        })
    );
    // A token beats everything: a bootstrapped node never bootstraps again.
    assert_eq!(
        f(|f| {
            f.token_present = true;
            f.secret_given = true;
        }),
        Plan::UseToken
    );
}

struct Setup {
    _dir: tempfile::TempDir,
    flow: Flow,
    console: PathBuf,
}

async fn double_flow(version: &str, acl: bool, server: bool) -> Setup {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let mut opts = nomad_double::Options::new(nomad_double::AgentConfig {
        acl_enabled: acl,
        server_enabled: server,
        client_enabled: true,
        ..nomad_double::AgentConfig::default()
    });
    opts.version = nomad_double::Version::parse(version).unwrap();
    tokio::spawn(nomad_double::serve(listener, opts));
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("data/nomados/nomad-token");
    let mut api = api::Settings::new(addr);
    api.token = TokenSource::File(token_file.clone());
    // Stands for the console device: it exists, and is written, never created.
    let console = dir.path().join("console");
    std::fs::write(&console, "").unwrap();
    let flow = Flow {
        api,
        acl_enabled: acl,
        server,
        token_file,
        secret_file: dir.path().join("secrets/acl-bootstrap-secret"),
        console: Some(console.clone()),
    };
    Setup {
        _dir: dir,
        flow,
        console,
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// A request needing management rights, made with the flow's own settings (the token file).
async fn can_manage(flow: &Flow) -> bool {
    let c = api::Client::new(&flow.api).unwrap();
    c.get("/v1/acl/policies").await.is_ok()
}

#[tokio::test]
async fn first_boot_bootstraps_keeps_the_token_root_only_and_shows_it_once() {
    let s = double_flow("1.7.7", true, true).await;
    assert!(!can_manage(&s.flow).await, "anonymous must be refused");
    assert!(matches!(s.flow.attempt().await, Outcome::Settled));

    let token = read(&s.flow.token_file).trim().to_string();
    assert!(is_uuid(&token), "generated secret is a UUID");
    let mode = std::fs::metadata(&s.flow.token_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        can_manage(&s.flow).await,
        "the kept token is the management token"
    );
    let console = read(&s.console);
    assert!(console.contains("NOMAD ACL BOOTSTRAP TOKEN"), "{console}");
    assert!(
        console.contains(&format!("Secret ID:   {token}")),
        "{console}"
    );

    // The next boot: the token is there, nothing is bootstrapped or shown again.
    std::fs::write(&s.console, "").unwrap();
    assert!(matches!(s.flow.attempt().await, Outcome::Settled));
    assert_eq!(read(&s.flow.token_file).trim(), token);
    assert_eq!(read(&s.console), "", "the token was shown again");
}

#[tokio::test]
async fn the_operators_secret_becomes_the_token_from_nomad_1_4() {
    let s = double_flow("1.7.7", true, true).await;
    std::fs::create_dir_all(s.flow.secret_file.parent().unwrap()).unwrap();
    std::fs::write(&s.flow.secret_file, format!("{CHOSEN}\n")).unwrap();
    assert!(matches!(s.flow.attempt().await, Outcome::Settled));
    assert_eq!(read(&s.flow.token_file).trim(), CHOSEN);
    assert!(can_manage(&s.flow).await);
}

#[tokio::test]
async fn an_agent_before_1_4_generates_the_token_itself() {
    let s = double_flow("1.1.2", true, true).await;
    std::fs::create_dir_all(s.flow.secret_file.parent().unwrap()).unwrap();
    std::fs::write(&s.flow.secret_file, CHOSEN).unwrap();
    assert!(matches!(s.flow.attempt().await, Outcome::Settled));
    let kept = read(&s.flow.token_file).trim().to_string();
    assert_ne!(kept, CHOSEN, "1.1.2 ignores BootstrapSecret");
    assert!(can_manage(&s.flow).await, "what is kept is Nomad's token");
    assert!(read(&s.console).contains(&kept));
}

#[tokio::test]
async fn a_secret_that_is_not_a_uuid_is_refused_before_anything_is_sent() {
    let s = double_flow("1.7.7", true, true).await;
    std::fs::create_dir_all(s.flow.secret_file.parent().unwrap()).unwrap();
    std::fs::write(&s.flow.secret_file, "hunter2").unwrap();
    assert!(matches!(s.flow.attempt().await, Outcome::Failed));
    assert!(!s.flow.token_file.exists());
    // Nomad was not bootstrapped: a fixed secret still can be.
    std::fs::write(&s.flow.secret_file, CHOSEN).unwrap();
    assert!(matches!(s.flow.attempt().await, Outcome::Settled));
}

#[tokio::test]
async fn bootstrapped_elsewhere_without_a_token_here_is_a_clear_failure() {
    let s = double_flow("1.7.7", true, true).await;
    let c = api::Client::new(&s.flow.anonymous()).unwrap();
    assert!(matches!(
        c.acl_bootstrap(None).await.unwrap(),
        Bootstrap::Done(_)
    ));
    assert!(matches!(s.flow.attempt().await, Outcome::Failed));
    assert!(!s.flow.token_file.exists());
    assert_eq!(read(&s.console), "");
}

#[tokio::test]
async fn a_server_given_the_secret_another_server_bootstrapped_with_keeps_it() {
    let s = double_flow("1.7.7", true, true).await;
    let c = api::Client::new(&s.flow.anonymous()).unwrap();
    let first = c.acl_bootstrap(Some(&Secret::new(CHOSEN))).await;
    assert!(matches!(first.unwrap(), Bootstrap::Done(_)));
    std::fs::create_dir_all(s.flow.secret_file.parent().unwrap()).unwrap();
    // Another secret: not this cluster's token, a clear failure as before.
    let other = "00000000-0000-4000-8000-000000000001";
    std::fs::write(&s.flow.secret_file, other).unwrap();
    assert!(matches!(s.flow.attempt().await, Outcome::Failed));
    assert!(!s.flow.token_file.exists());
    // The same secret: kept as this node's token, not shown on the console.
    std::fs::write(&s.flow.secret_file, CHOSEN).unwrap();
    assert!(matches!(s.flow.attempt().await, Outcome::Settled));
    assert_eq!(read(&s.flow.token_file).trim(), CHOSEN);
    assert!(can_manage(&s.flow).await);
    assert_eq!(read(&s.console), "");
}

#[tokio::test]
async fn client_only_nodes_and_acls_off_never_bootstrap() {
    for (acl, server) in [(true, false), (false, true)] {
        let s = double_flow("1.7.7", acl, server).await;
        assert!(matches!(s.flow.attempt().await, Outcome::Settled));
        assert!(!s.flow.token_file.exists(), "acl={acl} server={server}");
    }
    // And the double was left unbootstrapped by the client-only node.
    let s = double_flow("1.7.7", true, false).await;
    s.flow.attempt().await;
    let c = api::Client::new(&s.flow.anonymous()).unwrap();
    assert!(matches!(
        c.acl_bootstrap(None).await.unwrap(),
        Bootstrap::Done(_)
    ));
}

#[tokio::test]
async fn no_answer_is_worth_a_retry() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let mut s = double_flow("1.7.7", true, true).await;
    s.flow.api.addr = addr;
    assert!(matches!(s.flow.attempt().await, Outcome::Retry(_)));
}

#[tokio::test]
async fn the_applier_sees_nomad_healthy_only_once_the_token_is_kept() {
    let s = double_flow("1.7.7", true, true).await;
    let (healthy_tx, healthy_rx) = watch::channel(false);
    let (applier_tx, mut applier_rx) = watch::channel(false);
    let token_file = s.flow.token_file.clone();
    tokio::spawn(gate(Some(s.flow.clone()), healthy_rx, applier_tx));
    healthy_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), applier_rx.wait_for(|h| *h))
        .await
        .unwrap()
        .unwrap();
    assert!(
        token_file.exists(),
        "the applier was let go before the token was kept"
    );
    // Later health changes pass through.
    healthy_tx.send(false).unwrap();
    tokio::time::timeout(Duration::from_secs(5), applier_rx.wait_for(|h| !*h))
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn the_token_file_is_replaced_atomically_and_stays_0600() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nomados/nomad-token");
    write_token(&p, &Secret::new("one")).unwrap();
    write_token(&p, &Secret::new("two")).unwrap();
    assert_eq!(read(&p), "two\n");
    let meta = std::fs::metadata(&p).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dir_mode = std::fs::metadata(p.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        dir_mode & 0o077,
        0,
        "a directory made for the token is root-only"
    );
    assert_eq!(
        std::fs::read_dir(p.parent().unwrap()).unwrap().count(),
        1,
        "no temp left"
    );
}
