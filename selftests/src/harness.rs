//! How one case runs, as kselftest_harness.h runs a TEST: its preconditions (the suite's
//! and its own, [`Require`]) are checked first, then it runs in a forked child, so a failed
//! assertion, a panic or a signal ends that case only and the next case starts from the
//! runner's clean state. What the kernel keeps (a loaded module, a parameter, a mount)
//! carries over from case to case as before; what the test process holds does not. Suites
//! whose cases share process state declare `shared_process` and run in the runner.
//!
//! The child reports through a pipe: `P` (pass), `S` + reason (skip) or `F` + message
//! (fail). A child that dies without a report fails the case with its wait status and, for
//! a panic, the panic message (the release build aborts on panic, so a panic hook writes
//! it before the abort). The child dies with the runner (PR_SET_PDEATHSIG), so the
//! kselftest timeout that kills the runner also ends a hung case.

use crate::ktap::Outcome;
use crate::suites::{Case, Suite};
use crate::util::precondition_of;
use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Once;

/// A case's result as the report shows it: a missing precondition is a skip.
fn outcome_of(r: anyhow::Result<()>) -> Outcome {
    match r {
        Ok(()) => Outcome::Pass,
        Err(e) => match precondition_of(&e) {
            Some(why) => Outcome::Skip(why),
            None => Outcome::Fail(format!("{e:#}")),
        },
    }
}

/// The suite's and the case's preconditions, in that order.
fn preconditions(suite: &Suite, case: &Case) -> anyhow::Result<()> {
    for r in suite.requires.iter().chain(case.requires) {
        r.check()?;
    }
    Ok(())
}

/// Run one case: its preconditions, then its body (in a forked child unless the suite
/// shares the process).
pub fn run_case(suite: &Suite, case: &Case) -> Outcome {
    if let Err(e) = preconditions(suite, case) {
        return outcome_of(Err(e));
    }
    if suite.shared_process {
        return outcome_of((case.run)());
    }
    match in_child(case.run) {
        Ok(o) => o,
        Err(e) => Outcome::Fail(format!("running the case in a child: {e:#}")),
    }
}

fn encode(o: &Outcome) -> String {
    match o {
        Outcome::Pass => "P".into(),
        Outcome::Skip(why) => format!("S{why}"),
        Outcome::Fail(msg) => format!("F{msg}"),
    }
}

fn decode(msg: &str) -> Option<Outcome> {
    let rest = msg.get(1..)?.to_owned();
    match msg.as_bytes().first()? {
        b'P' if rest.is_empty() => Some(Outcome::Pass),
        b'S' => Some(Outcome::Skip(rest)),
        b'F' => Some(Outcome::Fail(rest)),
        _ => None,
    }
}

fn write_all(fd: &OwnedFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}

/// The report pipe of the case running in this process, and the process that owns it
/// (a child the case forks inherits both, and reports its own way).
static REPORT: AtomicI32 = AtomicI32::new(-1);
static REPORTER: AtomicI32 = AtomicI32::new(0);

/// Installed once, before the first fork (setting a hook takes a lock that another thread
/// of the parent could hold at the fork): after the usual message on stderr, a panic in a
/// case's child writes the case's failure to the report pipe.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            let fd = REPORT.load(Ordering::SeqCst);
            if fd < 0 || REPORTER.load(Ordering::SeqCst) != nix::unistd::getpid().as_raw() {
                return;
            }
            let msg = format!("Fpanicked: {info}");
            // SAFETY: `fd` is the write end of this case's report pipe, open until the
            // child exits; this only writes to it.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let _ = nix::unistd::write(fd, msg.as_bytes());
        }));
    });
}

fn in_child(run: fn() -> anyhow::Result<()>) -> anyhow::Result<Outcome> {
    use anyhow::Context;
    install_panic_hook();
    // Close-on-exec: a program a case runs must not keep the report pipe open.
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    let _ = std::io::stdout().flush();
    // SAFETY: the runner is single-threaded between cases (a case joins the threads it
    // starts), so the child may allocate; it leaves through _exit.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => {
            drop(r);
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
            REPORT.store(w.as_raw_fd(), Ordering::SeqCst);
            REPORTER.store(nix::unistd::getpid().as_raw(), Ordering::SeqCst);
            let outcome = match std::panic::catch_unwind(run) {
                Ok(r) => Some(outcome_of(r)),
                Err(_) => None,
            };
            // Nothing to flush: the cases write through `ktap::out`, which flushes every
            // line (and taking the stdout lock here could block on a lock another thread
            // of the parent held at the fork, as in the unit tests).
            let code = match outcome {
                Some(o) => {
                    write_all(&w, encode(&o).as_bytes());
                    0
                }
                None => 1,
            };
            // SAFETY: leaves the child without running the runner's destructors or
            // atexit handlers.
            unsafe { nix::libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(w);
            let (msg, status) = collect(&r, child)?;
            let msg = String::from_utf8_lossy(&msg).into_owned();
            Ok(match (status, decode(&msg)) {
                (WaitStatus::Exited(_, 0), Some(o)) => o,
                (_, Some(Outcome::Fail(m))) => {
                    Outcome::Fail(format!("{m} (the case's process ended with {status:?})"))
                }
                (_, _) if msg.is_empty() => Outcome::Fail(format!(
                    "the case's process ended with {status:?} without a report"
                )),
                (_, _) => Outcome::Fail(format!(
                    "the case's process ended with {status:?}; its report: {msg:?}"
                )),
            })
        }
    }
}

/// The child's report and its wait status. Reads until the pipe's end (the child
/// exited, or closed it); a process the case forked that outlives it may hold the pipe
/// open, so once the child has exited only what is there already is read.
fn collect(r: &OwnedFd, child: nix::unistd::Pid) -> anyhow::Result<(Vec<u8>, WaitStatus)> {
    use anyhow::Context;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::wait::WaitPidFlag;
    let mut msg = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut exited = None;
    loop {
        let mut fds = [PollFd::new(r.as_fd(), PollFlags::POLLIN)];
        let ready = match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(n) => n > 0,
            Err(Errno::EINTR) => false,
            Err(e) => return Err(e).context("poll on the child's report"),
        };
        if ready {
            match nix::unistd::read(r.as_raw_fd(), &mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    msg.extend_from_slice(&chunk[..n]);
                    continue;
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e).context("reading the child's report"),
            }
        }
        if exited.is_some() {
            // Exited, and nothing more to read within 100 ms.
            break;
        }
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
            Ok(s) => exited = Some(s),
            Err(e) => return Err(e).context("waitpid"),
        }
    }
    let status = match exited {
        Some(s) => s,
        None => loop {
            match waitpid(child, None) {
                Err(Errno::EINTR) => continue,
                s => break s.context("waitpid")?,
            }
        },
    };
    Ok((msg, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        for o in [
            Outcome::Pass,
            Outcome::Skip("no huge pages".into()),
            Outcome::Fail("got 1, expected 2".into()),
        ] {
            let back = decode(&encode(&o)).expect("decodes");
            assert_eq!(format!("{back:?}"), format!("{o:?}"));
        }
        assert!(decode("").is_none());
        assert!(decode("Pjunk").is_none());
        assert!(decode("X").is_none());
    }

    #[test]
    fn a_child_failure_is_the_case_failure() {
        let o = in_child(|| anyhow::bail!("boom")).unwrap();
        assert!(matches!(o, Outcome::Fail(ref m) if m == "boom"), "{o:?}");
        let o = in_child(|| Ok(())).unwrap();
        assert!(matches!(o, Outcome::Pass), "{o:?}");
        let o = in_child(|| skip!("not here")).unwrap();
        assert!(
            matches!(o, Outcome::Skip(ref m) if m == "not here"),
            "{o:?}"
        );
    }

    #[test]
    fn a_panic_or_signal_in_the_child_fails_the_case_only() {
        let o = in_child(|| panic!("an assertion")).unwrap();
        assert!(
            matches!(o, Outcome::Fail(ref m) if m.contains("panicked") && m.contains("an assertion")),
            "{o:?}"
        );
        let o = in_child(|| {
            nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM)?;
            Ok(())
        })
        .unwrap();
        assert!(
            matches!(o, Outcome::Fail(ref m) if m.contains("SIGTERM")),
            "{o:?}"
        );
    }
}
