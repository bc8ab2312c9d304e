//! Printing results. `--json` prints exactly one JSON document on one line (so a script
//! can `read` it even while the command keeps running, as `create --hold` does).

use anyhow::Result;
use serde::Serialize;
use std::io::Write;

pub fn json<T: Serialize>(value: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}
