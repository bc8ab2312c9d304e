//! Printing results. `--json` prints exactly one JSON document on one line (so a script
//! can `read` it even while the command keeps running, as `create --hold` does). A command
//! that fails under `--json` prints one error object instead (see [`error_value`]), and
//! its message on stderr as always.

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

/// `{"error":{"code":N,"kind":"...","message":"..."}}`: what `--json` prints on failure.
pub fn error_value(code: u8, message: &str) -> serde_json::Value {
    serde_json::json!({ "error": { "code": code, "kind": crate::exit::kind_of(code), "message": message } })
}

pub fn json_error(code: u8, message: &str) -> Result<()> {
    json(&error_value(code, message))
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_object() {
        let v = super::error_value(crate::exit::BAD_HANDLE, "handle 1:2:3: no process 1");
        assert_eq!(v["error"]["code"], 8);
        assert_eq!(v["error"]["kind"], "bad_handle");
        assert_eq!(v["error"]["message"], "handle 1:2:3: no process 1");
        assert!(!serde_json::to_string(&v).unwrap().contains('\n'));
    }
}
