//! Just enough generic netlink to hear the kernel's ACPI events ("acpi_event" family,
//! multicast group "acpi_mc_group"): resolve a family, join a group, receive messages.
//! Message building and parsing are pure; the socket calls are the thin part.

use super::netlink::{attributes, messages, NetlinkSocket, Request, NLMSG_ERROR, NLM_F_REQUEST};

const GENL_HDRLEN: usize = 4;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const CTRL_ATTR_MCAST_GROUPS: u16 = 7;
const CTRL_ATTR_MCAST_GRP_NAME: u16 = 1;
const CTRL_ATTR_MCAST_GRP_ID: u16 = 2;

/// A resolved generic netlink family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    pub id: u16,
    pub groups: Vec<(String, u32)>,
}

impl Family {
    pub fn group(&self, name: &str) -> Option<u32> {
        self.groups
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, id)| id)
    }
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The CTRL_CMD_GETFAMILY request for `name`; `None` when the name is too long for a
/// netlink attribute.
pub fn getfamily_request(name: &str, seq: u32) -> Option<Vec<u8>> {
    let mut value = name.as_bytes().to_vec();
    value.push(0);
    Request::new(
        GENL_ID_CTRL,
        NLM_F_REQUEST,
        seq,
        &[CTRL_CMD_GETFAMILY, 1, 0, 0],
    )
    .attr(CTRL_ATTR_FAMILY_NAME, &value)
    .and_then(Request::finish)
    .ok()
}

#[derive(Debug, thiserror::Error)]
pub enum GenlError {
    #[error("socket(AF_NETLINK, NETLINK_GENERIC): {0}")]
    Socket(std::io::Error),
    #[error("send(CTRL_CMD_GETFAMILY): {0}")]
    Send(std::io::Error),
    #[error("recv: {0}")]
    Recv(std::io::Error),
    #[error("generic netlink family {0:?}: {1}")]
    Family(String, std::io::Error),
    #[error("generic netlink family {0:?}: malformed reply")]
    Malformed(String),
    #[error("setsockopt(NETLINK_ADD_MEMBERSHIP, {0}): {1}")]
    Join(u32, std::io::Error),
}

/// Parses the reply to [`getfamily_request`].
pub fn parse_family_reply(name: &str, buf: &[u8]) -> Result<Family, GenlError> {
    for msg in messages(buf) {
        if msg.kind == NLMSG_ERROR {
            let code = super::netlink::error_code(msg.payload);
            return Err(GenlError::Family(
                name.into(),
                std::io::Error::from_raw_os_error(-code),
            ));
        }
        if msg.kind != GENL_ID_CTRL || msg.payload.len() < GENL_HDRLEN {
            continue;
        }
        let mut id = None;
        let mut groups = Vec::new();
        for (kind, value) in attributes(&msg.payload[GENL_HDRLEN..]) {
            match kind {
                CTRL_ATTR_FAMILY_ID if value.len() >= 2 => {
                    id = Some(u16::from_ne_bytes([value[0], value[1]]))
                }
                CTRL_ATTR_MCAST_GROUPS => {
                    for (_, group) in attributes(value) {
                        let mut gname = None;
                        let mut gid = None;
                        for (k, v) in attributes(group) {
                            match k {
                                CTRL_ATTR_MCAST_GRP_NAME => gname = Some(c_string(v)),
                                CTRL_ATTR_MCAST_GRP_ID if v.len() >= 4 => {
                                    gid = Some(u32::from_ne_bytes([v[0], v[1], v[2], v[3]]))
                                }
                                _ => {}
                            }
                        }
                        if let (Some(n), Some(i)) = (gname, gid) {
                            groups.push((n, i));
                        }
                    }
                }
                _ => {}
            }
        }
        return id
            .map(|id| Family { id, groups })
            .ok_or_else(|| GenlError::Malformed(name.into()));
    }
    Err(GenlError::Malformed(name.into()))
}

/// A generic netlink socket.
#[derive(Debug)]
pub struct GenlSocket {
    socket: NetlinkSocket,
}

impl GenlSocket {
    pub fn open() -> Result<Self, GenlError> {
        let socket = NetlinkSocket::open(libc::NETLINK_GENERIC).map_err(GenlError::Socket)?;
        Ok(Self { socket })
    }

    /// Asks the controller for family `name` (ids are assigned at runtime).
    pub fn resolve(&self, name: &str) -> Result<Family, GenlError> {
        let req = getfamily_request(name, 1).ok_or_else(|| {
            GenlError::Family(
                name.into(),
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "name too long"),
            )
        })?;
        self.socket.send(&req).map_err(GenlError::Send)?;
        let buf = self.recv()?;
        parse_family_reply(name, &buf)
    }

    pub fn join(&self, group: u32) -> Result<(), GenlError> {
        self.socket
            .join(group)
            .map_err(|e| GenlError::Join(group, e))
    }

    /// Blocks for the next datagram.
    pub fn recv(&self) -> Result<Vec<u8>, GenlError> {
        self.socket.recv().map_err(GenlError::Recv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_a_well_formed_getfamily() {
        let m = getfamily_request("acpi_event", 7).unwrap();
        assert_eq!(m.len() % 4, 0);
        let msgs = messages(&m);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].kind, GENL_ID_CTRL);
        assert_eq!(msgs[0].payload[0], CTRL_CMD_GETFAMILY);
        let attrs = attributes(&msgs[0].payload[GENL_HDRLEN..]);
        assert_eq!(attrs, vec![(CTRL_ATTR_FAMILY_NAME, &b"acpi_event\0"[..])]);
    }

    #[test]
    fn resolves_the_controller_family_from_the_real_kernel() {
        // nlctrl always exists: id 0x10 with multicast group "notify".
        let sock = match GenlSocket::open() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("SKIP: no generic netlink here: {e}");
                return;
            }
        };
        let f = sock.resolve("nlctrl").unwrap();
        assert_eq!(f.id, GENL_ID_CTRL);
        assert!(f.group("notify").is_some(), "{f:?}");
        let missing = sock.resolve("no_such_family_x").unwrap_err().to_string();
        assert!(missing.contains("no_such_family_x"), "{missing}");
    }
}
