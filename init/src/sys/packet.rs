//! A link-layer (AF_PACKET, SOCK_DGRAM) socket on one interface, for one EtherType:
//! the kernel adds and strips the Ethernet header, we send and receive payloads.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

#[derive(Debug)]
pub struct PacketSocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: i32,
    ethertype: u16,
}

fn sockaddr(ifindex: i32, ethertype: u16, dest: Option<[u8; 6]>) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = AF_PACKET_FAMILY;
    sa.sll_protocol = ethertype.to_be();
    sa.sll_ifindex = ifindex;
    if let Some(mac) = dest {
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&mac);
    }
    sa
}

// Compile-time FFI constants: AF_PACKET is 17 and sockaddr_ll is 20 bytes, both far
// inside the kernel field types.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
const AF_PACKET_FAMILY: libc::sa_family_t = libc::AF_PACKET as libc::sa_family_t;
#[allow(clippy::cast_possible_truncation)]
const SOCKADDR_LL_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_ll>() as _;

impl PacketSocket {
    /// Opens a non-blocking socket bound to interface `ifindex` receiving `ethertype`
    /// frames. Needs CAP_NET_RAW and a tokio runtime.
    pub fn bind(ifindex: u32, ethertype: u16) -> std::io::Result<PacketSocket> {
        let ifindex = i32::try_from(ifindex).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("interface index {ifindex} out of range"),
            )
        })?;
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                i32::from(ethertype.to_be()),
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let bind_addr = sockaddr(ifindex, ethertype, None);
        // SAFETY: the pointer and length describe `bind_addr`, alive for the call.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&bind_addr as *const libc::sockaddr_ll).cast(),
                SOCKADDR_LL_LEN,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: an OwnedFd is open until dropped, which the AsyncFd does, and always
        // returns the same descriptor.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(PacketSocket {
            fd,
            ifindex,
            ethertype,
        })
    }

    /// Sends `payload` to the link-layer address `dest` (all 0xff: broadcast).
    pub fn send_to(&self, payload: &[u8], dest: [u8; 6]) -> std::io::Result<()> {
        let dest = sockaddr(self.ifindex, self.ethertype, Some(dest));
        // SAFETY: buffer and address pointers are valid for their lengths during the call.
        let rc = unsafe {
            libc::sendto(
                self.fd.get_ref().as_raw_fd(),
                payload.as_ptr().cast(),
                payload.len(),
                0,
                (&dest as *const libc::sockaddr_ll).cast(),
                SOCKADDR_LL_LEN,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for the next payload; returns its length in `buf` (truncated to fit).
    pub async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            // SAFETY: `buf` is valid for writes of its length during the call.
            let n = unsafe {
                libc::recv(
                    guard.get_inner().as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                )
            };
            if let Ok(n) = usize::try_from(n) {
                return Ok(n);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::WouldBlock {
                return Err(e);
            }
            guard.clear_ready();
        }
    }
}
