//! HTTP routes. One dispatcher matches (method, path) by hand so unknown paths and wrong
//! methods get Nomad's exact text/plain answers, and `/v1/var/<path>` can hold slashes.

use crate::agent;
use crate::authz::{self, Need};
use crate::config::AgentConfig;
use crate::filter;
use crate::hcl_job::parse_job;
use crate::state::{Caller, Error, Store};
use crate::version::Version;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Counters for tests: how many requests changed state.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub requests: u64,
    pub writes: u64,
    pub writes_by_path: BTreeMap<String, u64>,
}

pub struct App {
    pub store: Mutex<Store>,
    pub stats: Mutex<Stats>,
    pub index_tx: watch::Sender<u64>,
    pub config: AgentConfig,
    pub version: Version,
    pub management_token: Option<String>,
    pub log_requests: bool,
    pub peers: Arc<crate::peers::Peers>,
    pub initial: Box<dyn Fn() -> Store + Send + Sync>,
}

impl App {
    pub fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock would be a bug in the double; keep serving.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn stats(&self) -> MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

// ------------------------------------------------------------------ responses

const TEXT: &str = "text/plain; charset=utf-8";

struct Reply {
    status: StatusCode,
    body: Vec<u8>,
    content_type: Option<&'static str>,
    index: Option<u64>,
    query_meta: bool,
}

impl Reply {
    fn json(v: &Value) -> Reply {
        Reply {
            status: StatusCode::OK,
            body: serde_json::to_vec(v).unwrap_or_default(),
            content_type: Some("application/json"),
            index: None,
            query_meta: false,
        }
    }
    fn text(status: StatusCode, msg: &str) -> Reply {
        Reply {
            status,
            body: msg.as_bytes().to_vec(),
            content_type: Some(TEXT),
            index: None,
            query_meta: false,
        }
    }
    fn empty() -> Reply {
        Reply {
            status: StatusCode::OK,
            body: Vec::new(),
            content_type: None,
            index: None,
            query_meta: false,
        }
    }
    fn index(mut self, i: u64) -> Reply {
        self.index = Some(i);
        self
    }
    /// Read endpoints also carry X-Nomad-KnownLeader / X-Nomad-LastContact.
    fn query(mut self, i: u64) -> Reply {
        self.index = Some(i);
        self.query_meta = true;
        self
    }
    fn status(mut self, s: StatusCode) -> Reply {
        self.status = s;
        self
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut r = (self.status, self.body).into_response();
        let h = r.headers_mut();
        h.remove("content-type");
        if let Some(ct) = self.content_type {
            h.insert("content-type", HeaderValue::from_static(ct));
        }
        if let Some(i) = self.index {
            if let Ok(v) = HeaderValue::from_str(&i.to_string()) {
                h.insert("x-nomad-index", v);
            }
        }
        if self.query_meta {
            h.insert("x-nomad-knownleader", HeaderValue::from_static("true"));
            h.insert("x-nomad-lastcontact", HeaderValue::from_static("0"));
        }
        r
    }
}

fn err_reply(e: Error, index: u64) -> Reply {
    match e {
        Error::BadRequest(m) => Reply::text(StatusCode::BAD_REQUEST, &m),
        Error::NotFound(m) => Reply::text(StatusCode::NOT_FOUND, &m).query(index),
        Error::Server(m) => Reply::text(StatusCode::INTERNAL_SERVER_ERROR, &m),
        Error::Conflict(v) => Reply::json(&v).status(StatusCode::CONFLICT).index(index),
    }
}

fn not_found() -> Reply {
    // What Go's http.NotFound writes, which is what Nomad answers for unknown paths.
    Reply::text(StatusCode::NOT_FOUND, "404 page not found\n")
}

fn bad_method() -> Reply {
    Reply::text(StatusCode::METHOD_NOT_ALLOWED, "Invalid method")
}

// ------------------------------------------------------------------ request parsing

fn percent_decode(s: &str, plus_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

struct Req {
    method: Method,
    path: String,
    q: HashMap<String, String>,
    body: Bytes,
    /// The `X-Nomad-Token` (or bearer) secret sent, if any.
    token: Option<String>,
}

impl Req {
    fn ns(&self) -> String {
        self.q
            .get("namespace")
            .filter(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| "default".into())
    }
    fn flag(&self, k: &str) -> bool {
        self.q
            .get(k)
            .is_some_and(|v| v.is_empty() || v == "true" || v == "1")
    }
    fn json_body(&self) -> Result<Value, Reply> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            Reply::text(
                StatusCode::BAD_REQUEST,
                &format!("Failed to decode request body: {e}"),
            )
        })
    }
    fn u64_param(&self, k: &str) -> Result<Option<u64>, Reply> {
        match self.q.get(k) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                Reply::text(
                    StatusCode::BAD_REQUEST,
                    &format!("failed to parse value of {k:?}: {v:?} is not a number"),
                )
            }),
        }
    }
}

fn is_write(method: &Method, path: &str) -> bool {
    let m = method.as_str();
    match m {
        "POST" | "PUT" => {
            path == "/v1/jobs"
                || (path.starts_with("/v1/job/") && !path.ends_with("/plan"))
                || path.starts_with("/v1/var/")
                || path.starts_with("/v1/acl/policy/")
                || path == "/v1/acl/bootstrap"
                || path == "/v1/acl/token"
                || (path.starts_with("/v1/node/")
                    && (path.ends_with("/drain") || path.ends_with("/eligibility")))
        }
        "DELETE" => {
            path.starts_with("/v1/job/")
                || path.starts_with("/v1/var/")
                || path.starts_with("/v1/acl/policy/")
        }
        _ => false,
    }
}

fn token_of(headers: &HeaderMap, q: &HashMap<String, String>) -> Option<String> {
    if let Some(t) = headers.get("x-nomad-token").and_then(|v| v.to_str().ok()) {
        return Some(t.to_string());
    }
    if let Some(t) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(t.to_string());
    }
    q.get("X-Nomad-Token").cloned()
}

// ------------------------------------------------------------------ dispatch

pub async fn dispatch(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let q = query_map(&uri);
    let req = Req {
        method,
        path: uri.path().to_string(),
        token: token_of(&headers, &q),
        q,
        body,
    };
    {
        let mut st = app.stats();
        st.requests += 1;
        if is_write(&req.method, &req.path) {
            st.writes += 1;
            *st.writes_by_path.entry(req.path.clone()).or_default() += 1;
        }
    }
    if app.config.acl_enabled {
        if let Some(denied) = authorize(&app, &req) {
            return denied.into_response();
        }
    }
    if req.method == Method::GET {
        wait_for_index(&app, &req).await;
    }
    let reply = {
        let mut store = app.store();
        let t = now();
        store.advance(t);
        let before = store.index;
        let r = route(&app, &mut store, &req, t);
        if store.index != before {
            app.index_tx.send_replace(store.index);
        }
        r
    };
    if app.log_requests {
        // Nomad's own request log line, at the level tests need to read it.
        println!(
            "    {} [INFO]  http: request complete: method={} path={} status={}",
            crate::state::rfc3339(now()),
            req.method,
            req.path,
            reply.status.as_u16()
        );
    }
    reply.into_response()
}

/// With ACLs on: `None` when the request may go ahead, else Nomad's 403 answer (no token:
/// `Permission denied`; an unknown one: `ACL token not found`; too few rights: `Permission
/// denied`).
fn authorize(app: &App, req: &Req) -> Option<Reply> {
    let segs = segments(&req.path);
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let need = authz::need(req.method.as_str(), &segs, &req.ns());
    if need == Need::Open {
        return None;
    }
    let denied = || Some(Reply::text(StatusCode::FORBIDDEN, "Permission denied"));
    let Some(secret) = &req.token else {
        return denied();
    };
    match app.store().acl_caller(secret) {
        None => Some(Reply::text(StatusCode::FORBIDDEN, "ACL token not found")),
        Some(Caller::Management) => None,
        Some(Caller::Client(rules)) if authz::allows(&rules, &need) => None,
        Some(Caller::Client(_)) => denied(),
    }
}

/// Blocking queries: `?index=N` waits until the state moves past N (or `wait` passes).
async fn wait_for_index(app: &App, req: &Req) {
    let Some(min) = req.q.get("index").and_then(|v| v.parse::<u64>().ok()) else {
        return;
    };
    let wait = req
        .q
        .get("wait")
        .and_then(|w| crate::hcl_job::parse_duration(w))
        .map_or(Duration::from_secs(300), |n| {
            Duration::from_nanos(n.max(0) as u64)
        })
        .min(Duration::from_secs(600));
    let mut rx = app.index_tx.subscribe();
    let _ = tokio::time::timeout(wait, async {
        loop {
            if *rx.borrow_and_update() > min {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
}

/// A list answered with the highest `ModifyIndex` in it as its index (`idx` when empty).
fn list_reply(list: Vec<Value>, idx: u64) -> Reply {
    let i = list
        .iter()
        .filter_map(|v| v["ModifyIndex"].as_u64())
        .max()
        .unwrap_or(idx);
    Reply::json(&Value::Array(list)).query(i)
}

fn segments(path: &str) -> Vec<String> {
    path.trim_start_matches('/')
        .split('/')
        .map(|s| percent_decode(s, false))
        .collect()
}

fn route(app: &App, store: &mut Store, req: &Req, t: i64) -> Reply {
    let segs = segments(&req.path);
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = &req.method;
    let get = *m == Method::GET;
    let post = *m == Method::POST || *m == Method::PUT;
    let del = *m == Method::DELETE;
    let idx = store.index;
    macro_rules! only {
        ($cond:expr, $body:expr) => {
            if $cond {
                $body
            } else {
                bad_method()
            }
        };
    }
    let result: Result<Reply, Reply> = (|| {
        Ok(match segs.as_slice() {
            ["v1", "agent", "health"] => only!(get, Reply::json(&agent::health(&app.config))),
            ["v1", "agent", "self"] => only!(get, Reply::json(&agent::self_document(app, store))),
            ["v1", "status", "leader"] => {
                only!(get, Reply::json(&json!(app.peers.leader(Instant::now()))))
            }
            ["v1", "status", "peers"] => only!(
                get,
                Reply::json(&json!(app.peers.raft_peers(Instant::now())))
            ),
            ["v1", "agent", "members"] if !app.config.server_enabled => {
                Reply::text(StatusCode::NOT_IMPLEMENTED, "Invalid method")
            }
            ["v1", "agent", "members"] => {
                only!(get, Reply::json(&app.peers.members(Instant::now())))
            }
            ["v1", "regions"] => only!(get, Reply::json(&json!([app.config.region]))),
            ["v1", "namespaces"] => only!(get, {
                let list: Vec<Value> = store
                    .settings
                    .namespaces
                    .iter()
                    .map(|n| json!({"Name": n, "Description": if n == "default" { "Default shared namespace" } else { "" },
                                    "CreateIndex": 1, "ModifyIndex": 1, "Meta": null, "Quota": ""}))
                    .collect();
                Reply::json(&Value::Array(list)).query(idx)
            }),
            ["v1", "nodes"] => only!(get, {
                let prefix = req.q.get("prefix").map_or("", String::as_str);
                let list = app.peers.node_list(store.node(), prefix, Instant::now());
                Reply::json(&Value::Array(list)).query(idx)
            }),
            ["v1", "node", id] => only!(get, {
                let mut n = store.node_full();
                let c = &app.config;
                n["HTTPAddr"] = json!(format!("{}:{}", c.advertise_host(), c.http_port));
                if n["ID"] == *id {
                    Reply::json(&n).query(idx)
                } else {
                    Reply::text(StatusCode::NOT_FOUND, "node not found").query(idx)
                }
            }),
            ["v1", "node", id, "allocations"] => {
                only!(get, list_reply(store.node_allocs(id), idx))
            }
            ["v1", "node", id, action @ ("drain" | "eligibility")] => only!(post, {
                if store.node_id != *id {
                    return Ok(Reply::text(StatusCode::NOT_FOUND, "node not found"));
                }
                let body = req.json_body()?;
                let out = if *action == "drain" {
                    store.drain(
                        &body["DrainSpec"],
                        &body["Meta"],
                        body["MarkEligible"].as_bool().unwrap_or(false),
                        t,
                    )
                } else {
                    let e = match body["Eligibility"].as_str() {
                        Some("eligible") => true,
                        Some("ineligible") => false,
                        other => {
                            return Ok(Reply::text(
                                StatusCode::BAD_REQUEST,
                                &format!(
                                    "invalid scheduling eligibility {:?}",
                                    other.unwrap_or("")
                                ),
                            ))
                        }
                    };
                    store.set_eligibility(e, t).map_err(|e| err_reply(e, idx))?
                };
                let i = out["Index"].as_u64().unwrap_or(0);
                Reply::json(&out).index(i)
            }),
            ["v1", "jobs"] if get => list_jobs(store, req)?,
            ["v1", "jobs"] if post => register(store, req, None, t)?,
            ["v1", "jobs"] => bad_method(),
            ["v1", "jobs", "parse"] => only!(post, parse(req, store.settings.version)?),
            ["v1", "job", id] if get => match store.job(&req.ns(), id) {
                Some(j) => Reply::json(j).query(j["ModifyIndex"].as_u64().unwrap_or(idx)),
                None => Reply::text(StatusCode::NOT_FOUND, "job not found").query(idx),
            },
            ["v1", "job", id] if post => register(store, req, Some(id), t)?,
            ["v1", "job", id] if del => {
                let r = store.deregister(&req.ns(), id, req.flag("purge"), t);
                Reply::json(&json!({"EvalCreateIndex": r.index, "EvalID": r.eval_id,
                    "Index": r.index, "JobModifyIndex": r.job_modify_index,
                    "KnownLeader": false, "LastContact": 0, "VolumeEvalID": "",
                    "VolumeEvalIndex": 0}))
                .index(r.index)
            }
            ["v1", "job", _] => bad_method(),
            ["v1", "job", id, "versions"] => only!(
                get,
                match store.job_versions(&req.ns(), id) {
                    Some(v) => {
                        let i = v
                            .first()
                            .and_then(|j| j["ModifyIndex"].as_u64())
                            .unwrap_or(idx);
                        Reply::json(&json!({"Diffs": null, "Index": i, "KnownLeader": true,
                        "LastContact": 0, "Versions": v}))
                        .query(i)
                    }
                    None => Reply::text(StatusCode::NOT_FOUND, "job versions not found").query(idx),
                }
            ),
            ["v1", "job", id, "evaluations"] => {
                only!(get, list_reply(store.job_evals(&req.ns(), id), idx))
            }
            ["v1", "job", id, "allocations"] => {
                only!(get, list_reply(store.job_allocs(&req.ns(), id), idx))
            }
            ["v1", "job", id, "submission"] if store.settings.version.has_submissions() => {
                only!(get, {
                    let v = req.u64_param("version")?;
                    let s = store
                        .submission(&req.ns(), id, v)
                        .map_err(|e| err_reply(e, idx))?;
                    Reply::json(&s).query(idx)
                })
            }
            ["v1", "job", id, "plan"] => only!(post, {
                let body = crate::go_decode::job_request(req.json_body()?);
                let job = body.get("Job").cloned().unwrap_or(Value::Null);
                if job
                    .get("ID")
                    .and_then(Value::as_str)
                    .is_some_and(|j| j != *id)
                {
                    return Ok(Reply::text(
                        StatusCode::BAD_REQUEST,
                        "Job ID does not match",
                    ));
                }
                let want_diff = body["Diff"].as_bool().unwrap_or(false);
                let plan = store
                    .plan(job, &req.ns(), want_diff)
                    .map_err(|e| err_reply(e, idx))?;
                let i = plan["Index"].as_u64().unwrap_or(idx);
                Reply::json(&plan).index(i)
            }),
            ["v1", "acl", "bootstrap"] => only!(post, {
                let body = req.json_body()?;
                let secret = body["BootstrapSecret"].as_str();
                let reset = crate::persist::reset_index(&app.config);
                let tok = store
                    .acl_bootstrap(secret, reset, t)
                    .map_err(|e| err_reply(e, idx))?;
                if let Some(s) = tok["SecretID"].as_str() {
                    if let Err(e) = crate::persist::save_bootstrap_token(&app.config, s) {
                        eprintln!("nomad-double: cannot keep the bootstrap token in data_dir: {e}");
                    }
                }
                let i = tok["CreateIndex"].as_u64().unwrap_or(idx);
                Reply::json(&tok).index(i)
            }),
            ["v1", "acl", "token", "self"] => only!(get, {
                let tok = store
                    .acl_token_self(req.token.as_deref())
                    .map_err(|e| err_reply(e, idx))?;
                let i = tok["ModifyIndex"].as_u64().unwrap_or(idx);
                Reply::json(&tok).query(i)
            }),
            ["v1", "acl", "token"] => only!(post, {
                let body = req.json_body()?;
                let tok = store
                    .acl_token_create(&body, t)
                    .map_err(|e| err_reply(e, idx))?;
                let i = tok["CreateIndex"].as_u64().unwrap_or(idx);
                Reply::json(&tok).index(i)
            }),
            ["v1", "acl", "tokens"] => only!(get, {
                let l = store.acl_token_list().map_err(|e| err_reply(e, idx))?;
                Reply::json(&Value::Array(l)).query(idx)
            }),
            ["v1", "acl", "policies"] => only!(get, {
                let prefix = req.q.get("prefix").map_or("", String::as_str);
                let l = store.policy_list(prefix).map_err(|e| err_reply(e, idx))?;
                Reply::json(&Value::Array(l)).query(idx)
            }),
            ["v1", "acl", "policy", name] => {
                if get {
                    let p = store.policy_get(name).map_err(|e| err_reply(e, idx))?;
                    let i = p["ModifyIndex"].as_u64().unwrap_or(idx);
                    Reply::json(&p).query(i)
                } else if post {
                    let body = req.json_body()?;
                    let i = store
                        .policy_put(name, &body)
                        .map_err(|e| err_reply(e, idx))?;
                    Reply::empty().index(i)
                } else if del {
                    let i = store.policy_delete(name).map_err(|e| err_reply(e, idx))?;
                    Reply::empty().index(i)
                } else {
                    bad_method()
                }
            }
            ["v1", "vars"] if store.settings.version.has_variables() => only!(get, {
                let prefix = req.q.get("prefix").map_or("", String::as_str);
                let mut list = store.var_list(&req.ns(), prefix);
                if let Some(f) = req.q.get("filter").filter(|f| !f.is_empty()) {
                    let e = filter::parse(f).map_err(|e| {
                        Reply::text(
                            StatusCode::BAD_REQUEST,
                            &format!("failed to read filter expression: {e}"),
                        )
                    })?;
                    list.retain(|v| filter::matches(&e, v));
                }
                Reply::json(&Value::Array(list)).query(idx)
            }),
            ["v1", "var", rest @ ..]
                if store.settings.version.has_variables() && !rest.is_empty() =>
            {
                let path = rest.join("/");
                if get {
                    let v = store
                        .var_get(&req.ns(), &path)
                        .map_err(|e| err_reply(e, idx))?;
                    let i = v["ModifyIndex"].as_u64().unwrap_or(idx);
                    Reply::json(&v).query(i)
                } else if post {
                    let body = req.json_body()?;
                    let ns = if req.q.contains_key("namespace") {
                        req.ns()
                    } else {
                        body["Namespace"]
                            .as_str()
                            .filter(|s| !s.is_empty())
                            .unwrap_or("default")
                            .to_string()
                    };
                    if body["Path"]
                        .as_str()
                        .is_some_and(|p| !p.is_empty() && p != path)
                    {
                        return Ok(Reply::text(
                            StatusCode::BAD_REQUEST,
                            "variable path does not match request path",
                        ));
                    }
                    let cas = req.u64_param("cas")?;
                    let v = store
                        .var_put(&ns, &path, &body["Items"], cas, t)
                        .map_err(|e| err_reply(e, idx))?;
                    let i = v["ModifyIndex"].as_u64().unwrap_or(idx);
                    Reply::json(&v).index(i)
                } else if del {
                    let cas = req.u64_param("cas")?;
                    let i = store
                        .var_delete(&req.ns(), &path, cas)
                        .map_err(|e| err_reply(e, idx))?;
                    Reply::empty().index(i)
                } else {
                    bad_method()
                }
            }
            ["v1", "double", "stats"] => only!(get, {
                let st = app.stats().clone();
                Reply::json(&json!({"requests": st.requests, "writes": st.writes,
                                    "writes_by_path": st.writes_by_path}))
            }),
            ["v1", "double", "reset"] => only!(post, {
                *store = (app.initial)();
                *app.stats() = Stats::default();
                Reply::json(&json!({"reset": true}))
            }),
            _ => not_found(),
        })
    })();
    result.unwrap_or_else(|r| r)
}

fn list_jobs(store: &Store, req: &Req) -> Result<Reply, Reply> {
    let prefix = req.q.get("prefix").map_or("", String::as_str);
    let version = store.settings.version;
    let mut stubs = store.job_stubs(&req.ns(), prefix, req.flag("meta"));
    if version.has_filter() {
        if let Some(f) = req.q.get("filter").filter(|f| !f.is_empty()) {
            let e = filter::parse(f).map_err(|e| {
                Reply::text(
                    StatusCode::BAD_REQUEST,
                    &format!("failed to read filter expression: {e}"),
                )
            })?;
            stubs.retain(|s| filter::matches(&e, s));
        }
    }
    Ok(Reply::json(&Value::Array(stubs)).query(store.index))
}

fn register(store: &mut Store, req: &Req, path_id: Option<&str>, t: i64) -> Result<Reply, Reply> {
    // Keys as Nomad's Go decoder reads them: case-insensitive, the last one winning.
    let body = crate::go_decode::job_request(req.json_body()?);
    let job = body.get("Job").cloned().unwrap_or(Value::Null);
    if job.is_null() {
        return Err(Reply::text(
            StatusCode::BAD_REQUEST,
            "Job must be specified",
        ));
    }
    if let Some(id) = path_id {
        if job.get("ID").and_then(Value::as_str) != Some(id) {
            return Err(Reply::text(
                StatusCode::BAD_REQUEST,
                "Job ID does not match name",
            ));
        }
    }
    let enforce = if body["EnforceIndex"].as_bool().unwrap_or(false) {
        Some(body["JobModifyIndex"].as_u64().unwrap_or(0))
    } else {
        None
    };
    let submission = body.get("Submission").cloned();
    let idx = store.index;
    let r = store
        .register(job, &req.ns(), enforce, submission, t)
        .map_err(|e| err_reply(e, idx))?;
    Ok(Reply::json(
        &json!({"EvalCreateIndex": r.index, "EvalID": r.eval_id, "Index": r.index,
        "JobModifyIndex": r.job_modify_index, "KnownLeader": false, "LastContact": 0,
        "Warnings": ""}),
    )
    .index(r.index))
}

fn parse(req: &Req, version: Version) -> Result<Reply, Reply> {
    let body = req.json_body()?;
    let hcl = body["JobHCL"].as_str().unwrap_or("");
    if hcl.trim().is_empty() {
        return Err(Reply::text(StatusCode::BAD_REQUEST, "Job spec is empty"));
    }
    let vars = body["Variables"].as_str().unwrap_or("");
    let mut job =
        parse_job(hcl, vars).map_err(|e| Reply::text(StatusCode::BAD_REQUEST, &e.to_string()))?;
    if body["Canonicalize"].as_bool().unwrap_or(false) {
        crate::canonical::canonicalize(&mut job);
        crate::canonical::version_defaults(&mut job, version);
    }
    Ok(Reply::json(&job))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_queries_and_segments() {
        let uri: Uri = "/v1/jobs?filter=Meta%5B%22a%22%5D+%3D%3D+%22b%22&namespace=*"
            .parse()
            .unwrap();
        let q = query_map(&uri);
        assert_eq!(q["filter"], r#"Meta["a"] == "b""#);
        assert_eq!(q["namespace"], "*");
        assert_eq!(segments("/v1/job/a%2Fb"), ["v1", "job", "a/b"]);
        assert_eq!(percent_decode("100%", false), "100%");
        assert_eq!(percent_decode("%4", false), "%4");
    }

    #[test]
    fn classifies_writes() {
        assert!(is_write(&Method::POST, "/v1/jobs"));
        assert!(is_write(&Method::DELETE, "/v1/job/x"));
        assert!(!is_write(&Method::POST, "/v1/job/x/plan"));
        assert!(!is_write(&Method::POST, "/v1/jobs/parse"));
        assert!(is_write(&Method::PUT, "/v1/var/a/b"));
        assert!(is_write(&Method::POST, "/v1/node/n/drain"));
        assert!(!is_write(&Method::GET, "/v1/jobs"));
    }
}
