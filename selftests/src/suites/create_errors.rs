//! UDMABUF_CREATE / UDMABUF_CREATE_LIST inputs that upstream refuses, each with the errno
//! Linux 7.2's drivers/dma-buf/udmabuf.c returns. A drop-in replacement must refuse the
//! same inputs with the same errno: programs branch on it (EBADFD "not a memfd" versus
//! EINVAL "bad range or seals"). Each input is also tried on the built-in /dev/udmabuf.
//!
//! Where the errnos come from (udmabuf_create / udmabuf_ioctl_create_list / check_memfd_seals
//! and memfd_pin_folios in mm/gup.c):
//! - offset or size not page aligned, total pages 0 or over size_limit_mb: EINVAL, checked
//!   for every entry before any fd is looked up;
//! - fd not open: EBADFD (not EBADF);
//! - fd open but neither shmem nor hugetlbfs: EBADFD;
//! - shmem/hugetlbfs without F_SEAL_SHRINK, or with F_SEAL_WRITE / F_SEAL_FUTURE_WRITE:
//!   EINVAL (a plain tmpfs or hugetlbfs file is shmem/hugetlb but carries only F_SEAL_SEAL);
//! - range not inside the file, or offset >= 2^63 (negative loff_t): EINVAL;
//! - list count over list_limit or 0: EINVAL; unreadable argument: EFAULT.

use super::common::*;
use super::{case_fns, cases, Suite};
use crate::ktap::CaseResult;
use anyhow::{ensure, Context, Result};
use nix::errno::Errno;
use nix::fcntl::SealFlag;
use nix::sys::mman::ProtFlags;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

pub fn suite() -> Suite {
    Suite::new(
        "create-errors",
        cases![
            limits_are_upstream_defaults,
            offset_unaligned,
            size_unaligned,
            size_zero,
            size_over_limit,
            list_total_over_limit,
            offset_plus_size_wraps,
            offset_beyond_loff_t,
            range_past_end_shmem,
            range_past_end_hugetlb,
            memfd_number_not_open,
            memfd_closed,
            memfd_is_pipe,
            memfd_is_proc_file,
            memfd_is_device_or_dmabuf,
            tmpfs_file_not_sealable,
            hugetlbfs_file_not_sealable,
            memfd_without_allow_sealing,
            missing_seal_shrink,
            seal_write,
            seal_future_write,
            seal_write_hugetlb,
            list_count_over_limit,
            list_count_zero,
            list_one_bad_entry,
            ranges_checked_before_fds,
            bad_user_pointer,
            limits_follow_module_parameters,
        ],
    )
}

type Res = Result<Result<OwnedFd, Errno>>;
const EBADFD: Errno = Errno::EBADFD;
const EINVAL: Errno = Errno::EINVAL;

/// UDMABUF_CREATE over a fresh sealed 4-page shmem memfd.
fn create_on_shmem(dev: BorrowedFd<'_>, offset: u64, size: u64) -> Res {
    let m = memfd(Backing::Shmem, 4 * ps())?;
    Ok(create(dev, &m, offset, size, 0))
}

/// The module parameters exist with upstream's defaults (the other cases read them).
fn limits_are_upstream_defaults() -> CaseResult {
    let dev = test_device();
    for (name, want) in [
        ("size_limit_mb", DEFAULT_SIZE_LIMIT_MB),
        ("list_limit", DEFAULT_LIST_LIMIT),
    ] {
        let got = read_param(&dev, name)
            .with_context(|| format!("{} unreadable", param_path(&dev, name)))?;
        ensure!(
            got == want,
            "{}: {got}, upstream default is {want}",
            param_path(&dev, name)
        );
    }
    Ok(())
}

fn offset_unaligned() -> CaseResult {
    expect_errno("offset = page/2", EINVAL, |d| {
        create_on_shmem(d, ps() / 2, ps())
    })?;
    expect_errno("offset = 1", EINVAL, |d| create_on_shmem(d, 1, ps()))?;
    Ok(())
}

fn size_unaligned() -> CaseResult {
    expect_errno("size = page/2", EINVAL, |d| create_on_shmem(d, 0, ps() / 2))?;
    expect_errno("size = page + 1", EINVAL, |d| {
        create_on_shmem(d, 0, ps() + 1)
    })?;
    Ok(())
}

fn size_zero() -> CaseResult {
    expect_errno("size = 0", EINVAL, |d| create_on_shmem(d, 0, 0))?;
    expect_errno("size = 0 at offset page", EINVAL, |d| {
        create_on_shmem(d, ps(), 0)
    })?;
    Ok(())
}

/// One page over size_limit_mb, on a memfd large enough that only the limit is wrong.
fn size_over_limit() -> CaseResult {
    expect_errno("size = limit + page", EINVAL, |d| {
        let size = size_limit(&test_device()).max(size_limit(REFERENCE_DEVICE)) + ps();
        let m = memfd(Backing::Shmem, size)?;
        Ok(create(d, &m, 0, size, 0))
    })?;
    Ok(())
}

/// The limit is on the sum of the entries, not on each one.
fn list_total_over_limit() -> CaseResult {
    expect_errno(
        "two entries, each under the limit, together over it",
        EINVAL,
        |d| {
            let half = size_limit(&test_device()).max(size_limit(REFERENCE_DEVICE)) / 2 + ps();
            let m = memfd(Backing::Shmem, half)?;
            Ok(create_list(d, 0, &[item(&m, 0, half), item(&m, 0, half)]))
        },
    )?;
    Ok(())
}

/// offset + size wraps around u64 to a small in-file end.
fn offset_plus_size_wraps() -> CaseResult {
    let off = u64::MAX - ps() + 1;
    expect_errno("offset = 2^64 - page, size = 2 pages", EINVAL, |d| {
        create_on_shmem(d, off, 2 * ps())
    })?;
    expect_errno(
        "list entry, offset = 2^64 - page, size = 2 pages",
        EINVAL,
        |d| {
            let m = memfd(Backing::Shmem, 4 * ps())?;
            Ok(create_list(
                d,
                0,
                &[item(&m, 0, ps()), item(&m, off, 2 * ps())],
            ))
        },
    )?;
    Ok(())
}

/// An offset that is negative as loff_t, and the largest aligned positive one.
fn offset_beyond_loff_t() -> CaseResult {
    expect_errno("offset = 2^63", EINVAL, |d| {
        create_on_shmem(d, 1 << 63, ps())
    })?;
    let top = (i64::MAX as u64) & !(ps() - 1);
    expect_errno("offset = 2^63 - page", EINVAL, |d| {
        create_on_shmem(d, top, ps())
    })?;
    Ok(())
}

fn range_past_end_shmem() -> CaseResult {
    expect_errno("4-page memfd, offset 2 pages, size 4 pages", EINVAL, |d| {
        create_on_shmem(d, 2 * ps(), 4 * ps())
    })?;
    expect_errno(
        "4-page memfd, offset 4 pages (at EOF), size 1 page",
        EINVAL,
        |d| create_on_shmem(d, 4 * ps(), ps()),
    )?;
    expect_errno("4-page memfd, size 5 pages", EINVAL, |d| {
        create_on_shmem(d, 0, 5 * ps())
    })?;
    expect_errno("empty memfd, size 1 page", EINVAL, |d| {
        let m = memfd(Backing::Shmem, 0)?;
        Ok(create(d, &m, 0, ps(), 0))
    })?;
    Ok(())
}

fn range_past_end_hugetlb() -> CaseResult {
    expect_errno(
        "2 MiB hugetlb memfd, offset 1 MiB, size 2 MiB",
        EINVAL,
        |d| {
            let m = memfd(Backing::Hugetlb, HUGE_PAGE)?;
            Ok(create(d, &m, HUGE_PAGE / 2, HUGE_PAGE, 0))
        },
    )?;
    expect_errno(
        "2 MiB hugetlb memfd, offset 2 MiB, size 1 page",
        EINVAL,
        |d| {
            let m = memfd(Backing::Hugetlb, HUGE_PAGE)?;
            Ok(create(d, &m, HUGE_PAGE, ps(), 0))
        },
    )?;
    Ok(())
}

/// Numbers that are no open fd: upstream answers EBADFD (fget failed), not EBADF.
fn memfd_number_not_open() -> CaseResult {
    for n in [1_000_000u32, i32::MAX as u32, u32::MAX] {
        expect_errno(&format!("memfd = {n}"), EBADFD, |d| {
            Ok(create_raw(d, n, 0, 0, ps()))
        })?;
    }
    Ok(())
}

/// The number of a memfd that was closed just before the call.
fn memfd_closed() -> CaseResult {
    expect_errno("closed memfd", EBADFD, |d| {
        let m = memfd(Backing::Shmem, 4 * ps())?;
        let n = fdnum(&m);
        drop(m);
        Ok(create_raw(d, n, 0, 0, ps()))
    })?;
    Ok(())
}

fn memfd_is_pipe() -> CaseResult {
    expect_errno("pipe read end", EBADFD, |d| {
        let (r, _w) = nix::unistd::pipe()?;
        Ok(create(d, &r, 0, ps(), 0))
    })?;
    Ok(())
}

fn memfd_is_proc_file() -> CaseResult {
    expect_errno("/proc/self/status", EBADFD, |d| {
        let f = std::fs::File::open("/proc/self/status")?;
        Ok(create(d, &f, 0, ps(), 0))
    })?;
    Ok(())
}

/// The udmabuf device itself, and a dma-buf made by it, are no memfds either.
fn memfd_is_device_or_dmabuf() -> CaseResult {
    expect_errno("the device fd as memfd", EBADFD, |d| {
        Ok(create_raw(d, d.as_raw_fd() as u32, 0, 0, ps()))
    })?;
    expect_errno("a dma-buf as memfd", EBADFD, |d| {
        let m = memfd(Backing::Shmem, 4 * ps())?;
        let buf = create(d, &m, 0, 4 * ps(), 0).context("making the dma-buf to pass as memfd")?;
        Ok(create(d, &buf, 0, ps(), 0))
    })?;
    Ok(())
}

/// The filesystems whose regular files are shmem or hugetlb pages without being memfds.
#[derive(Clone, Copy)]
enum RegularFile {
    Tmpfs,
    Hugetlbfs,
}

/// A regular file on `fs` passes the "is it a memfd" test (EBADFD) and is refused by the
/// seal test instead (EINVAL).
fn expect_regular_file_refused(fs: RegularFile) -> Result<()> {
    use nix::sys::statfs::{statfs, HUGETLBFS_MAGIC, TMPFS_MAGIC};
    let (what, mount, magic, not_it, path, len) = match fs {
        RegularFile::Tmpfs => (
            "regular file on tmpfs",
            "/tmp",
            TMPFS_MAGIC,
            "/tmp is not tmpfs in this guest",
            "/tmp/ulive-tmpfs-file",
            4 * ps(),
        ),
        RegularFile::Hugetlbfs => (
            "regular file on hugetlbfs",
            "/dev/hugepages",
            HUGETLBFS_MAGIC,
            "/dev/hugepages is not hugetlbfs",
            "/dev/hugepages/ulive-hugetlbfs-file",
            HUGE_PAGE,
        ),
    };
    let st = statfs(mount).with_context(|| format!("statfs {mount}"))?;
    ensure!(st.filesystem_type() == magic, "{not_it}");
    expect_errno(what, EINVAL, |d| {
        let f = unlinked_file(path, len)?;
        Ok(create(d, &f, 0, ps(), 0))
    })
}

case_fns! {
    /// A regular tmpfs file is shmem, so it passes the "is it a memfd" test (EBADFD) and
    /// is refused by the seal test instead: tmpfs inodes start with F_SEAL_SEAL only.
    tmpfs_file_not_sealable => expect_regular_file_refused(RegularFile::Tmpfs);
    /// Same for a file created on the hugetlbfs mount.
    hugetlbfs_file_not_sealable => expect_regular_file_refused(RegularFile::Hugetlbfs);
}

/// memfd_create without MFD_ALLOW_SEALING: F_SEAL_SHRINK can never be added.
fn memfd_without_allow_sealing() -> CaseResult {
    expect_errno("memfd without MFD_ALLOW_SEALING", EINVAL, |d| {
        let m = nix::sys::memfd::memfd_create(
            c"ulive-nosealing",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )?;
        nix::unistd::ftruncate(&m, 4 * ps() as i64)?;
        Ok(create(d, &m, 0, ps(), 0))
    })?;
    Ok(())
}

fn with_seals(d: BorrowedFd<'_>, kind: Backing, seals: SealFlag) -> Res {
    let size = kind.granule().max(4 * ps());
    let m = memfd_with_seals(kind, size, seals)?;
    Ok(create(d, &m, 0, ps(), 0))
}

/// UDMABUF_CREATE must refuse (EINVAL) a memfd of each `(what, backing, seals)`.
fn expect_seals_rejected(table: &[(&str, Backing, SealFlag)]) -> Result<()> {
    for &(what, kind, seals) in table {
        expect_errno(what, EINVAL, |d| with_seals(d, kind, seals))?;
    }
    Ok(())
}

fn missing_seal_shrink() -> CaseResult {
    expect_seals_rejected(&[
        ("no seals", Backing::Shmem, SealFlag::empty()),
        ("F_SEAL_GROW only", Backing::Shmem, SealFlag::F_SEAL_GROW),
        ("F_SEAL_SEAL only", Backing::Shmem, SealFlag::F_SEAL_SEAL),
        ("hugetlb, no seals", Backing::Hugetlb, SealFlag::empty()),
    ])?;
    Ok(())
}

const SHRINK_WRITE: SealFlag = SealFlag::F_SEAL_SHRINK.union(SealFlag::F_SEAL_WRITE);
const SHRINK_FUTURE_WRITE: SealFlag = SealFlag::F_SEAL_SHRINK.union(SealFlag::F_SEAL_FUTURE_WRITE);

fn seal_write() -> CaseResult {
    expect_seals_rejected(&[("F_SEAL_SHRINK|F_SEAL_WRITE", Backing::Shmem, SHRINK_WRITE)])?;
    Ok(())
}

fn seal_future_write() -> CaseResult {
    expect_seals_rejected(&[(
        "F_SEAL_SHRINK|F_SEAL_FUTURE_WRITE",
        Backing::Shmem,
        SHRINK_FUTURE_WRITE,
    )])?;
    Ok(())
}

fn seal_write_hugetlb() -> CaseResult {
    expect_seals_rejected(&[
        (
            "hugetlb F_SEAL_SHRINK|F_SEAL_WRITE",
            Backing::Hugetlb,
            SHRINK_WRITE,
        ),
        (
            "hugetlb F_SEAL_SHRINK|F_SEAL_FUTURE_WRITE",
            Backing::Hugetlb,
            SHRINK_FUTURE_WRITE,
        ),
    ])?;
    Ok(())
}

/// list_limit + 1 valid one-page entries: only the count is wrong.
fn list_count_over_limit() -> CaseResult {
    expect_errno("count = list_limit + 1", EINVAL, |d| {
        let n = list_limit(&test_device()).max(list_limit(REFERENCE_DEVICE)) + 1;
        let m = memfd(Backing::Shmem, ps())?;
        let items = vec![item(&m, 0, ps()); n as usize];
        Ok(create_list(d, 0, &items))
    })?;
    expect_errno("count = u32::MAX", EINVAL, |d| {
        let m = memfd(Backing::Shmem, ps())?;
        // The header alone: upstream refuses the count before reading any entry.
        Ok(create_list_count(d, 0, u32::MAX, &[item(&m, 0, ps())]))
    })?;
    Ok(())
}

fn list_count_zero() -> CaseResult {
    expect_errno("count = 0", EINVAL, |d| Ok(create_list(d, 0, &[])))?;
    expect_errno("count = 0 with an entry after the header", EINVAL, |d| {
        let m = memfd(Backing::Shmem, ps())?;
        Ok(create_list_count(d, 0, 0, &[item(&m, 0, ps())]))
    })?;
    Ok(())
}

/// One bad entry among good ones fails the whole list with that entry's errno.
fn list_one_bad_entry() -> CaseResult {
    let three = |d: BorrowedFd<'_>,
                 bad: &dyn Fn(&OwnedFd) -> udmabuf_live_uapi::UdmabufCreateItem|
     -> Res {
        let a = memfd(Backing::Shmem, 4 * ps())?;
        let b = memfd(Backing::Shmem, 4 * ps())?;
        Ok(create_list(
            d,
            0,
            &[item(&a, 0, ps()), bad(&b), item(&a, ps(), ps())],
        ))
    };
    expect_errno("middle entry unaligned", EINVAL, |d| {
        three(d, &|b| item(b, ps() / 2, ps()))
    })?;
    expect_errno("middle entry past EOF", EINVAL, |d| {
        three(d, &|b| item(b, 3 * ps(), 2 * ps()))
    })?;
    expect_errno("middle entry not an fd", EBADFD, |d| {
        three(d, &|_| udmabuf_live_uapi::UdmabufCreateItem {
            memfd: 1_000_000,
            __pad: 0,
            offset: 0,
            size: ps(),
        })
    })?;
    expect_errno("last entry a pipe", EBADFD, |d| {
        let (r, _w) = nix::unistd::pipe()?;
        let a = memfd(Backing::Shmem, 4 * ps())?;
        Ok(create_list(d, 0, &[item(&a, 0, ps()), item(&r, 0, ps())]))
    })?;
    expect_errno("second entry write-sealed", EINVAL, |d| {
        let a = memfd(Backing::Shmem, 4 * ps())?;
        let w = memfd_with_seals(
            Backing::Shmem,
            4 * ps(),
            SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_WRITE,
        )?;
        Ok(create_list(d, 0, &[item(&a, 0, ps()), item(&w, 0, ps())]))
    })?;
    Ok(())
}

/// Every entry's range is validated before any fd is looked up, so a bad fd with a bad
/// range reports the range (EINVAL), even when the bad fd comes first in the list.
fn ranges_checked_before_fds() -> CaseResult {
    expect_errno("bad fd and size 0", EINVAL, |d| {
        Ok(create_raw(d, 1_000_000, 0, 0, 0))
    })?;
    expect_errno("bad fd and unaligned offset", EINVAL, |d| {
        Ok(create_raw(d, 1_000_000, 0, 1, ps()))
    })?;
    expect_errno("pipe and size over the limit", EINVAL, |d| {
        let (r, _w) = nix::unistd::pipe()?;
        let size = size_limit(&test_device()).max(size_limit(REFERENCE_DEVICE)) + ps();
        Ok(create(d, &r, 0, size, 0))
    })?;
    expect_errno("bad fd first, unaligned entry second", EINVAL, |d| {
        let a = memfd(Backing::Shmem, 4 * ps())?;
        let bad = udmabuf_live_uapi::UdmabufCreateItem {
            memfd: 1_000_000,
            __pad: 0,
            offset: 0,
            size: ps(),
        };
        Ok(create_list(d, 0, &[bad, item(&a, 0, ps() + 1)]))
    })?;
    Ok(())
}

/// Arguments the kernel cannot read: NULL, and a list whose entries lie on an
/// inaccessible page right after a readable header.
fn bad_user_pointer() -> CaseResult {
    expect_errno("UDMABUF_CREATE(NULL)", Errno::EFAULT, |d| {
        // SAFETY: the kernel must refuse the NULL pointer without writing anything.
        Ok(own_fd(unsafe {
            ioctl_udmabuf_create(d.as_raw_fd(), std::ptr::null())
        }))
    })?;
    expect_errno("UDMABUF_CREATE_LIST(NULL)", Errno::EFAULT, |d| {
        // SAFETY: as above.
        Ok(own_fd(unsafe {
            ioctl_udmabuf_create_list(d.as_raw_fd(), std::ptr::null())
        }))
    })?;
    expect_errno("list entries on a PROT_NONE page", Errno::EFAULT, |d| {
        let m = memfd(Backing::Shmem, ps())?;
        let guard = GuardedHeader::new()?;
        Ok(guard.call(d, &m))
    })?;
    Ok(())
}

/// Two anonymous pages, the second PROT_NONE; a list header with count 1 sits in the last
/// 8 bytes of the first page, so its entry would be read from the inaccessible page.
struct GuardedHeader(AnonPages);

impl GuardedHeader {
    fn new() -> Result<Self> {
        let pages = AnonPages::new(2)?;
        pages.protect(1, ProtFlags::PROT_NONE)?;
        Ok(Self(pages))
    }

    fn call(&self, d: BorrowedFd<'_>, _m: &OwnedFd) -> Result<OwnedFd, Errno> {
        // SAFETY: the header lies inside the first (writable) page, 8-byte aligned.
        unsafe {
            let hdr = self
                .0
                .page(0)
                .add(ps() as usize - 8)
                .cast::<udmabuf_live_uapi::UdmabufCreateList>();
            hdr.write(udmabuf_live_uapi::UdmabufCreateList { flags: 0, count: 1 });
            own_fd(ioctl_udmabuf_create_list(d.as_raw_fd(), hdr))
        }
    }
}

/// Both limits are read at each call: lowering them through sysfs takes effect at once
/// (upstream reads the module parameters in the ioctl path). Restored afterwards.
fn limits_follow_module_parameters() -> CaseResult {
    for dev_path in devices_to_compare() {
        let before = (
            read_param(&dev_path, "list_limit"),
            read_param(&dev_path, "size_limit_mb"),
        );
        let dev = open_device(&dev_path)?;
        let m = memfd(Backing::Shmem, 4 * ps())?;
        let one = |n: usize| vec![item(&m, 0, ps()); n];
        {
            let _g = ParamGuard::set(&dev_path, "list_limit", 2)?;
            let r = create_list(dev.as_fd(), 0, &one(3));
            ensure!(
                r.as_ref().err() == Some(&EINVAL),
                "{dev_path}: list_limit=2, count 3: got {:?}, expected EINVAL",
                r.map(drop)
            );
            create_list(dev.as_fd(), 0, &one(2))
                .with_context(|| format!("{dev_path}: list_limit=2, count 2"))?;
        }
        {
            let _g = ParamGuard::set(&dev_path, "size_limit_mb", 1)?;
            let mm = memfd(Backing::Shmem, (1 << 20) + ps())?;
            let r = create(dev.as_fd(), &mm, 0, (1 << 20) + ps(), 0);
            ensure!(
                r.as_ref().err() == Some(&EINVAL),
                "{dev_path}: size_limit_mb=1, 1 MiB + page: got {:?}, expected EINVAL",
                r.map(drop)
            );
            create(dev.as_fd(), &mm, 0, 1 << 20, 0)
                .with_context(|| format!("{dev_path}: size_limit_mb=1, 1 MiB"))?;
        }
        let after = (
            read_param(&dev_path, "list_limit"),
            read_param(&dev_path, "size_limit_mb"),
        );
        ensure!(
            after == before,
            "{dev_path}: parameters not restored: {after:?}, were {before:?}"
        );
    }
    Ok(())
}

use udmabuf_live_uapi::sys::{
    ioctl_create as ioctl_udmabuf_create, ioctl_create_list as ioctl_udmabuf_create_list,
    own as own_fd,
};
