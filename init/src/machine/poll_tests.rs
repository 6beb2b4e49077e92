//! The poll child against a real HTTP server on 127.0.0.1 that answers as told: 200 with
//! an ETag (or a Last-Modified), 304 to a matching conditional request, 500, a slow body.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::*;
use crate::machine::{placed, render};
use crate::sys::root::Root;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Normal,
    Fail,
    SlowBody,
}

#[derive(Debug)]
struct Served {
    body: String,
    etag: Option<String>,
    last_modified: Option<String>,
    mode: Mode,
    /// The conditional headers of each request, in order.
    seen: Vec<(Option<String>, Option<String>)>,
    full_answers: usize,
}

type State = Arc<Mutex<Served>>;

async fn answer(state: axum::extract::State<State>, headers: HeaderMap) -> Response {
    let h = |name| {
        headers
            .get(name)
            .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let mut s = state.lock().unwrap();
    let (inm, ims) = (h(header::IF_NONE_MATCH), h(header::IF_MODIFIED_SINCE));
    s.seen.push((inm.clone(), ims.clone()));
    match s.mode {
        Mode::Fail => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Mode::SlowBody => {
            let stream = futures::stream::unfold(0, |n| async move {
                if n > 0 {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                Some((Ok::<_, std::io::Error>("[nomad]\n".to_string()), n + 1))
            });
            return axum::body::Body::from_stream(stream).into_response();
        }
        Mode::Normal => {}
    }
    let fresh = match (&s.etag, &s.last_modified) {
        (Some(e), _) if inm.as_ref() == Some(e) => true,
        (None, Some(d)) if ims.as_ref() == Some(d) => true,
        _ => false,
    };
    if fresh {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    s.full_answers += 1;
    let mut resp = s.body.clone().into_response();
    if let Some(e) = &s.etag {
        resp.headers_mut().insert(header::ETAG, e.parse().unwrap());
    }
    if let Some(d) = &s.last_modified {
        resp.headers_mut()
            .insert(header::LAST_MODIFIED, d.parse().unwrap());
    }
    resp
}

async fn server(body: &str, etag: Option<&str>, last_modified: Option<&str>) -> (String, State) {
    let state = Arc::new(Mutex::new(Served {
        body: body.into(),
        etag: etag.map(str::to_string),
        last_modified: last_modified.map(str::to_string),
        mode: Mode::Normal,
        seen: Vec::new(),
        full_answers: 0,
    }));
    let app = axum::Router::new()
        .route("/user-data", get(answer))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/user-data"), state)
}

fn opts(root: &Path, url: &str) -> ApplyOptions {
    let agent = root.join("etc/nomad.d/init.json");
    std::fs::create_dir_all(agent.parent().unwrap()).unwrap();
    std::fs::write(&agent, include_str!("../../../config/init.json")).unwrap();
    ApplyOptions {
        root: Root::test(root),
        cmdline: format!("console=ttyS0 nomados.config={url}"),
        agent_config: agent,
    }
}

fn quick() -> url::Limits {
    url::Limits {
        deadline: Duration::from_secs(5),
        timeout: Duration::from_millis(500),
        attempts: 1,
        first_backoff: Duration::from_millis(10),
        ..url::Limits::default()
    }
}

const V1: &str = "[nomad]\nrole = \"client\"\nretry_join = [\"10.0.0.1\"]\n";
const V2: &str = "[init]\nhostname = \"n2\"\n[nomad]\nrole = \"client\"\nretry_join = [\"10.0.0.2\"]\n\
    [[files]]\npath = \"/etc/motd\"\nowner = \"root\"\ncontent = \"v2\\n\"\n[secrets]\nnomad_token = \"t2\"\n";

fn fragment(o: &ApplyOptions) -> String {
    let paths = Paths::under(&o.root);
    std::fs::read_to_string(paths.fragment_dir().join(render::MACHINE_FRAGMENT)).unwrap()
}

#[tokio::test]
async fn a_changed_version_is_planned_and_applied_and_304_costs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (u, state) = server(V1, Some("\"v1\""), None).await;
    let o = opts(dir.path(), &u);
    // The boot's fetch, as PID 1's first child does it.
    assert_eq!(run::apply(&o).await, run::Outcome::Applied);
    assert!(fragment(&o).contains("10.0.0.1"));

    // First poll: no validators yet, the same bytes: unchanged, the ETag is kept.
    assert_eq!(poll(&o, &quick()).await, PollOutcome::Unchanged);
    // Second poll: conditional; the server answers 304.
    assert_eq!(poll(&o, &quick()).await, PollOutcome::Unchanged);
    {
        let s = state.lock().unwrap();
        assert_eq!(s.seen.last().unwrap().0.as_deref(), Some("\"v1\""));
        assert_eq!(s.full_answers, 2, "the boot's fetch and the first poll");
    }

    // A new version with a new ETag: applied, and the plan says what PID 1 must do.
    // (Its file is placed under the test root.)
    let motd = dir.path().join("etc/motd");
    {
        let mut s = state.lock().unwrap();
        let owner = format!("{}:{}", nix::unistd::getuid(), nix::unistd::getgid());
        s.body = V2
            .replace("/etc/motd", &motd.display().to_string())
            .replace("owner = \"root\"", &format!("owner = \"{owner}\""));
        s.etag = Some("\"v2\"".into());
    }
    let PollOutcome::Applied(plan) = poll(&o, &quick()).await else {
        panic!("not applied");
    };
    assert_eq!(plan.restart_nomad, ["[nomad]"]);
    assert_eq!(plan.hostname.as_deref(), Some("n2"));
    assert_eq!(plan.files, std::slice::from_ref(&motd));
    assert_eq!(plan.secrets, ["nomad_token"]);
    assert!(!plan.reapply_packs);
    assert!(fragment(&o).contains("10.0.0.2"));
    assert_eq!(std::fs::read_to_string(&motd).unwrap(), "v2\n");
    let paths = Paths::under(&o.root);
    assert_eq!(std::fs::read(&paths.token_file).unwrap(), b"t2\n");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&paths.token_file), 0o600);
    assert_eq!(mode(&paths.applied_user_data()), 0o600);
    assert_eq!(mode(&paths.plan_file), 0o600);
    assert_eq!(take_plan(&paths), Some(plan));
    assert_eq!(take_plan(&paths), None, "a plan is carried out once");
    assert_eq!(poll(&o, &quick()).await, PollOutcome::Unchanged);
    assert_eq!(
        state.lock().unwrap().seen.last().unwrap().0.as_deref(),
        Some("\"v2\"")
    );
}

#[tokio::test]
async fn a_broken_version_is_refused_whole_and_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let (u, state) = server(V1, Some("\"v1\""), None).await;
    let o = opts(dir.path(), &u);
    assert_eq!(run::apply(&o).await, run::Outcome::Applied);
    let before = fragment(&o);
    {
        let mut s = state.lock().unwrap();
        // One good change and one bad field: nothing of it applies.
        s.body = "[nomad]\nrole = \"server\"\nbootstrap_expect = 0\n".into();
        s.etag = Some("\"bad\"".into());
    }
    assert_eq!(poll(&o, &quick()).await, PollOutcome::Refused);
    assert_eq!(fragment(&o), before);
    let paths = Paths::under(&o.root);
    assert_eq!(take_plan(&paths), None);
    // The same broken version is not fetched again: 304.
    assert_eq!(poll(&o, &quick()).await, PollOutcome::Unchanged);
    assert_eq!(state.lock().unwrap().full_answers, 2);
    assert_eq!(fragment(&o), before);
}

#[tokio::test]
async fn server_errors_and_slow_bodies_fail_the_poll_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (u, state) = server(V1, Some("\"v1\""), None).await;
    let o = opts(dir.path(), &u);
    assert_eq!(run::apply(&o).await, run::Outcome::Applied);
    let before = fragment(&o);
    state.lock().unwrap().mode = Mode::Fail;
    assert_eq!(poll(&o, &quick()).await, PollOutcome::Failed);
    state.lock().unwrap().mode = Mode::SlowBody;
    assert_eq!(poll(&o, &quick()).await, PollOutcome::Failed);
    assert_eq!(fragment(&o), before);
    // Back to normal: the poll works again.
    state.lock().unwrap().mode = Mode::Normal;
    assert_eq!(poll(&o, &quick()).await, PollOutcome::Unchanged);
}

#[tokio::test]
async fn last_modified_makes_the_request_conditional_and_the_sha256_rule_holds() {
    use sha2::Digest as _;
    let dir = tempfile::tempdir().unwrap();
    let date = "Wed, 02 Dec 2026 10:00:00 GMT";
    let (u, state) = server(V1, None, Some(date)).await;
    let mut o = opts(dir.path(), &u);
    let sha = hex::encode(sha2::Sha256::digest(V1.as_bytes()));
    o.cmdline = format!("{} nomados.config.sha256={sha}", o.cmdline);
    assert_eq!(run::apply(&o).await, run::Outcome::Applied);
    assert_eq!(poll(&o, &quick()).await, PollOutcome::Unchanged);
    assert_eq!(poll(&o, &quick()).await, PollOutcome::Unchanged);
    assert_eq!(
        state.lock().unwrap().seen.last().unwrap().1.as_deref(),
        Some(date)
    );
    // A pinned sha256 pins the content: a new version is a failed fetch.
    {
        let mut s = state.lock().unwrap();
        s.body = V2.into();
        s.last_modified = Some("Wed, 02 Dec 2026 11:00:00 GMT".into());
    }
    assert_eq!(poll(&o, &quick()).await, PollOutcome::Failed);
    assert!(fragment(&o).contains("10.0.0.1"));
}

#[tokio::test]
async fn files_a_new_version_drops_are_removed_unless_changed_since() {
    let dir = tempfile::tempdir().unwrap();
    let owner = format!("{}:{}", nix::unistd::getuid(), nix::unistd::getgid());
    let file = |name: &str, content: &str| {
        format!(
            "[[files]]\npath = \"{}\"\nowner = \"{owner}\"\ncontent = \"{content}\"\n",
            dir.path().join(name).display()
        )
    };
    let v1 = format!(
        "{}{}{}",
        file("etc/a", "a"),
        file("etc/b", "b"),
        file("etc/c", "c")
    );
    let (u, state) = server(&v1, Some("\"v1\""), None).await;
    let o = opts(dir.path(), &u);
    assert_eq!(run::apply(&o).await, run::Outcome::Applied);
    let paths = Paths::under(&o.root);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&paths.placed_manifest)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the manifest is root-only");
    assert!(
        !std::fs::read_to_string(&paths.placed_manifest)
            .unwrap()
            .contains("\"a\""),
        "hashes, not contents"
    );
    // Someone edits b by hand; then a version that lists only c (changed).
    std::fs::write(dir.path().join("etc/b"), "edited").unwrap();
    {
        let mut s = state.lock().unwrap();
        s.body = file("etc/c", "c2");
        s.etag = Some("\"v2\"".into());
    }
    let PollOutcome::Applied(_) = poll(&o, &quick()).await else {
        panic!("not applied");
    };
    assert!(
        !dir.path().join("etc/a").exists(),
        "dropped and as written: removed"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("etc/b")).unwrap(),
        "edited",
        "dropped but changed since: left in place"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("etc/c")).unwrap(),
        "c2"
    );
    let m = placed::read_manifest(&paths.placed_manifest);
    let tracked: Vec<_> = m.files.iter().map(|e| e.path.clone()).collect();
    assert_eq!(tracked, [dir.path().join("etc/c")], "b is no longer ours");

    // The next boot's user data (no poll) lists nothing: c goes too.
    {
        let mut s = state.lock().unwrap();
        s.body = "[nomad]\nrole = \"client\"\n".into();
        s.etag = Some("\"v3\"".into());
    }
    assert_eq!(run::apply(&o).await, run::Outcome::Applied);
    assert!(!dir.path().join("etc/c").exists());
    assert!(dir.path().join("etc/b").exists());
    assert!(placed::read_manifest(&paths.placed_manifest)
        .files
        .is_empty());
}
