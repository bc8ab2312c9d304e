//! Documented exit codes. Scripts rely on these; tests check them.
//!
//! | code | meaning                                          |
//! |------|--------------------------------------------------|
//! | 0    | success                                          |
//! | 1    | any other error                                  |
//! | 2    | usage error (clap)                               |
//! | 3    | device node missing or module not loaded         |
//! | 4    | permission denied                                |

use std::process::ExitCode;

pub const ERROR: u8 = 1;
pub const NO_DEVICE: u8 = 3;
pub const PERMISSION: u8 = 4;

/// Errors that map to a specific exit code. Anything else exits 1.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0}")]
    NoDevice(String),
    #[error("{0}")]
    Permission(String),
}

pub fn code_for(err: &anyhow::Error) -> ExitCode {
    ExitCode::from(match err.downcast_ref::<CtlError>() {
        Some(CtlError::NoDevice(_)) => NO_DEVICE,
        Some(CtlError::Permission(_)) => PERMISSION,
        None => ERROR,
    })
}
