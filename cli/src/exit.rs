//! Documented exit codes. Scripts rely on these; tests check them. `--help` and the
//! README print the same table (keep [`TABLE`] in step).
//!
//! | code | meaning                                                                  |
//! |------|--------------------------------------------------------------------------|
//! | 0    | success (`verify`: the buffer is coherent with its memfd)                |
//! | 1    | any other error                                                          |
//! | 2    | usage error: bad arguments or options                                    |
//! | 3    | device node missing or module not loaded                                 |
//! | 4    | permission denied (device node, ptrace access for handles, ...)          |
//! | 5    | `verify`: the dma-buf is NOT coherent with its memfd                     |
//! | 6    | out of memory: huge pages not reserved, or ENOMEM                        |
//! | 7    | `sync`: updates still deferred when the timeout expired                  |
//! | 8    | the handle does not resolve: no such process, fd closed or of the wrong kind |
//! | 9    | the dma-buf is not a udmabuf-live buffer (INFO/SYNC need one)            |
//!
//! `create --exec` exits with the command's status once the buffer exists (128+N if a
//! signal N ended it, 127 if it could not be started).

use std::process::ExitCode;

#[allow(dead_code)] // ExitCode::SUCCESS is what the commands return; listed for the table test
pub const SUCCESS: u8 = 0;
pub const ERROR: u8 = 1;
pub const USAGE: u8 = 2;
pub const NO_DEVICE: u8 = 3;
pub const PERMISSION: u8 = 4;
pub const INCOHERENT: u8 = 5;
pub const NO_MEMORY: u8 = 6;
pub const TIMEOUT: u8 = 7;
pub const BAD_HANDLE: u8 = 8;
pub const NOT_LIVE: u8 = 9;

/// The table `--help` shows.
pub const TABLE: &str = "\
Exit codes:
  0  success (verify: coherent)
  1  other error
  2  usage error
  3  device node missing or module not loaded
  4  permission denied (device node; ptrace access for handles)
  5  verify: the dma-buf is not coherent with its memfd
  6  out of memory: huge pages not reserved (echo N > /proc/sys/vm/nr_hugepages), ENOMEM
  7  sync: updates still deferred at the timeout
  8  handle does not resolve (process gone, fd closed or of the wrong kind)
  9  not a udmabuf-live buffer
create --exec exits with the command's status (128+N for signal N, 127 if it could not start).";

/// Errors that map to a specific exit code. Anything else exits 1.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NoDevice(String),
    #[error("{0}")]
    Permission(String),
    #[error("{0}")]
    NoMemory(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Handle(String),
    #[error("{0}")]
    NotLive(String),
}

pub fn code_of(err: &anyhow::Error) -> u8 {
    // The typed error may sit under added context: look through the whole chain.
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<CtlError>() {
            return match e {
                CtlError::Usage(_) => USAGE,
                CtlError::NoDevice(_) => NO_DEVICE,
                CtlError::Permission(_) => PERMISSION,
                CtlError::NoMemory(_) => NO_MEMORY,
                CtlError::Timeout(_) => TIMEOUT,
                CtlError::Handle(_) => BAD_HANDLE,
                CtlError::NotLive(_) => NOT_LIVE,
            };
        }
    }
    ERROR
}

pub fn code_for(err: &anyhow::Error) -> ExitCode {
    ExitCode::from(code_of(err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn codes_survive_context() {
        let e: anyhow::Result<()> = Err(CtlError::Handle("gone".into()).into());
        let e = e.context("verify").unwrap_err();
        assert_eq!(code_of(&e), BAD_HANDLE);
        assert_eq!(code_of(&anyhow::anyhow!("plain")), ERROR);
        assert_eq!(code_of(&CtlError::NoMemory("x".into()).into()), NO_MEMORY);
    }

    #[test]
    fn table_lists_every_code() {
        for c in [SUCCESS, ERROR, USAGE, NO_DEVICE, PERMISSION, INCOHERENT, NO_MEMORY, TIMEOUT, BAD_HANDLE, NOT_LIVE] {
            assert!(TABLE.lines().any(|l| l.trim_start().starts_with(&format!("{c} "))), "code {c} missing from TABLE");
        }
    }
}
