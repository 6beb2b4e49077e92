//! The DHCP client against a real dnsmasq, across a veth pair between two
//! network namespaces. Needs root, `ip` and `dnsmasq`; skips with a message otherwise.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_nomad-init");
const SERVER_IP: &str = "10.77.0.1";

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root (network namespaces need CAP_NET_ADMIN)".into());
    }
    for tool in ["ip", "dnsmasq"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

macro_rules! require_root_tools {
    () => {
        if let Some(why) = skip_reason() {
            // The test harness names each test's thread after the test.
            let name = std::thread::current()
                .name()
                .unwrap_or(module_path!())
                .to_string();
            eprintln!("SKIP {name}: {why}");
            return;
        }
    };
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Two namespaces joined by a veth pair, plus the processes run in them.
/// Dropping it kills the processes and deletes the namespaces (and the veths).
struct Lab {
    server_ns: String,
    client_ns: String,
    pub client_if: String,
    server_if: String,
    dir: tempfile::TempDir,
    children: Vec<Child>,
    dnsmasq: Option<Child>,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}{}{}",
            tag,
            std::process::id() % 10000,
            N.fetch_add(1, Ordering::Relaxed)
        );
        let lab = Lab {
            server_ns: format!("nds-{id}"),
            client_ns: format!("ndc-{id}"),
            client_if: format!("c{id}"),
            server_if: format!("s{id}"),
            dir: tempfile::tempdir().expect("tempdir"),
            children: Vec::new(),
            dnsmasq: None,
        };
        assert!(
            lab.client_if.len() <= 15,
            "interface name too long: {}",
            lab.client_if
        );
        run(Command::new("ip").args(["netns", "add", &lab.server_ns]));
        run(Command::new("ip").args(["netns", "add", &lab.client_ns]));
        run(Command::new("ip").args([
            "link",
            "add",
            &lab.server_if,
            "netns",
            &lab.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            &lab.client_if,
            "netns",
            &lab.client_ns,
        ]));
        run(Command::new("ip").args([
            "-n",
            &lab.server_ns,
            "addr",
            "add",
            &format!("{SERVER_IP}/24"),
            "dev",
            &lab.server_if,
        ]));
        run(Command::new("ip").args(["-n", &lab.server_ns, "link", "set", &lab.server_if, "up"]));
        lab
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("dnsmasq.log")
    }

    /// Starts dnsmasq on the server end; `extra` adds or overrides options.
    fn start_dnsmasq(&mut self, extra: &[&str]) {
        let log = self.log_path();
        let mut args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            self.server_ns.clone(),
            "dnsmasq".into(),
            "--no-daemon".into(),
            "--conf-file=/dev/null".into(),
            "--port=0".into(),
            "--no-ping".into(),
            format!("--interface={}", self.server_if),
            "--bind-interfaces".into(),
            "--dhcp-range=10.77.0.50,10.77.0.99,255.255.255.0,120".into(),
            "--dhcp-option=option:router,10.77.0.254".into(),
            "--dhcp-option=option:dns-server,10.77.0.1,9.9.9.9".into(),
            "--dhcp-option=option:domain-name,example.test".into(),
            "--dhcp-option=option:mtu,1400".into(),
            "--dhcp-option=121,10.99.0.0/16,10.77.0.2,0.0.0.0/0,10.77.0.1".into(),
            "--dhcp-option=option:ntp-server,10.77.0.3".into(),
            format!(
                "--dhcp-leasefile={}",
                self.dir.path().join("leases").display()
            ),
            "--dhcp-authoritative".into(),
            "--log-dhcp".into(),
            format!("--log-facility={}", log.display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new("ip")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dnsmasq");
        self.dnsmasq = Some(child);
        wait_for(Duration::from_secs(10), "dnsmasq to start", || {
            self.log().contains("DHCP, IP range")
        });
    }

    fn stop_dnsmasq(&mut self) {
        if let Some(mut c) = self.dnsmasq.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn client(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.client_ns, BIN, "dhcp"])
            .args(args)
            .arg(&self.client_if);
        cmd
    }

    fn spawn_client(&mut self, args: &[&str]) -> u32 {
        let child = self
            .client(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn client");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// SIGTERM the client and collect its output.
    fn stop_client(&mut self, pid: u32) -> Output {
        let pos = self
            .children
            .iter()
            .position(|c| c.id() == pid)
            .expect("known child");
        let child = self.children.remove(pos);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("kill");
        child.wait_with_output().expect("wait")
    }

    fn ip(&self, args: &[&str]) -> String {
        let out = run(Command::new("ip").args(["-n", &self.client_ns]).args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn addresses(&self) -> String {
        self.ip(&["-4", "addr", "show", "dev", &self.client_if])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in self.children.iter_mut().chain(self.dnsmasq.iter_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.client_ns, &self.server_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn wait_for(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

fn leased_address(addr_output: &str) -> Option<String> {
    addr_output
        .lines()
        .find_map(|l| l.trim().strip_prefix("inet 10.77.0."))
        .map(|rest| format!("10.77.0.{}", rest.split('/').next().unwrap_or("")))
}

#[test]
fn once_acquires_and_applies_address_routes_mtu_and_dns() {
    require_root_tools!();
    let mut lab = Lab::new("a");
    // A fixed MAC so that dnsmasq hands this client a hostname (option 12).
    run(Command::new("ip").args([
        "-n",
        &lab.client_ns,
        "link",
        "set",
        &lab.client_if,
        "address",
        "02:00:00:00:77:02",
    ]));
    lab.start_dnsmasq(&["--dhcp-host=02:00:00:00:77:02,node7"]);
    let resolv = lab.dir.path().join("resolv.conf");
    let out = run(&mut lab.client(&["--once", "--resolv-conf", resolv.to_str().expect("utf8")]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("router    10.77.0.1\n"),
        "option 121's default route wins over option 3:\n{stdout}"
    );
    assert!(stdout.contains("ntp       10.77.0.3\n"), "{stdout}");
    assert!(stdout.contains("hostname  node7\n"), "{stdout}");
    assert!(stdout.contains("mtu       1400\n"), "{stdout}");
    assert!(stdout.contains("server    10.77.0.1\n"), "{stdout}");
    assert!(stdout.contains("lease     120s"), "{stdout}");

    let addrs = lab.addresses();
    let addr = leased_address(&addrs).unwrap_or_else(|| panic!("no 10.77.0.x address:\n{addrs}"));
    assert!(addrs.contains(&format!("inet {addr}/24")), "{addrs}");
    assert!(
        stdout.contains(&format!("address   {addr}/24\n")),
        "{stdout}"
    );

    let routes = lab.ip(&["-4", "route", "show", "dev", &lab.client_if]);
    assert!(routes.contains("default via 10.77.0.1"), "{routes}");
    assert!(
        !routes.contains("10.77.0.254"),
        "option 3 must be ignored when 121 is present:\n{routes}"
    );
    assert!(routes.contains("10.99.0.0/16 via 10.77.0.2"), "{routes}");
    let link = lab.ip(&["link", "show", "dev", &lab.client_if]);
    assert!(link.contains("mtu 1400"), "{link}");
    assert!(link.contains(",UP"), "{link}");

    let conf = std::fs::read_to_string(&resolv).expect("resolv.conf written");
    assert_eq!(
        conf,
        format!("# Generated by nomad-init from {}; edits will be overwritten.\nsearch example.test\nnameserver 10.77.0.1\nnameserver 9.9.9.9\n", lab.client_if)
    );
}

#[test]
fn once_no_apply_prints_but_changes_nothing() {
    require_root_tools!();
    let mut lab = Lab::new("n");
    lab.start_dnsmasq(&[]);
    let resolv = lab.dir.path().join("resolv.conf");
    let out = run(&mut lab.client(&[
        "--once",
        "--no-apply",
        "--resolv-conf",
        resolv.to_str().expect("utf8"),
    ]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("address   10.77.0."));
    assert_eq!(leased_address(&lab.addresses()), None);
    assert!(!resolv.exists());
}

#[test]
fn once_times_out_with_a_clear_message() {
    require_root_tools!();
    let lab = Lab::new("t");
    let out = lab
        .client(&["--once", "--timeout", "2"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("no lease on {} after 2 s", lab.client_if)),
        "{stderr}"
    );
}

#[test]
fn missing_interface_is_reported() {
    require_root_tools!();
    let lab = Lab::new("m");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client_ns,
            BIN,
            "dhcp",
            "--once",
            "--timeout",
            "2",
            "nosuch0",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("interface nosuch0 does not exist"),
        "{stderr}"
    );
}

#[test]
fn nak_for_a_remembered_wrong_address_falls_back_to_discovery() {
    require_root_tools!();
    let mut lab = Lab::new("k");
    lab.start_dnsmasq(&[]);
    let out = run(&mut lab.client(&["--once", "--no-apply", "--request-address", "192.168.200.5"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("address   10.77.0."), "{stdout}");
    let log = lab.log();
    assert!(
        log.contains("DHCPREQUEST") && log.contains("192.168.200.5"),
        "INIT-REBOOT request not seen:\n{log}"
    );
    assert!(log.contains("DHCPNAK"), "dnsmasq did not NAK:\n{log}");
    let nak = log.find("DHCPNAK").expect("nak");
    assert!(
        log[nak..].contains("DHCPDISCOVER"),
        "no DISCOVER after the NAK:\n{log}"
    );
}

#[test]
fn init_reboot_with_the_right_address_skips_discovery() {
    require_root_tools!();
    let mut lab = Lab::new("r");
    lab.start_dnsmasq(&[]);
    let first = run(&mut lab.client(&["--once", "--no-apply"]));
    let stdout = String::from_utf8_lossy(&first.stdout).into_owned();
    let addr = stdout
        .lines()
        .find_map(|l| l.strip_prefix("address   "))
        .expect("address")
        .split('/')
        .next()
        .expect("ip")
        .to_string();
    let discovers = count(&lab.log(), "DHCPDISCOVER");
    let again = run(&mut lab.client(&["--once", "--no-apply", "--request-address", &addr]));
    assert!(String::from_utf8_lossy(&again.stdout).contains(&format!("address   {addr}/24")));
    assert_eq!(
        count(&lab.log(), "DHCPDISCOVER"),
        discovers,
        "INIT-REBOOT must not DISCOVER:\n{}",
        lab.log()
    );
}

#[test]
fn renews_at_t1_by_unicast_request() {
    require_root_tools!();
    let mut lab = Lab::new("w");
    lab.start_dnsmasq(&[]);
    let resolv = lab.dir.path().join("resolv.conf");
    // 120 s lease scaled by 10: T1 = 6 s.
    let pid = lab.spawn_client(&[
        "--lease-scale",
        "10",
        "--resolv-conf",
        resolv.to_str().expect("utf8"),
    ]);
    wait_for(Duration::from_secs(10), "the lease", || {
        leased_address(&lab.addresses()).is_some()
    });
    let bound_at = Instant::now();
    assert_eq!(count(&lab.log(), "DHCPREQUEST"), 1);
    wait_for(Duration::from_secs(10), "a renewal DHCPREQUEST", || {
        count(&lab.log(), "DHCPACK") >= 2
    });
    let waited = bound_at.elapsed();
    assert!(
        waited >= Duration::from_secs(4),
        "renewed after {waited:?}, before T1"
    );
    let log = lab.log();
    assert_eq!(
        count(&log, "DHCPDISCOVER"),
        1,
        "a renewal does not rediscover:\n{log}"
    );
    assert!(resolv.exists(), "the runtime writes resolv.conf");
    let out = lab.stop_client(pid);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn releases_on_shutdown() {
    require_root_tools!();
    let mut lab = Lab::new("l");
    lab.start_dnsmasq(&[]);
    let resolv = lab.dir.path().join("resolv.conf");
    let pid = lab.spawn_client(&["--resolv-conf", resolv.to_str().expect("utf8")]);
    wait_for(Duration::from_secs(10), "the lease", || {
        leased_address(&lab.addresses()).is_some()
    });
    let addr = leased_address(&lab.addresses()).expect("address");
    let out = lab.stop_client(pid);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        Duration::from_secs(5),
        "DHCPRELEASE in dnsmasq's log",
        || {
            lab.log()
                .contains(&format!("DHCPRELEASE({}) {addr}", lab.server_if))
        },
    );
    assert_eq!(
        leased_address(&lab.addresses()),
        None,
        "address removed on shutdown"
    );
    let routes = lab.ip(&["-4", "route", "show", "dev", &lab.client_if]);
    assert!(
        routes.trim().is_empty(),
        "routes removed on shutdown:\n{routes}"
    );
}

#[test]
fn lease_expires_when_the_server_goes_away() {
    require_root_tools!();
    let mut lab = Lab::new("x");
    lab.start_dnsmasq(&[]);
    let resolv = lab.dir.path().join("resolv.conf");
    // 120 s lease scaled by 10: T1 6 s, T2 10.5 s, expiry 12 s.
    let pid = lab.spawn_client(&[
        "--lease-scale",
        "10",
        "--resolv-conf",
        resolv.to_str().expect("utf8"),
    ]);
    wait_for(Duration::from_secs(10), "the lease", || {
        leased_address(&lab.addresses()).is_some()
    });
    let bound_at = Instant::now();
    lab.stop_dnsmasq();
    wait_for(
        Duration::from_secs(20),
        "the address to be removed at expiry",
        || leased_address(&lab.addresses()).is_none(),
    );
    let gone = bound_at.elapsed();
    assert!(
        gone >= Duration::from_secs(10),
        "address removed after {gone:?}, before the lease expired"
    );
    let link = lab.ip(&["link", "show", "dev", &lab.client_if]);
    assert!(
        link.contains("mtu 1500"),
        "MTU restored on deconfigure: {link}"
    );
    // Still running: back to discovery, and a returning server is used again.
    lab.start_dnsmasq(&[]);
    wait_for(
        Duration::from_secs(20),
        "a new lease from the returning server",
        || leased_address(&lab.addresses()).is_some(),
    );
    let out = lab.stop_client(pid);
    assert!(out.status.success());
    let _ = Path::new(&resolv);
}

#[test]
fn arp_probe_declines_an_address_in_use() {
    require_root_tools!();
    let mut lab = Lab::new("d");
    // Pin the client's MAC so dnsmasq can be told which address to offer, and
    // make that address already used by the server host.
    run(Command::new("ip").args([
        "-n",
        &lab.client_ns,
        "link",
        "set",
        &lab.client_if,
        "address",
        "02:00:00:00:77:01",
    ]));
    run(Command::new("ip").args([
        "-n",
        &lab.server_ns,
        "addr",
        "add",
        "10.77.0.60/24",
        "dev",
        &lab.server_if,
    ]));
    lab.start_dnsmasq(&["--dhcp-host=02:00:00:00:77:01,10.77.0.60"]);
    let out = lab
        .client(&["--once", "--arp-probe", "--timeout", "3"])
        .output()
        .expect("run");
    assert!(
        !out.status.success(),
        "the only offer was in use; no lease expected"
    );
    let log = lab.log();
    assert!(
        log.contains(&format!("DHCPDECLINE({}) 10.77.0.60", lab.server_if)),
        "no DECLINE:\n{log}"
    );
    assert_eq!(
        leased_address(&lab.addresses()),
        None,
        "a declined address is never applied"
    );
}

#[test]
fn arp_probe_accepts_a_free_address() {
    require_root_tools!();
    let mut lab = Lab::new("p");
    lab.start_dnsmasq(&[]);
    let out = run(&mut lab.client(&["--once", "--arp-probe"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("address   10.77.0."));
    assert!(leased_address(&lab.addresses()).is_some());
    assert!(!lab.log().contains("DHCPDECLINE"));
}

/// Moves the calling thread into network namespace `name`.
fn enter_netns(name: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/var/run/netns/{name}")).expect("open netns");
    // SAFETY: setns(2) on a valid namespace descriptor; affects only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

#[test]
fn runtime_runs_dhcp_and_static_interfaces_and_releases_on_shutdown() {
    require_root_tools!();
    let mut lab = Lab::new("u");
    lab.start_dnsmasq(&[]);
    let dummy = format!("t{}", &lab.client_if[1..]);
    // A second link in the client namespace (a veth pair: no dummy module here).
    let peer = format!("p{}", &lab.client_if[1..]);
    run(Command::new("ip").args([
        "-n",
        &lab.client_ns,
        "link",
        "add",
        &dummy,
        "type",
        "veth",
        "peer",
        "name",
        &peer,
    ]));
    run(Command::new("ip").args(["-n", &lab.client_ns, "link", "set", &peer, "up"]));
    let resolv = lab.dir.path().join("resolv.conf");
    let cfg: nomad_init::net::NetConfig = toml::from_str(&format!(
        r#"
        resolv_conf = "{}"
        lease_dir = "{}"
        [[interfaces]]
        name = "{}"
        [[interfaces]]
        name = "{dummy}"
        static = {{ address = "192.168.50.2/24", gateway = "192.168.50.1", dns = ["192.168.50.53"] }}
        "#,
        resolv.display(),
        lab.dir.path().display(),
        lab.client_if
    ))
    .expect("config parses");
    let ns = lab.client_ns.clone();
    let resolv_in = resolv.clone();
    let leases = std::thread::spawn(move || {
        enter_netns(&ns);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let handle = nomad_init::net::run(cfg).await;
            let mut rx = handle.leases();
            let waited =
                tokio::time::timeout(Duration::from_secs(15), rx.wait_for(|m| m.len() == 2))
                    .await
                    .is_ok_and(|r| r.is_ok());
            let snapshot = rx.borrow().clone();
            // resolv.conf is written by its own task; give it a moment.
            let mut conf = String::new();
            for _ in 0..50 {
                conf = std::fs::read_to_string(&resolv_in).unwrap_or_default();
                if conf.contains("10.77.0.1") && conf.contains("192.168.50.53") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            handle.shutdown().await;
            (waited, snapshot, conf)
        })
    })
    .join()
    .expect("runtime thread");
    let (complete, leases, conf) = leases;
    assert!(complete, "both interfaces should be configured: {leases:?}");
    let dhcp = &leases[&lab.client_if];
    assert!(dhcp.address.to_string().starts_with("10.77.0."), "{dhcp:?}");
    assert_eq!(
        dhcp.router().map(|r| r.to_string()).as_deref(),
        Some("10.77.0.1")
    );
    assert_eq!(
        dhcp.ntp.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        vec!["10.77.0.3"]
    );
    let remembered = lab.dir.path().join(format!("{}.lease", lab.client_if));
    assert_eq!(
        std::fs::read_to_string(remembered).expect("lease file"),
        format!("{}\n", dhcp.address)
    );
    let fixed = &leases[&dummy];
    assert_eq!(fixed.address.to_string(), "192.168.50.2");
    assert_eq!(
        fixed.router().map(|r| r.to_string()).as_deref(),
        Some("192.168.50.1")
    );

    for ns in ["10.77.0.1", "192.168.50.53"] {
        assert!(conf.contains(&format!("nameserver {ns}\n")), "{conf}");
    }
    wait_for(Duration::from_secs(5), "DHCPRELEASE", || {
        lab.log().contains("DHCPRELEASE")
    });
    assert_eq!(
        leased_address(&lab.addresses()),
        None,
        "DHCP address removed on shutdown"
    );
    let routes = lab.ip(&["-4", "route", "show", "default"]);
    assert!(
        routes.contains("via 192.168.50.1"),
        "static default route in place:\n{routes}"
    );
}
