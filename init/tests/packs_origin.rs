//! Pack origins against real archives served by a real HTTP server on 127.0.0.1.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use nomad_init::diag::Location;
use nomad_init::packs::model::{Auth, AuthScheme, Origin, PackDecl, SecretSource};
use nomad_init::packs::origin::{FetchOptions, FetchedPack, Fetcher, OriginError};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------
// Test HTTP server: ETag / If-None-Match, Authorization check, counters, failures.

#[derive(Clone)]
enum Route {
    File {
        body: Vec<u8>,
        etag: String,
    },
    Redirect(String),
    Fail(u16, String),
    /// 500 whose body repeats the request's Authorization header (a careless server).
    EchoAuth,
    /// A file on disk, streamed in chunks (large archives for the benchmark).
    Disk(PathBuf),
    /// Never answers (within any test's patience).
    Hang,
}

const LAST_MODIFIED: &str = "Tue, 15 Nov 2022 12:45:26 GMT";

#[derive(Debug, Clone)]
struct Seen {
    path: String,
    if_none_match: Option<String>,
    if_modified_since: Option<String>,
    authorization: Option<String>,
}

#[derive(Default)]
struct ServerState {
    routes: Mutex<HashMap<String, Route>>,
    /// Exact `Authorization` value required, if any (401 otherwise).
    required_auth: Mutex<Option<String>>,
    requests: AtomicUsize,
    body_bytes: AtomicU64,
    seen: Mutex<Vec<Seen>>,
}

struct Server {
    addr: SocketAddr,
    state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start() -> Server {
        let state = Arc::new(ServerState::default());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server { addr, state, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn serve(&self, path: &str, body: Vec<u8>) {
        let etag = format!("\"{}\"", &hex::encode(Sha256::digest(&body))[..16]);
        self.route(path, Route::File { body, etag });
    }

    fn route(&self, path: &str, route: Route) {
        self.state
            .routes
            .lock()
            .unwrap()
            .insert(path.to_string(), route);
    }

    fn require_auth(&self, value: &str) {
        *self.state.required_auth.lock().unwrap() = Some(value.to_string());
    }

    fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    fn body_bytes(&self) -> u64 {
        self.state.body_bytes.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Stops accepting connections; the port then refuses.
    async fn shutdown(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn handle(State(st): State<Arc<ServerState>>, req: Request) -> Response {
    st.requests.fetch_add(1, Ordering::SeqCst);
    let headers: &HeaderMap = req.headers();
    let get = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let seen = Seen {
        path: req.uri().path().to_string(),
        if_none_match: get(header::IF_NONE_MATCH),
        if_modified_since: get(header::IF_MODIFIED_SINCE),
        authorization: get(header::AUTHORIZATION),
    };
    st.seen.lock().unwrap().push(seen.clone());
    let route = st.routes.lock().unwrap().get(&seen.path).cloned();
    if let Some(Route::EchoAuth) = route {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot handle Authorization: {:?}", seen.authorization),
        )
            .into_response();
    }
    let required = st.required_auth.lock().unwrap().clone();
    if let Some(required) = required {
        if seen.authorization.as_deref() != Some(required.as_str()) {
            return (StatusCode::UNAUTHORIZED, "missing or wrong credentials").into_response();
        }
    }
    match route {
        None => (StatusCode::NOT_FOUND, "no such archive").into_response(),
        Some(Route::Redirect(to)) => Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, to)
            .body(Body::empty())
            .unwrap(),
        Some(Route::Fail(code, body)) => {
            (StatusCode::from_u16(code).unwrap(), body).into_response()
        }
        Some(Route::EchoAuth) => unreachable!(),
        Some(Route::Hang) => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::NO_CONTENT.into_response()
        }
        Some(Route::Disk(path)) => {
            let file = tokio::fs::File::open(path).await.unwrap();
            let stream = futures::stream::unfold(file, |mut file| async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; 64 * 1024];
                match file.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(buf)), file))
                    }
                    Err(e) => Some((Err(e), file)),
                }
            });
            Body::from_stream(stream).into_response()
        }
        Some(Route::File { body, etag }) => {
            if seen.if_none_match.as_deref() == Some(etag.as_str()) {
                return Response::builder()
                    .status(StatusCode::NOT_MODIFIED)
                    .header(header::ETAG, etag)
                    .body(Body::empty())
                    .unwrap();
            }
            st.body_bytes.fetch_add(body.len() as u64, Ordering::SeqCst);
            Response::builder()
                .header(header::ETAG, etag)
                .header(header::LAST_MODIFIED, LAST_MODIFIED)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(Body::from(body))
                .unwrap()
        }
    }
}

// ---------------------------------------------------------------------------------------
// Archives, built entry by entry with raw headers so hostile names can be written.

enum E<'a> {
    File(&'a str, &'a [u8]),
    FileMode(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Char(&'a str),
    Fifo(&'a str),
    GlobalPax,
}

fn raw(
    b: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    name: &str,
    link: &str,
    mode: u32,
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(data.len() as u64);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    use tar::EntryType as T;
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            E::File(n, d) => raw(&mut b, T::Regular, n, "", 0o644, d),
            E::FileMode(n, d, m) => raw(&mut b, T::Regular, n, "", *m, d),
            E::Dir(n) => raw(&mut b, T::Directory, n, "", 0o755, b""),
            E::Symlink(n, t) => raw(&mut b, T::Symlink, n, t, 0o777, b""),
            E::Hardlink(n, t) => raw(&mut b, T::Link, n, t, 0o644, b""),
            E::Char(n) => raw(&mut b, T::Char, n, "", 0o644, b""),
            E::Fifo(n) => raw(&mut b, T::Fifo, n, "", 0o644, b""),
            E::GlobalPax => raw(
                &mut b,
                T::XGlobalHeader,
                "pax_global_header",
                "",
                0o666,
                b"16 comment=0123\n",
            ),
        }
    }
    b.into_inner().unwrap()
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

const JOB: &[u8] = b"job \"web\" { type = \"system\" }\n";

fn simple_pack() -> Vec<u8> {
    tar_of(&[E::Dir("jobs/"), E::File("jobs/web.hcl", JOB)])
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

// ---------------------------------------------------------------------------------------
// Helpers.

fn decl(key: &str, origin: Origin) -> PackDecl {
    PackDecl {
        key: key.to_string(),
        name: key.to_string(),
        origin,
        origin_name: key.to_string(),
        sha256: None,
        auth: None,
        location: Location::new("packs.toml", 1, 1),
        jobs: Vec::new(),
    }
}

fn opts(cache: &Path) -> FetchOptions {
    FetchOptions {
        cache_dir: cache.to_path_buf(),
        timeout: Duration::from_secs(5),
        ..FetchOptions::default()
    }
}

fn fetcher(cache: &Path) -> Fetcher {
    Fetcher::new(opts(cache))
}

/// Names in a cache subdirectory (including temps).
fn names(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
        Err(_) => Vec::new(),
    }
}

/// Asserts that a failed fetch kept nothing: no blob, no tree, no index, no temps.
fn assert_cache_empty(cache: &Path) {
    assert_eq!(names(&cache.join("blobs/sha256")), Vec::<String>::new());
    assert_eq!(names(&cache.join("unpacked")), Vec::<String>::new());
    assert_eq!(names(&cache.join("index")), Vec::<String>::new());
}

async fn fetch_archive(
    name: &str,
    body: Vec<u8>,
    options: FetchOptions,
) -> (Result<FetchedPack, OriginError>, Server) {
    let server = Server::start().await;
    server.serve(&format!("/{name}"), body);
    let f = Fetcher::new(options);
    let res = f
        .fetch(&decl("web", Origin::Http(server.url(&format!("/{name}")))))
        .await;
    (res, server)
}

// ---------------------------------------------------------------------------------------
// Local origins.

#[tokio::test]
async fn local_root_is_pack_and_is_never_written() {
    let origin = tempfile::tempdir().unwrap();
    std::fs::create_dir(origin.path().join("jobs")).unwrap();
    std::fs::write(origin.path().join("jobs/web.hcl"), JOB).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let got = fetcher(&cache.path().join("c"))
        .fetch(&decl("web", Origin::Local(origin.path().to_path_buf())))
        .await
        .unwrap();
    assert_eq!(got.dir, origin.path());
    assert_eq!(got.digest, None);
    assert!(!got.from_cache);
    assert_eq!(names(origin.path()), vec!["jobs"]);
    assert!(
        !cache.path().join("c").exists(),
        "local fetch touches no cache"
    );
}

#[tokio::test]
async fn local_origin_name_subdir_plain_and_file_url() {
    let origin = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(origin.path().join("redis/jobs")).unwrap();
    std::fs::create_dir_all(origin.path().join("jobs")).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let f = fetcher(cache.path());
    let got = f
        .fetch(&decl("redis", Origin::Local(origin.path().to_path_buf())))
        .await
        .unwrap();
    assert_eq!(got.dir, origin.path().join("redis"));
    let url = format!("file://{}", origin.path().display());
    let got = f.fetch(&decl("redis", Origin::Http(url))).await.unwrap();
    assert_eq!(got.dir, origin.path().join("redis"));
    // A name absent from the origin falls back to the root, which has jobs/.
    let got = f
        .fetch(&decl("other", Origin::Local(origin.path().to_path_buf())))
        .await
        .unwrap();
    assert_eq!(got.dir, origin.path());
}

#[tokio::test]
async fn local_missing_or_without_pack_is_a_clear_error() {
    let origin = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let f = fetcher(cache.path());
    let gone = origin.path().join("nope");
    let err = f
        .fetch(&decl("redis", Origin::Local(gone.clone())))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "pack `redis`: local origin {} does not exist",
            gone.display()
        )
    );
    std::fs::create_dir(origin.path().join("docs")).unwrap();
    let err = f
        .fetch(&decl("redis", Origin::Local(origin.path().to_path_buf())))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "pack `redis`: pack `redis` not found at {} (looked for redis/ and jobs/)",
            origin.path().display()
        )
    );
}

// ---------------------------------------------------------------------------------------
// Archive formats and cache layout.

async fn check_format(name: &str, body: Vec<u8>) {
    let cache = tempfile::tempdir().unwrap();
    let (res, server) = fetch_archive(name, body.clone(), opts(cache.path())).await;
    let got = res.unwrap();
    let digest = sha(&body);
    assert_eq!(got.digest.as_deref(), Some(digest.as_str()));
    assert!(!got.from_cache);
    assert_eq!(got.dir, cache.path().join("unpacked").join(&digest));
    assert_eq!(std::fs::read(got.dir.join("jobs/web.hcl")).unwrap(), JOB);
    assert_eq!(
        std::fs::read(cache.path().join("blobs/sha256").join(&digest)).unwrap(),
        body
    );
    let index = names(&cache.path().join("index"));
    assert_eq!(
        index,
        vec![format!(
            "{}.json",
            sha(server.url(&format!("/{name}")).as_bytes())
        )]
    );
    let entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cache.path().join("index").join(&index[0])).unwrap())
            .unwrap();
    assert_eq!(entry["digest"], digest);
    assert!(entry["etag"].is_string());
    assert_eq!(names(&cache.path().join("unpacked")), vec![digest]);
}

#[tokio::test]
async fn http_tar_gz() {
    check_format("p.tar.gz", gz(&simple_pack())).await;
    check_format("p.tgz", gz(&simple_pack())).await;
}

#[tokio::test]
async fn http_tar_xz() {
    check_format("p.tar.xz", xz(&simple_pack())).await;
    check_format("p.txz", xz(&simple_pack())).await;
}

#[tokio::test]
async fn http_plain_tar() {
    check_format("p.tar", simple_pack()).await;
}

#[tokio::test]
async fn suffix_and_magic_must_agree() {
    let cache = tempfile::tempdir().unwrap();
    let (res, server) = fetch_archive("p.tar.xz", gz(&simple_pack()), opts(cache.path())).await;
    let err = res.unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "pack `web`: {} is not a usable archive: the name says xz but the content is gzip",
            server.url("/p.tar.xz")
        )
    );
    assert_cache_empty(cache.path());
}

// ---------------------------------------------------------------------------------------
// Pins.

#[tokio::test]
async fn pinned_fetch_then_zero_requests() {
    let body = gz(&simple_pack());
    let server = Server::start().await;
    server.serve("/p.tar.gz", body.clone());
    let cache = tempfile::tempdir().unwrap();
    let mut d = decl("web", Origin::Http(server.url("/p.tar.gz")));
    d.sha256 = Some(sha(&body));
    let first = fetcher(cache.path()).fetch(&d).await.unwrap();
    assert!(!first.from_cache);
    assert_eq!(server.requests(), 1);
    // A new fetcher (a new applier run) on the same cache.
    let second = fetcher(cache.path()).fetch(&d).await.unwrap();
    assert!(second.from_cache);
    assert_eq!(second.dir, first.dir);
    assert_eq!(server.requests(), 1, "pinned and cached: no request at all");
    // Even with the server gone.
    server.shutdown().await;
    let third = fetcher(cache.path()).fetch(&d).await.unwrap();
    assert_eq!(third.dir, first.dir);
}

#[tokio::test]
async fn pinned_blob_without_tree_is_reextracted_offline() {
    let body = gz(&simple_pack());
    let server = Server::start().await;
    server.serve("/p.tar.gz", body.clone());
    let cache = tempfile::tempdir().unwrap();
    let mut d = decl("web", Origin::Http(server.url("/p.tar.gz")));
    d.sha256 = Some(sha(&body));
    let first = fetcher(cache.path()).fetch(&d).await.unwrap();
    std::fs::remove_dir_all(&first.dir).unwrap();
    let again = fetcher(cache.path()).fetch(&d).await.unwrap();
    assert!(again.from_cache);
    assert_eq!(std::fs::read(again.dir.join("jobs/web.hcl")).unwrap(), JOB);
    assert_eq!(server.requests(), 1);
}

/// Sets the mtime of every cache entry `age` into the past, as if unused that long.
fn backdate_cache(cache: &Path, age: Duration) {
    let then = std::time::SystemTime::now() - age;
    for sub in ["blobs/sha256", "unpacked", "index"] {
        for name in names(&cache.join(sub)) {
            let f = std::fs::File::open(cache.join(sub).join(name)).unwrap();
            f.set_modified(then).unwrap();
        }
    }
}

#[tokio::test]
async fn superseded_downloads_are_collected_once_idle_and_pins_survive_an_outage() {
    let week = Duration::from_secs(7 * 24 * 3600);
    let v1 = gz(&simple_pack());
    let v2 = gz(&tar_of(&[
        E::Dir("jobs/"),
        E::File("jobs/web.hcl", b"job \"web\" { type = \"system\" } # v2\n"),
    ]));
    let pinned = xz(&simple_pack());
    let server = Server::start().await;
    server.serve("/web-1.tar.gz", v1.clone());
    server.serve("/web-2.tar.gz", v2.clone());
    server.serve("/db.tar.xz", pinned.clone());
    let cache = tempfile::tempdir().unwrap();
    let web1 = decl("web", Origin::Http(server.url("/web-1.tar.gz")));
    let web2 = decl("web", Origin::Http(server.url("/web-2.tar.gz")));
    let mut db = decl("db", Origin::Http(server.url("/db.tar.xz")));
    db.sha256 = Some(sha(&pinned));

    let f = fetcher(cache.path());
    f.fetch(&web1).await.unwrap();
    f.fetch(&db).await.unwrap();
    // The set moves on to web 2; the first run after that uses web 2 and db.
    let used = f.fetch(&web2).await.unwrap().digest.unwrap();
    let set = [web2.clone(), db.clone()];
    let blobs = || names(&cache.path().join("blobs/sha256"));
    assert_eq!(blobs().len(), 3);

    // Fresh entries are never collected: another set sharing the cache may still use them.
    let r = f
        .collect_garbage(&set, std::slice::from_ref(&used))
        .unwrap();
    assert_eq!(r, Default::default());

    // A week idle, web 1 goes (blob, tree, index entry); web 2 and pinned db stay even
    // though db was not fetched in this run (its origin may be down today).
    backdate_cache(cache.path(), week + Duration::from_secs(60));
    let r = f
        .collect_garbage(&set, std::slice::from_ref(&used))
        .unwrap();
    assert_eq!((r.archives, r.index_entries), (1, 1), "{r:?}");
    assert!(r.freed_bytes >= v1.len() as u64, "{r:?}");
    let mut want = vec![sha(&v2), sha(&pinned)];
    want.sort();
    assert_eq!(blobs(), want);
    assert_eq!(names(&cache.path().join("unpacked")), want);
    assert_eq!(names(&cache.path().join("index")).len(), 2);

    // The pinned copy still serves db with the server gone.
    server.shutdown().await;
    let offline = fetcher(cache.path()).fetch(&db).await.unwrap();
    assert!(offline.from_cache);
    assert_eq!(
        std::fs::read(offline.dir.join("jobs/web.hcl")).unwrap(),
        JOB
    );
}

#[tokio::test]
async fn corrupt_or_partial_cache_entries_are_not_used() {
    let body = gz(&simple_pack());
    let server = Server::start().await;
    server.serve("/p.tar.gz", body.clone());
    let cache = tempfile::tempdir().unwrap();
    let pin = sha(&body);
    // What a crash or a disk error could leave: a temp tree, a temp download, a bad blob.
    std::fs::create_dir_all(cache.path().join("unpacked/.tmp-1-2-3/jobs")).unwrap();
    std::fs::create_dir_all(cache.path().join("blobs/sha256")).unwrap();
    std::fs::write(cache.path().join("blobs/sha256/.tmp-4-5-6"), b"partial").unwrap();
    std::fs::write(cache.path().join("blobs/sha256").join(&pin), b"bit rot").unwrap();
    let mut d = decl("web", Origin::Http(server.url("/p.tar.gz")));
    d.sha256 = Some(pin.clone());
    let got = fetcher(cache.path()).fetch(&d).await.unwrap();
    assert_eq!(server.requests(), 1, "the bad blob was not trusted");
    assert!(!got.from_cache);
    assert_eq!(got.dir, cache.path().join("unpacked").join(&pin));
    assert_eq!(std::fs::read(got.dir.join("jobs/web.hcl")).unwrap(), JOB);
    assert_eq!(
        std::fs::read(cache.path().join("blobs/sha256").join(&pin)).unwrap(),
        body
    );
}

#[tokio::test]
async fn pin_mismatch_keeps_nothing() {
    let body = gz(&simple_pack());
    let server = Server::start().await;
    server.serve("/p.tar.gz", body.clone());
    let cache = tempfile::tempdir().unwrap();
    let mut d = decl("web", Origin::Http(server.url("/p.tar.gz")));
    let wrong = "0".repeat(64);
    d.sha256 = Some(wrong.clone());
    let err = fetcher(cache.path()).fetch(&d).await.unwrap_err();
    assert!(matches!(err, OriginError::Sha256Mismatch { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "pack `web`: sha256 mismatch for {}: computed {}, expected {wrong}",
            server.url("/p.tar.gz"),
            sha(&body)
        )
    );
    assert_cache_empty(cache.path());
}

// ---------------------------------------------------------------------------------------
// Revalidation.

#[tokio::test]
async fn etag_revalidation_avoids_download() {
    let body = gz(&simple_pack());
    let server = Server::start().await;
    server.serve("/p.tar.gz", body.clone());
    let cache = tempfile::tempdir().unwrap();
    let d = decl("web", Origin::Http(server.url("/p.tar.gz")));
    let f = fetcher(cache.path());
    let first = f.fetch(&d).await.unwrap();
    assert_eq!(server.body_bytes(), body.len() as u64);
    let second = fetcher(cache.path()).fetch(&d).await.unwrap();
    assert!(second.from_cache);
    assert_eq!(second.dir, first.dir);
    assert_eq!(server.requests(), 2);
    assert_eq!(
        server.body_bytes(),
        body.len() as u64,
        "304: no body sent again"
    );
    let seen = server.seen();
    assert_eq!(seen[0].if_none_match, None);
    assert!(
        seen[1].if_none_match.is_some(),
        "second request is conditional"
    );
    assert_eq!(seen[1].if_modified_since.as_deref(), Some(LAST_MODIFIED));

    // New content at the same URL: downloaded anew, new digest and tree.
    let v2 = gz(&tar_of(&[E::File("jobs/web.hcl", b"job \"v2\" {}\n")]));
    server.serve("/p.tar.gz", v2.clone());
    let third = f.fetch(&d).await.unwrap();
    assert!(!third.from_cache);
    assert_eq!(third.digest, Some(sha(&v2)));
    assert_eq!(
        std::fs::read(third.dir.join("jobs/web.hcl")).unwrap(),
        b"job \"v2\" {}\n"
    );
    assert_eq!(server.body_bytes(), (body.len() + v2.len()) as u64);
}

#[tokio::test]
async fn not_modified_with_vanished_copy_downloads_again() {
    let body = gz(&simple_pack());
    let server = Server::start().await;
    server.serve("/p.tar.gz", body.clone());
    let cache = tempfile::tempdir().unwrap();
    let d = decl("web", Origin::Http(server.url("/p.tar.gz")));
    let first = fetcher(cache.path()).fetch(&d).await.unwrap();
    // Someone cleaned the tree and corrupted the blob, but the index survived.
    std::fs::remove_dir_all(&first.dir).unwrap();
    std::fs::write(cache.path().join("blobs/sha256").join(sha(&body)), b"x").unwrap();
    let again = fetcher(cache.path()).fetch(&d).await.unwrap();
    assert_eq!(std::fs::read(again.dir.join("jobs/web.hcl")).unwrap(), JOB);
    let seen = server.seen();
    assert_eq!(seen.len(), 3, "initial, conditional (304), unconditional");
    assert!(seen[1].if_none_match.is_some());
    assert_eq!(seen[2].if_none_match, None);
    assert_eq!(server.body_bytes(), 2 * body.len() as u64);
}

#[tokio::test]
async fn origin_down_is_an_error_not_a_stale_copy() {
    let server = Server::start().await;
    server.serve("/p.tar.gz", gz(&simple_pack()));
    let url = server.url("/p.tar.gz");
    let cache = tempfile::tempdir().unwrap();
    let d = decl("web", Origin::Http(url.clone()));
    fetcher(cache.path()).fetch(&d).await.unwrap();
    server.shutdown().await;
    let cached = names(&cache.path().join("unpacked"));
    assert_eq!(cached.len(), 1, "a copy exists, and still must not be used");
    let err = fetcher(cache.path()).fetch(&d).await.unwrap_err();
    assert!(matches!(err, OriginError::Request { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "pack `web`: cannot download {url}: cannot connect: "
        )),
        "{msg}"
    );
}

#[tokio::test]
async fn silent_server_times_out() {
    let server = Server::start().await;
    server.route("/p.tar", Route::Hang);
    let cache = tempfile::tempdir().unwrap();
    let f = Fetcher::new(FetchOptions {
        timeout: Duration::from_secs(1),
        ..opts(cache.path())
    });
    let started = std::time::Instant::now();
    let err = f
        .fetch(&decl("web", Origin::Http(server.url("/p.tar"))))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "pack `web`: cannot download {}: timed out (limit 1s)",
            server.url("/p.tar")
        )
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "gave up long before the server"
    );
    assert_cache_empty(cache.path());
}

#[tokio::test]
async fn server_error_reports_status_and_body() {
    let server = Server::start().await;
    server.route(
        "/p.tar.gz",
        Route::Fail(500, format!("boom {}", "x".repeat(500))),
    );
    let cache = tempfile::tempdir().unwrap();
    let err = fetcher(cache.path())
        .fetch(&decl("web", Origin::Http(server.url("/p.tar.gz"))))
        .await
        .unwrap_err();
    match &err {
        OriginError::Status { status, body, .. } => {
            assert_eq!(*status, 500);
            let body = body.as_deref().unwrap();
            assert!(body.starts_with("boom xxx"), "{body}");
            assert!(
                body.chars().count() <= 201,
                "excerpt is bounded: {}",
                body.len()
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().starts_with(&format!(
        "pack `web`: {} answered HTTP 500 Internal Server Error: boom",
        server.url("/p.tar.gz")
    )));
    assert_cache_empty(cache.path());
}

// ---------------------------------------------------------------------------------------
// Authentication.

fn with_auth(mut d: PackDecl, scheme: AuthScheme, secret: SecretSource) -> PackDecl {
    d.auth = Some(Auth { scheme, secret });
    d
}

#[tokio::test]
async fn bearer_from_file_and_env() {
    let server = Server::start().await;
    server.serve("/p.tar.gz", gz(&simple_pack()));
    server.require_auth("Bearer tok-123");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tok-123\n").unwrap();
    let url = server.url("/p.tar.gz");

    let anonymous = fetcher(&dir.path().join("c0"))
        .fetch(&decl("web", Origin::Http(url.clone())))
        .await
        .unwrap_err();
    assert!(
        matches!(anonymous, OriginError::Status { status: 401, .. }),
        "{anonymous:?}"
    );

    let d = with_auth(
        decl("web", Origin::Http(url.clone())),
        AuthScheme::Bearer,
        SecretSource::File(token),
    );
    let got = fetcher(&dir.path().join("c1")).fetch(&d).await.unwrap();
    assert!(got.dir.join("jobs/web.hcl").is_file());

    std::env::set_var("NOMADOS_TEST_ORIGIN_TOKEN", "tok-123");
    let d = with_auth(
        decl("web", Origin::Http(url)),
        AuthScheme::Bearer,
        SecretSource::Env("NOMADOS_TEST_ORIGIN_TOKEN".into()),
    );
    fetcher(&dir.path().join("c2")).fetch(&d).await.unwrap();
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2].authorization.as_deref(), Some("Bearer tok-123"));
}

#[tokio::test]
async fn basic_with_username_and_password_file() {
    let server = Server::start().await;
    server.serve("/p.tar", simple_pack());
    // base64("alice:s3cret-pw")
    server.require_auth("Basic YWxpY2U6czNjcmV0LXB3");
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret-pw\n").unwrap();
    let d = with_auth(
        decl("web", Origin::Http(server.url("/p.tar"))),
        AuthScheme::Basic {
            username: Some("alice".into()),
        },
        SecretSource::File(pw.clone()),
    );
    fetcher(&dir.path().join("c1")).fetch(&d).await.unwrap();
    // Without a username, the file holds `user:password`.
    std::fs::write(&pw, "alice:s3cret-pw").unwrap();
    let d = with_auth(
        decl("web", Origin::Http(server.url("/p.tar"))),
        AuthScheme::Basic { username: None },
        SecretSource::File(pw),
    );
    fetcher(&dir.path().join("c2")).fetch(&d).await.unwrap();
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn missing_secret_file_and_env_are_named() {
    let server = Server::start().await;
    server.serve("/p.tar", simple_pack());
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-token");
    let d = with_auth(
        decl("web", Origin::Http(server.url("/p.tar"))),
        AuthScheme::Bearer,
        SecretSource::File(missing.clone()),
    );
    let err = fetcher(dir.path()).fetch(&d).await.unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "pack `web`: credentials for {}: secret file {} does not exist",
            server.url("/p.tar"),
            missing.display()
        )
    );
    let d = with_auth(
        decl("web", Origin::Http(server.url("/p.tar"))),
        AuthScheme::Bearer,
        SecretSource::Env("NOMADOS_TEST_ORIGIN_UNSET".into()),
    );
    let err = fetcher(dir.path()).fetch(&d).await.unwrap_err().to_string();
    assert!(
        err.ends_with("environment variable NOMADOS_TEST_ORIGIN_UNSET is not set"),
        "{err}"
    );
    assert_eq!(server.requests(), 0, "nothing sent without the secret");
}

#[tokio::test]
async fn secrets_never_appear_in_errors() {
    const SECRET: &str = "very-secret-token-9f8e7d";
    let server = Server::start().await;
    server.serve("/p.tar", simple_pack());
    server.route("/echo.tar", Route::EchoAuth);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{SECRET}\n")).unwrap();
    let mut errors: Vec<OriginError> = Vec::new();

    // Wrong credentials (server wants another token): 401.
    server.require_auth("Bearer something-else");
    let d = with_auth(
        decl("web", Origin::Http(server.url("/p.tar"))),
        AuthScheme::Bearer,
        SecretSource::File(token.clone()),
    );
    errors.push(fetcher(dir.path()).fetch(&d).await.unwrap_err());
    // A server that echoes the Authorization header in its error body.
    let d = with_auth(
        decl("web", Origin::Http(server.url("/echo.tar"))),
        AuthScheme::Bearer,
        SecretSource::File(token.clone()),
    );
    let echoed = fetcher(dir.path()).fetch(&d).await.unwrap_err();
    assert!(echoed.to_string().contains("***"), "{echoed}");
    errors.push(echoed);
    // Credentials inside the URL itself.
    let url = format!("http://alice:{SECRET}@{}/missing.tar", server.addr);
    errors.push(
        fetcher(dir.path())
            .fetch(&decl("web", Origin::Http(url)))
            .await
            .unwrap_err(),
    );
    // Unreachable origin with credentials.
    let url = format!("http://alice:{SECRET}@127.0.0.1:1/p.tar");
    errors.push(
        fetcher(dir.path())
            .fetch(&decl("web", Origin::Http(url)))
            .await
            .unwrap_err(),
    );
    // Basic auth secret without the `user:` part.
    std::fs::write(&token, SECRET).unwrap();
    let d = with_auth(
        decl("web", Origin::Http(server.url("/p.tar"))),
        AuthScheme::Basic { username: None },
        SecretSource::File(token),
    );
    errors.push(fetcher(dir.path()).fetch(&d).await.unwrap_err());

    assert_eq!(errors.len(), 5);
    for e in &errors {
        let shown = format!("{e} / {e:?} / {:?}", std::error::Error::source(e));
        assert!(!shown.contains(SECRET), "secret leaked: {shown}");
        assert!(shown.contains("pack `web`"), "names the pack: {shown}");
    }
}

#[tokio::test]
async fn credentials_do_not_follow_cross_origin_redirects() {
    let a = Server::start().await;
    let b = Server::start().await;
    b.serve("/p.tar", simple_pack());
    a.serve("/p.tar", simple_pack());
    // Same address, other "host" name and port: another origin.
    a.route(
        "/away.tar",
        Route::Redirect(format!("http://localhost:{}/p.tar", b.addr.port())),
    );
    a.route("/here.tar", Route::Redirect("/p.tar".into()));
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tok-123").unwrap();

    let authed = |path: &str| {
        with_auth(
            decl("web", Origin::Http(a.url(path))),
            AuthScheme::Bearer,
            SecretSource::File(token.clone()),
        )
    };
    let err = fetcher(&dir.path().join("c1"))
        .fetch(&authed("/away.tar"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refused because credentials are attached"),
        "{err}"
    );
    assert_eq!(b.requests(), 0, "the other origin never saw a request");

    // Same-origin redirect keeps the header.
    fetcher(&dir.path().join("c2"))
        .fetch(&authed("/here.tar"))
        .await
        .unwrap();
    let last = a.seen().pop().unwrap();
    assert_eq!(last.path, "/p.tar");
    assert_eq!(last.authorization.as_deref(), Some("Bearer tok-123"));

    // Credentials in the URL count as credentials too.
    let with_userinfo = format!("http://alice:pw@{}/away.tar", a.addr);
    let err = fetcher(&dir.path().join("c4"))
        .fetch(&decl("web", Origin::Http(with_userinfo)))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refused because credentials are attached"),
        "{err}"
    );
    assert!(!err.contains("pw@"), "{err}");
    assert_eq!(b.requests(), 0);

    // Anonymous fetches follow redirects anywhere.
    fetcher(&dir.path().join("c3"))
        .fetch(&decl("web", Origin::Http(a.url("/away.tar"))))
        .await
        .unwrap();
    assert_eq!(b.requests(), 1);
    assert_eq!(b.seen()[0].authorization, None);
}

// ---------------------------------------------------------------------------------------
// Hostile archives: each is refused and leaves nothing in the cache.

async fn refused(
    entries: &[E<'_>],
    options: impl FnOnce(&Path) -> FetchOptions,
) -> (String, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    let (res, server) =
        fetch_archive("evil.tar.gz", gz(&tar_of(entries)), options(cache.path())).await;
    let err = res.expect_err("archive must be refused");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "pack `web`: archive {} refused: ",
            server.url("/evil.tar.gz")
        )),
        "{msg}"
    );
    assert_cache_empty(cache.path());
    (msg, cache)
}

#[tokio::test]
async fn refuses_parent_traversal() {
    let (msg, cache) = refused(
        &[E::File("jobs/ok.hcl", JOB), E::File("../x", b"evil")],
        opts,
    )
    .await;
    assert!(msg.ends_with("entry `../x` has a `..` component"), "{msg}");
    assert!(!cache.path().join("x").exists() && !cache.path().join("unpacked/x").exists());
    let (msg, _) = refused(&[E::File("jobs/../../y", b"evil")], opts).await;
    assert!(msg.contains("has a `..` component"), "{msg}");
}

#[tokio::test]
async fn refuses_absolute_paths() {
    let target = tempfile::tempdir().unwrap();
    let evil = target.path().join("evil");
    let name = evil.to_str().unwrap().to_string();
    let (msg, _) = refused(&[E::File(&name, b"evil")], opts).await;
    assert!(msg.ends_with("is an absolute path"), "{msg}");
    assert!(!evil.exists());
}

#[tokio::test]
async fn refuses_escaping_symlinks() {
    let (msg, _) = refused(&[E::Symlink("jobs/link", "../../etc")], opts).await;
    assert!(
        msg.ends_with("entry `jobs/link` is a symlink pointing outside the archive"),
        "{msg}"
    );
    let (msg, _) = refused(&[E::Symlink("link", "/etc/passwd")], opts).await;
    assert!(msg.ends_with("is a symlink to an absolute path"), "{msg}");
    // `d/up -> ..` stays inside, but writing through it could chain outside.
    let (msg, _) = refused(
        &[
            E::Dir("d/"),
            E::Symlink("d/up", ".."),
            E::Symlink("d/up/out", ".."),
        ],
        opts,
    )
    .await;
    assert!(
        msg.ends_with("entry `d/up/out` goes through a symlink"),
        "{msg}"
    );
}

#[tokio::test]
async fn refuses_symlink_chains_that_walk_out_when_followed() {
    // Each link stays inside when checked alone; followed, `x/e2` is above the archive.
    let chain = [
        E::Dir("x/"),
        E::Symlink("x/up", ".."),
        E::Symlink("x/e1", "up/.."),
        E::Symlink("x/e2", "e1/.."),
    ];
    let (msg, _) = refused(&chain, opts).await;
    assert!(
        msg.ends_with(
            "entry `x/e1` is a symlink that leads outside the archive through other symlinks"
        ),
        "{msg}"
    );
    let mut with_file = vec![E::File("jobs/web.hcl", JOB)];
    with_file.extend(chain);
    with_file.push(E::Symlink("files/passwd", "../x/e2/etc/passwd"));
    let (msg, _) = refused(&with_file, opts).await;
    assert!(
        msg.ends_with(
            "entry `files/passwd` is a symlink that leads outside the archive through other symlinks"
        ),
        "{msg}"
    );
}

/// A gzip stream of `header`, then `repeat` times `chunk`, then `tail`: gzip members
/// concatenate, so a few KiB describe hundreds of MiB.
fn gz_bomb(header: &[u8], chunk: &[u8], repeat: usize, tail: &[u8]) -> Vec<u8> {
    let member = gz(chunk);
    let mut out = gz(header);
    for _ in 0..repeat {
        out.extend_from_slice(&member);
    }
    out.extend_from_slice(&gz(tail));
    out
}

fn header_bytes(kind: tar::EntryType, name: &str, size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_cksum();
    h.as_bytes().to_vec()
}

#[tokio::test]
async fn refuses_gnu_long_name_bombs_without_buffering_them() {
    const MIB: usize = 1024 * 1024;
    // A 100 MiB long name: the `tar` crate alone would hold it all in memory.
    let body = gz_bomb(
        &header_bytes(
            tar::EntryType::GNULongName,
            "././@LongLink",
            100 * MIB as u64,
        ),
        &vec![b'a'; MIB],
        100,
        &simple_pack(),
    );
    assert!(body.len() < 200 * 1024, "{}", body.len());
    let cache = tempfile::tempdir().unwrap();
    let (res, _server) = fetch_archive("bomb.tar.gz", body, opts(cache.path())).await;
    let msg = res.expect_err("refused").to_string();
    assert!(
        msg.ends_with("refused: it has a GNU long name of 104857600 bytes (at most 4096)"),
        "{msg}"
    );
    assert_cache_empty(cache.path());
}

#[tokio::test]
async fn refuses_decompression_bombs_before_reading_them_whole() {
    const MIB: usize = 1024 * 1024;
    // 64 MiB of zeros in a pax global header, which is skipped, not extracted: only the
    // bound on the decompressed stream stops it.
    let body = gz_bomb(
        &header_bytes(
            tar::EntryType::XGlobalHeader,
            "pax_global_header",
            64 * MIB as u64,
        ),
        &vec![0u8; MIB],
        64,
        &simple_pack(),
    );
    let small = |c: &Path| FetchOptions {
        max_unpacked_bytes: MIB as u64,
        max_entries: 10,
        ..opts(c)
    };
    let cache = tempfile::tempdir().unwrap();
    let (res, _server) = fetch_archive("bomb.tar.gz", body, small(cache.path())).await;
    let msg = res.expect_err("refused").to_string();
    // 1 MiB of content plus 8 KiB of headers per entry.
    assert!(
        msg.ends_with("refused: it decompresses to more than 1138688 bytes"),
        "{msg}"
    );
    assert_cache_empty(cache.path());
}

#[tokio::test]
async fn long_names_and_links_from_gnu_and_pax_headers_are_kept() {
    let deep = format!("files/{}/{}.txt", "d".repeat(120), "n".repeat(150));
    // Relative to files/, and longer than the 100 bytes a header holds.
    let link_target = deep["files/".len()..].to_string();
    let mut b = tar::Builder::new(Vec::new());
    // GNU long name and long link records (the tar crate writes them for long paths).
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(JOB.len() as u64);
    b.append_data(&mut h, "jobs/web.hcl", JOB).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(3);
    b.append_data(&mut h, &deep, &b"abc"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "files/alias.txt", &link_target)
        .unwrap();
    // A pax header naming the next entry, as GNU tar --format=pax writes it.
    let pax_name = format!("files/{}/pax.txt", "p".repeat(140));
    let record = format!("path={pax_name}\n");
    let len = record.len() + 4; // "NNN " prefix, three digits
    let pax = format!("{len} {record}");
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_path("PaxHeaders/pax.txt").unwrap();
    h.set_size(pax.len() as u64);
    h.set_cksum();
    b.append(&h, pax.as_bytes()).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_path("short-name").unwrap();
    h.set_mode(0o644);
    h.set_size(3);
    h.set_cksum();
    b.append(&h, &b"pax"[..]).unwrap();
    let body = gz(&b.into_inner().unwrap());

    let cache = tempfile::tempdir().unwrap();
    let (res, _server) = fetch_archive("p.tar.gz", body, opts(cache.path())).await;
    let got = res.unwrap();
    assert_eq!(std::fs::read(got.dir.join(&deep)).unwrap(), b"abc");
    assert_eq!(
        std::fs::read(got.dir.join("files/alias.txt")).unwrap(),
        b"abc"
    );
    assert_eq!(std::fs::read(got.dir.join(&pax_name)).unwrap(), b"pax");
    assert!(!got.dir.join("short-name").exists());
}

#[tokio::test]
async fn inside_symlinks_and_hardlinks_are_kept() {
    let cache = tempfile::tempdir().unwrap();
    let body = gz(&tar_of(&[
        E::File("jobs/web.hcl", JOB),
        E::Symlink("jobs/alias.hcl", "web.hcl"),
        E::Hardlink("jobs/copy.hcl", "jobs/web.hcl"),
        E::FileMode("jobs/tool", b"#!/bin/sh\n", 0o6777),
    ]));
    let (res, _server) = fetch_archive("p.tar.gz", body, opts(cache.path())).await;
    let got = res.unwrap();
    assert_eq!(std::fs::read(got.dir.join("jobs/alias.hcl")).unwrap(), JOB);
    assert_eq!(std::fs::read(got.dir.join("jobs/copy.hcl")).unwrap(), JOB);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(got.dir.join("jobs/tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o7777,
        0o755,
        "setuid/setgid/sticky and group/other write dropped"
    );
}

#[tokio::test]
async fn refuses_escaping_hardlinks() {
    let (msg, _) = refused(&[E::Hardlink("jobs/h", "../outside")], opts).await;
    assert!(
        msg.ends_with("entry `jobs/h` is a hard link to a path outside the archive"),
        "{msg}"
    );
    let (msg, _) = refused(&[E::Hardlink("jobs/h", "/etc/passwd")], opts).await;
    assert!(msg.contains("hard link to a path outside"), "{msg}");
    let (msg, _) = refused(
        &[
            E::Hardlink("jobs/h", "jobs/later"),
            E::File("jobs/later", b"x"),
        ],
        opts,
    )
    .await;
    assert!(
        msg.contains("is a hard link to a path that is not an earlier file"),
        "{msg}"
    );
}

#[tokio::test]
async fn refuses_devices_and_fifos() {
    let (msg, _) = refused(&[E::File("jobs/a", b"x"), E::Char("jobs/null")], opts).await;
    assert!(
        msg.ends_with("entry `jobs/null` is a character device"),
        "{msg}"
    );
    let (msg, _) = refused(&[E::Fifo("jobs/pipe")], opts).await;
    assert!(msg.ends_with("entry `jobs/pipe` is a fifo"), "{msg}");
}

#[tokio::test]
async fn refuses_size_bombs() {
    let small = |c: &Path| FetchOptions {
        max_unpacked_bytes: 1024 * 1024,
        ..opts(c)
    };
    let zeros = vec![0u8; 2 * 1024 * 1024];
    let (msg, _) = refused(&[E::File("jobs/big", &zeros)], small).await;
    assert!(
        msg.ends_with("it expands to more than 1048576 bytes"),
        "{msg}"
    );
    // Each file is under the limit; together they are not.
    let part = vec![0u8; 400 * 1024];
    let (msg, _) = refused(
        &[
            E::File("jobs/a", &part),
            E::File("jobs/b", &part),
            E::File("jobs/c", &part),
        ],
        small,
    )
    .await;
    assert!(
        msg.ends_with("it expands to more than 1048576 bytes"),
        "{msg}"
    );
}

#[tokio::test]
async fn refuses_too_many_entries() {
    let names: Vec<String> = (0..20).map(|i| format!("jobs/f{i}")).collect();
    let entries: Vec<E> = names.iter().map(|n| E::File(n, b"x")).collect();
    let few = |c: &Path| FetchOptions {
        max_entries: 10,
        ..opts(c)
    };
    let (msg, _) = refused(&entries, few).await;
    assert!(msg.ends_with("it has more than 10 entries"), "{msg}");
}

// ---------------------------------------------------------------------------------------
// Layout of archives.

#[tokio::test]
async fn single_top_level_directory_is_stripped() {
    let cache = tempfile::tempdir().unwrap();
    // Like a GitHub archive: a pax global header, then one directory.
    let body = gz(&tar_of(&[
        E::GlobalPax,
        E::Dir("repo-main/"),
        E::File("repo-main/jobs/web.hcl", JOB),
    ]));
    let (res, _s) = fetch_archive("p.tar.gz", body.clone(), opts(cache.path())).await;
    let got = res.unwrap();
    assert_eq!(
        got.dir,
        cache
            .path()
            .join("unpacked")
            .join(sha(&body))
            .join("repo-main")
    );

    // Several packs in one repository archive: the origin name picks one.
    let body = tar_of(&[
        E::File("repo-main/redis/jobs/redis.hcl", JOB),
        E::File("repo-main/web/jobs/web.hcl", JOB),
    ]);
    let server = Server::start().await;
    server.serve("/all.tar", body.clone());
    let mut d = decl("cache", Origin::Http(server.url("/all.tar")));
    d.origin_name = "redis".into();
    let got = fetcher(cache.path()).fetch(&d).await.unwrap();
    assert!(
        got.dir.ends_with("repo-main/redis"),
        "{}",
        got.dir.display()
    );

    d.origin_name = "nosuch".into();
    let err = fetcher(cache.path())
        .fetch(&d)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with(&format!(
            "pack `nosuch` not found at {} (looked for nosuch/ and jobs/)",
            server.url("/all.tar")
        )),
        "{err}"
    );
}

#[tokio::test]
async fn concurrent_fetches_share_one_cache() {
    let body = xz(&simple_pack());
    let server = Server::start().await;
    server.serve("/p.tar.xz", body.clone());
    let cache = tempfile::tempdir().unwrap();
    let d = decl("web", Origin::Http(server.url("/p.tar.xz")));
    let (f1, f2) = (fetcher(cache.path()), fetcher(cache.path()));
    let (r1, r2) = tokio::join!(f1.fetch(&d), f2.fetch(&d));
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert_eq!(r1.dir, r2.dir);
    assert_eq!(std::fs::read(r1.dir.join("jobs/web.hcl")).unwrap(), JOB);
    // No temp files or trees left behind by the loser.
    assert_eq!(names(&cache.path().join("unpacked")), vec![sha(&body)]);
    assert_eq!(names(&cache.path().join("blobs/sha256")), vec![sha(&body)]);
}

#[test]
fn default_options() {
    let o = FetchOptions::default();
    // One default: PID 1's cache on the data partition for root, the user's own otherwise.
    assert_eq!(o.cache_dir, nomad_init::packs::origin::default_cache_dir());
    if nix::unistd::geteuid().is_root() {
        assert_eq!(
            o.cache_dir,
            PathBuf::from(nomad_init::boot::config::PACK_CACHE_DIR)
        );
        assert_eq!(
            nomad_init::boot::config::PacksConfig::default().cache_dir,
            o.cache_dir
        );
    }
    assert_eq!(o.max_unpacked_bytes, 256 * 1024 * 1024);
    assert_eq!(o.max_entries, 10_000);
    assert_eq!(o.max_download_bytes, 256 * 1024 * 1024);
    assert_eq!(o.download_deadline, Duration::from_secs(600));
}

// ---------------------------------------------------------------------------------------
// Benchmark (prints figures, asserts nothing about speed):
//   cargo test -p nomad-init --test packs_origin -- --ignored --nocapture bench_

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
#[ignore = "benchmark: run explicitly, prints peak RSS and throughput"]
async fn bench_large_download_memory() {
    const SIZE: usize = 64 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("big.tar");
    {
        // Incompressible pseudo-random content (xorshift), written straight to disk.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut data = Vec::with_capacity(SIZE);
        while data.len() < SIZE {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            data.extend_from_slice(&state.to_le_bytes());
        }
        let mut b = tar::Builder::new(std::fs::File::create(&archive).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_path("jobs/blob.bin").unwrap();
        h.set_size(SIZE as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &data[..]).unwrap();
        let mut small = h.clone();
        small.set_size(JOB.len() as u64);
        b.append_data(&mut small, "jobs/web.hcl", JOB).unwrap();
        b.finish().unwrap();
    }
    let server = Server::start().await;
    server.route("/big.tar", Route::Disk(archive.clone()));
    let f = fetcher(&dir.path().join("cache"));
    // Reset the peak-RSS counter so only the fetch is measured.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = vm_hwm_kib().unwrap_or(0);
    let started = std::time::Instant::now();
    let got = f
        .fetch(&decl("web", Origin::Http(server.url("/big.tar"))))
        .await
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let after = vm_hwm_kib().unwrap_or(0);
    let size = std::fs::metadata(&archive).unwrap().len();
    assert_eq!(
        std::fs::metadata(got.dir.join("jobs/blob.bin"))
            .unwrap()
            .len(),
        SIZE as u64
    );
    println!(
        "bench: fetched {:.1} MiB (.tar over HTTP, hash + extract) in {secs:.2}s = {:.1} MiB/s",
        size as f64 / 1048576.0,
        size as f64 / 1048576.0 / secs
    );
    println!(
        "bench: peak RSS {:.1} MiB during the fetch (test process incl. server; {:.1} MiB before{})",
        after as f64 / 1024.0,
        before as f64 / 1024.0,
        if reset { ", peak counter reset" } else { ", peak counter NOT reset" }
    );
}
