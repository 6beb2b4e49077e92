//! The DHCP client socket: UDP port 68 bound to one interface.
//!
//! Before the interface has an address, a UDP socket with SO_BINDTODEVICE can
//! still broadcast from 0.0.0.0, and the replies come back as broadcasts because
//! every request without an address sets the BROADCAST flag. Unicast renewals
//! use the same socket once the address is configured.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;

use dhcproto::v4::{Message, CLIENT_PORT, SERVER_PORT};
use dhcproto::{Decodable, Encodable};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};

use super::dhcp::Dest;
use super::NetError;

pub struct DhcpSocket {
    sock: tokio::net::UdpSocket,
    buf: Vec<u8>,
}

// The receive buffer is scratch space: show the socket only.
impl std::fmt::Debug for DhcpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhcpSocket")
            .field("sock", &self.sock)
            .finish_non_exhaustive()
    }
}

impl DhcpSocket {
    pub fn bind(interface: &str) -> Result<DhcpSocket, NetError> {
        let err = |call: &'static str| {
            move |e: nix::Error| NetError::Socket {
                call,
                interface: interface.to_string(),
                source: std::io::Error::from(e),
            }
        };
        let fd: OwnedFd = socket::socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(err("socket"))?;
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(err("SO_REUSEADDR"))?;
        socket::setsockopt(&fd, sockopt::Broadcast, &true).map_err(err("SO_BROADCAST"))?;
        socket::setsockopt(
            &fd,
            sockopt::BindToDevice,
            &std::ffi::OsString::from(interface),
        )
        .map_err(err("SO_BINDTODEVICE"))?;
        let addr = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT));
        socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr).map_err(err("bind :68"))?;
        let std_sock = std::net::UdpSocket::from(fd);
        let sock =
            tokio::net::UdpSocket::from_std(std_sock).map_err(|source| NetError::Socket {
                call: "register with tokio",
                interface: interface.to_string(),
                source,
            })?;
        Ok(DhcpSocket {
            sock,
            buf: vec![0; 1500],
        })
    }

    pub async fn send(&self, msg: &Message, to: Dest) -> std::io::Result<()> {
        let bytes = msg
            .to_vec()
            .map_err(|e| std::io::Error::other(format!("encoding DHCP message: {e}")))?;
        let ip = match to {
            Dest::Broadcast => Ipv4Addr::BROADCAST,
            Dest::Unicast(ip) => ip,
        };
        self.sock
            .send_to(&bytes, (ip, SERVER_PORT))
            .await
            .map(|_| ())
    }

    /// Next packet that decodes as DHCP; undecodable datagrams are skipped.
    pub async fn recv(&mut self) -> std::io::Result<Message> {
        loop {
            let (n, _) = self.sock.recv_from(&mut self.buf).await?;
            if let Ok(msg) = Message::from_bytes(&self.buf[..n]) {
                return Ok(msg);
            }
        }
    }
}
