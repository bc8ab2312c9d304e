//! Handles: how one `udmabuf-ctl` process reaches a buffer another process holds.
//!
//! A handle is `PID:MEMFD_FD:DMABUF_FD`, three decimal numbers: the process that holds
//! the buffer (e.g. `udmabuf-ctl create --hold`), the number of the memfd in that
//! process and the number of the dma-buf in that process. Example: `1234:3:4`.
//! Parsing is strict: no blanks, no signs, no leading zeros (other than `0` itself),
//! PID at least 1, every number within a C `int`.
//!
//! Commands duplicate the two fds into their own process with pidfd_open(2) and
//! pidfd_getfd(2). That needs ptrace access to the holder (PTRACE_MODE_ATTACH): the same
//! user with ptrace allowed (`/proc/sys/kernel/yama/ptrace_scope`), or root.

use crate::exit::CtlError;
use crate::sys;
use anyhow::Result;
use nix::errno::Errno;
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handle {
    pub pid: i32,
    pub memfd: i32,
    pub dmabuf: i32,
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.pid, self.memfd, self.dmabuf)
    }
}

fn number(field: &str, what: &str) -> Result<i32, String> {
    if field.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if !field.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} '{field}' is not a decimal number"));
    }
    if field.len() > 1 && field.starts_with('0') {
        return Err(format!("{what} '{field}' has a leading zero"));
    }
    field.parse::<i32>().map_err(|_| format!("{what} '{field}' is out of range"))
}

impl std::str::FromStr for Handle {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let wrap = |why: String| format!("invalid handle '{s}': {why} (expected PID:MEMFD_FD:DMABUF_FD, e.g. 1234:3:4)");
        let fields: Vec<&str> = s.split(':').collect();
        let [pid, memfd, dmabuf] = fields[..] else {
            return Err(wrap(format!("{} fields instead of 3", fields.len())));
        };
        let pid = number(pid, "PID").map_err(wrap)?;
        if pid == 0 {
            return Err(wrap("PID 0 is not a process".into()));
        }
        let memfd = number(memfd, "MEMFD_FD").map_err(wrap)?;
        let dmabuf = number(dmabuf, "DMABUF_FD").map_err(wrap)?;
        if memfd == dmabuf {
            return Err(wrap("the memfd and the dma-buf cannot be the same fd".into()));
        }
        Ok(Handle { pid, memfd, dmabuf })
    }
}

/// The holder's memfd and dma-buf, duplicated into this process.
pub struct Resolved {
    pub handle: Handle,
    pub memfd: OwnedFd,
    pub dmabuf: OwnedFd,
}

impl Handle {
    /// Duplicate both fds of the holder into this process and check what they are.
    pub fn resolve(&self) -> Result<Resolved> {
        let pidfd = sys::pidfd_open(self.pid).map_err(|e| match e {
            Errno::ESRCH => CtlError::Handle(format!(
                "handle {self}: no process {} (did the holder exit? start one with `udmabuf-ctl create --hold`)",
                self.pid
            ))
            .into(),
            Errno::ENOSYS => anyhow::anyhow!("handle {self}: this kernel has no pidfd_open (Linux 5.3 or later needed)"),
            e => anyhow::Error::new(e).context(format!("handle {self}: pidfd_open({})", self.pid)),
        })?;
        let memfd = self.getfd(&pidfd, self.memfd, "memfd")?;
        let dmabuf = self.getfd(&pidfd, self.dmabuf, "dma-buf")?;
        if sys::get_seals(&memfd).is_err() {
            return Err(CtlError::Handle(format!(
                "handle {self}: fd {} of process {} is not a memfd ({})",
                self.memfd,
                self.pid,
                sys::fd_target(self.pid, self.memfd)
            ))
            .into());
        }
        if sys::dmabuf_exporter(&dmabuf).is_none() {
            return Err(CtlError::Handle(format!(
                "handle {self}: fd {} of process {} is not a dma-buf ({})",
                self.dmabuf,
                self.pid,
                sys::fd_target(self.pid, self.dmabuf)
            ))
            .into());
        }
        Ok(Resolved { handle: *self, memfd, dmabuf })
    }

    fn getfd(&self, pidfd: &OwnedFd, fd: i32, what: &str) -> Result<OwnedFd> {
        sys::pidfd_getfd(pidfd.as_raw_fd(), fd).map_err(|e| match e {
            Errno::EBADF => CtlError::Handle(format!("handle {self}: process {} has no fd {fd} (the {what})", self.pid)).into(),
            Errno::ESRCH => CtlError::Handle(format!("handle {self}: process {} exited", self.pid)).into(),
            Errno::EPERM | Errno::EACCES => CtlError::Permission(format!(
                "handle {self}: pidfd_getfd on process {} was refused: you need ptrace access to it \
                 (run as the same user with /proc/sys/kernel/yama/ptrace_scope allowing it, or as root)",
                self.pid
            ))
            .into(),
            Errno::ENOSYS => anyhow::anyhow!("handle {self}: this kernel has no pidfd_getfd (Linux 5.6 or later needed)"),
            e => anyhow::Error::new(e).context(format!("handle {self}: pidfd_getfd of the {what} (fd {fd})")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let h: Handle = "1234:3:4".parse().unwrap();
        assert_eq!(h, Handle { pid: 1234, memfd: 3, dmabuf: 4 });
        assert_eq!(h.to_string(), "1234:3:4");
        let h: Handle = "1:0:2147483647".parse().unwrap();
        assert_eq!(h, Handle { pid: 1, memfd: 0, dmabuf: i32::MAX });
        assert_eq!(h.to_string().parse::<Handle>().unwrap(), h);
    }

    #[test]
    fn strict() {
        for s in [
            "", "1234", "1234:3", "1234:3:4:5", "1234::4", ":3:4", "1234:3:", "0:3:4", "-1:3:4", "+1:3:4", "1234:-3:4",
            " 1234:3:4", "1234:3:4 ", "1234: 3:4", "01234:3:4", "1234:03:4", "1234:3:4\n", "1234:3:2147483648",
            "99999999999:3:4", "1234:3:3", "a:3:4", "0x10:3:4", "1234;3;4", "1234/3/4",
        ] {
            assert!(s.parse::<Handle>().is_err(), "{s:?} was accepted");
        }
        let e = "1234:3".parse::<Handle>().unwrap_err();
        assert!(e.contains("PID:MEMFD_FD:DMABUF_FD"), "{e}");
    }
}
