//! Successful UDMABUF_CREATE / UDMABUF_CREATE_LIST: what a user can check about the fd
//! they get back. Its size (lseek SEEK_END, the dma-buf core's way to report it, and the
//! fdinfo line) is the sum of the ranges asked for; FD_CLOEXEC follows
//! UDMABUF_FLAGS_CLOEXEC; the fd is O_RDWR (upstream exports with O_RDWR so it can be
//! mapped writable); the limits are inclusive. Upstream looks only at the CLOEXEC bit of
//! `flags` and never at `__pad`, so other bits are accepted: a drop-in must accept them too.
//! Closing the fd gives back exactly the page pins the buffer took, whatever its shape.

use super::common::*;
use super::{cases, Suite};
use crate::ktap::CaseResult;
use anyhow::{bail, ensure, Context, Result};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

pub fn suite() -> Suite {
    Suite::new(
        "create",
        cases![
            shmem_whole_and_part,
            hugetlb_whole_and_part,
            list_mixed_backings,
            list_single_entry_equals_create,
            many_buffers_over_one_memfd,
            cloexec_flag_honoured,
            unknown_flags_and_pad_ignored,
            dmabuf_is_read_write,
            size_at_limit_accepted,
            list_count_at_limit_accepted,
            memfd_may_grow_after_create,
            release_drops_every_pin,
        ],
    )
}

/// The size a user sees, two ways: lseek(SEEK_END) and fdinfo's `size:` line.
fn expect_size(what: &str, fd: &impl AsRawFd, want: u64) -> Result<()> {
    let got = dmabuf_size(fd).with_context(|| what.to_owned())?;
    ensure!(
        got == want,
        "{what}: lseek(SEEK_END) = {got}, expected {want}"
    );
    let info =
        fdinfo_field(fd, "size")?.with_context(|| format!("{what}: no size line in fdinfo"))?;
    ensure!(
        info == want.to_string(),
        "{what}: fdinfo size {info}, expected {want}"
    );
    Ok(())
}

fn shmem_whole_and_part() -> CaseResult {
    let dev = open_device(&test_device())?;
    let m = memfd(Backing::Shmem, 8 * ps())?;
    let whole = create(dev.as_fd(), &m, 0, 8 * ps(), 0).context("whole 8-page memfd")?;
    expect_size("whole", &whole, 8 * ps())?;
    let part = create(dev.as_fd(), &m, 3 * ps(), 2 * ps(), 0).context("pages 3..5")?;
    expect_size("pages 3..5", &part, 2 * ps())?;
    let last = create(dev.as_fd(), &m, 7 * ps(), ps(), 0).context("last page")?;
    expect_size("last page", &last, ps())?;
    Ok(())
}

/// Ranges in hugetlb memfds need only be page aligned, not huge-page aligned, and may
/// straddle two huge pages.
fn hugetlb_whole_and_part() -> CaseResult {
    let dev = open_device(&test_device())?;
    let m = memfd(Backing::Hugetlb, 2 * HUGE_PAGE)?;
    let whole =
        create(dev.as_fd(), &m, 0, 2 * HUGE_PAGE, 0).context("whole 4 MiB hugetlb memfd")?;
    expect_size("whole", &whole, 2 * HUGE_PAGE)?;
    let inner = create(dev.as_fd(), &m, ps(), 2 * ps(), 0)
        .context("two small pages inside the first huge page")?;
    expect_size("inside a huge page", &inner, 2 * ps())?;
    let across = create(dev.as_fd(), &m, HUGE_PAGE - ps(), 2 * ps(), 0)
        .context("across the huge page boundary")?;
    expect_size("across huge pages", &across, 2 * ps())?;
    let second = create(dev.as_fd(), &m, HUGE_PAGE, HUGE_PAGE, 0).context("second huge page")?;
    expect_size("second huge page", &second, HUGE_PAGE)?;
    Ok(())
}

/// Entries from several shmem and hugetlb memfds, one memfd used twice.
fn list_mixed_backings() -> CaseResult {
    let dev = open_device(&test_device())?;
    let a = memfd(Backing::Shmem, 4 * ps())?;
    let h = memfd(Backing::Hugetlb, 2 * HUGE_PAGE)?;
    let b = memfd(Backing::Shmem, 16 * ps())?;
    let items = [
        item(&a, 0, 2 * ps()),
        item(&h, HUGE_PAGE - ps(), 3 * ps()),
        item(&b, 5 * ps(), ps()),
        item(&a, 3 * ps(), ps()),
        item(&h, 0, HUGE_PAGE),
    ];
    let want: u64 = items.iter().map(|i| i.size).sum();
    let buf = create_list(dev.as_fd(), 0, &items).context("CREATE_LIST with 5 mixed entries")?;
    expect_size("mixed list", &buf, want)?;
    Ok(())
}

fn list_single_entry_equals_create() -> CaseResult {
    let dev = open_device(&test_device())?;
    let m = memfd(Backing::Shmem, 4 * ps())?;
    let l = create_list(dev.as_fd(), 0, &[item(&m, ps(), 3 * ps())]).context("one-entry list")?;
    let c = create(dev.as_fd(), &m, ps(), 3 * ps(), 0).context("same range by CREATE")?;
    ensure!(
        dmabuf_size(&l)? == dmabuf_size(&c)?,
        "one-entry list and CREATE differ in size"
    );
    expect_size("one-entry list", &l, 3 * ps())?;
    Ok(())
}

/// Buffers over the same and overlapping ranges of one memfd live side by side.
fn many_buffers_over_one_memfd() -> CaseResult {
    let dev = open_device(&test_device())?;
    let m = memfd(Backing::Shmem, 16 * ps())?;
    let mut bufs: Vec<OwnedFd> = Vec::new();
    for i in 0..16 {
        let b = create(dev.as_fd(), &m, i * ps(), (16 - i) * ps(), 0)
            .with_context(|| format!("buffer {i}"))?;
        bufs.push(b);
    }
    for (i, b) in bufs.iter().enumerate() {
        expect_size(&format!("buffer {i}"), b, (16 - i as u64) * ps())?;
    }
    Ok(())
}

fn cloexec_flag_honoured() -> CaseResult {
    let dev = open_device(&test_device())?;
    let m = memfd(Backing::Shmem, 4 * ps())?;
    let with =
        create(dev.as_fd(), &m, 0, ps(), UDMABUF_FLAGS_CLOEXEC).context("CREATE with CLOEXEC")?;
    ensure!(
        has_cloexec(&with)?,
        "CREATE with UDMABUF_FLAGS_CLOEXEC: FD_CLOEXEC not set"
    );
    let without = create(dev.as_fd(), &m, 0, ps(), 0).context("CREATE without flags")?;
    ensure!(
        !has_cloexec(&without)?,
        "CREATE without flags: FD_CLOEXEC set"
    );
    let lwith = create_list(dev.as_fd(), UDMABUF_FLAGS_CLOEXEC, &[item(&m, 0, ps())])
        .context("LIST with CLOEXEC")?;
    ensure!(
        has_cloexec(&lwith)?,
        "CREATE_LIST with UDMABUF_FLAGS_CLOEXEC: FD_CLOEXEC not set"
    );
    let lwithout =
        create_list(dev.as_fd(), 0, &[item(&m, 0, ps())]).context("LIST without flags")?;
    ensure!(
        !has_cloexec(&lwithout)?,
        "CREATE_LIST without flags: FD_CLOEXEC set"
    );
    Ok(())
}

/// Upstream 7.2 ignores every flag bit but CLOEXEC, and the entries' `__pad`.
fn unknown_flags_and_pad_ignored() -> CaseResult {
    let cl = |want: bool| {
        move |dev: &str, fd: OwnedFd| -> Result<()> {
            ensure!(
                has_cloexec(&fd)? == want,
                "{dev}: FD_CLOEXEC is {}, expected {want}",
                !want
            );
            expect_size("buffer", &fd, ps())
        }
    };
    for flags in [0x2u32, 0x8000_0000, !UDMABUF_FLAGS_CLOEXEC] {
        expect_ok(
            &format!("CREATE flags {flags:#x}"),
            |d| {
                let m = memfd(Backing::Shmem, ps())?;
                Ok(create(d, &m, 0, ps(), flags))
            },
            cl(false),
        )?;
        expect_ok(
            &format!("CREATE_LIST flags {flags:#x}"),
            |d| {
                let m = memfd(Backing::Shmem, ps())?;
                Ok(create_list(d, flags, &[item(&m, 0, ps())]))
            },
            cl(false),
        )?;
    }
    expect_ok(
        "CREATE flags 0xffffffff",
        |d| {
            let m = memfd(Backing::Shmem, ps())?;
            Ok(create(d, &m, 0, ps(), u32::MAX))
        },
        cl(true),
    )?;
    expect_ok(
        "CREATE_LIST entry with __pad = 0xffffffff",
        |d| {
            let m = memfd(Backing::Shmem, ps())?;
            let mut it = item(&m, 0, ps());
            it.__pad = u32::MAX;
            Ok(create_list(d, 0, &[it]))
        },
        cl(false),
    )?;
    Ok(())
}

fn dmabuf_is_read_write() -> CaseResult {
    let b = filled_buffer(Backing::Shmem, 2 * ps(), 1, 0)?;
    let fl = OFlag::from_bits_truncate(fcntl(b.dmabuf.as_raw_fd(), FcntlArg::F_GETFL)?);
    ensure!(
        fl & OFlag::O_ACCMODE == OFlag::O_RDWR,
        "dma-buf fd access mode {:?}, expected O_RDWR",
        fl & OFlag::O_ACCMODE
    );
    Ok(())
}

/// size_limit_mb is inclusive: exactly the limit is accepted (shmem, and as a list of
/// hugetlb entries).
fn size_at_limit_accepted() -> CaseResult {
    let dev_path = test_device();
    let limit = size_limit(&dev_path);
    let dev = open_device(&dev_path)?;
    let m = memfd(Backing::Shmem, limit)?;
    let b = create(dev.as_fd(), &m, 0, limit, 0)
        .with_context(|| format!("CREATE of exactly the limit ({limit} bytes)"))?;
    expect_size("at the limit", &b, limit)?;
    drop((b, m));
    let h = memfd(Backing::Hugetlb, limit / 2)?;
    let l = create_list(
        dev.as_fd(),
        0,
        &[item(&h, 0, limit / 2), item(&h, 0, limit / 2)],
    )
    .context("CREATE_LIST of two hugetlb entries totalling the limit")?;
    expect_size("list at the limit", &l, limit)?;
    Ok(())
}

/// list_limit is inclusive: exactly list_limit one-page entries are accepted.
fn list_count_at_limit_accepted() -> CaseResult {
    let dev_path = test_device();
    let n = list_limit(&dev_path);
    let dev = open_device(&dev_path)?;
    let m = memfd(Backing::Shmem, n * ps())?;
    let items: Vec<_> = (0..n).map(|i| item(&m, i * ps(), ps())).collect();
    let b = create_list(dev.as_fd(), 0, &items)
        .with_context(|| format!("CREATE_LIST with {n} entries"))?;
    expect_size("list at the count limit", &b, n * ps())?;
    Ok(())
}

/// Growing the memfd after the buffer was made (only shrinking is sealed) leaves the
/// buffer as it was, and a new buffer can cover the grown part.
fn memfd_may_grow_after_create() -> CaseResult {
    let dev = open_device(&test_device())?;
    let m = memfd(Backing::Shmem, 2 * ps())?;
    let b = create(dev.as_fd(), &m, 0, 2 * ps(), 0).context("buffer before growing")?;
    nix::unistd::ftruncate(&m, (8 * ps()) as i64).context("grow the memfd")?;
    expect_size("old buffer after growing", &b, 2 * ps())?;
    let b2 =
        create(dev.as_fd(), &m, 4 * ps(), 4 * ps(), 0).context("buffer over the grown part")?;
    expect_size("new buffer", &b2, 4 * ps())?;
    Ok(())
}

/// Page pins held in the whole system: /proc/vmstat's FOLL_PIN counters (references
/// pinned minus references unpinned), folded from the per-CPU counters first.
fn pins_outstanding() -> Result<i64> {
    std::fs::write("/proc/sys/vm/stat_refresh", "1").context("write /proc/sys/vm/stat_refresh")?;
    let acquired = proc_counter("/proc/vmstat", "nr_foll_pin_acquired")?;
    let released = proc_counter("/proc/vmstat", "nr_foll_pin_released")?;
    Ok(acquired as i64 - released as i64)
}

/// Closing the buffers gives back exactly the pins creating them took: whole huge pages,
/// ranges starting and ending inside one, the same huge page in several entries of one
/// list, and shmem pages next to them. Too few unpins leak memory for good; too many
/// free pages a user still maps.
fn release_drops_every_pin() -> CaseResult {
    let dev = open_device(&test_device())?;
    let h = memfd(Backing::Hugetlb, 4 * HUGE_PAGE)?;
    let s = memfd(Backing::Shmem, 16 * ps())?;
    let base = pins_outstanding()?;
    let bufs = [
        create(dev.as_fd(), &h, 0, 4 * HUGE_PAGE, 0).context("whole 8 MiB hugetlb memfd")?,
        create(dev.as_fd(), &h, HUGE_PAGE - ps(), HUGE_PAGE + 2 * ps(), 0)
            .context("from inside one huge page to inside the next but one")?,
        create_list(
            dev.as_fd(),
            0,
            &[
                item(&h, ps(), ps()),
                item(&h, 2 * ps(), HUGE_PAGE),
                item(&s, 3 * ps(), 5 * ps()),
                item(&h, 0, 2 * HUGE_PAGE),
                item(&h, 3 * HUGE_PAGE + 8 * ps(), 4 * ps()),
            ],
        )
        .context("list with the same huge pages in several entries")?,
    ];
    let held = pins_outstanding()? - base;
    ensure!(
        held > 0,
        "no page pins outstanding while {} buffers live",
        bufs.len()
    );
    drop(bufs);
    let mut now = pins_outstanding()?;
    for _ in 0..200 {
        if now == base {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        now = pins_outstanding()?;
    }
    bail!("after closing the buffers {} page pins are outstanding, {base} before creating them ({held} while they lived)", now)
}
