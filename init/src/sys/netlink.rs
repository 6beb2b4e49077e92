//! Netlink's wire format (messages, attributes, requests) and a blocking netlink socket.
//! Shared by the route requests that configure interfaces (`net/rtnl.rs`) and the generic
//! netlink listener for ACPI events (`genetlink.rs`). Building and parsing are pure; the
//! socket calls are the thin part. Written here rather than taken from `rtnetlink`: the
//! handful of requests the DHCP client makes cost 0.6 MB of the static binary through it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

pub const NLMSG_HDRLEN: usize = 16;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLA_HDRLEN: usize = 4;

/// Largest datagram read: a link's attributes (with its statistics) are a few KiB.
const RECV_BUFFER: usize = 32 * 1024;
/// How many datagrams one request may be answered with before we give up on it.
const MAX_REPLY_DATAGRAMS: usize = 64;

pub fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One netlink message: its header fields and the payload after the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let b = b.get(at..at + 4)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let b = b.get(at..at + 2)?;
    Some(u16::from_ne_bytes([b[0], b[1]]))
}

/// Splits a datagram into netlink messages; a truncated or malformed tail is dropped.
pub fn messages(buf: &[u8]) -> Vec<Message<'_>> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32_at(rest, 0).map_or(0, |l| l as usize);
        if len < NLMSG_HDRLEN || len > rest.len() {
            break;
        }
        out.push(Message {
            kind: u16_at(rest, 4).unwrap_or_default(),
            flags: u16_at(rest, 6).unwrap_or_default(),
            seq: u32_at(rest, 8).unwrap_or_default(),
            payload: &rest[NLMSG_HDRLEN..len],
        });
        rest = &rest[align4(len).min(rest.len())..];
    }
    out
}

/// Netlink attributes (type without flags, payload); a malformed tail is dropped.
pub fn attributes(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= NLA_HDRLEN {
        let len = u16_at(buf, 0).map_or(0, usize::from);
        let kind = u16_at(buf, 2).unwrap_or_default() & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > buf.len() {
            break;
        }
        out.push((kind, &buf[NLA_HDRLEN..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

/// The errno an `NLMSG_ERROR` payload carries (0 is an acknowledgement).
pub fn error_code(payload: &[u8]) -> i32 {
    u32_at(payload, 0).map_or(0, |c| i32::from_ne_bytes(c.to_ne_bytes()))
}

/// One request being built: the netlink header, the family's fixed header, attributes.
#[derive(Debug, Clone)]
pub struct Request {
    buf: Vec<u8>,
}

fn too_long(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("{what} too long for a netlink message"),
    )
}

impl Request {
    /// A request of message type `kind`; `fixed` is the family header (e.g. `ifinfomsg`),
    /// whose size the kernel's headers keep a multiple of four.
    pub fn new(kind: u16, flags: u16, seq: u32, fixed: &[u8]) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish()
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills ours in
        buf.extend_from_slice(fixed);
        buf.resize(align4(buf.len()), 0);
        Request { buf }
    }

    /// Appends attribute `kind` holding `value` (padded to four bytes).
    pub fn attr(mut self, kind: u16, value: &[u8]) -> std::io::Result<Self> {
        let len = u16::try_from(NLA_HDRLEN + value.len()).map_err(|_| too_long("attribute"))?;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(align4(self.buf.len()), 0);
        Ok(self)
    }

    /// The finished message, its length filled in.
    pub fn finish(mut self) -> std::io::Result<Vec<u8>> {
        let len = u32::try_from(self.buf.len()).map_err(|_| too_long("request"))?;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        Ok(self.buf)
    }
}

// A compile-time FFI size (4), far inside socklen_t.
#[allow(clippy::cast_possible_truncation)]
const U32_LEN: libc::socklen_t = std::mem::size_of::<u32>() as libc::socklen_t;
#[allow(clippy::cast_possible_truncation)]
const TIMEVAL_LEN: libc::socklen_t = std::mem::size_of::<libc::timeval>() as libc::socklen_t;

/// A blocking netlink socket of one protocol (`NETLINK_ROUTE`, `NETLINK_GENERIC`), in the
/// calling thread's network namespace.
#[derive(Debug)]
pub struct NetlinkSocket {
    fd: OwnedFd,
}

impl NetlinkSocket {
    pub fn open(protocol: libc::c_int) -> std::io::Result<Self> {
        // SAFETY: plain socket(2) call; the descriptor is owned right below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    /// Bounds every later `recv`: a request's answer that never comes fails instead of
    /// holding its caller.
    pub fn set_recv_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        let tv = libc::timeval {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
        };
        // SAFETY: SO_RCVTIMEO takes a timeval; we pass its address and size.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                TIMEVAL_LEN,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends one message to the kernel (an unbound netlink socket sends to port 0).
    pub fn send(&self, msg: &[u8]) -> std::io::Result<()> {
        loop {
            // SAFETY: msg is a valid buffer of msg.len() bytes.
            let sent =
                unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
            if sent >= 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Joins multicast group `group`.
    pub fn join(&self, group: u32) -> std::io::Result<()> {
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
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Blocks for the next datagram (up to the receive timeout, if one is set).
    pub fn recv(&self) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; RECV_BUFFER];
        loop {
            // SAFETY: buf is a valid, writable buffer of buf.len() bytes.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if let Ok(n) = usize::try_from(n) {
                buf.truncate(n);
                return Ok(buf);
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the kernel did not answer in time",
                    ))
                }
                _ => return Err(e),
            }
        }
    }

    /// Sends request `req` (built with sequence number `seq` and `NLM_F_ACK`) and returns
    /// the messages answering it, up to the kernel's acknowledgement, as (type, payload).
    /// An error acknowledgement is returned as that errno.
    pub fn transact(&self, req: &[u8], seq: u32) -> std::io::Result<Vec<(u16, Vec<u8>)>> {
        self.send(req)?;
        let mut answer = Vec::new();
        for _ in 0..MAX_REPLY_DATAGRAMS {
            let datagram = self.recv()?;
            for msg in messages(&datagram) {
                if msg.seq != seq {
                    continue; // a late answer to an earlier request
                }
                match msg.kind {
                    NLMSG_ERROR => {
                        let code = error_code(msg.payload);
                        if code == 0 {
                            return Ok(answer);
                        }
                        return Err(std::io::Error::from_raw_os_error(code.saturating_neg()));
                    }
                    NLMSG_DONE => return Ok(answer),
                    kind => answer.push((kind, msg.payload.to_vec())),
                }
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("no acknowledgement within {MAX_REPLY_DATAGRAMS} datagrams"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips_through_the_parsers() {
        let req = Request::new(18, NLM_F_REQUEST | NLM_F_ACK, 9, &[7; 16])
            .attr(3, b"eth0\0")
            .unwrap()
            .attr(4, &1500u32.to_ne_bytes())
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(req.len() % 4, 0);
        let msgs = messages(&req);
        assert_eq!(msgs.len(), 1);
        let m = &msgs[0];
        assert_eq!((m.kind, m.flags, m.seq), (18, NLM_F_REQUEST | NLM_F_ACK, 9));
        assert_eq!(&m.payload[..16], &[7; 16]);
        let attrs = attributes(&m.payload[16..]);
        assert_eq!(
            attrs,
            vec![(3, &b"eth0\0"[..]), (4, &1500u32.to_ne_bytes()[..])]
        );
    }

    #[test]
    fn malformed_lengths_end_the_parse_instead_of_reading_past_the_buffer() {
        let mut req = Request::new(18, 0, 1, &[]).finish().unwrap();
        req[0] = 200; // claims more than there is
        assert!(messages(&req).is_empty());
        assert!(attributes(&[3, 0, 1, 0]).is_empty()); // length 3 < header
        assert!(attributes(&[9, 0, 1, 0, 0]).is_empty()); // length past the end
    }

    #[test]
    fn an_oversized_attribute_is_refused() {
        let big = vec![0u8; 70_000];
        let e = Request::new(18, 0, 1, &[]).attr(1, &big).unwrap_err();
        assert!(e.to_string().contains("too long"), "{e}");
    }

    #[test]
    fn error_codes_are_read_from_the_payload() {
        assert_eq!(error_code(&(-19i32).to_ne_bytes()), -19);
        assert_eq!(error_code(&0i32.to_ne_bytes()), 0);
        assert_eq!(error_code(&[]), 0);
    }
}
