//! Module lifecycle: load, the misc device, unknown ioctls, the CLI's view, clean unload.

use super::{cases, Suite};
use crate::ktap::CaseResult;
use crate::util::*;
use anyhow::{bail, ensure, Context};
use nix::errno::Errno;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// Runs first: loads the module the other suites use.
pub fn load_suite() -> Suite {
    let mut cases = cases![
        load,
        device_node_is_misc_char_device,
        unknown_ioctls_get_enotty,
        cli_status_reports_module,
    ];
    // Harness self-test: a case that must fail, to prove a failure turns the run red.
    if std::env::var_os("ULIVE_INJECT_FAIL").is_some() {
        cases.push(super::Case {
            name: "injected_failure",
            run: injected_failure,
            requires: &[],
        });
    }
    // Harness self-test: a case that outlives the runner's timeout (`-o`), idle, so the
    // runner must kill the program.
    if std::env::var_os("ULIVE_INJECT_SLEEP").is_some() {
        cases.push(super::Case {
            name: "injected_sleep",
            run: injected_sleep,
            requires: &[],
        });
    }
    Suite::new("module", cases)
}

/// Runs last: the module must unload cleanly once every buffer is gone.
pub fn unload_suite() -> Suite {
    Suite::new(
        "module-unload",
        cases![unload_and_device_gone, reload_cycle],
    )
}

/// A fresh load. On a machine where the module is already loaded (the collection run
/// by hand), it is unloaded first; if it is in use that cannot be done and the case skips.
fn load() -> CaseResult {
    let file = require_module_file(udmabuf_live_uapi::MODULE_NAME)?;
    if is_loaded() {
        match unload_module() {
            Ok(()) => {}
            Err(e) => {
                skip!(
                    "{} is loaded and in use ({e}): cannot test a fresh load",
                    udmabuf_live_uapi::MODULE_NAME
                )
            }
        }
    }
    ensure!(
        !is_loaded(),
        "module still loaded after unloading it before the test"
    );
    crate::ktap::out(&format!("    # loading {}", file.display()));
    load_module()?;
    ensure!(
        is_loaded(),
        "/sys/module/{} missing after load",
        udmabuf_live_uapi::MODULE_NAME
    );
    Ok(())
}

fn device_node_is_misc_char_device() -> CaseResult {
    let path = device_path();
    let md = std::fs::metadata(&path).with_context(|| format!("stat {path}"))?;
    ensure!(
        md.file_type().is_char_device(),
        "{path} is not a character device"
    );
    let major = nix::sys::stat::major(md.rdev());
    expect_eq("major number (misc = 10)", major, 10)?;
    Ok(())
}

fn unknown_ioctls_get_enotty() -> CaseResult {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device_path())?;
    // Unknown numbers of our own type, of another type, and a bogus direction/size.
    let requests: [c_ulong; 4] = [
        nix::request_code_none!(b'u', 0x7f) as c_ulong,
        nix::request_code_none!(b'X', 0x01) as c_ulong,
        nix::request_code_readwrite!(b'u', 0x42, 4096) as c_ulong,
        0,
    ];
    for req in requests {
        // SAFETY: the argument is a null pointer; an unknown ioctl must not dereference it.
        let r = unsafe { nix::libc::ioctl(f.as_raw_fd(), req as _, std::ptr::null_mut::<u8>()) };
        let err = Errno::last();
        if r != -1 || err != Errno::ENOTTY {
            bail!("ioctl {req:#x}: returned {r} errno {err}, expected -1 ENOTTY");
        }
    }
    Ok(())
}

use nix::libc::c_ulong;

fn cli_status_reports_module() -> CaseResult {
    let out = std::process::Command::new("udmabuf-ctl")
        .args(["status", "--json"])
        .output()?;
    ensure!(
        out.status.success(),
        "udmabuf-ctl status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("status --json is not JSON")?;
    expect_eq("module.loaded", v["module"]["loaded"].as_bool(), Some(true))?;
    expect_eq(
        "device.path",
        v["device"]["path"].as_str(),
        Some(device_path().as_str()),
    )?;
    expect_eq("device.major", v["device"]["major"].as_u64(), Some(10))?;
    Ok(())
}

fn unload_and_device_gone() -> CaseResult {
    unload_module().context("delete_module")?;
    ensure!(
        !is_loaded(),
        "module still listed in /sys/module after unload"
    );
    ensure!(
        !std::path::Path::new(&device_path()).exists(),
        "{} still exists after unload",
        device_path()
    );
    // With the module gone, the CLI must say so and use its documented exit code.
    let out = std::process::Command::new("udmabuf-ctl")
        .arg("status")
        .output()?;
    expect_eq(
        "udmabuf-ctl status exit code without the module",
        out.status.code(),
        Some(3),
    )?;
    Ok(())
}

fn reload_cycle() -> CaseResult {
    for round in 0..3 {
        load_module().with_context(|| format!("load, round {round}"))?;
        std::fs::File::open(device_path()).with_context(|| format!("open, round {round}"))?;
        unload_module().with_context(|| format!("unload, round {round}"))?;
    }
    ensure!(!is_loaded(), "module loaded after the cycle");
    Ok(())
}

fn injected_sleep() -> CaseResult {
    let secs = std::env::var("ULIVE_INJECT_SLEEP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    std::thread::sleep(std::time::Duration::from_secs(secs));
    bail!("ULIVE_INJECT_SLEEP is set: the runner should have killed this case after its timeout")
}

fn injected_failure() -> CaseResult {
    bail!("ULIVE_INJECT_FAIL is set: this case fails on purpose")
}
