//! The kernel's own udmabuf kselftest (tools/testing/selftests/drivers/dma-buf/udmabuf.c),
//! built unchanged from the same kernel tree. It exits 0 even when a test fails, so its
//! TAP lines are read here: every planned test must report `ok`, none skipped.
//!
//! It is found at `$ULIVE_UPSTREAM_KSELFTEST`, else where the kselftest collection
//! installs it (`../drivers/dma-buf/udmabuf` from this program); none is a missing
//! precondition (skip).
//!
//! The binary opens the hard-coded /dev/udmabuf. To run it against the device under test
//! without touching the rest of the guest, the child gets a private mount namespace in
//! which the device under test is bind-mounted over /dev/udmabuf.
//!
//! That child is forked here rather than through `Command::pre_exec`: std's fork path
//! reports exec errors over an AF_UNIX socketpair, and the test kernel has no CONFIG_NET
//! (socketpair gives ENOSYS), so `pre_exec` cannot work in this guest.

use super::{cases, Suite};
use crate::ktap::{out, CaseResult};
use anyhow::{bail, ensure, Context};

/// The upstream kselftest binary (see the module comment).
fn kselftest() -> anyhow::Result<String> {
    let path = match std::env::var_os("ULIVE_UPSTREAM_KSELFTEST") {
        Some(p) => std::path::PathBuf::from(p),
        None => std::env::current_exe()?
            .parent()
            .context("no directory for this program")?
            .join("../drivers/dma-buf/udmabuf"),
    };
    if !path.is_file() {
        return Err(crate::util::precondition(format!(
            "no upstream udmabuf kselftest at {} (set ULIVE_UPSTREAM_KSELFTEST)",
            path.display()
        )));
    }
    Ok(path.to_string_lossy().into_owned())
}

pub fn suite() -> Suite {
    Suite::new(
        "upstream-kselftest",
        cases![builtin_udmabuf_passes_all, test_device_passes_all],
    )
}

/// Run the binary and judge its TAP output; its lines are echoed as diagnostics.
pub fn run_and_judge(cmd: &mut std::process::Command) -> CaseResult {
    let output = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    judge(&output.stdout, &output.stderr)
}

/// Judge captured kselftest output: every planned test `ok`, none skipped.
fn judge(stdout: &[u8], stderr: &[u8]) -> CaseResult {
    let text = String::from_utf8_lossy(stdout);
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
    for line in String::from_utf8_lossy(stderr).lines() {
        out(&format!("    # stderr| {line}"));
    }
    let Some(plan) = plan else {
        bail!("no plan line in the kselftest output")
    };
    if !bad.is_empty() {
        bail!(
            "{} of {plan} upstream tests failed: {}",
            bad.len(),
            bad.join("; ")
        );
    }
    if skip > 0 {
        bail!("{skip} of {plan} upstream tests skipped (hugepages reserved? memory?)");
    }
    if ok != plan {
        bail!("{ok} of {plan} planned upstream tests reported ok");
    }
    Ok(())
}

fn builtin_udmabuf_passes_all() -> CaseResult {
    if !std::path::Path::new("/dev/udmabuf").exists() {
        bail!("/dev/udmabuf missing: the test kernel needs CONFIG_UDMABUF=y");
    }
    run_and_judge(&mut std::process::Command::new(kselftest()?))
}

/// The same kselftest with the device under test (ULIVE_TEST_DEVICE, default
/// /dev/udmabuf-live) bind-mounted over /dev/udmabuf in a private mount namespace.
fn test_device_passes_all() -> CaseResult {
    use std::os::unix::fs::MetadataExt;
    let dev = super::common::test_device();
    let target = "/dev/udmabuf";
    let want_rdev = std::fs::metadata(&dev)
        .with_context(|| format!("stat {dev}"))?
        .rdev();
    let builtin_rdev = std::fs::metadata(target)
        .with_context(|| format!("{target}: nothing to bind-mount over"))?
        .rdev();
    let (stdout, stderr) = run_in_private_ns(&dev, target, want_rdev)?;
    // Nothing leaked out of the namespace: /dev/udmabuf here is still the built-in device.
    let here = std::fs::metadata(target)?.rdev();
    ensure!(
        here == builtin_rdev,
        "{target} changed outside the private namespace (bind mount leaked)"
    );
    judge(&stdout, &stderr)
}

/// Exit status of the child when setting up the namespace failed (it says why on stderr).
const NS_SETUP_FAILED: i32 = 125;

/// Fork; in the child: unshare(CLONE_NEWNS), make / recursively private, bind `src` over
/// `dst`, check the bind took (rdev), and exec the kselftest. Returns its stdout, stderr.
fn run_in_private_ns(src: &str, dst: &str, want_rdev: u64) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{dup2, execv, fork, ForkResult};
    use std::ffi::{CStr, CString};
    use std::io::Read;
    use std::os::fd::AsRawFd;

    // Everything the child needs is prepared before the fork: it must not allocate.
    let src_c = CString::new(src)?;
    let dst_c = CString::new(dst)?;
    let prog = CString::new(kselftest()?)?;
    let argv = [prog.as_c_str()];
    let (out_r, out_w) = nix::unistd::pipe().context("pipe")?;
    let (err_r, err_w) = nix::unistd::pipe().context("pipe")?;

    // SAFETY: the runner is single-threaded; the child only makes system calls on data
    // prepared above and leaves through execv or _exit.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => {
            let fail = |msg: &[u8]| -> ! {
                // SAFETY: write(2) and _exit(2) are async-signal-safe.
                unsafe {
                    nix::libc::write(2, msg.as_ptr().cast(), msg.len());
                    nix::libc::_exit(NS_SETUP_FAILED)
                }
            };
            if dup2(out_w.as_raw_fd(), 1).is_err() || dup2(err_w.as_raw_fd(), 2).is_err() {
                fail(b"dup2 failed\n");
            }
            if unshare(CloneFlags::CLONE_NEWNS).is_err() {
                fail(b"unshare(CLONE_NEWNS) failed\n");
            }
            let none: Option<&CStr> = None;
            if mount(
                none,
                c"/",
                none,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                none,
            )
            .is_err()
            {
                fail(b"mount(/, MS_REC|MS_PRIVATE) failed\n");
            }
            if mount(
                Some(src_c.as_c_str()),
                dst_c.as_c_str(),
                none,
                MsFlags::MS_BIND,
                none,
            )
            .is_err()
            {
                fail(b"bind mount of the test device failed\n");
            }
            match nix::sys::stat::stat(dst_c.as_c_str()) {
                Ok(st) if st.st_rdev == want_rdev => {}
                _ => fail(b"the bind mount is not in effect\n"),
            }
            let _ = execv(&prog, &argv);
            fail(b"execv of the kselftest failed\n")
        }
        ForkResult::Parent { child } => {
            drop((out_w, err_w));
            // stderr is small (the kselftest prints through stdout): read stdout to EOF
            // first, then stderr.
            let mut stdout = Vec::new();
            std::fs::File::from(out_r)
                .read_to_end(&mut stdout)
                .context("read the kselftest's stdout")?;
            let mut stderr = Vec::new();
            std::fs::File::from(err_r)
                .read_to_end(&mut stderr)
                .context("read the kselftest's stderr")?;
            match waitpid(child, None).context("waitpid")? {
                WaitStatus::Exited(_, NS_SETUP_FAILED) => {
                    bail!(
                        "setting up the private namespace failed: {}",
                        String::from_utf8_lossy(&stderr).trim()
                    )
                }
                WaitStatus::Exited(..) => {}
                other => bail!("the kselftest did not exit normally: {other:?}"),
            }
            Ok((stdout, stderr))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::judge;

    const HDR: &str = "TAP version 13\n1..3\n";

    #[test]
    fn all_ok_passes() {
        let out = format!("{HDR}ok 1 a\nok 2 b\nok 3 c\n");
        assert!(matches!(judge(out.as_bytes(), b""), Ok(())));
    }

    #[test]
    fn failure_skip_short_or_planless_output_fails() {
        for out in [
            format!("{HDR}ok 1 a\nnot ok 2 b\nok 3 c\n"),
            format!("{HDR}ok 1 a\nok 2 b # SKIP no hugepages\nok 3 c\n"),
            format!("{HDR}ok 1 a\nok 2 b\n"),
            "ok 1 a\n".to_owned(),
        ] {
            assert!(
                judge(out.as_bytes(), b"").is_err(),
                "{out:?} was judged a pass"
            );
        }
    }
}
