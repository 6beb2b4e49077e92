//! Peers: the double's stand-in for Nomad's gossip (serf) and RPC between agents, so that
//! a test of several machines can see who reached whom.
//!
//! A server listens on its serf and RPC ports (`ports.serf`, `ports.rpc`) and dials the
//! addresses of `server.server_join.retry_join`; a client-only agent dials those of
//! `client.servers` / `client.server_join.retry_join` (RPC port). Each connection carries one
//! [`Hello`] line each way (JSON, at most 4 KiB, 3 s): the agent's name, region,
//! datacenter, roles, node ID and ports. Nothing else travels: there is no shared state, no
//! Raft, no scheduling across agents. What was learned is reported where Nomad reports it:
//! `/v1/agent/members` (servers seen, `alive` or `failed`), `/v1/status/peers` and
//! `/v1/status/leader` (once `bootstrap_expect` servers were alive together: the alive one
//! with the lowest RPC address while a majority is alive, so every server names the same
//! leader), and client peers in `/v1/nodes`.

use crate::config::AgentConfig;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The first field of every hello: anything else on the port is not a peer.
pub const PROTO: &str = "nomad-double-peer/1";
const MAX_HELLO: u64 = 4096;
const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// How often every join address is dialed again (Nomad's `retry_interval` defaults to 30 s;
/// tests want to see a change sooner).
pub const RETRY_INTERVAL: Duration = Duration::from_secs(2);
/// A peer not heard from for this long is `failed` (serf's suspicion, simplified).
pub const FAILED_AFTER: Duration = Duration::from_secs(10);

/// What one agent tells another about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub proto: String,
    pub name: String,
    pub region: String,
    pub datacenter: String,
    pub server: bool,
    pub client: bool,
    pub node_id: String,
    /// The address it advertises; `None` when it binds a wildcard (the receiver then uses
    /// the connection's source address).
    pub addr: Option<IpAddr>,
    pub rpc_port: u16,
    pub serf_port: u16,
}

#[derive(Debug, Clone)]
struct Peer {
    hello: Hello,
    addr: IpAddr,
    last_seen: Instant,
}

/// This agent's view of its peers.
pub struct Peers {
    me: Mutex<Hello>,
    peers: Mutex<BTreeMap<String, Peer>>,
    bootstrap_expect: u64,
    /// Set once `bootstrap_expect` servers were alive together (Raft's configuration).
    bootstrapped: Mutex<bool>,
    version: String,
    log: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A join address as `(host, port)`: `10.0.0.1`, `host:4648`, `[::1]:4648`. `None` for
/// Nomad's cloud auto-join strings (`provider=aws ...`), which the double cannot follow.
pub fn join_target(s: &str, default_port: u16) -> Option<(String, u16)> {
    let s = s.trim();
    if s.is_empty() || s.contains('=') {
        return None;
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some((sa.ip().to_string(), sa.port()));
    }
    if let Ok(ip) = s.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Some((ip.to_string(), default_port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => p.parse().ok().map(|p| (h.to_string(), p)),
        None => Some((s.to_string(), default_port)),
    }
}

impl Peers {
    pub fn new(c: &AgentConfig, node_id: &str, version: String, log: bool) -> Peers {
        let addr = c
            .bind_addr
            .parse::<IpAddr>()
            .ok()
            .filter(|ip| !ip.is_unspecified());
        Peers {
            me: Mutex::new(Hello {
                proto: PROTO.into(),
                name: c.name.clone(),
                region: c.region.clone(),
                datacenter: c.datacenter.clone(),
                server: c.server_enabled,
                client: c.client_enabled,
                node_id: node_id.into(),
                addr,
                rpc_port: c.rpc_port,
                serf_port: c.serf_port,
            }),
            peers: Mutex::new(BTreeMap::new()),
            bootstrapped: Mutex::new(false),
            bootstrap_expect: c.bootstrap_expect.unwrap_or(1).max(1),
            version,
            log,
        }
    }

    /// The addresses to dial: a server's `server_join`, a client-only agent's servers.
    pub fn targets(c: &AgentConfig) -> Vec<(String, u16)> {
        Self::join_plan(c).0
    }

    /// The addresses to dial, and what is skipped: one note per cloud auto-join string
    /// (`provider=aws ...`), naming only its provider (the rest may hold credentials).
    /// The double cannot ask a cloud for instances; it never dials such a string.
    pub fn join_plan(c: &AgentConfig) -> (Vec<(String, u16)>, Vec<String>) {
        let (list, port, key) = if c.server_enabled {
            (&c.server_join, c.serf_port, "server.server_join.retry_join")
        } else if c.client_enabled {
            (
                &c.client_servers,
                c.rpc_port,
                "client.server_join.retry_join",
            )
        } else {
            return (Vec::new(), Vec::new());
        };
        let mut notes = Vec::new();
        let mut targets = Vec::new();
        for s in list {
            match join_target(s, port) {
                Some(t) => targets.push(t),
                None => {
                    let provider = s
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("provider="))
                        .filter(|p| p.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_'))
                        .unwrap_or("?");
                    notes.push(format!(
                        "skipping cloud auto-join provider={provider} in {key}: the double \
                         cannot discover cloud instances (Nomad does)"
                    ));
                }
            }
        }
        (targets, notes)
    }

    pub fn hello(&self) -> Hello {
        lock(&self.me).clone()
    }

    /// Records what a peer said, at `addr` unless it advertises its own. Our own hello
    /// (a join list names this machine too) and foreign protocols are ignored.
    pub fn record(&self, hello: Hello, addr: IpAddr, now: Instant) -> bool {
        if hello.proto != PROTO || hello.name == lock(&self.me).name {
            return false;
        }
        let addr = hello.addr.unwrap_or(addr);
        let name = hello.name.clone();
        let peer = Peer {
            hello,
            addr,
            last_seen: now,
        };
        lock(&self.peers).insert(name, peer).is_none()
    }

    /// The first routable local address a connection used becomes this agent's address.
    pub fn learn_local(&self, ip: IpAddr) {
        let mut me = lock(&self.me);
        if me.addr.is_none() && !ip.is_unspecified() && !ip.is_loopback() {
            me.addr = Some(ip);
        }
    }

    fn my_addr(me: &Hello) -> IpAddr {
        me.addr.unwrap_or(IpAddr::from([127, 0, 0, 1]))
    }

    /// Servers as (name, addr, hello, alive): this agent (when a server) and its peers.
    fn servers(&self, now: Instant) -> Vec<(IpAddr, Hello, bool)> {
        let me = self.hello();
        let mut out: Vec<_> = lock(&self.peers)
            .values()
            .filter(|p| p.hello.server)
            .map(|p| {
                let alive = now.saturating_duration_since(p.last_seen) < FAILED_AFTER;
                (p.addr, p.hello.clone(), alive)
            })
            .collect();
        if me.server {
            out.push((Self::my_addr(&me), me, true));
        }
        out.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        out
    }

    /// `GET /v1/agent/members`.
    pub fn members(&self, now: Instant) -> Value {
        let me = self.hello();
        let members: Vec<Value> = self
            .servers(now)
            .into_iter()
            .map(|(addr, h, alive)| {
                json!({
                    "Name": format!("{}.{}", h.name, h.region),
                    "Addr": addr.to_string(), "Port": h.serf_port,
                    "Tags": {"role": "nomad", "region": h.region, "dc": h.datacenter,
                             "build": self.version, "port": h.rpc_port.to_string(),
                             "rpc_addr": addr.to_string(), "id": h.node_id,
                             "expect": self.bootstrap_expect.to_string(),
                             "vsn": "1", "mvn": "1", "raft_vsn": "3"},
                    "Status": if alive { "alive" } else { "failed" },
                    "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
                    "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4
                })
            })
            .collect();
        json!({"ServerName": me.name, "ServerRegion": me.region, "ServerDC": me.datacenter,
               "Members": members})
    }

    /// The Raft configuration as (RPC address, alive): empty until `bootstrap_expect`
    /// servers were alive at once; from then on every server seen, failed ones included.
    fn raft(&self, now: Instant) -> Vec<(SocketAddr, bool)> {
        let servers: Vec<(SocketAddr, bool)> = self
            .servers(now)
            .into_iter()
            .map(|(addr, h, alive)| (SocketAddr::new(addr, h.rpc_port), alive))
            .collect();
        let mut bootstrapped = lock(&self.bootstrapped);
        let alive = servers.iter().filter(|s| s.1).count() as u64;
        *bootstrapped |= alive >= self.bootstrap_expect;
        if !*bootstrapped {
            return Vec::new();
        }
        servers
    }

    /// `GET /v1/status/peers`: the RPC addresses of the Raft configuration (`[]` before
    /// the bootstrap).
    pub fn raft_peers(&self, now: Instant) -> Vec<String> {
        self.raft(now).iter().map(|s| s.0.to_string()).collect()
    }

    /// `GET /v1/status/leader`: the lowest alive RPC address while a majority of the Raft
    /// configuration is alive, else `""` (no bootstrap yet, or quorum lost).
    pub fn leader(&self, now: Instant) -> String {
        let raft = self.raft(now);
        let mut alive: Vec<SocketAddr> = raft.iter().filter(|s| s.1).map(|s| s.0).collect();
        if alive.len() * 2 <= raft.len() {
            return String::new();
        }
        alive.sort();
        alive.first().map(ToString::to_string).unwrap_or_default()
    }

    /// `GET /v1/nodes` on this agent: `own` (its node stub) and a stub per client peer,
    /// `ready` while it is heard from, `down` after.
    pub fn node_list(&self, own: Value, prefix: &str, now: Instant) -> Vec<Value> {
        let mut list = vec![own.clone()];
        for p in lock(&self.peers).values().filter(|p| p.hello.client) {
            let mut n = own.clone();
            let alive = now.saturating_duration_since(p.last_seen) < FAILED_AFTER;
            n["ID"] = json!(p.hello.node_id);
            n["Name"] = json!(p.hello.name);
            n["Datacenter"] = json!(p.hello.datacenter);
            n["Address"] = json!(p.addr.to_string());
            n["Status"] = json!(if alive { "ready" } else { "down" });
            n["Drain"] = json!(false);
            n["DrainStrategy"] = Value::Null;
            n["LastDrain"] = Value::Null;
            n["SchedulingEligibility"] = json!("eligible");
            list.push(n);
        }
        list.retain(|n| n["ID"].as_str().unwrap_or("").starts_with(prefix));
        list
    }

    fn say(&self, msg: &str) {
        if self.log {
            let t = crate::state::rfc3339(crate::api::now());
            println!("    {t} [INFO]  nomad-double: peers: {msg}");
        }
    }
}

/// Reads one hello line (bounded in size and time).
async fn read_hello(stream: &mut TcpStream) -> std::io::Result<Hello> {
    let mut line = String::new();
    let mut reader = BufReader::new(stream).take(MAX_HELLO);
    tokio::time::timeout(IO_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::other("no hello within 3 s"))??;
    serde_json::from_str(line.trim_end()).map_err(std::io::Error::other)
}

async fn write_hello(stream: &mut TcpStream, hello: &Hello) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(hello).map_err(std::io::Error::other)?;
    line.push(b'\n');
    tokio::time::timeout(IO_TIMEOUT, stream.write_all(&line))
        .await
        .map_err(|_| std::io::Error::other("write timed out"))?
}

/// Answers one incoming connection: their hello, then ours.
async fn answer(peers: Arc<Peers>, mut stream: TcpStream, from: SocketAddr) {
    let Ok(theirs) = read_hello(&mut stream).await else {
        return;
    };
    if let Ok(local) = stream.local_addr() {
        peers.learn_local(local.ip());
    }
    if write_hello(&mut stream, &peers.hello()).await.is_ok() {
        let name = theirs.name.clone();
        if peers.record(theirs, from.ip(), Instant::now()) {
            peers.say(&format!("{name} reached us from {}", from.ip()));
        }
    }
}

/// Dials one join address: our hello, then theirs.
async fn dial(peers: &Peers, host: &str, port: u16) -> std::io::Result<Hello> {
    let mut stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))??;
    if let Ok(local) = stream.local_addr() {
        peers.learn_local(local.ip());
    }
    write_hello(&mut stream, &peers.hello()).await?;
    let theirs = read_hello(&mut stream).await?;
    let remote = stream.peer_addr()?.ip();
    let name = theirs.name.clone();
    if peers.record(theirs.clone(), remote, Instant::now()) {
        peers.say(&format!("reached {name} at {host}:{port}"));
    }
    Ok(theirs)
}

async fn listen(peers: &Arc<Peers>, host: &str, port: u16, what: &str) -> Option<u16> {
    let listener = match TcpListener::bind((host, port)).await {
        Ok(l) => l,
        Err(e) => {
            peers.say(&format!("cannot listen for {what} on {host}:{port}: {e}"));
            return None;
        }
    };
    let bound = listener.local_addr().ok()?.port();
    let p = peers.clone();
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((s, from)) => _ = tokio::spawn(answer(p.clone(), s, from)),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    Some(bound)
}

/// Listens (servers) and dials the join addresses every [`RETRY_INTERVAL`] until the
/// task is dropped. Does nothing for an agent with nobody to join (a single agent, `-dev`).
pub async fn run(peers: Arc<Peers>, c: AgentConfig) {
    let (targets, skipped) = Peers::join_plan(&c);
    for note in &skipped {
        peers.say(note);
    }
    if targets.is_empty() {
        return;
    }
    if c.server_enabled {
        let host = c.bind_addr.clone();
        if let Some(p) = listen(&peers, &host, c.serf_port, "serf").await {
            lock(&peers.me).serf_port = p;
        }
        if let Some(p) = listen(&peers, &host, c.rpc_port, "rpc").await {
            lock(&peers.me).rpc_port = p;
        }
        let me = peers.hello();
        peers.say(&format!(
            "listening on {host}: serf {}, rpc {}; joining {targets:?}",
            me.serf_port, me.rpc_port
        ));
    }
    let mut last: HashMap<(String, u16), String> = HashMap::new();
    loop {
        for (host, port) in &targets {
            let outcome = match dial(&peers, host, *port).await {
                Ok(h) => format!("ok {}", h.name),
                Err(e) => e.to_string(),
            };
            let prev = last.insert((host.clone(), *port), outcome.clone());
            if prev.as_ref() != Some(&outcome) && !outcome.starts_with("ok ") {
                peers.say(&format!("cannot reach {host}:{port}: {outcome}"));
            }
        }
        tokio::time::sleep(RETRY_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(name: &str, server: bool) -> AgentConfig {
        AgentConfig {
            name: name.into(),
            server_enabled: server,
            client_enabled: true,
            bind_addr: "0.0.0.0".into(),
            bootstrap_expect: Some(3),
            ..AgentConfig::default()
        }
    }

    fn hello_of(c: &AgentConfig, id: &str) -> Hello {
        Peers::new(c, id, "1.7.7".into(), false).hello()
    }

    #[test]
    fn join_addresses_like_nomad() {
        assert_eq!(
            join_target("10.0.0.1", 4648),
            Some(("10.0.0.1".into(), 4648))
        );
        assert_eq!(
            join_target("10.0.0.1:5000", 4648),
            Some(("10.0.0.1".into(), 5000))
        );
        assert_eq!(join_target("[::1]:5000", 4648), Some(("::1".into(), 5000)));
        assert_eq!(join_target("::1", 4648), Some(("::1".into(), 4648)));
        assert_eq!(
            join_target("nomad-1.example", 4648),
            Some(("nomad-1.example".into(), 4648))
        );
        assert_eq!(join_target("provider=aws tag_key=nomad", 4648), None);
    }

    #[test]
    fn a_leader_only_with_bootstrap_expect_servers_and_the_same_on_every_server() {
        let t0 = Instant::now();
        let views: Vec<Peers> = (1..=3)
            .map(|i| {
                let c = cfg(&format!("node-{i}"), true);
                let p = Peers::new(&c, &format!("id-{i}"), "1.7.7".into(), false);
                p.learn_local(IpAddr::from([10, 0, 0, 10 + i]));
                p
            })
            .collect();
        assert_eq!(views[0].leader(t0), "");
        assert!(views[0].raft_peers(t0).is_empty());
        let hellos: Vec<Hello> = views.iter().map(Peers::hello).collect();
        views[0].record(hellos[1].clone(), IpAddr::from([9, 9, 9, 9]), t0);
        assert_eq!(views[0].leader(t0), "", "2 of 3 servers: no quorum yet");
        for v in &views {
            for h in &hellos {
                v.record(h.clone(), IpAddr::from([9, 9, 9, 9]), t0);
            }
        }
        for v in &views {
            assert_eq!(v.leader(t0), "10.0.0.11:4647");
            assert_eq!(
                v.raft_peers(t0),
                ["10.0.0.11:4647", "10.0.0.12:4647", "10.0.0.13:4647"]
            );
            let m = v.members(t0);
            let names: Vec<&str> = m["Members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["Name"].as_str().unwrap())
                .collect();
            assert_eq!(names, ["node-1.global", "node-2.global", "node-3.global"]);
            assert!(m["Members"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m["Status"] == "alive"));
        }
        // node-3 falls silent: failed, still a Raft peer, and 2 of 3 keep a leader.
        let later = t0 + FAILED_AFTER + Duration::from_secs(1);
        views[0].record(hellos[1].clone(), IpAddr::from([9, 9, 9, 9]), later);
        let m = views[0].members(later);
        assert_eq!(m["Members"][2]["Status"], "failed");
        assert_eq!(views[0].raft_peers(later).len(), 3);
        assert_eq!(views[0].leader(later), "10.0.0.11:4647");
        // node-2 too: 1 of 3 is no quorum.
        let much_later = later + FAILED_AFTER;
        assert_eq!(views[0].leader(much_later), "", "1 alive of 3");
        assert_eq!(views[0].raft_peers(much_later).len(), 3);
    }

    #[test]
    fn own_hello_and_foreign_protocols_are_not_peers() {
        let c = cfg("node-1", true);
        let p = Peers::new(&c, "id-1", "1.7.7".into(), false);
        let t = Instant::now();
        assert!(!p.record(p.hello(), IpAddr::from([10, 0, 0, 11]), t));
        let mut other = hello_of(&cfg("node-2", true), "id-2");
        other.proto = "smtp".into();
        assert!(!p.record(other, IpAddr::from([10, 0, 0, 12]), t));
        assert_eq!(p.members(t)["Members"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn client_peers_are_nodes_of_the_server() {
        let p = Peers::new(&cfg("s", true), "sid", "1.7.7".into(), false);
        let t = Instant::now();
        p.record(
            hello_of(&cfg("c1", false), "cid-1"),
            IpAddr::from([10, 0, 0, 21]),
            t,
        );
        let own = json!({"ID": "sid", "Name": "s", "Status": "ready", "Address": "10.0.0.11"});
        let nodes = p.node_list(own.clone(), "", t);
        assert_eq!(nodes.len(), 2);
        assert_eq!(
            (nodes[1]["Name"].as_str(), nodes[1]["Address"].as_str()),
            (Some("c1"), Some("10.0.0.21"))
        );
        assert_eq!(p.node_list(own.clone(), "cid", t).len(), 1);
        // A client is not a member of the server gossip pool.
        assert_eq!(p.members(t)["Members"].as_array().unwrap().len(), 1);
        let later = t + FAILED_AFTER;
        assert_eq!(p.node_list(own, "cid", later)[0]["Status"], "down");
    }
}
