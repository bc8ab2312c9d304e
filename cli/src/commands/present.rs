//! `present`: show a dma-buf in the running Wayland compositor, for compositor developers
//! and the `wayland` guest suite. The buffer goes through `zwp_linux_dmabuf_v1` (version 3:
//! the compositor lists its formats and modifiers as events) with its DRM format, the
//! LINEAR modifier and `create --format`'s plane offsets and strides, onto an xdg-shell
//! toplevel. On SIGUSR1 or a line on stdin the same `wl_buffer` is committed again with
//! full damage, so a compositor that samples the buffer in place shows what the dma-buf
//! holds now. Every answer of the compositor that stops it has its own exit code
//! (`exit.rs`): no compositor or a missing global (11), format not offered (12),
//! `zwp_linux_buffer_params_v1.failed` (13), a protocol error or a lost connection (14).

use crate::cli::PresentArgs;
use crate::exit::CtlError;
use crate::format::{self, Layout};
use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::collections::BTreeMap;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use wayland_client::globals::{registry_queue_init, GlobalListContents};
use wayland_client::protocol::{
    wl_buffer::WlBuffer,
    wl_callback::{self, WlCallback},
    wl_compositor::WlCompositor,
    wl_registry::WlRegistry,
    wl_surface::WlSurface,
};
use wayland_client::{delegate_noop, event_created_child, Connection, Dispatch, EventQueue, Proxy, QueueHandle};
use wayland_protocols::wp::linux_dmabuf::zv1::client::{
    zwp_linux_buffer_params_v1::{self, ZwpLinuxBufferParamsV1},
    zwp_linux_dmabuf_v1::{self, ZwpLinuxDmabufV1},
};
use wayland_protocols::xdg::shell::client::{
    xdg_surface::{self, XdgSurface},
    xdg_toplevel::{self, XdgToplevel},
    xdg_wm_base::{self, XdgWmBase},
};

/// DRM_FORMAT_MOD_LINEAR and DRM_FORMAT_MOD_INVALID (drm_fourcc.h).
const MOD_LINEAR: u64 = 0;
const MOD_INVALID: u64 = 0x00ff_ffff_ffff_ffff;

/// What the compositor told us.
#[derive(Default)]
struct State {
    /// Formats offered through zwp_linux_dmabuf_v1, each with its modifiers.
    formats: BTreeMap<u32, Vec<u64>>,
    configured: bool,
    created: Option<WlBuffer>,
    failed: bool,
    frames_done: u64,
    closed: bool,
}

impl Dispatch<WlRegistry, GlobalListContents> for State {
    fn event(
        _: &mut Self,
        _: &WlRegistry,
        _: <WlRegistry as Proxy>::Event,
        _: &GlobalListContents,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}

delegate_noop!(State: WlCompositor);
delegate_noop!(State: ignore WlSurface);
delegate_noop!(State: ignore WlBuffer);

impl Dispatch<ZwpLinuxDmabufV1, ()> for State {
    fn event(s: &mut Self, _: &ZwpLinuxDmabufV1, ev: zwp_linux_dmabuf_v1::Event, _: &(), _: &Connection, _: &QueueHandle<Self>) {
        match ev {
            zwp_linux_dmabuf_v1::Event::Format { format } => {
                s.formats.entry(format).or_default();
            }
            zwp_linux_dmabuf_v1::Event::Modifier { format, modifier_hi, modifier_lo } => {
                s.formats.entry(format).or_default().push((u64::from(modifier_hi) << 32) | u64::from(modifier_lo));
            }
            _ => {}
        }
    }
}

impl Dispatch<ZwpLinuxBufferParamsV1, ()> for State {
    fn event(
        s: &mut Self,
        _: &ZwpLinuxBufferParamsV1,
        ev: zwp_linux_buffer_params_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        match ev {
            zwp_linux_buffer_params_v1::Event::Created { buffer } => s.created = Some(buffer),
            zwp_linux_buffer_params_v1::Event::Failed => s.failed = true,
            _ => {}
        }
    }
    event_created_child!(State, ZwpLinuxBufferParamsV1, [
        zwp_linux_buffer_params_v1::EVT_CREATED_OPCODE => (WlBuffer, ()),
    ]);
}

impl Dispatch<XdgWmBase, ()> for State {
    fn event(_: &mut Self, wm: &XdgWmBase, ev: xdg_wm_base::Event, _: &(), _: &Connection, _: &QueueHandle<Self>) {
        if let xdg_wm_base::Event::Ping { serial } = ev {
            wm.pong(serial);
        }
    }
}

impl Dispatch<XdgSurface, ()> for State {
    fn event(s: &mut Self, xs: &XdgSurface, ev: xdg_surface::Event, _: &(), _: &Connection, _: &QueueHandle<Self>) {
        if let xdg_surface::Event::Configure { serial } = ev {
            xs.ack_configure(serial);
            s.configured = true;
        }
    }
}

impl Dispatch<XdgToplevel, ()> for State {
    fn event(s: &mut Self, _: &XdgToplevel, ev: xdg_toplevel::Event, _: &(), _: &Connection, _: &QueueHandle<Self>) {
        if let xdg_toplevel::Event::Close = ev {
            s.closed = true;
        }
    }
}

impl Dispatch<WlCallback, ()> for State {
    fn event(s: &mut Self, _: &WlCallback, ev: wl_callback::Event, _: &(), _: &Connection, _: &QueueHandle<Self>) {
        if let wl_callback::Event::Done { .. } = ev {
            s.frames_done += 1;
        }
    }
}

/// A fourcc number as its code (`XR24`), or hex if drm-fourcc does not know it.
fn fourcc_name(code: u32) -> String {
    drm_fourcc::DrmFourcc::try_from(code).map(format::code).unwrap_or_else(|_| format!("{code:#010x}"))
}

fn modifier_name(m: u64) -> String {
    match m {
        MOD_LINEAR => "LINEAR".into(),
        MOD_INVALID => "INVALID (implicit)".into(),
        _ => format!("{m:#018x}"),
    }
}

/// The error for a failed dispatch: the compositor's protocol error if it sent one.
fn wl_error(conn: &Connection, what: &str, e: impl std::fmt::Display) -> anyhow::Error {
    match conn.protocol_error() {
        Some(p) => CtlError::Protocol(format!(
            "{what}: the compositor sent a protocol error on {}@{}, code {}: {}",
            p.object_interface, p.object_id, p.code, p.message
        ))
        .into(),
        None => CtlError::Protocol(format!("{what}: lost the connection to the compositor: {e}")).into(),
    }
}

/// The buffer to show: its dma-buf and its layout.
struct Source {
    dmabuf: OwnedFd,
    layout: Layout,
}

fn env_of(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn number(name: &str, v: &str) -> Result<u64> {
    v.parse().map_err(|_| CtlError::Usage(format!("{name}={v} is not a number")).into())
}

/// From a handle and the layout options, or from what `create --format ... --exec` passes.
fn source(a: &PresentArgs) -> Result<Source> {
    let missing = || {
        CtlError::Usage(
            "present needs a buffer: a HANDLE with --format, --width and --height, or run it under \
             `udmabuf-ctl create --format FOURCC --width W --height H --exec -- udmabuf-ctl present`"
                .into(),
        )
    };
    let (dmabuf, from_env) = match &a.handle {
        Some(h) => (h.resolve()?.dmabuf, false),
        None => {
            let v = env_of("UDMABUF_DMABUF_FD").ok_or_else(missing)?;
            let fd: i32 = number("UDMABUF_DMABUF_FD", &v)?.try_into().map_err(|_| missing())?;
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD)
                .map_err(|e| CtlError::Handle(format!("UDMABUF_DMABUF_FD={fd} is not an open fd ({e})")))?;
            // SAFETY: `fd` is open (checked above), inherited from `create --exec` for this
            // process to use, and nothing else in this process owns it.
            (unsafe { OwnedFd::from_raw_fd(fd) }, true)
        }
    };
    let fmt = a.format.clone().or_else(|| env_of("UDMABUF_FORMAT")).ok_or_else(missing)?;
    let dim = |opt: Option<u64>, name: &str| -> Result<u64> {
        match opt {
            Some(v) => Ok(v),
            None => number(name, &env_of(name).ok_or_else(missing)?),
        }
    };
    let (w, h) = (dim(a.width, "UDMABUF_WIDTH")?, dim(a.height, "UDMABUF_HEIGHT")?);
    let spec = format::lookup(&fmt).map_err(CtlError::Usage)?;
    let mut layout = format::layout(spec, w, h, a.stride_align).map_err(CtlError::Usage)?;
    // Under --exec the creator's own strides and offsets are the truth.
    if from_env && a.format.is_none() {
        if let (Some(s), Some(o)) = (env_of("UDMABUF_STRIDES"), env_of("UDMABUF_OFFSETS")) {
            let list = |name: &str, v: &str| -> Result<Vec<u64>> { v.split(',').map(|x| number(name, x)).collect() };
            let (s, o) = (list("UDMABUF_STRIDES", &s)?, list("UDMABUF_OFFSETS", &o)?);
            if s.len() != layout.planes.len() || o.len() != layout.planes.len() {
                return Err(CtlError::Usage(format!(
                    "UDMABUF_STRIDES/UDMABUF_OFFSETS name {}/{} planes; {} has {}",
                    s.len(),
                    o.len(),
                    layout.fourcc,
                    layout.planes.len()
                ))
                .into());
            }
            for (p, (s, o)) in layout.planes.iter_mut().zip(s.into_iter().zip(o)) {
                p.stride = s;
                p.offset = o;
            }
        }
    }
    let size = nix::unistd::lseek(std::os::fd::AsRawFd::as_raw_fd(&dmabuf), 0, nix::unistd::Whence::SeekEnd)
        .context("size of the dma-buf")? as u64;
    for (i, p) in layout.planes.iter().enumerate() {
        let end = p.offset + p.stride * p.height;
        if end > size || u32::try_from(p.offset).is_err() || u32::try_from(p.stride).is_err() {
            return Err(CtlError::Usage(format!(
                "plane {i} of {}x{} {} (offset {}, stride {}) does not fit the {size}-byte dma-buf",
                layout.width, layout.height, layout.fourcc, p.offset, p.stride
            ))
            .into());
        }
    }
    Ok(Source { dmabuf, layout })
}

/// Print one event: text, or one JSON line.
fn say(json: bool, text: String, value: serde_json::Value) {
    if json {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

pub fn run(a: &PresentArgs) -> Result<ExitCode> {
    let src = if a.list_formats { None } else { Some(source(a)?) };
    // The signals that ask for a commit or an end come through a signalfd: block them
    // before anything else, so one sent early is not lost (or fatal).
    let mut mask = SigSet::empty();
    for s in [Signal::SIGUSR1, Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block().context("blocking SIGUSR1/SIGINT/SIGTERM")?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).context("signalfd")?;

    let display = format!(
        "WAYLAND_DISPLAY={}, XDG_RUNTIME_DIR={}",
        std::env::var("WAYLAND_DISPLAY").unwrap_or_else(|_| "(unset: wayland-0)".into()),
        std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "(unset)".into())
    );
    let conn = Connection::connect_to_env().map_err(|e| {
        CtlError::NoCompositor(format!(
            "cannot connect to a Wayland compositor ({display}): {e}; start one, or set WAYLAND_DISPLAY"
        ))
    })?;
    let (globals, mut queue): (_, EventQueue<State>) = registry_queue_init(&conn)
        .map_err(|e| CtlError::NoCompositor(format!("reading the compositor's globals ({display}): {e}")))?;
    let qh = queue.handle();
    let need = |what: &str, e: wayland_client::globals::BindError| {
        anyhow::Error::from(CtlError::NoCompositor(format!("the compositor ({display}) has no usable {what}: {e}")))
    };
    let dmabuf: ZwpLinuxDmabufV1 = globals.bind(&qh, 3..=3, ()).map_err(|e| need("zwp_linux_dmabuf_v1 (version 3)", e))?;
    let mut state = State::default();
    queue.roundtrip(&mut state).map_err(|e| wl_error(&conn, "listing the dma-buf formats", e))?;

    let Some(src) = src else {
        return list_formats(a.json, &state.formats);
    };
    let l = &src.layout;
    let offered = state.formats.get(&l.fourcc_code);
    if !offered.is_some_and(|m| m.contains(&MOD_LINEAR)) {
        let linear: Vec<String> =
            state.formats.iter().filter(|(_, m)| m.contains(&MOD_LINEAR)).map(|(f, _)| fourcc_name(*f)).collect();
        let why = match offered {
            None => "does not offer the format".to_owned(),
            Some(m) => format!("offers it only with {}", m.iter().map(|&m| modifier_name(m)).collect::<Vec<_>>().join(", ")),
        };
        return Err(CtlError::NotOffered(format!(
            "the compositor {why} {} with the LINEAR modifier; it offers LINEAR for: {} (`udmabuf-ctl present --list-formats` lists all)",
            l.fourcc,
            if linear.is_empty() { "nothing".into() } else { linear.join(" ") }
        ))
        .into());
    }
    let compositor: WlCompositor = globals.bind(&qh, 1..=6, ()).map_err(|e| need("wl_compositor", e))?;
    let wm: XdgWmBase = globals.bind(&qh, 1..=6, ()).map_err(|e| need("xdg_wm_base", e))?;

    let surface = compositor.create_surface(&qh, ());
    let xdg = wm.get_xdg_surface(&surface, &qh, ());
    let toplevel = xdg.get_toplevel(&qh, ());
    toplevel.set_title(a.title.clone());
    toplevel.set_app_id("udmabuf-ctl".into());
    surface.commit();
    while !state.configured {
        queue.blocking_dispatch(&mut state).map_err(|e| wl_error(&conn, "waiting for the window's first configure", e))?;
    }

    let params = dmabuf.create_params(&qh, ());
    for (i, p) in l.planes.iter().enumerate() {
        // (offset and stride fit in u32: checked in source())
        params.add(src.dmabuf.as_fd(), i as u32, p.offset as u32, p.stride as u32, (MOD_LINEAR >> 32) as u32, MOD_LINEAR as u32);
    }
    let (w, h) = (i32::try_from(l.width).unwrap_or(i32::MAX), i32::try_from(l.height).unwrap_or(i32::MAX));
    params.create(w, h, l.fourcc_code, zwp_linux_buffer_params_v1::Flags::empty());
    while state.created.is_none() && !state.failed {
        queue.blocking_dispatch(&mut state).map_err(|e| wl_error(&conn, "creating the wl_buffer", e))?;
    }
    let strides = l.planes.iter().map(|p| p.stride.to_string()).collect::<Vec<_>>().join(",");
    let offsets = l.planes.iter().map(|p| p.offset.to_string()).collect::<Vec<_>>().join(",");
    let Some(buffer) = state.created.take() else {
        return Err(CtlError::BufferFailed(format!(
            "the compositor refused the buffer (zwp_linux_buffer_params_v1.failed): {}x{} {} LINEAR, strides {strides}, offsets {offsets}; \
             its log says why (e.g. weston --log)",
            l.width, l.height, l.fourcc
        ))
        .into());
    };
    say(
        a.json,
        format!("buffer {} {}x{} LINEAR strides {strides} offsets {offsets}", l.fourcc, l.width, l.height),
        serde_json::json!({"event": "buffer", "format": l.fourcc, "width": l.width, "height": l.height,
                           "modifier": MOD_LINEAR, "strides": strides, "offsets": offsets}),
    );

    let damage_buffer = surface.version() >= 4;
    let mut commits = 0u64;
    let mut commit = |state: &mut State, queue: &mut EventQueue<State>| -> Result<()> {
        surface.attach(Some(&buffer), 0, 0);
        if damage_buffer {
            surface.damage_buffer(0, 0, w, h);
        } else {
            surface.damage(0, 0, w, h);
        }
        surface.frame(&qh, ());
        surface.commit();
        commits += 1;
        while state.frames_done < commits && !state.closed {
            queue.blocking_dispatch(state).map_err(|e| wl_error(&conn, "waiting for the frame to be shown", e))?;
        }
        say(a.json, format!("shown {commits}"), serde_json::json!({"event": "shown", "commit": commits}));
        Ok(())
    };
    commit(&mut state, &mut queue)?;
    if a.once {
        return Ok(ExitCode::SUCCESS);
    }

    let stdin = std::io::stdin();
    let mut stdin_open = true;
    let mut pending_line = Vec::new();
    loop {
        if state.closed {
            say(a.json, "closed by the compositor".into(), serde_json::json!({"event": "closed"}));
            return Ok(ExitCode::SUCCESS);
        }
        queue.flush().map_err(|e| wl_error(&conn, "sending to the compositor", e))?;
        queue.dispatch_pending(&mut state).map_err(|e| wl_error(&conn, "reading the compositor's events", e))?;
        let Some(guard) = queue.prepare_read() else { continue };
        let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
        let (wl_ready, sig_ready, in_ready) = {
            let mut fds =
                vec![PollFd::new(guard.connection_fd(), PollFlags::POLLIN), PollFd::new(sigfd.as_fd(), PollFlags::POLLIN)];
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(anyhow::Error::new(e).context("poll")),
            }
            (ready(&fds[0]), ready(&fds[1]), fds.get(2).is_some_and(ready))
        };
        if wl_ready {
            guard.read().map_err(|e| wl_error(&conn, "reading from the compositor", e))?;
        } else {
            drop(guard);
        }
        queue.dispatch_pending(&mut state).map_err(|e| wl_error(&conn, "reading the compositor's events", e))?;
        if sig_ready {
            while let Some(info) = sigfd.read_signal().context("reading the signalfd")? {
                if info.ssi_signo == Signal::SIGUSR1 as u32 {
                    commit(&mut state, &mut queue)?;
                } else {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        if in_ready {
            let mut buf = [0u8; 4096];
            match nix::unistd::read(0, &mut buf) {
                Ok(0) => stdin_open = false,
                Ok(n) => {
                    pending_line.extend_from_slice(&buf[..n]);
                    while let Some(i) = pending_line.iter().position(|&b| b == b'\n') {
                        pending_line.drain(..=i);
                        commit(&mut state, &mut queue)?;
                    }
                }
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                Err(_) => stdin_open = false,
            }
        }
    }
}

/// `--list-formats`: every format the compositor offers, with its modifiers.
fn list_formats(json: bool, formats: &BTreeMap<u32, Vec<u64>>) -> Result<ExitCode> {
    if json {
        let list: Vec<_> = formats
            .iter()
            .map(|(f, m)| serde_json::json!({"fourcc": fourcc_name(*f), "code": f, "modifiers": m, "linear": m.contains(&MOD_LINEAR)}))
            .collect();
        crate::output::json(&serde_json::json!({ "formats": list }))?;
    } else {
        for (f, m) in formats {
            let mods = if m.is_empty() {
                "(no modifier events)".into()
            } else {
                m.iter().map(|&m| modifier_name(m)).collect::<Vec<_>>().join(", ")
            };
            println!("{:<6} {f:#010x}  {mods}", fourcc_name(*f));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(fourcc_name(0x3432_5258), "XR24");
        assert_eq!(fourcc_name(0x1234_5678), "0x12345678");
        assert_eq!(modifier_name(0), "LINEAR");
        assert_eq!(modifier_name(MOD_INVALID), "INVALID (implicit)");
    }

    #[test]
    fn no_compositor_exits_11() {
        let args = PresentArgs {
            handle: None,
            format: None,
            width: None,
            height: None,
            stride_align: 256,
            list_formats: true,
            once: false,
            title: "t".into(),
            json: false,
        };
        // A display that cannot exist.
        std::env::set_var("WAYLAND_DISPLAY", "/nonexistent/udmabuf-ctl-test");
        let e = run(&args).unwrap_err();
        assert_eq!(crate::exit::code_of(&e), crate::exit::NO_COMPOSITOR, "{e:#}");
        assert!(format!("{e}").contains("/nonexistent/udmabuf-ctl-test"), "{e}");
    }
}
