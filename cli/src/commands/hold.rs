//! `udmabuf-ctl hold HANDLE --pin|--vmap`: keep a static pin or a kernel vmap on a buffer
//! through the test importer (/dev/ulive-importer), until SIGINT or SIGTERM, so that
//! deferred updates (state `stale`) and the `sync` timeout (exit 7) can be shown by hand.

use crate::cli::HoldArgs;
use crate::exit::CtlError;
use crate::output;
use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, Signal};
use serde::Serialize;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use ulive_importer_abi::client::Importer;

#[derive(Serialize)]
struct Held {
    handle: String,
    /// `pin` or `vmap`.
    hold: &'static str,
    importer: String,
    /// The importer's mapping (`pin`): DMA segments and bytes.
    nents: Option<u32>,
    bytes: Option<u64>,
}

pub fn run(args: &HoldArgs) -> Result<ExitCode> {
    let (r, _live) = super::resolve(&args.handle, None, 0)?;
    let p = args.importer.display();
    let imp = Importer::open(&args.importer).map_err(|e| -> anyhow::Error {
        match e.kind() {
            ErrorKind::NotFound => CtlError::NoDevice(format!(
                "{p} does not exist: load the test importer (insmod ulive_importer.ko, built from selftests/importer/)"
            ))
            .into(),
            ErrorKind::PermissionDenied => CtlError::Permission(format!("cannot open {p}: permission denied")).into(),
            _ => anyhow::Error::new(e).context(format!("cannot open {p}")),
        }
    })?;
    imp.attach(r.dmabuf.as_raw_fd(), false).context("importer ATTACH (static)")?;
    let mut held = Held { handle: r.handle.to_string(), hold: "pin", importer: p.to_string(), nents: None, bytes: None };
    if args.vmap {
        held.hold = "vmap";
        imp.vmap().context("importer VMAP")?;
    } else {
        let m = imp.map().context("importer MAP of the static attachment")?;
        held.nents = Some(m.nents);
        held.bytes = Some(m.bytes);
    }
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block().context("blocking SIGINT/SIGTERM")?;
    if args.json {
        output::json(&held)?;
    } else {
        println!("holding a {} on {} through {} until SIGINT or SIGTERM", held.hold, held.handle, held.importer);
    }
    let sig = set.wait().context("sigwait")?;
    drop(imp); // detaches: unmaps or vunmaps, and drops the importer's reference
    if !args.json {
        eprintln!("udmabuf-ctl: {sig}: {} released", held.hold);
    }
    Ok(ExitCode::SUCCESS)
}
