//! Several `nomad-double` processes joining each other over real TCP, as the machines of a
//! cluster test do: three servers (each on its own loopback address) with
//! `bootstrap_expect = 3` and a client-only agent that names one of them in
//! `client.servers`.

mod common;

use common::Agent;
use serde_json::Value;
use std::time::{Duration, Instant};

fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(agent: &Agent, path: &str) -> (u16, Value) {
    let r = reqwest::blocking::get(format!("{}{path}", agent.base)).unwrap();
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Polls until `check` holds on every agent (20 s), or panics with the last answers.
fn until(agents: &[&Agent], what: &str, check: impl Fn(&Agent) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !agents.iter().all(|a| check(a)) {
        if Instant::now() > deadline {
            let seen: Vec<_> = agents
                .iter()
                .map(|a| get(a, "/v1/agent/members").1)
                .collect();
            panic!("{what}: not within 20 s; members: {seen:#?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn three_servers_find_each_other_and_agree_on_a_leader_and_a_client_registers() {
    let ips = ["127.0.0.41", "127.0.0.42", "127.0.0.43"];
    let (serf, rpc) = (free_port(ips[0]), free_port(ips[0]));
    let join: Vec<String> = ips.iter().map(|ip| format!("\"{ip}:{serf}\"")).collect();
    let servers: Vec<Agent> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            Agent::start(
                &format!(
                    r#"name = "node-{n}"
                    bind_addr = "{ip}"
                    datacenter = "dc-{n}"
                    ports {{
                      http = 0
                      rpc = {rpc}
                      serf = {serf}
                    }}
                    server {{
                      enabled = true
                      bootstrap_expect = 3
                      server_join {{ retry_join = [{join}] }}
                    }}
                    client {{ enabled = true }}"#,
                    n = i + 1,
                    join = join.join(", "),
                ),
                &[],
            )
        })
        .collect();
    let refs: Vec<&Agent> = servers.iter().collect();
    until(
        &refs,
        "all three servers alive in every members list",
        |a| {
            let (status, m) = get(a, "/v1/agent/members");
            let members = m["Members"].as_array().cloned().unwrap_or_default();
            status == 200 && members.len() == 3 && members.iter().all(|m| m["Status"] == "alive")
        },
    );
    let rpc_of = |ip: &str| format!("{ip}:{rpc}");
    for (i, a) in servers.iter().enumerate() {
        let (_, m) = get(a, "/v1/agent/members");
        assert_eq!(m["ServerName"], format!("node-{}", i + 1));
        let rows: Vec<(String, String, u64, String)> = m["Members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["Name"].as_str().unwrap().to_string(),
                    m["Addr"].as_str().unwrap().to_string(),
                    m["Port"].as_u64().unwrap(),
                    m["Tags"]["dc"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want: Vec<(String, String, u64, String)> = (0..3)
            .map(|j| {
                let n = j + 1;
                (
                    format!("node-{n}.global"),
                    ips[j].to_string(),
                    serf as u64,
                    format!("dc-{n}"),
                )
            })
            .collect();
        assert_eq!(rows, want);
        assert_eq!(get(a, "/v1/status/leader").1, rpc_of(ips[0]));
        let peers = get(a, "/v1/status/peers").1;
        assert_eq!(peers, serde_json::json!(ips.map(rpc_of)));
        let nodes = get(a, "/v1/nodes").1;
        assert_eq!(nodes.as_array().unwrap().len(), 3, "{nodes:#}");
    }

    // A client-only agent that knows node-1 over RPC shows up in node-1's node list.
    let client = Agent::start(
        &format!(
            r#"name = "edge-1"
            bind_addr = "127.0.0.44"
            ports {{ http = 0 }}
            client {{
              enabled = true
              servers = ["{}"]
            }}"#,
            rpc_of(ips[0])
        ),
        &[],
    );
    until(&[&servers[0]], "the client in node-1's /v1/nodes", |a| {
        let nodes = get(a, "/v1/nodes").1;
        nodes.as_array().is_some_and(|n| {
            n.iter()
                .any(|n| n["Name"] == "edge-1" && n["Address"] == "127.0.0.44")
        })
    });
    let (status, body) = get(&client, "/v1/agent/members");
    assert_eq!(
        (status, body),
        (501, Value::String("Invalid method".into()))
    );
}

#[test]
fn a_lone_agent_is_its_own_leader_as_before() {
    let a = Agent::start(
        "bind_addr = \"127.0.0.1\"\nports { http = 0 }\nserver { enabled = true }\n",
        &[],
    );
    assert_eq!(get(&a, "/v1/status/leader").1, "127.0.0.1:4647");
    assert_eq!(
        get(&a, "/v1/status/peers").1,
        serde_json::json!(["127.0.0.1:4647"])
    );
    let m = get(&a, "/v1/agent/members").1;
    assert_eq!(m["Members"].as_array().unwrap().len(), 1);
    assert_eq!(m["Members"][0]["Status"], "alive");
}
