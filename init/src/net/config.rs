//! Network configuration as operators write it (TOML or JSON via serde).
//!
//! ```toml
//! resolv_conf = "/etc/resolv.conf"
//! [[interfaces]]
//! name = "eth0"                    # DHCP (the default)
//! [[interfaces]]
//! name = "eth1"
//! static = { address = "10.0.0.5/24", gateway = "10.0.0.1", dns = ["10.0.0.1"] }
//! ```

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Deserialize;

/// The whole `[network]` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Interfaces to configure; absent: every wired interface, with DHCP.
    #[serde(default)]
    pub interfaces: Option<Vec<InterfaceConfig>>,
    /// Where DNS settings are written (atomically); default `/etc/resolv.conf`.
    #[serde(default = "default_resolv_conf")]
    pub resolv_conf: PathBuf,
    /// Directory remembering each interface's last address, asked for first
    /// at the next start (INIT-REBOOT). Absent: always start with DISCOVER.
    #[serde(default)]
    pub lease_dir: Option<PathBuf>,
}

/// The `[network]` table of the init config as a [`NetConfig`]. The error names the
/// field at fault, e.g. `network.interfaces[0].static.address: "10.0.0.5": expected
/// ADDRESS/PREFIX`.
pub fn from_table(table: &toml::Table) -> Result<NetConfig, String> {
    let value = toml::Value::Table(table.clone());
    serde_path_to_error::deserialize::<_, NetConfig>(value).map_err(|e| {
        let path = e.path().to_string();
        // toml's value errors append "in `key`" on further lines; the path says that.
        let inner = e.into_inner().to_string();
        let inner = inner.lines().next().unwrap_or_default().trim().to_string();
        if path == "." {
            format!("network: {inner}")
        } else {
            format!("network.{path}: {inner}")
        }
    })
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            interfaces: None,
            resolv_conf: default_resolv_conf(),
            lease_dir: None,
        }
    }
}

fn default_resolv_conf() -> PathBuf {
    PathBuf::from("/etc/resolv.conf")
}

/// One interface: DHCP unless `static` is given.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(try_from = "RawInterface")]
pub struct InterfaceConfig {
    pub name: String,
    pub method: Method,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    Dhcp(DhcpConfig),
    Static(StaticConfig),
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DhcpConfig {
    /// ARP-probe the offered address before using it; DECLINE it if taken.
    #[serde(default)]
    pub arp_probe: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    /// Address with prefix length, e.g. `10.0.0.5/24`.
    #[serde(deserialize_with = "de_cidr")]
    pub address: (Ipv4Addr, u8),
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    #[serde(default)]
    pub search: Vec<String>,
    #[serde(default)]
    pub mtu: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: String,
    #[serde(default)]
    dhcp: Option<DhcpConfig>,
    #[serde(default, rename = "static")]
    static_: Option<StaticConfig>,
}

impl TryFrom<RawInterface> for InterfaceConfig {
    type Error = String;
    fn try_from(raw: RawInterface) -> Result<Self, String> {
        if raw.name.is_empty() || raw.name.len() > 15 || raw.name.contains(['/', ' ']) {
            return Err(format!(
                "interfaces.name: {:?} is not a valid interface name",
                raw.name
            ));
        }
        let method = match (raw.dhcp, raw.static_) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "interface {}: set either `dhcp` or `static`, not both",
                    raw.name
                ))
            }
            (_, Some(s)) => Method::Static(s),
            (d, None) => Method::Dhcp(d.unwrap_or_default()),
        };
        Ok(InterfaceConfig {
            name: raw.name,
            method,
        })
    }
}

pub fn parse_cidr(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let (ip, len) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?}: expected ADDRESS/PREFIX, e.g. 10.0.0.5/24"))?;
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("{text:?}: {ip:?} is not an IPv4 address"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .ok_or_else(|| format!("{text:?}: prefix length must be 0..=32"))?;
    Ok((ip, len))
}

fn de_cidr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(Ipv4Addr, u8), D::Error> {
    let s = String::deserialize(d)?;
    parse_cidr(&s).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_all_wired_interfaces() {
        let cfg: NetConfig = toml::from_str("").expect("parses");
        assert_eq!(cfg, NetConfig::default());
    }

    #[test]
    fn parses_dhcp_and_static() {
        let cfg: NetConfig = toml::from_str(
            r#"
            resolv_conf = "/run/resolv.conf"
            [[interfaces]]
            name = "eth0"
            [[interfaces]]
            name = "eth1"
            dhcp = { arp_probe = true }
            [[interfaces]]
            name = "eth2"
            static = { address = "10.0.0.5/24", gateway = "10.0.0.1", dns = ["10.0.0.1"] }
            "#,
        )
        .expect("parses");
        let ifs = cfg.interfaces.expect("interfaces");
        assert_eq!(ifs[0].method, Method::Dhcp(DhcpConfig::default()));
        assert_eq!(ifs[1].method, Method::Dhcp(DhcpConfig { arp_probe: true }));
        let Method::Static(s) = &ifs[2].method else {
            panic!("static")
        };
        assert_eq!(s.address, (Ipv4Addr::new(10, 0, 0, 5), 24));
        assert_eq!(s.gateway, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(cfg.resolv_conf, PathBuf::from("/run/resolv.conf"));
    }

    #[test]
    fn rejects_unknown_fields_with_location() {
        let err = toml::from_str::<NetConfig>("resolv = 1\n").expect_err("unknown field");
        assert!(err.to_string().contains("unknown field `resolv`"), "{err}");
        let err = toml::from_str::<NetConfig>("[[interfaces]]\nname = \"eth0\"\nstatik = {}\n")
            .expect_err("unknown");
        assert!(err.to_string().contains("statik"), "{err}");
        assert!(err.to_string().contains("line 3, column 1"), "{err}");
    }

    #[test]
    fn rejects_bad_static_address_and_both_methods() {
        let err = toml::from_str::<NetConfig>(
            "[[interfaces]]\nname = \"eth0\"\nstatic = { address = \"10.0.0.5\" }\n",
        )
        .expect_err("no prefix");
        assert!(err.to_string().contains("expected ADDRESS/PREFIX"), "{err}");
        let err = toml::from_str::<NetConfig>(
            "[[interfaces]]\nname = \"eth0\"\ndhcp = {}\nstatic = { address = \"10.0.0.5/24\" }\n",
        )
        .expect_err("both");
        assert!(err.to_string().contains("not both"), "{err}");
    }
}
