//! Buffers going away while live updates are under way must leave nothing behind: the
//! dma-buf closed right after a punch (update pending, worker queued or running), with
//! and without a thread writing the memfd meanwhile; closed while the memfd mapping its
//! notifiers watch lives on (later punches through it must not reach the freed buffer);
//! a child that creates, punches and exits without closing anything; and a buffer that
//! outlives the process (and mm) whose mappings it watched; a stale buffer (new pages
//! deferred by a static import) whose user and then importer go away. Each case checks
//! that the module's refcount is back at its base (and, with hugetlb, that every huge
//! page is free again), and that the memfd still works.

use super::common::*;
use super::importer_client::{Attach, Importer};
use super::live_util::*;
use super::{cases, Require, Suite};
use crate::ktap::CaseResult;
use crate::util::wait_for;
use anyhow::{bail, ensure, Context, Result};
use nix::libc;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub fn suite() -> Suite {
    Suite::new(
        "live-close",
        cases![
            close_while_pending,
            close_while_pending_hugetlb,
            close_while_pending_with_writer,
            close_then_punch_through_live_mapping,
            close_while_stale_static_import,
            close_while_stale_importer_fd_closed,
            hugepages_back_at_last_close_after_munmap,
            close_during_worker_retries_is_prompt,
            child_creates_punches_exits,
            buffer_outlives_creator_process,
        ],
    )
    .requires(&[Require::LiveDevice])
}

fn base_refcnt() -> Result<u64> {
    module_refcnt()
}

/// `rounds` times: create over a mapped memfd, punch, close the dma-buf at once. The
/// memfd and its mapping stay and must keep working.
fn close_while_pending_rounds(kind: Backing, size: u64, rounds: u64, hole: u64) -> Result<()> {
    let base = base_refcnt()?;
    let free = hugepages_free()?;
    let pages = size / hole;
    {
        let dev = open_device(&test_device())?;
        let memfd = memfd(kind, size)?;
        let map = map_shared(&memfd, size)?;
        map.write(0, &pattern(40, size));
        for r in 0..rounds {
            let buf = create(dev.as_fd(), &memfd, 0, size, 0)
                .with_context(|| format!("round {r}: UDMABUF_CREATE"))?;
            let off = (r % pages) * hole;
            punch(&memfd, off, hole)?;
            if r % 2 == 1 {
                // Also punch through the mapping, right before the close.
                madvise_remove(&map, ((r + 1) % pages) * hole, hole)?;
            }
            drop(buf);
        }
        map.write(0, &pattern(41, size));
        expect_pattern("memfd after the closes", &map, 41, size)?;
        // A buffer made now starts on the memfd's current pages.
        let buf =
            create(dev.as_fd(), &memfd, 0, size, 0).context("UDMABUF_CREATE after the closes")?;
        let bmap = map_shared(&buf, size)?;
        expect_pattern("new buffer after the closes", &bmap, 41, size)?;
        expect_all_matching("new buffer after the closes", &dev, &buf, size / ps())?;
    }
    expect_refcnt(&format!("after {rounds} punch-and-close rounds"), base)?;
    expect_hugepages_free(&format!("after {rounds} punch-and-close rounds"), free)
}

/// How long to wait for huge pages to come back before calling them leaked.
const FREE_TIMEOUT: Duration = Duration::from_secs(5);

/// Wait until HugePages_Free is back at `base`; how long it took (zero if it already
/// was). Fails after FREE_TIMEOUT: the pages leaked.
fn wait_hugepages_free(what: &str, base: u64) -> Result<Duration> {
    let t0 = Instant::now();
    let mut at_once = true;
    loop {
        let now = hugepages_free()?;
        if now == base {
            return Ok(if at_once {
                Duration::ZERO
            } else {
                t0.elapsed()
            });
        }
        at_once = false;
        ensure!(t0.elapsed() < FREE_TIMEOUT, "{what}: HugePages_Free {now}, {base} before, after {FREE_TIMEOUT:?} (huge pages leaked)");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every huge page is free again once the memfds and buffers are gone, at once, as with
/// upstream udmabuf (its kselftest creates the next 2 GiB hugetlb memfd right after
/// closing the last one). Pages that come back only later fail, saying how late.
fn expect_hugepages_free(what: &str, base: u64) -> Result<()> {
    let lag = wait_hugepages_free(what, base)?;
    ensure!(
        lag.is_zero(),
        "{what}: huge pages came back {} ms after the last close, not at once",
        lag.as_millis()
    );
    Ok(())
}

fn close_while_pending() -> CaseResult {
    close_while_pending_rounds(Backing::Shmem, 16 * ps(), 40, ps())?;
    Ok(())
}

fn close_while_pending_hugetlb() -> CaseResult {
    close_while_pending_rounds(Backing::Hugetlb, 2 * HUGE_PAGE, 8, HUGE_PAGE)?;
    Ok(())
}

/// A thread writes the memfd through its mapping without pause (re-faulting punched
/// pages) while the main thread creates, punches, sometimes SYNCs, and closes.
fn close_while_pending_with_writer() -> CaseResult {
    let base = base_refcnt()?;
    let pages = 16;
    let size = pages * ps();
    {
        let dev = open_device(&test_device())?;
        let memfd = memfd(Backing::Shmem, size)?;
        let map = map_shared(&memfd, size)?;
        map.write(0, &pattern(42, size));
        let (addr, stop, writes) = (map.addr(), AtomicBool::new(false), AtomicU64::new(0));
        let result = std::thread::scope(|s| -> Result<()> {
            s.spawn(|| {
                let mut rng = XorShift::new(0x3717);
                while !stop.load(Ordering::Relaxed) {
                    let off = rng.below(size / 8) * 8;
                    // SAFETY: in bounds of `map`, which outlives this scope; plain stores
                    // to shared memory that other mappings may also change.
                    unsafe {
                        std::ptr::write_volatile((addr + off as usize) as *mut u64, rng.next())
                    };
                    writes.fetch_add(1, Ordering::Relaxed);
                }
            });
            let r = (|| -> Result<()> {
                let mut rng = XorShift::new(0x5eed);
                for r in 0..60u32 {
                    let buf = create(dev.as_fd(), &memfd, 0, size, 0)
                        .with_context(|| format!("round {r}: UDMABUF_CREATE"))?;
                    let p = rng.below(pages);
                    punch(&memfd, p * ps(), ps())?;
                    if r % 3 == 1 {
                        sync(&dev, &buf, 0)
                            .with_context(|| format!("round {r}: SYNC with a writer running"))?;
                    }
                    drop(buf);
                }
                Ok(())
            })();
            stop.store(true, Ordering::Relaxed);
            r
        });
        result?;
        ensure!(
            writes.load(Ordering::Relaxed) > 0,
            "the writer thread never wrote"
        );
        map.write(0, &pattern(43, size));
        expect_bytes(
            "memfd after the writer stopped",
            &pread(&memfd, 0, size)?,
            &pattern(43, size),
        )?;
    }
    expect_refcnt("after punch-and-close rounds with a writer", base)?;
    Ok(())
}

/// Close the dma-buf (and the device) while the memfd mapping its notifiers watched is
/// still alive, then punch through that mapping both ways: nothing may reach the freed
/// buffer, the refcount is back at once, and the memfd behaves as a memfd.
fn close_then_punch_through_live_mapping() -> CaseResult {
    let base = base_refcnt()?;
    let size = 16 * ps();
    let memfd = memfd(Backing::Shmem, size)?;
    let map = map_shared(&memfd, size)?;
    map.write(0, &pattern(44, size));
    {
        let dev = open_device(&test_device())?;
        let buf = create(dev.as_fd(), &memfd, 0, size, 0).context("UDMABUF_CREATE")?;
        expect_state("created", &info(&dev, &buf)?, WATCHED, 0)?;
    }
    expect_refcnt("after closing the dma-buf and the device", base)?;
    punch(&memfd, 2 * ps(), 2 * ps())?;
    madvise_remove(&map, 8 * ps(), 4 * ps())?;
    let mut want = pattern(44, size);
    for p in [2, 3, 8, 9, 10, 11] {
        want[(p * ps()) as usize..((p + 1) * ps()) as usize].fill(0);
    }
    expect_bytes(
        "memfd after punches with the buffer gone",
        &map.read(0, size),
        &want,
    )?;
    map.write(0, &pattern(45, size));
    expect_bytes(
        "memfd written after the punches",
        &pread(&memfd, 0, size)?,
        &pattern(45, size),
    )?;
    drop(map);
    expect_refcnt("after the punches and the munmap", base)?;
    Ok(())
}

/// A static import pins a hugetlb buffer; a punch leaves new pages waiting (stale); the
/// user closes every fd of theirs. When the import goes (its release, or the importer's
/// fd closing), the deferred pages go in or are dropped with the buffer: no reference
/// and no huge page may stay behind.
fn close_while_stale(close_importer_fd: bool) -> Result<()> {
    let base = base_refcnt()?;
    let free = hugepages_free()?;
    let size = 2 * HUGE_PAGE;
    let imp = Importer::open()?;
    {
        let dev = open_device(&test_device())?;
        let memfd = memfd(Backing::Hugetlb, size)?;
        let map = map_shared(&memfd, size)?;
        map.write(0, &pattern(50, size));
        let buf = create(dev.as_fd(), &memfd, 0, size, 0).context("UDMABUF_CREATE")?;
        imp.import(&buf, Attach::Static).context("static import")?;
        punch(&memfd, 0, HUGE_PAGE)?;
        map.write(0, &pattern(51, size));
        let r = sync_raw(&dev, fdnum(&buf), 0);
        ensure!(
            r == Err(nix::errno::Errno::ETIMEDOUT),
            "SYNC while statically imported: {r:?}, expected ETIMEDOUT"
        );
        expect_state("punched while imported", &info(&dev, &buf)?, STALE, 0)?;
    }
    ensure!(
        module_refcnt()? > base,
        "the import holds the only reference, yet the refcount is back at {base}"
    );
    if close_importer_fd {
        drop(imp);
    } else {
        imp.release().context("release the import")?;
        drop(imp);
    }
    expect_refcnt("after the import of a stale buffer went", base)?;
    expect_hugepages_free("after the import of a stale buffer went", free)?;
    Ok(())
}

fn close_while_stale_static_import() -> CaseResult {
    close_while_stale(false)?;
    Ok(())
}

fn close_while_stale_importer_fd_closed() -> CaseResult {
    close_while_stale(true)?;
    Ok(())
}

/// The common teardown order: munmap the memfd, close the dma-buf, close the memfd.
/// The munmap fires the buffer's notifier, which queues its worker; the worker's
/// reference on the buffer holds the memfd open. Upstream udmabuf unpins in its release
/// op and holds no memfd reference, so its huge pages are back once the memfd is closed:
/// asserted for the reference device too (the anchor), then for the device under test.
fn hugepages_back_at_last_close_after_munmap() -> CaseResult {
    for dev_path in [REFERENCE_DEVICE.to_owned(), test_device()] {
        let base = base_refcnt()?;
        let free = hugepages_free()?;
        let size = 2 * HUGE_PAGE;
        for r in 0..10 {
            let what = format!("{dev_path}, round {r}: after munmap + close");
            {
                let dev = open_device(&dev_path)?;
                let memfd = memfd(Backing::Hugetlb, size)?;
                let map = map_shared(&memfd, size)?;
                map.write(0, &pattern(52, size));
                let buf = create(dev.as_fd(), &memfd, 0, size, 0)
                    .with_context(|| format!("{what}: UDMABUF_CREATE"))?;
                drop(map);
                drop(buf);
                drop(memfd);
            }
            expect_refcnt(&what, base)?;
            expect_hugepages_free(&what, free)?;
        }
    }
    Ok(())
}

/// A worker whose update keeps failing (test hook `test_fail_swaps`) pauses between
/// its tries, up to 512 ms before the last one. Release waits for the worker (see above),
/// so it must cut that pause short: a close during it returns at once, and the worker
/// makes no further try.
fn close_during_worker_retries_is_prompt() -> CaseResult {
    let dev = test_device();
    let w = watched(Backing::Shmem, 16 * ps(), 3)?;
    let _fail = ParamGuard::set(&dev, "test_fail_swaps", WORKER_TRIES)
        .context("test hook test_fail_swaps")?;
    let left = || read_param(&dev, "test_fail_swaps").context("reading test_fail_swaps");
    punch(&w.memfd, 0, ps())?;
    // One failure left: the worker has failed every try but the last and is in its
    // longest pause.
    ensure!(
        wait_for(5, || Ok(left()? <= 1))?,
        "the worker did not fail {} tries within 5 s",
        WORKER_TRIES - 1
    );
    let t0 = Instant::now();
    drop(w.buf);
    let took = t0.elapsed();
    ensure!(
        took < Duration::from_millis(200),
        "closing the dma-buf took {} ms: release waited out the worker's pause",
        took.as_millis()
    );
    ensure!(
        left()? == 1,
        "the worker tried again after the dma-buf was released"
    );
    Ok(())
}

/// A child creates a buffer over its own mapping, punches (sometimes with a dma-buf mmap
/// alive), and exits without closing anything; once it is reaped the refcount is back.
fn child_creates_punches_exits() -> CaseResult {
    let base = base_refcnt()?;
    let free = hugepages_free()?;
    for round in 0..6u64 {
        let kind = if round == 5 {
            Backing::Hugetlb
        } else {
            Backing::Shmem
        };
        in_child(&format!("round {round}"), || {
            let size = 4 * kind.granule();
            let dev = open_device(&test_device())?;
            let memfd = memfd(kind, size)?;
            let map = map_shared(&memfd, size)?;
            map.write(0, &pattern(46, size));
            let buf = create(dev.as_fd(), &memfd, 0, size, 0).context("UDMABUF_CREATE")?;
            let bmap = if round % 2 == 1 {
                Some(map_shared(&buf, size)?)
            } else {
                None
            };
            punch(&memfd, kind.granule(), kind.granule())?;
            if round % 3 == 2 {
                map.write(0, &pattern(47, size));
                sync(&dev, &buf, 0)?;
            }
            // Exit with everything open and mapped: the kernel closes it all.
            std::mem::forget((dev, memfd, map, buf, bmap));
            Ok(())
        })?;
        expect_refcnt(&format!("round {round}: after the child was reaped"), base)?;
    }
    expect_hugepages_free("after the children were reaped", free)?;
    Ok(())
}

fn pidfd_open(pid: nix::unistd::Pid) -> Result<OwnedFd> {
    // SAFETY: plain syscall; returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    nix::errno::Errno::result(fd).context("pidfd_open")?;
    // SAFETY: a new fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pidfd_getfd(pidfd: &OwnedFd, fd: i32) -> Result<OwnedFd> {
    // SAFETY: plain syscall; returns a new fd or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    nix::errno::Errno::result(r).with_context(|| format!("pidfd_getfd({fd})"))?;
    // SAFETY: a new fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// A child creates a watched buffer over its own mapping; the parent takes the memfd and
/// the dma-buf with pidfd_getfd; the child exits (its mm and the watched mapping go). The
/// parent's buffer is no longer watched, and a punch after that is found by SYNC.
fn buffer_outlives_creator_process() -> CaseResult {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, pipe, read, write, ForkResult};
    let base = base_refcnt()?;
    let size = 16 * ps();
    let (to_parent_r, to_parent_w) = pipe().context("pipe")?;
    let (to_child_r, to_child_w) = pipe().context("pipe")?;
    // SAFETY: single-threaded here; the child leaves through _exit.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => {
            drop((to_parent_r, to_child_w));
            let setup = || -> Result<[i32; 2]> {
                let dev = open_device(&test_device())?;
                let memfd = memfd(Backing::Shmem, size)?;
                let map = map_shared(&memfd, size)?;
                map.write(0, &pattern(48, size));
                let buf = create(dev.as_fd(), &memfd, 0, size, 0).context("UDMABUF_CREATE")?;
                expect_state("created in the child", &info(&dev, &buf)?, WATCHED, 0)?;
                let fds = [memfd.as_raw_fd(), buf.as_raw_fd()];
                std::mem::forget((dev, memfd, map, buf));
                Ok(fds)
            };
            let msg = match setup() {
                Ok([m, b]) => format!("{m} {b}"),
                Err(e) => format!("error: {e:#}"),
            };
            let _ = write(&to_parent_w, msg.as_bytes());
            drop(to_parent_w);
            let mut byte = [0u8; 1];
            let _ = read(to_child_r.as_raw_fd(), &mut byte);
            // SAFETY: leaves the child; the kernel closes and unmaps everything.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop((to_parent_w, to_child_r));
            let taken = (|| -> Result<(OwnedFd, OwnedFd)> {
                let mut msg = [0u8; 512];
                let n = read(to_parent_r.as_raw_fd(), &mut msg).context("read the child's fds")?;
                let msg = String::from_utf8_lossy(&msg[..n]).into_owned();
                let nums: Vec<i32> = msg.split(' ').filter_map(|s| s.parse().ok()).collect();
                if nums.len() != 2 {
                    bail!("child: {msg}");
                }
                let pidfd = pidfd_open(child)?;
                Ok((pidfd_getfd(&pidfd, nums[0])?, pidfd_getfd(&pidfd, nums[1])?))
            })();
            let _ = write(&to_child_w, b"x");
            drop(to_child_w);
            let status = waitpid(child, None).context("waitpid")?;
            let (memfd, buf) = taken?;
            ensure!(
                status == WaitStatus::Exited(child, 0),
                "child ended with {status:?}"
            );

            let dev = open_device(&test_device())?;
            let before = info(&dev, &buf)?;
            expect_state(
                "after the creating process exited",
                &before,
                0,
                WATCHED | STALE,
            )?;
            let bmap = map_shared(&buf, size)?;
            expect_pattern("dma-buf after the creator exited", &bmap, 48, size)?;
            punch(&memfd, 5 * ps(), 3 * ps())?;
            pwrite(&memfd, 0, &pattern(49, size))?;
            sync(&dev, &buf, 1000)?;
            expect_pattern("dma-buf mmap after punch + SYNC", &bmap, 49, size)?;
            expect_all_matching("after SYNC", &dev, &buf, size / ps())?;
            expect_progress(
                "punch + SYNC after the creator exited",
                &before,
                &info(&dev, &buf)?,
                1..=1,
                3,
            )?;
            drop((bmap, buf, memfd, dev));
            expect_refcnt("after closing the buffer taken from the exited child", base)?;
            Ok(())
        }
    }
}
