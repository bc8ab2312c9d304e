//! The kernel's own udmabuf kselftest (tools/testing/selftests/drivers/dma-buf/udmabuf.c),
//! built unchanged from the same kernel tree. It exits 0 even when a test fails, so its
//! TAP lines are read here: every planned test must report `ok`, none skipped.
//!
//! The binary opens the hard-coded /dev/udmabuf. To run it against the device under test
//! without touching the rest of the guest, the child gets a private mount namespace in
//! which the device under test is bind-mounted over /dev/udmabuf.

use super::{cases, Suite};
use crate::ktap::{out, CaseResult, Outcome};
use anyhow::{bail, ensure, Context};

const KSELFTEST: &str = "/selftests/udmabuf-kselftest";

pub fn suite() -> Suite {
    Suite { name: "upstream-kselftest", cases: cases![builtin_udmabuf_passes_all, test_device_passes_all] }
}

/// Run the binary and judge its TAP output; its lines are echoed as diagnostics.
pub fn run_and_judge(cmd: &mut std::process::Command) -> CaseResult {
    let output = cmd.output().with_context(|| format!("running {KSELFTEST}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let (mut plan, mut ok, mut bad, mut skip) = (None, 0, Vec::new(), 0);
    for line in text.lines() {
        out(&format!("    # | {line}"));
        let l = line.trim();
        if let Some(n) = l.strip_prefix("1..") {
            plan = n.parse::<usize>().ok();
        } else if l.starts_with("not ok ") {
            bad.push(l.to_owned());
        } else if l.starts_with("ok ") {
            if l.contains("# SKIP") {
                skip += 1;
            } else {
                ok += 1;
            }
        }
    }
    for line in String::from_utf8_lossy(&output.stderr).lines() {
        out(&format!("    # stderr| {line}"));
    }
    let Some(plan) = plan else { bail!("no plan line in the kselftest output") };
    if !bad.is_empty() {
        bail!("{} of {plan} upstream tests failed: {}", bad.len(), bad.join("; "));
    }
    if skip > 0 {
        bail!("{skip} of {plan} upstream tests skipped (hugepages reserved? memory?)");
    }
    if ok != plan {
        bail!("{ok} of {plan} planned upstream tests reported ok");
    }
    Ok(Outcome::Pass)
}

fn builtin_udmabuf_passes_all() -> CaseResult {
    if !std::path::Path::new("/dev/udmabuf").exists() {
        bail!("/dev/udmabuf missing: the test kernel needs CONFIG_UDMABUF=y");
    }
    run_and_judge(&mut std::process::Command::new(KSELFTEST))
}

/// The same kselftest with the device under test (ULIVE_TEST_DEVICE, default
/// /dev/udmabuf-live) bind-mounted over /dev/udmabuf in a private mount namespace.
fn test_device_passes_all() -> CaseResult {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    use std::ffi::CString;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;

    let dev = super::common::test_device();
    let target = "/dev/udmabuf";
    let want_rdev = std::fs::metadata(&dev).with_context(|| format!("stat {dev}"))?.rdev();
    ensure!(std::path::Path::new(target).exists(), "{target} missing: nothing to bind-mount over");
    // Prepared before fork: the pre_exec hook must not allocate.
    let src = CString::new(dev.as_str())?;
    let dst = CString::new(target)?;
    let root = c"/";
    let mut cmd = std::process::Command::new(KSELFTEST);
    // SAFETY: the hook only makes system calls on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let io = |e: nix::errno::Errno| std::io::Error::from_raw_os_error(e as i32);
            unshare(CloneFlags::CLONE_NEWNS).map_err(io)?;
            mount(None::<&std::ffi::CStr>, root, None::<&std::ffi::CStr>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&std::ffi::CStr>)
                .map_err(io)?;
            mount(Some(src.as_c_str()), dst.as_c_str(), None::<&std::ffi::CStr>, MsFlags::MS_BIND, None::<&std::ffi::CStr>)
                .map_err(io)?;
            // The bind must really be in place, or the run would test the built-in driver.
            let st = nix::sys::stat::stat(dst.as_c_str()).map_err(io)?;
            if st.st_rdev != want_rdev {
                return Err(std::io::Error::other("bind mount not in effect"));
            }
            Ok(())
        });
    }
    let outcome = run_and_judge(&mut cmd)?;
    // Nothing leaked out of the namespace: /dev/udmabuf is still the built-in device here.
    if dev != target {
        let here = std::fs::metadata(target)?.rdev();
        ensure!(here != want_rdev, "the bind mount leaked out of the private namespace");
    }
    Ok(outcome)
}
