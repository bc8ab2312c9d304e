//! What a VMM needs: a balloon punch really gives memory back (lazy policy), a mapping
//! of the memfd in another process is watched as well as the creator's, watching comes
//! back after the mappings change, and a CPU fault on an unpopulated page brings in
//! that page only. Each case runs under both policies (`live-vmm`, `live-vmm-eager`)
//! and asserts what its policy promises; the built-in driver's behaviour is measured
//! beside ours.

use super::common::*;
use super::live_util::*;
use super::{cases, Require, Suite};
use crate::ktap::{out, CaseResult};
use anyhow::{ensure, Context, Result};
use nix::libc;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};
use udmabuf_live_uapi::*;

pub fn suite() -> Suite {
    Suite::new(
        "live-vmm",
        cases![
            balloon_punch_returns_memory,
            fault_populates_one_page,
            other_process_mapping_is_watched,
            watching_comes_back_after_unmap,
            watched_process_exits,
            watched_process_execs,
            memfd_lifetime_cost,
        ],
    )
    .requires(&[Require::LiveDevice])
}

const MIB: u64 = 1 << 20;

fn lazy() -> bool {
    repopulate_policy() == "lazy"
}

/// Bytes the memfd has allocated (st_blocks).
fn allocated(memfd: &impl AsRawFd) -> Result<u64> {
    let st = nix::sys::stat::fstat(memfd.as_raw_fd()).context("fstat memfd")?;
    Ok(st.st_blocks as u64 * 512)
}

/// MemAvailable in bytes, plus the pages free on the per-CPU lists (see
/// [`udmabuf_live_uapi::sys::free_memory`]).
fn available() -> Result<u64> {
    udmabuf_live_uapi::sys::free_memory().context("MemAvailable and the per-CPU free lists")
}

/// Wait (up to 10 s) until INFO satisfies `done`; the last INFO either way.
fn wait_info(
    dev: &impl AsRawFd,
    buf: &impl AsRawFd,
    done: impl Fn(&UdmabufLiveInfo) -> bool,
) -> Result<UdmabufLiveInfo> {
    let mut last = info(dev, buf)?;
    if !done(&last) {
        crate::util::wait_for(10, || {
            last = info(dev, buf)?;
            Ok(done(&last))
        })?;
    }
    Ok(last)
}

/// What a 32 MiB MADV_REMOVE in a 64 MiB buffer that nobody maps did to memory, on
/// `device`: MemAvailable gained, memfd blocks lost, and the buffer's INFO (ours only).
struct Returned {
    gained: i64,
    blocks_dropped: i64,
}

fn balloon(device: &str) -> Result<(Returned, Option<UdmabufLiveInfo>, Holder)> {
    let size = 64 * MIB;
    let dev = open_device(device)?;
    let memfd = memfd(Backing::Shmem, size)?;
    let map = map_shared(&memfd, size)?;
    map.write(0, &pattern(3, size));
    let buf = create(dev.as_fd(), &memfd, 0, size, 0).context("UDMABUF_CREATE")?;
    let ours = device == crate::util::device_path();
    let (avail, blocks) = (available()?, allocated(&memfd)?);
    madvise_remove(&map, 0, 32 * MIB)?;
    let i = if ours {
        let lazy = lazy();
        Some(wait_info(&dev, &buf, |i| {
            i.state & PENDING == 0 && i.updates > 0 && (!lazy || i.unpopulated == 32 * MIB / ps())
        })?)
    } else {
        // The built-in driver does nothing on a punch: give the page freeing time anyway.
        std::thread::sleep(Duration::from_millis(100));
        None
    };
    let r = Returned {
        gained: available()? as i64 - avail as i64,
        blocks_dropped: blocks as i64 - allocated(&memfd)? as i64,
    };
    Ok((
        r,
        i,
        Holder {
            dev,
            _memfd: memfd,
            map,
            buf,
        },
    ))
}

struct Holder {
    dev: OwnedFd,
    _memfd: OwnedFd,
    map: Mapping,
    buf: OwnedFd,
}

/// A 64 MiB buffer that nobody maps; the VMM's balloon MADV_REMOVEs 32 MiB of its memfd.
/// Lazy: MemAvailable rises by at least 31 MiB and the memfd's blocks drop by 32 MiB, and
/// the buffer is coherent at once when something touches the pages. Eager: the worker
/// fills the hole again at once. Built-in: the memfd has a hole but its old pages stay
/// pinned, so no memory comes back.
fn balloon_punch_returns_memory() -> CaseResult {
    let (r, i, h) = balloon(&test_device())?;
    let i = i.context("INFO")?;
    out(&format!(
        "    # {} policy: MemAvailable (+ per-CPU free lists) {:+} KiB, memfd blocks -{} KiB, INFO unpopulated {} pages",
        repopulate_policy(),
        r.gained / 1024,
        r.blocks_dropped / 1024,
        i.unpopulated
    ));
    let pages = 64 * MIB / ps();
    if lazy() {
        ensure!(
            i.unpopulated == 32 * MIB / ps(),
            "lazy: INFO unpopulated {} pages, expected the 32 MiB punched: {i:?}",
            i.unpopulated
        );
        ensure!(r.gained >= 31 * MIB as i64, "lazy: MemAvailable (with the per-CPU free lists) rose by {} KiB, expected at least 31 MiB", r.gained / 1024);
        ensure!(
            r.blocks_dropped == 32 * MIB as i64,
            "lazy: memfd blocks dropped by {} KiB, expected 32 MiB",
            r.blocks_dropped / 1024
        );
        let hole = nix::unistd::lseek(h._memfd.as_raw_fd(), 0, nix::unistd::Whence::SeekHole)
            .context("SEEK_HOLE")?;
        ensure!(
            hole == 0,
            "lazy: SEEK_HOLE found the first hole at {hole}, expected 0 (the punched half)"
        );
        let v = verify(&h.dev, &h.buf)?;
        ensure!(
            v.unpopulated == 32 * MIB / ps()
                && v.matching == pages - v.unpopulated
                && v.stale + v.holes == 0,
            "lazy: VERIFY {v:?}: expected the unpopulated pages counted as coherent"
        );
        // Touching the pages brings them in, coherent at once: zeros where the punch was.
        let bmap = map_shared(&h.buf, 64 * MIB)?;
        expect_bytes(
            "dma-buf over the punched half",
            &bmap.read(0, 32 * MIB),
            &vec![0; (32 * MIB) as usize],
        )?;
        expect_bytes(
            "dma-buf over the kept half",
            &bmap.read(32 * MIB, 32 * MIB),
            &pattern(3, 64 * MIB)[(32 * MIB) as usize..],
        )?;
        h.map.write(0, &[0x5a; 4096]);
        ensure!(
            bmap.read(0, 4096) == vec![0x5a; 4096],
            "dma-buf does not show a write through the memfd after the pages came back"
        );
    } else {
        ensure!(
            i.unpopulated == 0,
            "eager: INFO unpopulated {}, expected 0: {i:?}",
            i.unpopulated
        );
        ensure!(
            r.blocks_dropped == 0,
            "eager: memfd blocks dropped by {} KiB, expected the hole filled again",
            r.blocks_dropped / 1024
        );
        expect_all_matching("eager, after the balloon punch", &h.dev, &h.buf, pages)?;
    }
    drop(h);
    // The anchor: the built-in driver keeps the old pages pinned.
    if std::path::Path::new(REFERENCE_DEVICE).exists() {
        let (b, _, held) = balloon(REFERENCE_DEVICE)?;
        out(&format!(
            "    # built-in {REFERENCE_DEVICE}: MemAvailable (+ per-CPU free lists) {:+} KiB, memfd blocks -{} KiB (its old pages stay pinned)",
            b.gained / 1024,
            b.blocks_dropped / 1024
        ));
        ensure!(
            b.blocks_dropped == 32 * MIB as i64,
            "built-in: memfd blocks dropped by {} KiB, expected 32 MiB",
            b.blocks_dropped / 1024
        );
        ensure!(b.gained < 8 * MIB as i64, "built-in: MemAvailable (with the per-CPU free lists) rose by {} KiB: its pinned pages were freed?", b.gained / 1024);
        drop(held);
    }
    Ok(())
}

/// Lazy: after a punch of 4 pages, a CPU read through the dma-buf's mmap of one of them
/// brings in that page only. Eager: nothing is left unpopulated.
fn fault_populates_one_page() -> CaseResult {
    let size = 64 * ps();
    let w = watched(Backing::Shmem, size, 9)?;
    let bmap = map_shared(&w.buf, size)?;
    ensure!(
        bmap.read(0, size) == pattern(9, size),
        "dma-buf before the punch"
    );
    madvise_remove(&w.map, 8 * ps(), 4 * ps())?;
    let want = if lazy() { 4 } else { 0 };
    let i = wait_info(&w.dev, &w.buf, |i| {
        i.state & PENDING == 0 && i.updates > 0 && i.unpopulated == want
    })?;
    ensure!(
        i.unpopulated == want && i.updates > 0,
        "after punching 4 pages: INFO {i:?}, expected {want} unpopulated"
    );
    ensure!(
        bmap.read(9 * ps(), 1) == [0],
        "the punched page through the dma-buf: not zero"
    );
    let i = w.info()?;
    let want = if lazy() { 3 } else { 0 };
    ensure!(
        i.unpopulated == want,
        "after reading one punched page: INFO unpopulated {}, expected {want}",
        i.unpopulated
    );
    expect_bytes(
        "dma-buf after the punch",
        &bmap.read(8 * ps(), 4 * ps()),
        &vec![0; 4 * ps() as usize],
    )?;
    Ok(())
}

/// A child process that maps a memfd and punches and writes it on request.
struct Mapper {
    pid: nix::unistd::Pid,
    cmd: OwnedFd,
    reply: OwnedFd,
}

impl Mapper {
    /// Fork a child that maps `memfd` (`size` bytes) and then serves commands.
    fn spawn(memfd: &OwnedFd, size: u64) -> Result<Self> {
        use nix::unistd::{fork, pipe, ForkResult};
        let (cmd_r, cmd_w) = pipe().context("pipe")?;
        let (rep_r, rep_w) = pipe().context("pipe")?;
        // SAFETY: the runner is single-threaded here; the child leaves through _exit.
        match unsafe { fork() }.context("fork")? {
            ForkResult::Child => {
                drop((cmd_w, rep_r));
                let code = match map_shared(memfd, size) {
                    Ok(map) => {
                        let _ = nix::unistd::write(&rep_w, b"r");
                        serve(&map, &cmd_r, &rep_w)
                    }
                    Err(_) => 1,
                };
                // SAFETY: leaves the child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                let m = Self {
                    pid: child,
                    cmd: cmd_w,
                    reply: rep_r,
                };
                m.wait_reply("map the memfd")?;
                Ok(m)
            }
        }
    }

    fn wait_reply(&self, what: &str) -> Result<()> {
        let mut b = [0u8; 1];
        let n =
            nix::unistd::read(self.reply.as_raw_fd(), &mut b).context("read the child's reply")?;
        ensure!(n == 1 && b[0] == b'r', "child: {what} failed");
        Ok(())
    }

    /// In the child: MADV_REMOVE page `page` and write `byte` over it, through its mapping.
    fn punch_and_write(&self, page: u8, byte: u8) -> Result<()> {
        nix::unistd::write(&self.cmd, &[b'p', page, byte]).context("ask the child")?;
        self.wait_reply("punch and write")
    }

    /// Have the child exec a shell that sleeps (its address space, with the mapping, goes);
    /// kill and reap it later with `kill`.
    fn exec_sleeper(&self) -> Result<()> {
        nix::unistd::write(&self.cmd, &[b'e', 0, 0]).context("ask the child")?;
        Ok(())
    }

    /// Kill the child and reap it.
    fn kill(self) -> Result<()> {
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        nix::sys::wait::waitpid(self.pid, None).context("waitpid")?;
        Ok(())
    }

    /// End the child and reap it.
    fn exit(self) -> Result<()> {
        nix::unistd::write(&self.cmd, &[b'q', 0, 0]).context("ask the child")?;
        let st = nix::sys::wait::waitpid(self.pid, None).context("waitpid")?;
        ensure!(
            st == nix::sys::wait::WaitStatus::Exited(self.pid, 0),
            "child ended with {st:?}"
        );
        Ok(())
    }
}

/// The child's command loop: `p PAGE BYTE` punches and writes, `q` ends.
fn serve(map: &Mapping, cmd: &OwnedFd, reply: &OwnedFd) -> i32 {
    let mut c = [0u8; 3];
    loop {
        match nix::unistd::read(cmd.as_raw_fd(), &mut c) {
            Ok(3) if c[0] == b'e' => {
                let sh = c"/bin/sh";
                let _ = nix::unistd::execv(sh, &[c"sh", c"-c", c"sleep 30"]);
                return 1;
            }
            Ok(3) if c[0] == b'p' => {
                let off = c[1] as u64 * ps();
                if madvise_remove(map, off, ps()).is_err() {
                    return 1;
                }
                map.write(off, &vec![c[2]; ps() as usize]);
                let _ = nix::unistd::write(reply, b"r");
            }
            _ => return 0,
        }
    }
}

/// After another process's punch and write of `page`: the worker applies it (no SYNC,
/// no map) and the dma-buf shows `byte` there.
fn expect_followed(
    what: &str,
    dev: &OwnedFd,
    buf: &OwnedFd,
    before: &UdmabufLiveInfo,
    page: u64,
    byte: u8,
) -> Result<()> {
    let i = wait_info(dev, buf, |i| {
        i.updates > before.updates && i.state & PENDING == 0
    })?;
    ensure!(
        i.updates > before.updates,
        "{what}: no update applied within 10 s of the punch (no SYNC): {i:?}"
    );
    let bmap = map_shared(buf, 16 * ps())?;
    expect_bytes(
        what,
        &bmap.read(page * ps(), ps()),
        &vec![byte; ps() as usize],
    )
}

/// A 16-page buffer whose memfd only a child process maps (the creator wrote it with
/// pwrite): the child's mapping is watched.
struct ChildMapped {
    dev: OwnedFd,
    memfd: OwnedFd,
    child: Mapper,
    buf: OwnedFd,
}

fn child_mapped(seed: u8) -> Result<ChildMapped> {
    let size = 16 * ps();
    let dev = open_device(&test_device())?;
    let memfd = memfd(Backing::Shmem, size)?;
    fill_memfd(&memfd, size, 0, &pattern(seed, size))?;
    let child = Mapper::spawn(&memfd, size)?;
    let buf = create(dev.as_fd(), &memfd, 0, size, 0).context("UDMABUF_CREATE")?;
    let i = info(&dev, &buf)?;
    expect_state("created while a child maps the memfd", &i, WATCHED, 0)?;
    ensure!(
        i.notifiers == 1,
        "INFO notifiers {}, expected the child's mapping: {i:?}",
        i.notifiers
    );
    Ok(ChildMapped {
        dev,
        memfd,
        child,
        buf,
    })
}

/// The creator never maps the memfd; a child process does. The child's mapping is
/// watched: its punch and write reach the dma-buf without a SYNC.
fn other_process_mapping_is_watched() -> CaseResult {
    let ChildMapped {
        dev,
        memfd: _memfd,
        child,
        buf,
    } = child_mapped(4)?;
    let before = info(&dev, &buf)?;
    child.punch_and_write(5, 0xc3)?;
    expect_followed("the child's punch and write", &dev, &buf, &before, 5, 0xc3)?;
    child.exit()?;
    Ok(())
}

/// The creator unmaps the memfd (unwatched); a new process maps it. After one sync
/// point (SYNC) the new mapping is watched and its punches are applied asynchronously.
fn watching_comes_back_after_unmap() -> CaseResult {
    let size = 16 * ps();
    let w = watched(Backing::Shmem, size, 6)?;
    drop(w.map);
    expect_unwatched("after the creator's munmap", &info(&w.dev, &w.buf)?)?;
    let child = Mapper::spawn(&w.memfd, size)?;
    sync(&w.dev, &w.buf, 0)?;
    let before = info(&w.dev, &w.buf)?;
    expect_state(
        "a new process maps the memfd, after one SYNC",
        &before,
        WATCHED,
        PENDING,
    )?;
    ensure!(
        before.notifiers == 1,
        "INFO notifiers {}, expected the new mapping: {before:?}",
        before.notifiers
    );
    child.punch_and_write(2, 0x3c)?;
    expect_followed(
        "the new process's punch and write",
        &w.dev,
        &w.buf,
        &before,
        2,
        0x3c,
    )?;
    child.exit()?;
    Ok(())
}

/// INFO `i` once the last watching mapping is gone: not WATCHED, and no notifier left.
fn expect_unwatched(what: &str, i: &UdmabufLiveInfo) -> Result<()> {
    expect_state(what, i, 0, WATCHED)?;
    ensure!(
        i.notifiers == 0,
        "{what}: INFO notifiers {}, expected 0",
        i.notifiers
    );
    Ok(())
}

/// With nobody watching, page `page` punched and refilled with `byte` through pwrite
/// reaches the buffer at SYNC, as a fresh mmap of the `size`-byte dma-buf shows.
fn expect_refill_synced(
    what: &str,
    dev: &OwnedFd,
    memfd: &OwnedFd,
    buf: &OwnedFd,
    size: u64,
    page: u64,
    byte: u8,
) -> Result<()> {
    punch(memfd, page * ps(), ps())?;
    pwrite(memfd, page * ps(), &vec![byte; ps() as usize])?;
    sync(dev, buf, 0)?;
    let bmap = map_shared(buf, size)?;
    expect_bytes(
        what,
        &bmap.read(page * ps(), ps()),
        &vec![byte; ps() as usize],
    )
}

/// The only watched mapping belongs to a process that exits while the buffer lives:
/// the buffer becomes unwatched, its notifier goes at the next sync point, and it stays
/// coherent (SYNC after a punch through the memfd fd).
fn watched_process_exits() -> CaseResult {
    let size = 16 * ps();
    let ChildMapped {
        dev,
        memfd,
        child,
        buf,
    } = child_mapped(8)?;
    child.exit()?;
    expect_unwatched("after the watched process exited", &info(&dev, &buf)?)?;
    expect_refill_synced(
        "after the punch and SYNC",
        &dev,
        &memfd,
        &buf,
        size,
        3,
        0x77,
    )?;
    expect_all_matching("after the punch and SYNC", &dev, &buf, 16)?;
    Ok(())
}

/// What a buffer keeps alive of a memfd whose every fd and mapping is closed: a 4 KiB
/// buffer over a filled 32 MiB memfd. Ours holds the file, so all 32 MiB stay until the
/// buffer goes; the built-in driver holds only its pinned folio. Measured (Shmem in
/// /proc/meminfo), printed, and each driver's behaviour asserted.
fn memfd_lifetime_cost() -> CaseResult {
    let size = 32 * MIB;
    let shmem = || -> Result<i64> { Ok(meminfo("Shmem")? as i64 * 1024) };
    let mut freed = Vec::new();
    for device in devices_to_compare() {
        let dev = open_device(&device)?;
        let memfd = memfd(Backing::Shmem, size)?;
        fill_memfd(&memfd, size, 0, &pattern(1, size))?;
        let buf = create(dev.as_fd(), &memfd, 0, ps(), 0).context("UDMABUF_CREATE")?;
        let s0 = shmem()?;
        drop(memfd);
        std::thread::sleep(Duration::from_millis(50));
        let s1 = shmem()?;
        drop(buf);
        let t0 = Instant::now();
        let mut s2 = shmem()?;
        while s0 - s2 < 31 * MIB as i64 && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
            s2 = shmem()?;
        }
        out(&format!(
            "    # {device}: closing the memfd freed {} KiB, closing the 4 KiB buffer then {} KiB",
            (s0 - s1) / 1024,
            (s1 - s2) / 1024
        ));
        freed.push((device, s0 - s1, s1 - s2));
    }
    for (device, at_memfd_close, at_buffer_close) in freed {
        if device == crate::util::device_path() {
            ensure!(
                at_buffer_close >= 31 * MIB as i64,
                "{device}: closing the buffer freed {} KiB, expected the memfd's 32 MiB",
                at_buffer_close / 1024
            );
        } else {
            ensure!(
                at_memfd_close >= 31 * MIB as i64,
                "{device}: closing the memfd freed {} KiB, expected all but the pinned page",
                at_memfd_close / 1024
            );
        }
    }
    Ok(())
}

/// The only watched mapping belongs to a process that execs: its old address space goes,
/// the buffer becomes unwatched, and it stays coherent through SYNC.
fn watched_process_execs() -> CaseResult {
    let size = 16 * ps();
    let ChildMapped {
        dev,
        memfd,
        child,
        buf,
    } = child_mapped(2)?;
    child.exec_sleeper()?;
    let i = wait_info(&dev, &buf, |i| i.state & WATCHED == 0)?;
    let result = (|| -> Result<()> {
        expect_unwatched("after the watched process exec'd", &i)?;
        expect_refill_synced(
            "after exec, punch and SYNC",
            &dev,
            &memfd,
            &buf,
            size,
            5,
            0x42,
        )
    })();
    child.kill()?;
    result?;
    Ok(())
}
