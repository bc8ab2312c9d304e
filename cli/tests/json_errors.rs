//! The built binary: with `--json`, failures print one JSON error object on stdout.

use std::process::Command;

fn ctl(args: &[&str]) -> (Option<i32>, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_udmabuf-ctl")).args(args).output().expect("running udmabuf-ctl");
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn error_object(stdout: &str) -> serde_json::Value {
    assert_eq!(stdout.trim_end().lines().count(), 1, "not one line: {stdout}");
    let v: serde_json::Value = serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert!(v["error"].is_object(), "{v}");
    v
}

#[test]
fn usage_error_from_our_checks() {
    let (code, out, err) = ctl(&["create", "--size", "1000", "--json"]);
    assert_eq!(code, Some(2), "{err}");
    let v = error_object(&out);
    assert_eq!(v["error"]["code"], 2);
    assert_eq!(v["error"]["kind"], "usage");
    assert!(v["error"]["message"].as_str().unwrap().contains("page size"), "{v}");
    assert!(err.contains("page size"), "stderr still has the message: {err}");
}

#[test]
fn usage_error_from_clap() {
    let (code, out, _) = ctl(&["create", "--size", "4MB", "--json"]);
    assert_eq!(code, Some(2));
    assert_eq!(error_object(&out)["error"]["code"], 2);
}

#[test]
fn bad_handle() {
    // PIDs are below 2^22 on Linux: this one cannot exist.
    let (code, out, _) = ctl(&["info", "2147483647:3:4", "--json"]);
    assert_eq!(code, Some(8));
    let v = error_object(&out);
    assert_eq!(v["error"]["kind"], "bad_handle");
}

#[test]
fn plain_errors_stay_plain_and_help_is_help() {
    let (code, out, _) = ctl(&["create", "--size", "1000"]);
    assert_eq!(code, Some(2));
    assert!(out.is_empty(), "{out}");
    let (code, out, _) = ctl(&["info", "--help", "--json"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("Usage"), "{out}");
}

#[test]
fn exit_code_table_is_printed() {
    let (code, out, _) = ctl(&["exit-codes", "--markdown"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("| code | meaning |"), "{out}");
    assert!(out.contains("| 10 |") && out.contains("| 126 |"), "{out}");
    let (_, help, _) = ctl(&["--help"]);
    assert!(help.contains("Exit codes:") && help.contains("126"), "{help}");
    assert!(!help.contains("exit-codes"), "the hidden command is listed: {help}");
}
