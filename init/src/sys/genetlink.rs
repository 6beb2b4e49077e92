//! Just enough generic netlink to hear the kernel's ACPI events ("acpi_event" family,
//! multicast group "acpi_mc_group"): resolve a family, join a group, receive messages.
//! Message building and parsing are pure; the socket calls are the thin part.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_HDRLEN: usize = 16;
const GENL_HDRLEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const CTRL_ATTR_MCAST_GROUPS: u16 = 7;
const CTRL_ATTR_MCAST_GRP_NAME: u16 = 1;
const CTRL_ATTR_MCAST_GRP_ID: u16 = 2;
const NLA_TYPE_MASK: u16 = 0x3fff;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

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

/// One netlink message: type and payload after the netlink header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: u16,
    pub payload: &'a [u8],
}

/// Splits a datagram into netlink messages.
pub fn messages(buf: &[u8]) -> Vec<Message<'_>> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            break;
        }
        out.push(Message {
            kind: u16::from_ne_bytes([rest[4], rest[5]]),
            payload: &rest[NLMSG_HDRLEN..len],
        });
        rest = &rest[align4(len).min(rest.len())..];
    }
    out
}

/// Netlink attributes (type without flags, payload).
pub fn attributes(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((kind, &buf[4..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The CTRL_CMD_GETFAMILY request for `name`; `None` when the name is too long for a
/// netlink attribute.
pub fn getfamily_request(name: &str, seq: u32) -> Option<Vec<u8>> {
    let attr_len = 4 + name.len() + 1;
    let len = NLMSG_HDRLEN + GENL_HDRLEN + align4(attr_len);
    let attr_len = u16::try_from(attr_len).ok()?;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&u32::try_from(len).ok()?.to_ne_bytes());
    m.extend_from_slice(&GENL_ID_CTRL.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[CTRL_CMD_GETFAMILY, 1, 0, 0]);
    m.extend_from_slice(&attr_len.to_ne_bytes());
    m.extend_from_slice(&CTRL_ATTR_FAMILY_NAME.to_ne_bytes());
    m.extend_from_slice(name.as_bytes());
    m.resize(len, 0);
    Some(m)
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
            let code = msg
                .payload
                .get(..4)
                .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
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

// A compile-time FFI size (4), far inside socklen_t.
#[allow(clippy::cast_possible_truncation)]
const U32_LEN: libc::socklen_t = std::mem::size_of::<u32>() as libc::socklen_t;

/// A generic netlink socket.
#[derive(Debug)]
pub struct GenlSocket {
    fd: OwnedFd,
}

impl GenlSocket {
    pub fn open() -> Result<Self, GenlError> {
        // SAFETY: plain socket(2) call; the descriptor is owned right below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_GENERIC,
            )
        };
        if fd < 0 {
            return Err(GenlError::Socket(std::io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh, valid descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    /// Asks the controller for family `name` (ids are assigned at runtime).
    pub fn resolve(&self, name: &str) -> Result<Family, GenlError> {
        let req = getfamily_request(name, 1).ok_or_else(|| {
            GenlError::Family(
                name.into(),
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "name too long"),
            )
        })?;
        // SAFETY: req is a valid buffer of req.len() bytes; the kernel is the destination
        // because an unbound netlink socket sends to pid 0 by default.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if sent < 0 {
            return Err(GenlError::Send(std::io::Error::last_os_error()));
        }
        let buf = self.recv()?;
        parse_family_reply(name, &buf)
    }

    pub fn join(&self, group: u32) -> Result<(), GenlError> {
        // SAFETY: NETLINK_ADD_MEMBERSHIP takes a u32 group id; we pass its address and size.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_NETLINK,
                libc::NETLINK_ADD_MEMBERSHIP,
                (&group as *const u32).cast(),
                U32_LEN,
            )
        };
        if rc < 0 {
            return Err(GenlError::Join(group, std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Blocks for the next datagram.
    pub fn recv(&self) -> Result<Vec<u8>, GenlError> {
        let mut buf = vec![0u8; 8192];
        loop {
            // SAFETY: buf is a valid, writable buffer of buf.len() bytes.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if let Ok(n) = usize::try_from(n) {
                buf.truncate(n);
                return Ok(buf);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(GenlError::Recv(e));
            }
        }
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
