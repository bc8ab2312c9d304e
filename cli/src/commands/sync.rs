//! `udmabuf-ctl sync HANDLE [--timeout-ms N]`: apply pending live updates now.

use super::info::LiveInfo;
use super::resolve_live;
use crate::cli::SyncArgs;
use crate::exit::CtlError;
use crate::output;
use crate::sys;
use anyhow::{Context, Result};
use nix::errno::Errno;
use serde::{Deserialize, Serialize};
use std::process::ExitCode;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Synced {
    pub handle: String,
    pub timeout_ms: u32,
    /// INFO after the sync.
    pub live: LiveInfo,
}

pub fn run(args: &SyncArgs) -> Result<ExitCode> {
    let (r, dev, _) = resolve_live(&args.handle, args.device.device.as_deref())?;
    sys::live_sync(&dev, &r.dmabuf, args.timeout_ms).map_err(|e| -> anyhow::Error {
        match e {
            Errno::ETIMEDOUT => CtlError::Timeout(format!(
                "sync of {}: updates still deferred after {} ms: a static importer pins the buffer or a vmap \
                 is active (see `udmabuf-ctl info`); retry with a longer --timeout-ms once it is released",
                r.handle, args.timeout_ms
            ))
            .into(),
            e => anyhow::Error::new(e).context(format!("UDMABUF_LIVE_SYNC of {}", r.handle)),
        }
    })?;
    let info = sys::live_info(&dev, &r.dmabuf).context("UDMABUF_LIVE_INFO after the sync")?;
    let out = Synced { handle: r.handle.to_string(), timeout_ms: args.timeout_ms, live: LiveInfo::from(&info) };
    if args.json {
        output::json(&out)?;
    } else {
        let l = &out.live;
        println!(
            "synced {}: generation {}, updates {}, pages swapped {}, state {}",
            out.handle,
            l.generation,
            l.updates,
            l.pages_swapped,
            l.state_text()
        );
    }
    Ok(ExitCode::SUCCESS)
}
