//! A real compositor imports our dma-bufs: Weston 14 (Debian 13 rootfs, shared into the
//! guest at /debian by scripts/vm.sh) on its headless backend with the GL renderer on
//! Mesa's llvmpipe and the kiosk shell (the window fills the 250x100 output), shows the
//! buffer that `udmabuf-ctl present` hands it through zwp_linux_dmabuf_v1. Each case takes
//! a screenshot (weston-screenshooter, weston_capture_v1: Weston runs with --debug),
//! decodes the PNG and compares every pixel with the pattern udmabuf-ctl wrote.
//!
//! The product case: present, punch a hole in the memfd and write new contents through
//! the memfd, commit the same wl_buffer again, screenshot. On /dev/udmabuf-live the
//! compositor shows the new pixels; on the built-in /dev/udmabuf it shows the old ones in
//! the punched rows (and the new ones elsewhere, where the memfd kept its pages), which is
//! asserted too. Screenshots are kept in $ULIVE_SHOT_DIR (the host's out/wayland/).

use super::common::REFERENCE_DEVICE;
use super::{cases, Suite};
use crate::ktap::CaseResult;
use crate::util::Rng;
use crate::util::{device_path, precondition};
use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const CTL: &str = "udmabuf-ctl";
const ROOTFS: &str = "/debian";
/// The guest's /tmp is bind-mounted at /debian/tmp: the socket and the shots are in both.
const XDG: &str = "/tmp/ulive-wl";
const SOCKET: &str = "ulive-wayland";
const W: u64 = 250;
const H: u64 = 100;

pub fn suite() -> Suite {
    Suite::new(
        "wayland",
        cases![
            weston_starts_with_llvmpipe_dmabuf,
            xr24_250x100_shows_the_pattern,
            ar24_250x100_shows_the_pattern,
            nv12_two_planes_shows_the_pattern,
            live_buffer_shows_new_pixels_after_punch_and_write,
            builtin_buffer_shows_old_pixels_after_punch_and_write,
            live_hugetlb_buffer_shows_new_pixels,
            builtin_hugetlb_buffer_shows_old_pixels,
            format_not_offered_exits_12,
            weston_survived_and_stops,
        ],
    )
    .shared_process()
}

struct Weston {
    child: Child,
    shots: u32,
}

static WESTON: Mutex<Option<Weston>> = Mutex::new(None);

fn sh(cmd: &str) -> Result<()> {
    let st = Command::new("sh")
        .args(["-c", cmd])
        .status()
        .with_context(|| format!("sh -c {cmd}"))?;
    ensure!(st.success(), "`{cmd}` failed: {st}");
    Ok(())
}

fn wl_env(cmd: &mut Command) -> &mut Command {
    cmd.env("XDG_RUNTIME_DIR", XDG)
        .env("WAYLAND_DISPLAY", SOCKET)
}

/// The Debian rootfs, with /dev, /proc, /sys and /tmp of the guest inside it.
fn rootfs() -> Result<()> {
    if !Path::new(ROOTFS).join("usr/bin/weston").exists() {
        return Err(precondition(format!(
            "no Debian rootfs with weston at {ROOTFS} (scripts/rootfs.sh builds it; scripts/vm.sh shares it)"
        )));
    }
    if !Path::new(ROOTFS).join("proc/self").exists() {
        for d in ["dev", "proc", "sys", "tmp"] {
            sh(&format!("mount --bind /{d} {ROOTFS}/{d}"))?;
        }
    }
    Ok(())
}

fn log_tail() -> String {
    let log = std::fs::read_to_string("/tmp/weston.log").unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Weston, started by the first case that needs it.
fn with_weston<T>(f: impl FnOnce(&mut Weston) -> Result<T>) -> Result<T> {
    let mut guard = WESTON
        .lock()
        .map_err(|_| anyhow::anyhow!("weston lock poisoned"))?;
    if guard.is_none() {
        rootfs()?;
        let _ = std::fs::remove_dir_all(XDG);
        sh(&format!("mkdir -p -m 700 {XDG}"))?;
        let t0 = Instant::now();
        let child = Command::new("chroot")
            .args([
                ROOTFS,
                "/usr/bin/env",
                &format!("XDG_RUNTIME_DIR={XDG}"),
                "HOME=/tmp",
                "weston",
            ])
            .args([
                "--backend=headless",
                "--renderer=gl",
                "--shell=kiosk",
                "--debug",
                "--idle-time=0",
            ])
            .args([
                format!("--width={W}"),
                format!("--height={H}"),
                format!("--socket={SOCKET}"),
                "--log=/tmp/weston.log".into(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting weston in the Debian rootfs")?;
        let mut w = Weston { child, shots: 0 };
        // Up once the kiosk shell is loaded and a client can list the dma-buf formats.
        loop {
            if let Some(st) = w.child.try_wait()? {
                bail!("weston exited at start ({st}); its log:\n{}", log_tail());
            }
            let ok = wl_env(Command::new(CTL).args(["present", "--list-formats"]))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok
                && std::fs::read_to_string("/tmp/weston.log")
                    .unwrap_or_default()
                    .contains("kiosk-shell")
            {
                break;
            }
            if t0.elapsed() > Duration::from_secs(120) {
                let _ = w.child.kill();
                bail!("weston not up after 120 s; its log:\n{}", log_tail());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        crate::ktap::out(&format!(
            "    # weston up in {:.1} s",
            t0.elapsed().as_secs_f64()
        ));
        *guard = Some(w);
    }
    let w = guard.as_mut().context("weston")?;
    if let Some(st) = w.child.try_wait()? {
        bail!("weston is gone ({st}); its log:\n{}", log_tail());
    }
    f(w)
}

/// A screenshot of the whole output, decoded: (width, height, RGB bytes), kept as NAME.png.
fn screenshot(name: &str) -> Result<(u32, u32, Vec<u8>)> {
    let png = with_weston(|w| {
        w.shots += 1;
        let dir = format!("/tmp/ulive-shots/{}", w.shots);
        sh(&format!("rm -rf {dir} && mkdir -p {dir}"))?;
        let o = wl_env(Command::new("chroot").args([
            ROOTFS,
            "/usr/bin/env",
            &format!("XDG_RUNTIME_DIR={XDG}"),
        ]))
        .args([
            format!("WAYLAND_DISPLAY={SOCKET}"),
            "sh".into(),
            "-c".into(),
            format!("cd {dir} && exec weston-screenshooter"),
        ])
        .output()
        .context("weston-screenshooter")?;
        ensure!(
            o.status.success(),
            "weston-screenshooter: {}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        let shot = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "png"));
        shot.with_context(|| format!("weston-screenshooter wrote no PNG in {dir}"))
    })?;
    let bytes = std::fs::read(&png).with_context(|| format!("reading {}", png.display()))?;
    if let Some(dir) = std::env::var_os("ULIVE_SHOT_DIR") {
        let keep = PathBuf::from(dir).join(format!("{name}.png"));
        std::fs::write(&keep, &bytes)
            .with_context(|| format!("keeping the screenshot as {}", keep.display()))?;
        crate::ktap::out(&format!("    # screenshot {name}.png ({})", keep.display()));
    }
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .context("decoding the screenshot PNG")?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .context("decoding the screenshot PNG")?;
    let ch = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        t => bail!("screenshot PNG has colour type {t:?}, expected RGB(A)"),
    };
    ensure!(
        info.bit_depth == png::BitDepth::Eight,
        "screenshot PNG has {:?} bits per channel",
        info.bit_depth
    );
    let mut rgb = Vec::with_capacity((info.width * info.height * 3) as usize);
    for px in buf[..info.buffer_size()].chunks(ch) {
        rgb.extend_from_slice(&px[..3]);
    }
    Ok((info.width, info.height, rgb))
}

/// `random:SEED` as udmabuf-ctl writes it: byte o%8 of the u64 number o/8 of the
/// SplitMix64 stream seeded with SEED.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&r.next_u64().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// What the compositor must show for an XR24/AR24 buffer (B, G, R, X/A in memory) over
/// its black background: R, G, B (the alpha of a premultiplied AR24 pixel blends with 0).
fn expected_rgb(bytes: &[u8], stride: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity((W * H * 3) as usize);
    for y in 0..H as usize {
        for x in 0..W as usize {
            let p = &bytes[y * stride + x * 4..];
            v.extend_from_slice(&[p[2], p[1], p[0]]);
        }
    }
    v
}

/// NV12 (BT.601, limited range, as Weston's GL shader converts by default) to RGB.
fn expected_nv12(bytes: &[u8], stride: usize, uv_offset: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity((W * H * 3) as usize);
    let clamp = |f: f64| f.round().clamp(0.0, 255.0) as u8;
    for y in 0..H as usize {
        for x in 0..W as usize {
            let yy = bytes[y * stride + x] as f64;
            let c = uv_offset + (y / 2) * stride + (x / 2) * 2;
            let (u, vv) = (bytes[c] as f64 - 128.0, bytes[c + 1] as f64 - 128.0);
            let l = 1.164 * (yy - 16.0);
            v.extend_from_slice(&[
                clamp(l + 1.596 * vv),
                clamp(l - 0.392 * u - 0.813 * vv),
                clamp(l + 2.017 * u),
            ]);
        }
    }
    v
}

/// Compare a screenshot with what must be on screen, within `tol` per channel; name the
/// first pixels that differ.
fn compare(what: &str, shot: &(u32, u32, Vec<u8>), want: &[u8], tol: u8) -> Result<()> {
    ensure!(
        (shot.0 as u64, shot.1 as u64) == (W, H),
        "{what}: screenshot is {}x{}, the output is {W}x{H}",
        shot.0,
        shot.1
    );
    let mut bad = Vec::new();
    let mut count = 0;
    for (i, (g, e)) in shot.2.chunks(3).zip(want.chunks(3)).enumerate() {
        if g.iter().zip(e).any(|(a, b)| a.abs_diff(*b) > tol) {
            count += 1;
            if bad.len() < 4 {
                bad.push(format!(
                    "({},{}) got {:?} want {:?}",
                    i as u64 % W,
                    i as u64 / W,
                    g,
                    e
                ));
            }
        }
    }
    ensure!(
        count == 0,
        "{what}: {count} of {} pixels differ, e.g. {}",
        W * H,
        bad.join("; ")
    );
    Ok(())
}

/// A background `udmabuf-ctl create --hold --json`; killed when dropped.
struct Holder {
    child: Child,
    handle: String,
    memfd: String,
}

impl Holder {
    fn start(args: &[&str]) -> Result<Self> {
        let mut child = Command::new(CTL)
            .arg("create")
            .args(args)
            .args(["--hold", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting udmabuf-ctl create --hold")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("holder stdout")?).read_line(&mut line)?;
        let v: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("`{CTL} create {}` printed {line:?}", args.join(" "));
            }
        };
        let handle = v["handle"].as_str().context("no handle")?.to_owned();
        let memfd = format!("/proc/{}/fd/{}", child.id(), v["memfd_fd"]);
        Ok(Self {
            child,
            handle,
            memfd,
        })
    }

    /// The memfd's bytes (what udmabuf-ctl wrote).
    fn memfd_bytes(&self, len: usize) -> Result<Vec<u8>> {
        let mut b =
            std::fs::read(&self.memfd).with_context(|| format!("reading {}", self.memfd))?;
        ensure!(b.len() >= len, "memfd has {} bytes, need {len}", b.len());
        b.truncate(len);
        Ok(b)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `udmabuf-ctl present`; each commit waits for its `shown N` line.
struct Presenter {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
    shown: u64,
}

impl Presenter {
    fn start(args: &[&str]) -> Result<Self> {
        let mut child = wl_env(Command::new(CTL).arg("present").args(args))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting udmabuf-ctl present")?;
        let stdin = child.stdin.take().context("stdin")?;
        let out = BufReader::new(child.stdout.take().context("stdout")?);
        let mut p = Self {
            child,
            stdin,
            out,
            shown: 0,
        };
        p.wait_shown()?;
        Ok(p)
    }

    fn wait_shown(&mut self) -> Result<()> {
        let want = format!("shown {}", self.shown + 1);
        loop {
            let mut line = String::new();
            if self.out.read_line(&mut line)? == 0 {
                let st = self.child.wait()?;
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                bail!(
                    "udmabuf-ctl present ended ({st}) before `{want}`: {}",
                    err.trim()
                );
            }
            if line.trim() == want {
                self.shown += 1;
                return Ok(());
            }
        }
    }

    /// Commit the same wl_buffer again (a line on stdin) and wait until it is shown.
    fn recommit(&mut self) -> Result<()> {
        self.stdin.write_all(b"\n")?;
        self.wait_shown()
    }
}

impl Drop for Presenter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ctl_ok(args: &[&str]) -> Result<()> {
    let o = Command::new(CTL).args(args).output()?;
    ensure!(
        o.status.success(),
        "`{CTL} {}`: {}: {}",
        args.join(" "),
        o.status,
        String::from_utf8_lossy(&o.stderr).trim()
    );
    Ok(())
}

fn weston_starts_with_llvmpipe_dmabuf() -> CaseResult {
    with_weston(|_| Ok(()))?;
    let log = std::fs::read_to_string("/tmp/weston.log")?;
    ensure!(
        log.contains("llvmpipe"),
        "weston's GL renderer is not llvmpipe:\n{}",
        log_tail()
    );
    ensure!(
        log.contains("dmabuf support: modifiers"),
        "weston reports no dma-buf import:\n{log}"
    );
    Ok(())
}

/// Show a packed 32-bit buffer of ours and compare the screenshot with the pattern.
fn packed(fourcc: &str, seed: u64) -> CaseResult {
    with_weston(|_| Ok(()))?;
    let dev = device_path();
    let fill = format!("random:{seed}");
    let dims = ["--format", fourcc, "--width", "250", "--height", "100"];
    let mut args = dims.to_vec();
    args.extend(["--fill", &fill, "--device", &dev]);
    let holder = Holder::start(&args)?;
    let stride = 1024; // 250 * 4 rounded up to 256
    let want = pattern(seed, stride * H as usize);
    ensure!(
        holder.memfd_bytes(want.len())? == want,
        "the memfd does not hold {fill} as this suite computes it"
    );
    let mut pargs = vec![holder.handle.as_str()];
    pargs.extend(dims);
    let _p = Presenter::start(&pargs)?;
    let shot = screenshot(&format!("{}-250x100", fourcc.to_lowercase()))?;
    compare(
        &format!("{fourcc} 250x100 on {dev}"),
        &shot,
        &expected_rgb(&want, stride),
        0,
    )?;
    Ok(())
}

fn xr24_250x100_shows_the_pattern() -> CaseResult {
    packed("XR24", 21)
}

fn ar24_250x100_shows_the_pattern() -> CaseResult {
    // Premultiplied alpha: a colour channel above its alpha is not a valid pixel, and
    // blending may saturate. Use alpha 0xff so the pattern's colours stay exact.
    with_weston(|_| Ok(()))?;
    let dev = device_path();
    let dims = ["--format", "AR24", "--width", "250", "--height", "100"];
    let mut args = dims.to_vec();
    args.extend(["--fill", "random:22", "--device", &dev]);
    let holder = Holder::start(&args)?;
    let stride = 1024;
    // Alpha bytes to 0xff, through the memfd (write is a pattern over a range: a loop of
    // one-byte writes would be slow, so write the whole buffer through /proc/PID/fd).
    let mut bytes = holder.memfd_bytes(stride * H as usize)?;
    for px in bytes.chunks_mut(4) {
        px[3] = 0xff;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&holder.memfd)?
        .write_all(&bytes)?;
    let mut pargs = vec![holder.handle.as_str()];
    pargs.extend(dims);
    let _p = Presenter::start(&pargs)?;
    let shot = screenshot("ar24-250x100")?;
    compare(
        &format!("AR24 250x100 on {dev}"),
        &shot,
        &expected_rgb(&bytes, stride),
        0,
    )?;
    Ok(())
}

fn nv12_two_planes_shows_the_pattern() -> CaseResult {
    with_weston(|_| Ok(()))?;
    let dev = device_path();
    let dims = ["--format", "NV12", "--width", "250", "--height", "100"];
    let mut args = dims.to_vec();
    args.extend(["--fill", "random:23", "--device", &dev]);
    let holder = Holder::start(&args)?;
    let stride = 256;
    let bytes = holder.memfd_bytes(stride * H as usize * 3 / 2)?;
    let mut pargs = vec![holder.handle.as_str()];
    pargs.extend(dims);
    let _p = Presenter::start(&pargs)?;
    let shot = screenshot("nv12-250x100")?;
    // Colour conversion in the shader: a few steps of rounding.
    compare(
        &format!("NV12 250x100 on {dev}"),
        &shot,
        &expected_nv12(&bytes, stride, stride * H as usize),
        3,
    )?;
    Ok(())
}

/// What [`punch_and_write`] returns: (old pattern, new pattern, punched byte range,
/// screenshot after as (width, height, pixels)).
type PunchedShot = (
    Vec<u8>,
    Vec<u8>,
    std::ops::Range<usize>,
    (u32, u32, Vec<u8>),
);

/// The product case on `device`: present, punch, write through the memfd, re-commit.
/// Returns (old pattern, new pattern, punched byte range, screenshot after).
fn punch_and_write(device: &str, hugetlb: bool, tag: &str) -> Result<PunchedShot> {
    with_weston(|_| Ok(()))?;
    let dims = ["--format", "XR24", "--width", "250", "--height", "100"];
    let mut args = dims.to_vec();
    args.extend(["--fill", "random:31", "--device", device]);
    if hugetlb {
        args.push("--hugetlb");
    }
    let holder = Holder::start(&args)?;
    let stride = 1024;
    let len = stride * H as usize;
    let old = pattern(31, len);
    let mut pargs = vec![holder.handle.as_str()];
    pargs.extend(dims);
    let mut p = Presenter::start(&pargs)?;
    compare(
        &format!("{tag}: before the punch"),
        &screenshot(&format!("{tag}-before"))?,
        &expected_rgb(&old, stride),
        0,
    )?;
    // Rows 16..48 (4 KiB pages 4..12) for shmem; the whole 2 MiB page for hugetlb.
    let hole = if hugetlb {
        0..(2 << 20)
    } else {
        16 * 1024..48 * 1024
    };
    ctl_ok(&[
        "punch",
        &holder.handle,
        "--offset",
        &hole.start.to_string(),
        "--len",
        &hole.len().to_string(),
    ])?;
    ctl_ok(&["write", &holder.handle, "--pattern", "random:32"])?;
    let new = pattern(32, len);
    ensure!(
        holder.memfd_bytes(len)? == new,
        "the memfd does not hold random:32 after the write"
    );
    p.recommit()?;
    let shot = screenshot(&format!("{tag}-after"))?;
    Ok((old, new, hole.start..hole.end.min(len), shot))
}

fn live_case(hugetlb: bool, tag: &str) -> CaseResult {
    let dev = device_path();
    let (_, new, _, shot) = punch_and_write(&dev, hugetlb, tag)?;
    compare(
        &format!(
            "{tag} on {dev}: after punch + write + commit the compositor shows the new pixels"
        ),
        &shot,
        &expected_rgb(&new, 1024),
        0,
    )?;
    Ok(())
}

fn builtin_case(hugetlb: bool, tag: &str) -> CaseResult {
    if !Path::new(REFERENCE_DEVICE).exists() {
        skip!("no {REFERENCE_DEVICE}");
    }
    let (old, new, hole, shot) = punch_and_write(REFERENCE_DEVICE, hugetlb, tag)?;
    // The built-in driver keeps the punched pages: the memfd's new pages there never reach
    // the compositor. Pages that were not punched are the same pages: new bytes.
    let mut want = new.clone();
    want[hole.clone()].copy_from_slice(&old[hole.clone()]);
    compare(
        &format!("{tag} on {REFERENCE_DEVICE}: old pixels in the punched range"),
        &shot,
        &expected_rgb(&want, 1024),
        0,
    )?;
    let stale_rows = hole.len() / 1024;
    crate::ktap::out(&format!("    # {REFERENCE_DEVICE}: {stale_rows} of {H} rows on screen are stale (the punched range), as asserted"));
    Ok(())
}

fn live_buffer_shows_new_pixels_after_punch_and_write() -> CaseResult {
    live_case(false, "live-shmem")
}

fn builtin_buffer_shows_old_pixels_after_punch_and_write() -> CaseResult {
    builtin_case(false, "builtin-shmem")
}

fn live_hugetlb_buffer_shows_new_pixels() -> CaseResult {
    live_case(true, "live-hugetlb")
}

fn builtin_hugetlb_buffer_shows_old_pixels() -> CaseResult {
    builtin_case(true, "builtin-hugetlb")
}

fn format_not_offered_exits_12() -> CaseResult {
    with_weston(|_| Ok(()))?;
    let dev = device_path();
    // R8 is a format udmabuf-ctl lays out and Weston 14's GL renderer does not offer.
    let holder = Holder::start(&[
        "--format", "R8", "--width", "64", "--height", "64", "--device", &dev,
    ])?;
    let o = wl_env(Command::new(CTL).args([
        "present",
        &holder.handle,
        "--format",
        "R8",
        "--width",
        "64",
        "--height",
        "64",
    ]))
    .stdin(Stdio::null())
    .output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    ensure!(
        o.status.code() == Some(12),
        "present of R8: expected exit 12, got {}: {err}",
        o.status
    );
    ensure!(
        err.contains("does not offer") && err.contains("XR24"),
        "the message should say R8 is not offered and list what is: {err}"
    );
    with_weston(|_| Ok(()))?; // still alive
    Ok(())
}

fn weston_survived_and_stops() -> CaseResult {
    let mut guard = WESTON
        .lock()
        .map_err(|_| anyhow::anyhow!("weston lock poisoned"))?;
    let Some(mut w) = guard.take() else {
        skip!("weston never started");
    };
    if let Some(st) = w.child.try_wait()? {
        bail!(
            "weston died during the suite ({st}); its log:\n{}",
            log_tail()
        );
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(w.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let t0 = Instant::now();
    while w.child.try_wait()?.is_none() {
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = w.child.kill();
            bail!("weston did not stop within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One wrong pixel in a screenshot turns the comparison red, and names the pixel.
    #[test]
    fn one_wrong_pixel_fails() {
        let bytes = pattern(5, 1024 * H as usize);
        let want = expected_rgb(&bytes, 1024);
        let mut shot = (W as u32, H as u32, want.clone());
        assert!(compare("same", &shot, &want, 0).is_ok());
        shot.2[3 * (7 * W as usize + 3)] ^= 1;
        let e = compare("one off", &shot, &want, 0).unwrap_err().to_string();
        assert!(
            e.contains("1 of 25000 pixels differ") && e.contains("(3,7)"),
            "{e}"
        );
        assert!(compare("tolerated", &shot, &want, 1).is_ok());
    }

    #[test]
    fn xr24_is_bgrx_in_memory() {
        let mut bytes = vec![0u8; 1024 * H as usize];
        bytes[..4].copy_from_slice(&[0x11, 0x22, 0x33, 0x44]);
        assert_eq!(&expected_rgb(&bytes, 1024)[..3], &[0x33, 0x22, 0x11]);
    }
}
