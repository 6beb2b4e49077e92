//! File descriptor plumbing that std has no safe call for.

use std::os::fd::{AsFd, AsRawFd, RawFd};

/// Whether descriptor `fd` of this process is open (fcntl(F_GETFD) succeeds).
pub fn is_open(fd: RawFd) -> bool {
    // SAFETY: fcntl with F_GETFD only queries descriptor flags; any number is allowed.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Points descriptors 0, 1 and 2 at `file` (dup2), e.g. at the console.
pub fn replace_stdio(file: impl AsFd) -> std::io::Result<()> {
    let source = file.as_fd();
    for target in 0..3 {
        // SAFETY: `source` is borrowed, so it stays open for the call; 0..2 are either
        // closed or this process's standard descriptors, which nothing else owns as an
        // OwnedFd, so replacing them cannot invalidate another owner.
        if unsafe { libc::dup2(source.as_raw_fd(), target) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tells_open_descriptors_from_closed_ones() {
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&file);
        assert!(super::is_open(raw));
        // Not a closed number of ours: tests run in parallel threads that may reuse it.
        assert!(!super::is_open(-1));
        assert!(!super::is_open(i32::MAX));
    }
}
