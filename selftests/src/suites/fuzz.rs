//! `fuzz`: seeded random and adversarial ioctl input against /dev/udmabuf-live.
//!
//! `ULIVE_FUZZ_CASES` cases (default 5000) are drawn from `ULIVE_FUZZ_SEED` (default
//! 0x5EED_F022; each case has its own sub-seed, printed with any failure, so a case can
//! be replayed). Categories:
//! - UDMABUF_CREATE and UDMABUF_CREATE_LIST with fds of every kind (sealed memfds,
//!   memfds with wrong seals, hugetlb, empty, tmpfs files, pipes, /proc files, eventfds,
//!   directories, /dev/null, the device itself, the reference device, dma-bufs of ours,
//!   of the built-in udmabuf and of vgem, the importer's fd, closed and huge numbers)
//!   and offsets/sizes around every edge (unaligned, zero, past EOF, wrapping, negative
//!   as loff_t, over size_limit_mb), list counts 0, over list_limit, u32::MAX and counts
//!   longer than the entries actually readable;
//! - INFO/SYNC/VERIFY/PFNS with the same fds (dma-bufs of other exporters included),
//!   random timeouts, PFNS ranges that overflow, and unwritable output buffers;
//! - random ioctl numbers of type 'u' (random nr, size and direction) and random bytes
//!   in the argument structs of the known ones;
//! - argument pointers that are NULL, unmapped, read-only or straddle into a PROT_NONE
//!   page;
//! - a second thread closing and replacing the memfd or dma-buf fd number while CREATE,
//!   CREATE_LIST, SYNC, INFO, VERIFY or PFNS runs.
//!
//! Every call must end in an errno or in a success that is then cleaned up (a returned
//! dma-buf is checked and closed). Where upstream's rules predict the result (see
//! create_errors.rs for where each errno comes from), it is asserted; every CREATE input
//! also goes to the built-in /dev/udmabuf, and both must agree. The errno histogram is
//! printed. The harness fails the run on any kernel report in the console.

use super::common::*;
use super::importer_client::{
    ensure_loaded as ensure_importer_loaded, unload as unload_loaded_importer, Importer,
};
use super::{cases, vgem, Suite};
use crate::ktap::{out, CaseResult};
use crate::util::{env_u64, module_refcnt, outcome_key, Histogram, Rng};
use anyhow::{bail, ensure, Context, Result};
use nix::errno::Errno;
use nix::fcntl::SealFlag;
use nix::libc;
use nix::sys::mman::ProtFlags;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use udmabuf_live_uapi::*;

pub fn suite() -> Suite {
    Suite::new("fuzz", cases![seeded_ioctl_fuzz])
}

/// What an fd number is, as far as the rules care.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Class {
    /// No open file (EBADFD for CREATE, EBADF for the live ioctls).
    NotOpen,
    /// Open, neither shmem nor hugetlbfs, and not a dma-buf.
    Other,
    /// A shmem or hugetlbfs file of `size` bytes; `seals_ok`: F_SEAL_SHRINK without
    /// F_SEAL_WRITE/F_SEAL_FUTURE_WRITE.
    Memfd { size: u64, seals_ok: bool },
    /// A dma-buf of another exporter.
    ForeignDmaBuf,
    /// A dma-buf of ours of `pages` pages.
    OurDmaBuf { pages: u64 },
    /// Something the model does not decide (tmpfs directories, fds the runner inherited):
    /// only parity with the reference device is checked.
    Unknown,
}

struct Fd {
    name: String,
    num: u32,
    class: Class,
}

/// Everything the cases pick from, kept open for the whole run.
struct Catalogue {
    fds: Vec<Fd>,
    _keep: Vec<OwnedFd>,
    _maps: Vec<Mapping>,
    /// The good memfd and dma-buf used by the races.
    good_memfd: RawFd,
    seal_bad_memfd: RawFd,
    pipe_fd: RawFd,
    our_dmabuf: RawFd,
    foreign_dmabuf: RawFd,
    max_pages: u64,
    notes: Vec<String>,
}

impl Catalogue {
    fn class_of(&self, num: u32) -> Class {
        if let Some(f) = self.fds.iter().find(|f| f.num == num) {
            return f.class;
        }
        if num > i32::MAX as u32 {
            return Class::NotOpen;
        }
        // SAFETY: F_GETFD only inspects the descriptor table.
        if unsafe { libc::fcntl(num as i32, libc::F_GETFD) } == -1 {
            Class::NotOpen
        } else {
            Class::Unknown
        }
    }

    fn build(dev: &OwnedFd, reference: Option<&OwnedFd>) -> Result<Self> {
        let mut c = Catalogue {
            fds: Vec::new(),
            _keep: Vec::new(),
            _maps: Vec::new(),
            good_memfd: -1,
            seal_bad_memfd: -1,
            pipe_fd: -1,
            our_dmabuf: -1,
            foreign_dmabuf: -1,
            max_pages: 0,
            notes: Vec::new(),
        };
        let add = |c: &mut Catalogue, name: &str, fd: OwnedFd, class: Class| -> RawFd {
            let raw = fd.as_raw_fd();
            c.fds.push(Fd {
                name: name.into(),
                num: raw as u32,
                class,
            });
            c._keep.push(fd);
            raw
        };
        let p = ps();
        let shrink = SealFlag::F_SEAL_SHRINK;
        // Memfds. The first keeps a mapping, so buffers over it are watched.
        let m = memfd_with_seals(Backing::Shmem, 16 * p, shrink)?;
        c._maps.push(map_shared(&m, 16 * p)?);
        c.good_memfd = add(
            &mut c,
            "memfd 16p SHRINK (mapped)",
            m,
            Class::Memfd {
                size: 16 * p,
                seals_ok: true,
            },
        );
        for (name, pages, seals, ok) in [
            (
                "memfd 16p SHRINK|GROW",
                16,
                shrink | SealFlag::F_SEAL_GROW,
                true,
            ),
            (
                "memfd 1p SHRINK|SEAL",
                1,
                shrink | SealFlag::F_SEAL_SEAL,
                true,
            ),
            ("memfd 64p SHRINK", 64, shrink, true),
            ("memfd 0p SHRINK", 0, shrink, true),
            ("memfd 16p no seals", 16, SealFlag::empty(), false),
            ("memfd 16p SEAL only", 16, SealFlag::F_SEAL_SEAL, false),
            (
                "memfd 16p SHRINK|FUTURE_WRITE",
                16,
                shrink | SealFlag::F_SEAL_FUTURE_WRITE,
                false,
            ),
        ] {
            let m = memfd_with_seals(Backing::Shmem, pages * p, seals)?;
            add(
                &mut c,
                name,
                m,
                Class::Memfd {
                    size: pages * p,
                    seals_ok: ok,
                },
            );
        }
        let w = memfd_with_seals(Backing::Shmem, 16 * p, shrink | SealFlag::F_SEAL_WRITE)?;
        c.seal_bad_memfd = add(
            &mut c,
            "memfd 16p SHRINK|WRITE",
            w,
            Class::Memfd {
                size: 16 * p,
                seals_ok: false,
            },
        );
        let ns = nix::sys::memfd::memfd_create(
            c"ulive-fuzz-nosealing",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )?;
        nix::unistd::ftruncate(&ns, (16 * p) as i64)?;
        add(
            &mut c,
            "memfd without MFD_ALLOW_SEALING",
            ns,
            Class::Memfd {
                size: 16 * p,
                seals_ok: false,
            },
        );
        let h = memfd_with_seals(Backing::Hugetlb, HUGE_PAGE, shrink)?;
        add(
            &mut c,
            "hugetlb memfd 2M SHRINK",
            h,
            Class::Memfd {
                size: HUGE_PAGE,
                seals_ok: true,
            },
        );
        let h = memfd_with_seals(
            Backing::Hugetlb,
            2 * HUGE_PAGE,
            shrink | SealFlag::F_SEAL_WRITE,
        )?;
        add(
            &mut c,
            "hugetlb memfd 4M SHRINK|WRITE",
            h,
            Class::Memfd {
                size: 2 * HUGE_PAGE,
                seals_ok: false,
            },
        );
        // A regular tmpfs file is shmem with only F_SEAL_SEAL.
        let f = unlinked_file("/tmp/ulive-fuzz-file", 16 * p)?;
        add(
            &mut c,
            "tmpfs file",
            f.into(),
            Class::Memfd {
                size: 16 * p,
                seals_ok: false,
            },
        );
        // Files of other kinds.
        let (r, wr) = nix::unistd::pipe()?;
        c.pipe_fd = add(&mut c, "pipe read end", r, Class::Other);
        add(&mut c, "pipe write end", wr, Class::Other);
        add(
            &mut c,
            "/proc/self/status",
            std::fs::File::open("/proc/self/status")?.into(),
            Class::Other,
        );
        add(
            &mut c,
            "/dev/null",
            std::fs::File::open("/dev/null")?.into(),
            Class::Other,
        );
        // SAFETY: eventfd has no memory-safety preconditions; the result is checked.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd >= 0 {
            // SAFETY: a new fd nothing else owns.
            add(
                &mut c,
                "eventfd",
                unsafe { OwnedFd::from_raw_fd(efd) },
                Class::Other,
            );
        }
        // Directories on tmpfs carry shmem's address_space operations: leave them to parity.
        add(
            &mut c,
            "/tmp directory",
            std::fs::File::open("/tmp")?.into(),
            Class::Unknown,
        );
        // SAFETY: socketpair writes two fds into the array on success; checked.
        let mut sv = [0i32; 2];
        if unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                sv.as_mut_ptr(),
            )
        } == 0
        {
            // SAFETY: two new fds nothing else owns.
            add(
                &mut c,
                "unix socket",
                unsafe { OwnedFd::from_raw_fd(sv[0]) },
                Class::Other,
            );
            // SAFETY: as above.
            drop(unsafe { OwnedFd::from_raw_fd(sv[1]) });
        } else {
            c.notes
                .push(format!("no sockets in this kernel ({})", Errno::last()));
        }
        add(&mut c, "the device itself", dev.try_clone()?, Class::Other);
        if let Some(r) = reference {
            add(&mut c, "the reference device", r.try_clone()?, Class::Other);
        }
        // Dma-bufs: ours (shmem, watched; hugetlb), the built-in udmabuf's, vgem's.
        let buf = create(dev.as_fd(), &c._keep[0], 0, 16 * p, UDMABUF_FLAGS_CLOEXEC)
            .context("our dma-buf")?;
        c.our_dmabuf = add(
            &mut c,
            "our dma-buf 16p",
            buf,
            Class::OurDmaBuf { pages: 16 },
        );
        let hm = memfd(Backing::Hugetlb, HUGE_PAGE)?;
        let hb = create(dev.as_fd(), &hm, 0, HUGE_PAGE, UDMABUF_FLAGS_CLOEXEC)
            .context("our hugetlb dma-buf")?;
        add(
            &mut c,
            "our hugetlb dma-buf 512p",
            hb,
            Class::OurDmaBuf {
                pages: HUGE_PAGE / p,
            },
        );
        c._keep.push(hm);
        c.max_pages = HUGE_PAGE / p;
        if let Some(r) = reference {
            let m = memfd(Backing::Shmem, 4 * p)?;
            let b = create(r.as_fd(), &m, 0, 4 * p, UDMABUF_FLAGS_CLOEXEC)
                .context("built-in udmabuf dma-buf")?;
            c.foreign_dmabuf = add(&mut c, "built-in udmabuf dma-buf", b, Class::ForeignDmaBuf);
            c._keep.push(m);
        }
        match vgem_dmabuf() {
            Ok((drm, b)) => {
                let raw = add(&mut c, "vgem dma-buf", b, Class::ForeignDmaBuf);
                if c.foreign_dmabuf < 0 {
                    c.foreign_dmabuf = raw;
                }
                add(&mut c, "vgem DRM node", drm, Class::Other);
            }
            Err(e) => c.notes.push(format!("no vgem dma-buf: {e:#}")),
        }
        match Importer::open() {
            Ok(imp) => {
                add(&mut c, "importer fd", imp.into_file().into(), Class::Other);
            }
            Err(e) => c.notes.push(format!("no importer fd: {e:#}")),
        }
        // Numbers that are not open: a closed one (high, so later opens do not take it)
        // and huge ones.
        let probe = memfd(Backing::Shmem, p)?;
        let closed = 700;
        nix::unistd::dup2(probe.as_raw_fd(), closed)?;
        nix::unistd::close(closed)?;
        for (name, n) in [
            ("closed fd 700", closed as u32),
            ("fd 1000000", 1_000_000),
            ("fd 2^31-1", i32::MAX as u32),
            ("fd 2^31", 1 << 31),
            ("fd u32::MAX", u32::MAX),
        ] {
            c.fds.push(Fd {
                name: name.into(),
                num: n,
                class: Class::NotOpen,
            });
        }
        Ok(c)
    }

    fn pick(&self, rng: &mut Rng) -> &Fd {
        // Good memfds and our dma-bufs come up more often, so the deeper checks run too.
        if rng.chance(35) {
            let good: Vec<&Fd> = self
                .fds
                .iter()
                .filter(|f| {
                    matches!(f.class, Class::Memfd { seals_ok: true, size } if size > 0)
                        || matches!(f.class, Class::OurDmaBuf { .. })
                })
                .collect();
            return rng.pick::<&Fd>(&good);
        }
        rng.pick(&self.fds)
    }
}

/// A vgem (dumb) buffer exported as a dma-buf; returns the DRM fd too (it owns the GEM).
fn vgem_dmabuf() -> Result<(OwnedFd, OwnedFd)> {
    #[repr(C)]
    #[derive(Default)]
    struct CreateDumb {
        height: u32,
        width: u32,
        bpp: u32,
        flags: u32,
        handle: u32,
        pitch: u32,
        size: u64,
    }
    nix::ioctl_readwrite!(drm_mode_create_dumb, b'd', 0xB2, CreateDumb);
    let drm = vgem::open_vgem()?;
    let mut a = CreateDumb {
        height: 16,
        width: 1024,
        bpp: 32,
        ..Default::default()
    };
    // SAFETY: `a` is a valid drm_mode_create_dumb.
    unsafe { drm_mode_create_dumb(drm.as_raw_fd(), &mut a) }
        .context("DRM_IOCTL_MODE_CREATE_DUMB on vgem")?;
    let buf = vgem::handle_to_fd(&drm, a.handle).context("PRIME_HANDLE_TO_FD")?;
    Ok((drm, buf))
}

/// Where an argument is placed: four pages of our own address space.
/// page 0: read-write (an argument at its very end straddles into page 1);
/// page 1: PROT_NONE; page 2: read-only; pages 3..: read-write, large enough for the
/// longest CREATE_LIST (list_limit entries).
struct Arena(AnonPages);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Place {
    Valid,
    Null,
    Unmapped,
    ReadOnly,
    /// Only the first 8 bytes are readable.
    Straddle,
}

const BIG_PAGES: usize = 8;

impl Arena {
    fn new() -> Result<Self> {
        let a = Self(AnonPages::new(3 + BIG_PAGES)?);
        a.protect(1, ProtFlags::PROT_NONE)?;
        a.protect(2, ProtFlags::PROT_READ)?;
        Ok(a)
    }

    fn page(&self, n: usize) -> *mut u8 {
        self.0.page(n)
    }

    fn protect(&self, n: usize, prot: ProtFlags) -> Result<()> {
        self.0.protect(n, prot)
    }

    /// Put `bytes` where `place` says; returns the address to pass.
    fn place(&self, place: Place, bytes: &[u8]) -> Result<usize> {
        let p = ps() as usize;
        assert!(bytes.len() <= BIG_PAGES * p);
        Ok(match place {
            Place::Valid => {
                // SAFETY: the big read-write area holds `bytes`.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.page(3), bytes.len()) };
                self.page(3) as usize
            }
            Place::Null => 0,
            Place::Unmapped => self.page(1) as usize,
            Place::ReadOnly => {
                self.protect(2, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE)?;
                let n = bytes.len().min(p);
                // SAFETY: page 2 is writable for this copy.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.page(2), n) };
                self.protect(2, ProtFlags::PROT_READ)?;
                self.page(2) as usize
            }
            Place::Straddle => {
                let at = self.page(0) as usize + p - 8;
                let n = bytes.len().min(8);
                // SAFETY: the last 8 bytes of page 0.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, n) };
                at
            }
        })
    }

    /// Readable bytes at `place` (for the model): None = all of them.
    fn readable(place: Place) -> Option<usize> {
        match place {
            Place::Valid | Place::ReadOnly => None,
            Place::Null | Place::Unmapped => Some(0),
            Place::Straddle => Some(8),
        }
    }
}

/// The ioctls of the device, the ones whose argument structs the fuzzer knows.
const KNOWN_CMDS: [u32; 6] = [
    UDMABUF_CREATE,
    UDMABUF_CREATE_LIST,
    UDMABUF_LIVE_INFO,
    UDMABUF_LIVE_SYNC,
    UDMABUF_LIVE_VERIFY,
    UDMABUF_LIVE_PFNS,
];

/// What an ioctl returned: its value or the errno.
type IoctlResult = Result<i32, Errno>;

fn raw_ioctl(fd: RawFd, cmd: u32, arg: usize) -> IoctlResult {
    // SAFETY: `arg` points at memory we own (or at nothing valid on purpose: NULL, a
    // PROT_NONE page, a read-only page); the kernel must check every access.
    Errno::result(unsafe { libc::ioctl(fd, cmd as _, arg) })
}

fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: T is one of the plain repr(C) uapi structs (no padding is read as uninit:
    // they have explicit padding fields).
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
        .to_vec()
}

/// The expected outcome: Ok or an errno.
type Expect = Result<(), Errno>;

struct Limits {
    pages: u64,
    list: u64,
}

/// Upstream's rules for one CREATE/CREATE_LIST (udmabuf_create): every entry's
/// alignment and the running page total against size_limit_mb first, then per entry in
/// order: fget (EBADFD), shmem/hugetlbfs (EBADFD), seals (EINVAL), then the pin
/// (EINVAL for a range not inside the file, including size 0 and loff_t overflow).
/// None when an entry's fd is of a kind the model leaves to parity.
fn predict_create(items: &[(Class, u64, u64)], lim: &Limits) -> Option<Expect> {
    let p = ps();
    let mut total: u64 = 0;
    for &(_, off, size) in items {
        if off % p != 0 || size % p != 0 {
            return Some(Err(Errno::EINVAL));
        }
        total += size / p;
        if total > lim.pages {
            return Some(Err(Errno::EINVAL));
        }
    }
    if total == 0 {
        return Some(Err(Errno::EINVAL));
    }
    for &(class, off, size) in items {
        match class {
            Class::Unknown => return None,
            Class::NotOpen | Class::Other | Class::ForeignDmaBuf | Class::OurDmaBuf { .. } => {
                return Some(Err(Errno::EBADFD))
            }
            Class::Memfd {
                seals_ok: false, ..
            } => return Some(Err(Errno::EINVAL)),
            Class::Memfd {
                size: fsize,
                seals_ok: true,
            } => {
                let end = off.checked_add(size);
                if size == 0
                    || off >= 1 << 63
                    || end.is_none_or(|e| e > fsize || e > i64::MAX as u64)
                {
                    return Some(Err(Errno::EINVAL));
                }
            }
        }
    }
    Some(Ok(()))
}

/// Offsets and sizes around every edge, relative to a file of `fsize` bytes.
fn edge_value(rng: &mut Rng, fsize: u64, lim: &Limits) -> u64 {
    let p = ps();
    let pages = (fsize / p).max(1);
    match rng.below(20) {
        0 => 0,
        1 => p,
        2 => fsize,
        3 => fsize.saturating_sub(p),
        4 => fsize + p,
        5 => 1 + rng.below(p - 1),
        6 => p + 1 + rng.below(p - 1),
        7 => u64::MAX,
        8 => u64::MAX - p + 1,
        9 => 1 << 63,
        10 => (1 << 63) - p,
        11 => lim.pages * p,
        12 => (lim.pages + 1) * p,
        13 => 1 << 32,
        14 => rng.next_u64(),
        15 => rng.next_u64() & !(p - 1),
        _ => rng.below(pages + 1) * p,
    }
}

fn flags(rng: &mut Rng) -> u32 {
    match rng.below(10) {
        0..=4 => 0,
        5..=7 => UDMABUF_FLAGS_CLOEXEC,
        _ => rng.next_u32(),
    }
}

/// A CREATE entry drawn from the catalogue: (class, memfd number, offset, size).
fn draw_entry(rng: &mut Rng, cat: &Catalogue, lim: &Limits) -> (Class, u32, u64, u64, String) {
    let f = cat.pick(rng);
    let fsize = match f.class {
        Class::Memfd { size, .. } => size,
        _ => 16 * ps(),
    };
    // Mostly sane ranges inside the file, sometimes any edge value.
    let (off, size) = if rng.chance(45) {
        let pages = (fsize / ps()).max(1);
        let o = rng.below(pages);
        (o * ps(), (1 + rng.below(pages - o)) * ps())
    } else {
        (edge_value(rng, fsize, lim), edge_value(rng, fsize, lim))
    };
    let desc = format!(
        "{{{} (fd {}), offset {off:#x}, size {size:#x}}}",
        f.name, f.num as i32
    );
    (f.class, f.num, off, size, desc)
}

/// One call's outcome, what was expected (if anything), and what it was.
struct Run {
    got: Result<i32, Errno>,
    want: Option<Expect>,
    desc: String,
    /// The same input on the reference device, for CREATE inputs.
    reference: Option<Result<i32, Errno>>,
}

/// A successful CREATE returned a dma-buf fd: check its size, then close it.
fn consume_fd(r: &Result<i32, Errno>, want_size: Option<u64>) -> Result<()> {
    if let Ok(fd) = *r {
        ensure!(fd >= 0, "success with fd {fd}");
        // SAFETY: the ioctl returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if let Some(s) = want_size {
            let got = dmabuf_size(&fd)?;
            ensure!(got == s, "created dma-buf is {got} bytes, expected {s}");
        }
    }
    Ok(())
}

/// [`consume_fd`] of our device's result and of the built-in's, if it was asked too.
fn consume_both(
    got: &Result<i32, Errno>,
    reference: &Option<Result<i32, Errno>>,
    want_size: Option<u64>,
) -> Result<()> {
    consume_fd(got, want_size)?;
    if let Some(r) = reference {
        consume_fd(r, want_size)?;
    }
    Ok(())
}

struct Fuzzer<'a> {
    dev: &'a OwnedFd,
    reference: Option<&'a OwnedFd>,
    cat: &'a Catalogue,
    arena: &'a Arena,
    lim: Limits,
}

impl Fuzzer<'_> {
    /// Run the same argument bytes on our device and on the reference.
    fn both(
        &self,
        cmd: u32,
        place: Place,
        bytes: &[u8],
    ) -> Result<(IoctlResult, Option<IoctlResult>)> {
        let addr = self.arena.place(place, bytes)?;
        let ours = raw_ioctl(self.dev.as_raw_fd(), cmd, addr);
        let reference = match self.reference {
            Some(r) => {
                let addr = self.arena.place(place, bytes)?;
                Some(raw_ioctl(r.as_raw_fd(), cmd, addr))
            }
            None => None,
        };
        Ok((ours, reference))
    }

    fn create_single(&self, rng: &mut Rng, place: Place) -> Result<Run> {
        let (class, num, off, size, desc) = draw_entry(rng, self.cat, &self.lim);
        let fl = flags(rng);
        let arg = UdmabufCreate {
            memfd: num,
            flags: fl,
            offset: off,
            size,
        };
        let bytes = bytes_of(&arg);
        let want = match Arena::readable(place) {
            Some(n) if n < bytes.len() => Some(Err(Errno::EFAULT)),
            _ => predict_create(&[(class, off, size)], &self.lim),
        };
        let (got, reference) = self.both(UDMABUF_CREATE, place, &bytes)?;
        let ok_size = Some(size);
        consume_both(&got, &reference, ok_size)?;
        Ok(Run {
            got,
            want,
            desc: format!("CREATE {desc} flags {fl:#x} arg {place:?}"),
            reference,
        })
    }

    fn create_list(&self, rng: &mut Rng, place: Place) -> Result<Run> {
        let n = rng.below(5) as usize;
        let mut entries = Vec::new();
        let mut descs = Vec::new();
        let mut items = Vec::new();
        for _ in 0..n {
            let (class, num, off, size, d) = draw_entry(rng, self.cat, &self.lim);
            entries.push((class, off, size));
            items.push(UdmabufCreateItem {
                memfd: num,
                __pad: if rng.chance(20) { rng.next_u32() } else { 0 },
                offset: off,
                size,
            });
            descs.push(d);
        }
        let fl = flags(rng);
        let isz = std::mem::size_of::<UdmabufCreateItem>();
        // The count: exact, 0, just over list_limit, u32::MAX, or more entries than
        // there are readable bytes for (the list then ends at the PROT_NONE page).
        let (count, short) = match rng.below(10) {
            0 => (0, false),
            1 => (self.lim.list as u32 + 1, false),
            2 => (u32::MAX, false),
            3 => (rng.next_u32() | 0x8000_0000, false),
            4 if n > 0 => (
                n as u32 + 1 + rng.below(self.lim.list - n as u64) as u32,
                true,
            ),
            _ => (n as u32, false),
        };
        let mut bytes = bytes_of(&UdmabufCreateList { flags: fl, count });
        for it in &items {
            bytes.extend(bytes_of(it));
        }
        let want = if Arena::readable(place).is_some_and(|r| r < 8) {
            Some(Err(Errno::EFAULT))
        } else if count as u64 > self.lim.list {
            Some(Err(Errno::EINVAL))
        } else if short || Arena::readable(place).is_some_and(|r| r < 8 + count as usize * isz) {
            Some(Err(Errno::EFAULT))
        } else {
            let counted: Vec<_> = entries.iter().copied().take(count as usize).collect();
            predict_create(&counted, &self.lim)
        };
        let (got, reference) = if short {
            // Header and entries end exactly at the PROT_NONE page.
            let p = ps() as usize;
            let at = self.arena.page(0) as usize + p - bytes.len();
            // SAFETY: the tail of page 0, which is read-write.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, bytes.len()) };
            let ours = raw_ioctl(self.dev.as_raw_fd(), UDMABUF_CREATE_LIST, at);
            (
                ours,
                self.reference
                    .map(|r| raw_ioctl(r.as_raw_fd(), UDMABUF_CREATE_LIST, at)),
            )
        } else {
            self.both(UDMABUF_CREATE_LIST, place, &bytes)?
        };
        let total: u64 = entries
            .iter()
            .take(count as usize)
            .map(|e| e.2)
            .fold(0, u64::wrapping_add);
        consume_both(&got, &reference, Some(total))?;
        Ok(Run {
            got,
            want,
            desc: format!(
                "CREATE_LIST count {count} ({n} entries{}) flags {fl:#x} [{}] arg {place:?}",
                if short { ", short" } else { "" },
                descs.join(", ")
            ),
            reference,
        })
    }

    /// INFO/SYNC/VERIFY/PFNS.
    fn live(&self, rng: &mut Rng, place: Place) -> Result<Run> {
        let f = self.cat.pick(rng);
        let (fd, class, fname) = if rng.chance(10) {
            let n = rng.next_u32();
            (n, self.cat.class_of(n), format!("random fd {n:#x}"))
        } else {
            (f.num, f.class, f.name.clone())
        };
        let (cmd, bytes, name, extra, writes_back) = match rng.below(4) {
            0 => (
                UDMABUF_LIVE_INFO,
                bytes_of(&UdmabufLiveInfo {
                    dmabuf_fd: fd,
                    ..Default::default()
                }),
                "INFO",
                String::new(),
                true,
            ),
            1 => {
                let t = match rng.below(4) {
                    0 => 0,
                    1 => rng.below(100) as u32,
                    2 => u32::MAX,
                    _ => rng.next_u32(),
                };
                (
                    UDMABUF_LIVE_SYNC,
                    bytes_of(&UdmabufLiveSync {
                        dmabuf_fd: fd,
                        timeout_ms: t,
                    }),
                    "SYNC",
                    format!(" timeout {t}"),
                    false,
                )
            }
            2 => (
                UDMABUF_LIVE_VERIFY,
                bytes_of(&UdmabufLiveVerify {
                    dmabuf_fd: fd,
                    __pad: rng.next_u32(),
                    ..Default::default()
                }),
                "VERIFY",
                String::new(),
                true,
            ),
            _ => return self.pfns(rng, place, fd, class, fname),
        };
        let want = LiveWant::new(place, bytes.len(), class).or_ours(|| {
            if writes_back && place == Place::ReadOnly {
                Err(Errno::EFAULT)
            } else {
                Ok(())
            }
        });
        let addr = self.arena.place(place, &bytes)?;
        let got = raw_ioctl(self.dev.as_raw_fd(), cmd, addr);
        Ok(Run {
            got,
            want,
            desc: format!("{name} on {fname} (fd {}){extra} arg {place:?}", fd as i32),
            reference: None,
        })
    }

    fn pfns(
        &self,
        rng: &mut Rng,
        place: Place,
        fd: u32,
        class: Class,
        fname: String,
    ) -> Result<Run> {
        let pages = match class {
            Class::OurDmaBuf { pages } => pages,
            _ => 16,
        };
        let first = match rng.below(6) {
            0 => 0,
            1 => pages,
            2 => u64::MAX,
            3 => rng.next_u64(),
            _ => rng.below(pages),
        };
        let count = match rng.below(6) {
            0 => 0,
            1 => pages - first.min(pages),
            2 => u64::MAX - rng.below(2),
            3 => rng.next_u64(),
            4 => pages + 1,
            _ => rng.below(pages.saturating_sub(first.min(pages)) + 1),
        };
        let out_place = *rng.pick(&[
            Place::Valid,
            Place::Valid,
            Place::Valid,
            Place::Null,
            Place::Unmapped,
            Place::ReadOnly,
            Place::Straddle,
        ]);
        let mut out_buf = vec![0u64; self.cat.max_pages as usize];
        let p = ps() as usize;
        let out_addr = match out_place {
            Place::Valid => out_buf.as_mut_ptr() as u64,
            Place::Null => 0,
            Place::Unmapped => self.arena.page(1) as u64,
            Place::ReadOnly => self.arena.page(2) as u64,
            Place::Straddle => (self.arena.page(0) as usize + p - 8) as u64,
        };
        let arg = UdmabufLivePfns {
            dmabuf_fd: fd,
            __pad: 0,
            first_page: first,
            count,
            pfns: out_addr,
        };
        let bytes = bytes_of(&arg);
        let want = LiveWant::new(place, bytes.len(), class).or_ours(|| {
            if first.checked_add(count).is_none_or(|e| e > pages) {
                Err(Errno::EINVAL)
            } else if count == 0 {
                Ok(())
            } else {
                match out_place {
                    Place::Valid => Ok(()),
                    Place::Straddle if count == 1 => Ok(()),
                    _ => Err(Errno::EFAULT),
                }
            }
        });
        let addr = self.arena.place(place, &bytes)?;
        let got = raw_ioctl(self.dev.as_raw_fd(), UDMABUF_LIVE_PFNS, addr);
        if got.is_ok() && out_place == Place::Valid && count > 0 && count <= pages {
            ensure!(
                out_buf[..count as usize].iter().all(|&pfn| pfn != 0),
                "PFNS returned a zero PFN"
            );
        }
        Ok(Run {
            got,
            want,
            desc: format!("PFNS on {fname} (fd {}) first {first:#x} count {count:#x} out {out_place:?} arg {place:?}", fd as i32),
            reference: None,
        })
    }

    /// A random command of type 'u': unknown ones must give ENOTTY without touching
    /// the argument; a known one gets random bytes in its struct.
    fn random_cmd(&self, rng: &mut Rng) -> Result<Run> {
        let dir = rng.below(4) as u32;
        let nr = rng.below(256) as u8;
        let size = match rng.below(3) {
            0 => rng.below(64) as usize,
            1 => [8, 16, 24, 48, 56][rng.below(5) as usize],
            _ => rng.below(1 << 14) as usize,
        };
        let cmd = ioc(dir, UDMABUF_IOCTL_TYPE, nr, size);
        if KNOWN_CMDS.contains(&cmd) {
            return self.random_struct(rng, cmd);
        }
        let mut junk = vec![0u8; BIG_PAGES * ps() as usize];
        rng.fill(&mut junk);
        let place = if rng.chance(70) {
            Place::Valid
        } else {
            Place::Null
        };
        let addr = self.arena.place(place, &junk)?;
        let got = raw_ioctl(self.dev.as_raw_fd(), cmd, addr);
        Ok(Run {
            got,
            want: Some(Err(Errno::ENOTTY)),
            desc: format!("ioctl {cmd:#010x} (dir {dir} nr {nr:#x} size {size}) arg {place:?}"),
            reference: None,
        })
    }

    /// A known command whose argument struct is random bytes.
    fn random_struct(&self, rng: &mut Rng, cmd: u32) -> Result<Run> {
        let mut bytes = vec![0u8; BIG_PAGES * ps() as usize];
        rng.fill(&mut bytes);
        let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        // Often aim the fd field at a catalogue fd, so more than EBADF comes out.
        if rng.chance(50) {
            let f = self.cat.pick(rng);
            bytes[0..4].copy_from_slice(&f.num.to_le_bytes());
        }
        let (want, name) = match cmd {
            UDMABUF_CREATE => {
                let (fd, off, size) = (u32_at(&bytes, 0), u64_at(&bytes, 8), u64_at(&bytes, 16));
                (
                    predict_create(&[(self.cat.class_of(fd), off, size)], &self.lim),
                    "CREATE",
                )
            }
            UDMABUF_CREATE_LIST => {
                // A small count half of the time, so the entries are read.
                if rng.chance(50) {
                    let c = rng.below(4) as u32;
                    bytes[4..8].copy_from_slice(&c.to_le_bytes());
                    for i in 0..c as usize {
                        if rng.chance(50) {
                            let f = self.cat.pick(rng);
                            bytes[8 + i * 24..12 + i * 24].copy_from_slice(&f.num.to_le_bytes());
                        }
                    }
                }
                let count = u32_at(&bytes, 4) as u64;
                let want = if count > self.lim.list {
                    Some(Err(Errno::EINVAL))
                } else {
                    let entries: Vec<_> = (0..count as usize)
                        .map(|i| {
                            (
                                self.cat.class_of(u32_at(&bytes, 8 + i * 24)),
                                u64_at(&bytes, 16 + i * 24),
                                u64_at(&bytes, 24 + i * 24),
                            )
                        })
                        .collect();
                    predict_create(&entries, &self.lim)
                };
                (want, "CREATE_LIST")
            }
            _ => {
                let fd = u32_at(&bytes, 0);
                let class = self.cat.class_of(fd);
                if cmd == UDMABUF_LIVE_PFNS {
                    // Never let the kernel write PFNs to a random address of ours.
                    let safe = self.arena.page(1) as u64;
                    bytes[24..32].copy_from_slice(&safe.to_le_bytes());
                }
                let want = match class {
                    Class::Unknown => None,
                    Class::NotOpen => Some(Err(Errno::EBADF)),
                    Class::Other | Class::Memfd { .. } | Class::ForeignDmaBuf => {
                        Some(Err(Errno::EINVAL))
                    }
                    Class::OurDmaBuf { pages } if cmd == UDMABUF_LIVE_PFNS => {
                        let (first, count) = (u64_at(&bytes, 8), u64_at(&bytes, 16));
                        if first.checked_add(count).is_none_or(|e| e > pages) {
                            Some(Err(Errno::EINVAL))
                        } else if count == 0 {
                            Some(Ok(()))
                        } else {
                            Some(Err(Errno::EFAULT))
                        }
                    }
                    Class::OurDmaBuf { .. } => Some(Ok(())),
                };
                (want, "live ioctl")
            }
        };
        let is_create = cmd == UDMABUF_CREATE || cmd == UDMABUF_CREATE_LIST;
        let (got, reference) = if is_create {
            self.both(cmd, Place::Valid, &bytes)?
        } else {
            (
                raw_ioctl(
                    self.dev.as_raw_fd(),
                    cmd,
                    self.arena.place(Place::Valid, &bytes)?,
                ),
                None,
            )
        };
        consume_both(&got, &reference, None)?;
        Ok(Run {
            got,
            want,
            desc: format!(
                "{name} ({cmd:#010x}) with random bytes {:02x?}",
                &bytes[..32]
            ),
            reference,
        })
    }

    /// Another thread closes and replaces fd number `N` while this one calls CREATE,
    /// CREATE_LIST or a live ioctl on it. Any errno of the fd's possible kinds, or a
    /// success (cleaned up), is fine; returns the outcome keys.
    fn race(&self, rng: &mut Rng, hist: &mut Histogram) -> Result<String> {
        const N: RawFd = 650;
        let on_memfd = rng.chance(50);
        let kind = rng.below(4);
        let stop = AtomicBool::new(false);
        let cat = self.cat;
        let sources: Vec<RawFd> = if on_memfd {
            vec![cat.good_memfd, cat.seal_bad_memfd, cat.pipe_fd]
        } else {
            vec![cat.our_dmabuf, cat.foreign_dmabuf, cat.good_memfd]
                .into_iter()
                .filter(|&f| f >= 0)
                .collect()
        };
        let what = if on_memfd {
            ["CREATE", "CREATE_LIST", "CREATE", "CREATE_LIST"][kind as usize]
        } else {
            ["SYNC", "INFO", "VERIFY", "PFNS"][kind as usize]
        };
        let mut seen = Vec::new();
        std::thread::scope(|s| -> Result<()> {
            let flipper = s.spawn(|| {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let src = sources[i % sources.len()];
                    // SAFETY: dup2/close on a number only this suite uses; failures are fine.
                    unsafe {
                        libc::dup2(src, N);
                        if i % 5 == 4 {
                            libc::close(N);
                        }
                    }
                    i += 1;
                    // Hold each state for a varying while, so the caller meets each.
                    for _ in 0..(i * 7919) % 4000 {
                        std::hint::spin_loop();
                    }
                    std::thread::yield_now();
                }
                // SAFETY: as above.
                unsafe { libc::close(N) };
            });
            let result = (|| -> Result<()> {
                let mut pfn_out = vec![0u64; 16];
                for _ in 0..30 {
                    let r = if on_memfd {
                        if kind.is_multiple_of(2) {
                            create_raw(self.dev.as_fd(), N as u32, UDMABUF_FLAGS_CLOEXEC, 0, ps())
                                .map(|fd| fd.into_raw_fd_keep())
                        } else {
                            let a = item(&BorrowRaw(cat.good_memfd), 0, ps());
                            let b = UdmabufCreateItem {
                                memfd: N as u32,
                                __pad: 0,
                                offset: ps(),
                                size: ps(),
                            };
                            create_list(self.dev.as_fd(), UDMABUF_FLAGS_CLOEXEC, &[a, b])
                                .map(|fd| fd.into_raw_fd_keep())
                        }
                    } else {
                        // Each live ioctl's argument naming fd N; `kind` picks one.
                        let fd = N as u32;
                        let sync_arg = UdmabufLiveSync {
                            dmabuf_fd: fd,
                            timeout_ms: 10,
                        };
                        let mut info_arg = UdmabufLiveInfo {
                            dmabuf_fd: fd,
                            ..Default::default()
                        };
                        let mut verify_arg = UdmabufLiveVerify {
                            dmabuf_fd: fd,
                            ..Default::default()
                        };
                        let pfns_arg = UdmabufLivePfns {
                            dmabuf_fd: fd,
                            __pad: 0,
                            first_page: 0,
                            count: 4,
                            pfns: pfn_out.as_mut_ptr() as u64,
                        };
                        let (cmd, arg) = match kind {
                            0 => (UDMABUF_LIVE_SYNC, &sync_arg as *const _ as usize),
                            1 => (UDMABUF_LIVE_INFO, &mut info_arg as *mut _ as usize),
                            2 => (UDMABUF_LIVE_VERIFY, &mut verify_arg as *mut _ as usize),
                            _ => (UDMABUF_LIVE_PFNS, &pfns_arg as *const _ as usize),
                        };
                        raw_ioctl(self.dev.as_raw_fd(), cmd, arg)
                    };
                    let allowed: &[Errno] = if on_memfd {
                        &[Errno::EBADFD, Errno::EINVAL]
                    } else {
                        &[Errno::EBADF, Errno::EINVAL]
                    };
                    match r {
                        Ok(fd) if on_memfd => {
                            let expect = if kind.is_multiple_of(2) {
                                ps()
                            } else {
                                2 * ps()
                            };
                            consume_fd(&Ok(fd), Some(expect))?;
                        }
                        Ok(_) => {}
                        Err(e) if allowed.contains(&e) => {}
                        Err(e) => bail!("{what} racing a close/dup2 of its fd: {e}"),
                    }
                    seen.push(outcome_key(&r));
                }
                Ok(())
            })();
            stop.store(true, Ordering::Relaxed);
            flipper
                .join()
                .map_err(|_| anyhow::anyhow!("flipper thread panicked"))?;
            result
        })?;
        for k in &seen {
            hist.add(format!("race {what}: {k}"));
        }
        Ok(format!("race {what}"))
    }
}

/// Keeps a raw fd usable where `&impl AsRawFd` is wanted.
struct BorrowRaw(RawFd);
impl AsRawFd for BorrowRaw {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

trait KeepRaw {
    fn into_raw_fd_keep(self) -> i32;
}
impl KeepRaw for OwnedFd {
    fn into_raw_fd_keep(self) -> i32 {
        std::os::fd::IntoRawFd::into_raw_fd(self)
    }
}

fn seeded_ioctl_fuzz() -> CaseResult {
    if test_device() != crate::util::device_path() {
        skip!(
            "fuzzes udmabuf-live's own ioctls; testing {}",
            test_device()
        );
    }
    let seed = env_u64("ULIVE_FUZZ_SEED", 0x5EED_F022)?;
    let cases = env_u64("ULIVE_FUZZ_CASES", 5000)?;
    let module = udmabuf_live_uapi::MODULE_NAME;
    let loaded_importer = ensure_importer_loaded()?;
    let base = module_refcnt(module)?;
    let result = fuzz(seed, cases);
    let unload = if loaded_importer {
        unload_loaded_importer()
    } else {
        Ok(())
    };
    let summary = result?;
    unload?;
    let after = module_refcnt(module)?;
    ensure!(
        after == base,
        "{module} refcnt {after} after the fuzz closed everything, was {base}"
    );
    out(&format!("    # {summary}"));
    Ok(())
}

fn fuzz(seed: u64, cases: u64) -> Result<String> {
    let dev = open_device(&test_device())?;
    let reference = std::path::Path::new(REFERENCE_DEVICE)
        .exists()
        .then(|| open_device(REFERENCE_DEVICE))
        .transpose()?;
    let dev_path = test_device();
    let lim = Limits {
        pages: size_limit(&dev_path) / ps(),
        list: list_limit(&dev_path),
    };
    if reference.is_some() {
        ensure!(
            size_limit(REFERENCE_DEVICE) / ps() == lim.pages
                && list_limit(REFERENCE_DEVICE) == lim.list,
            "the reference device's limits differ from ours; parity would be meaningless"
        );
    }
    let cat = Catalogue::build(&dev, reference.as_ref())?;
    let arena = Arena::new()?;
    let fz = Fuzzer {
        dev: &dev,
        reference: reference.as_ref(),
        cat: &cat,
        arena: &arena,
        lim,
    };
    out(&format!("    # fuzz: seed {seed:#x} (ULIVE_FUZZ_SEED), {cases} cases (ULIVE_FUZZ_CASES), {} fds in the catalogue", cat.fds.len()));
    for n in &cat.notes {
        out(&format!("    # fuzz: {n}"));
    }
    let mut hist = Histogram::default();
    let mut kinds = Histogram::default();
    let (mut predicted, mut parity) = (0u64, 0u64);
    let mut failures: Vec<String> = Vec::new();
    let mut failed = 0u64;
    for i in 0..cases {
        let case_seed = seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut rng = Rng::new(case_seed);
        let place = if rng.chance(88) {
            Place::Valid
        } else {
            *rng.pick(&[
                Place::Null,
                Place::Unmapped,
                Place::ReadOnly,
                Place::Straddle,
            ])
        };
        let (kind, run) = match rng.below(100) {
            0..=29 => ("create", fz.create_single(&mut rng, place)),
            30..=49 => ("create-list", fz.create_list(&mut rng, place)),
            50..=74 => ("live", fz.live(&mut rng, place)),
            75..=84 => ("random-cmd", fz.random_cmd(&mut rng)),
            85..=93 => {
                let cmd = *rng.pick(&KNOWN_CMDS);
                ("random-struct", fz.random_struct(&mut rng, cmd))
            }
            _ => {
                kinds.add("race");
                if let Err(e) = fz.race(&mut rng, &mut hist) {
                    failed += 1;
                    if failures.len() < 10 {
                        failures.push(format!("case {i} (seed {case_seed:#x}): {e:#}"));
                    }
                }
                continue;
            }
        };
        kinds.add(kind);
        let run = match run {
            Ok(r) => r,
            Err(e) => {
                failed += 1;
                if failures.len() < 10 {
                    failures.push(format!("case {i} (seed {case_seed:#x}) {kind}: {e:#}"));
                }
                continue;
            }
        };
        let key = outcome_key(&run.got);
        hist.add(key.clone());
        let mut problems = Vec::new();
        if let Some(want) = &run.want {
            predicted += 1;
            if want.map(|_| 0) != run.got.map(|_| 0) {
                problems.push(format!(
                    "got {key}, upstream's rules say {}",
                    outcome_key(want)
                ));
            }
        }
        if let Some(r) = &run.reference {
            parity += 1;
            if r.map(|_| 0) != run.got.map(|_| 0) {
                problems.push(format!(
                    "got {key}, the built-in udmabuf gives {}",
                    outcome_key(r)
                ));
            }
        }
        if !problems.is_empty() {
            failed += 1;
            if failures.len() < 10 {
                failures.push(format!(
                    "case {i} (seed {case_seed:#x}) {}: {}",
                    run.desc,
                    problems.join("; ")
                ));
            }
        }
    }
    out(&format!("    # fuzz: cases by kind: {}", kinds.render()));
    out(&format!("    # fuzz: outcomes: {}", hist.render()));
    let summary = format!(
        "fuzz: seed {seed:#x}: {cases} cases, {predicted} with a predicted errno/success, {parity} compared with the built-in udmabuf, {failed} failed"
    );
    if failed > 0 {
        bail!("{summary}:\n{}", failures.join("\n"));
    }
    Ok(summary)
}

/// What a live ioctl (INFO, SYNC, VERIFY, PFNS) must give, as far as the argument's
/// readability and the fd's class decide it.
enum LiveWant {
    /// Decided: the prediction (`None`: none can be made).
    Decided(Option<Result<(), Errno>>),
    /// One of our dma-bufs: the rest of the argument decides.
    OurDmaBuf,
}

impl LiveWant {
    fn new(place: Place, len: usize, class: Class) -> Self {
        if Arena::readable(place).is_some_and(|r| r < len) {
            return Self::Decided(Some(Err(Errno::EFAULT)));
        }
        Self::Decided(match class {
            Class::Unknown => None,
            Class::NotOpen => Some(Err(Errno::EBADF)),
            Class::Other | Class::Memfd { .. } | Class::ForeignDmaBuf => Some(Err(Errno::EINVAL)),
            Class::OurDmaBuf { .. } => return Self::OurDmaBuf,
        })
    }

    /// The prediction, with `ours` for one of our dma-bufs.
    fn or_ours(self, ours: impl FnOnce() -> Result<(), Errno>) -> Option<Result<(), Errno>> {
        match self {
            Self::Decided(want) => want,
            Self::OurDmaBuf => Some(ours()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim() -> Limits {
        Limits {
            pages: 16384,
            list: 1024,
        }
    }

    #[test]
    fn model_follows_upstream_order() {
        let p = ps();
        let good = Class::Memfd {
            size: 16 * p,
            seals_ok: true,
        };
        let bad = Class::Memfd {
            size: 16 * p,
            seals_ok: false,
        };
        let l = lim();
        assert_eq!(predict_create(&[(good, 0, p)], &l), Some(Ok(())));
        assert_eq!(
            predict_create(&[(good, 1, p)], &l),
            Some(Err(Errno::EINVAL))
        );
        assert_eq!(
            predict_create(&[(Class::NotOpen, 1, p)], &l),
            Some(Err(Errno::EINVAL)),
            "range before fd"
        );
        assert_eq!(
            predict_create(&[(Class::NotOpen, 0, p)], &l),
            Some(Err(Errno::EBADFD))
        );
        assert_eq!(
            predict_create(&[(Class::Other, 0, p)], &l),
            Some(Err(Errno::EBADFD))
        );
        assert_eq!(predict_create(&[(bad, 0, p)], &l), Some(Err(Errno::EINVAL)));
        assert_eq!(
            predict_create(&[(good, 16 * p, p)], &l),
            Some(Err(Errno::EINVAL))
        );
        assert_eq!(
            predict_create(&[(good, u64::MAX - p + 1, 2 * p)], &l),
            Some(Err(Errno::EINVAL))
        );
        assert_eq!(
            predict_create(&[(good, 0, p), (Class::Other, 0, p)], &l),
            Some(Err(Errno::EBADFD))
        );
        assert_eq!(
            predict_create(&[(bad, 0, p), (Class::Other, 0, p)], &l),
            Some(Err(Errno::EINVAL)),
            "entries in order"
        );
        assert_eq!(
            predict_create(&[(good, 0, 0), (good, 0, p)], &l),
            Some(Err(Errno::EINVAL)),
            "an empty entry"
        );
        assert_eq!(predict_create(&[], &l), Some(Err(Errno::EINVAL)));
        assert_eq!(
            predict_create(&[(good, 0, (16384 + 1) * p)], &l),
            Some(Err(Errno::EINVAL))
        );
        assert_eq!(predict_create(&[(Class::Unknown, 0, p)], &l), None);
    }
}
