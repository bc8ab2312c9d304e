//! `udmabuf-ctl` as users run it: every step is a separate process. A holder
//! (`udmabuf-ctl create --hold --json`) runs in the background and prints its handle;
//! `punch`, `write`, `sync`, `verify`, `info` and `list` then reach its buffer through that
//! handle (pidfd_getfd). Against /dev/udmabuf-live the buffer must follow its memfd
//! (verify exits 0 after punch + write + sync); against the kernel's /dev/udmabuf it must
//! not, and verify must exit 5 naming the pages that diverged. Exit codes are checked
//! throughout; killing the holder must release its buffers.

use super::common::{page_size, test_device, ParamGuard, HUGE_PAGE, REFERENCE_DEVICE};
use super::live_util::{expect_hugepage_pool, hugepage_pool, meminfo};
use super::{cases, Require, Suite};
use crate::ktap::CaseResult;
use crate::util::{device_path, expect_eq};
use anyhow::{bail, ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

const CTL: &str = "udmabuf-ctl";

pub fn suite() -> Suite {
    Suite::new(
        "cli",
        cases![
            usage_errors_exit_2,
            missing_device_exits_3,
            bad_handles_exit_8 => [Require::LiveDevice],
            live_buffer_follows_punch_and_write => [Require::LiveDevice],
            live_hugetlb_buffer_follows_punch_and_write => [Require::LiveDevice],
            builtin_buffer_diverges_and_verify_names_offsets,
            hugepage_shortage_exits_6,
            exec_passes_fds_layout_and_status => [Require::LiveDevice],
            format_layout_is_printed => [Require::LiveDevice],
            exec_command_gets_clean_signals => [Require::LiveDevice],
            mixed_handle_exits_8,
            unwatched_buffer_verdict_is_stable => [Require::LiveDevice],
            handle_commands_find_the_device => [Require::LiveDevice],
            read_dumps_the_buffer => [Require::LiveDevice],
            partial_punch_says_no_page_dropped => [Require::LiveDevice],
            hold_pin_defers_sync => [Require::LiveDevice],
            nothing_left_running,
        ],
    )
}

/// Run `udmabuf-ctl ARGS` to completion.
fn ctl(args: &[&str]) -> Result<Output> {
    Command::new(CTL)
        .args(args)
        .output()
        .with_context(|| format!("running {CTL} {}", args.join(" ")))
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}, stdout: {}, stderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).trim(),
        String::from_utf8_lossy(&o.stderr).trim()
    )
}

/// Run and require exit code `want`.
fn ctl_expect(args: &[&str], want: i32) -> Result<Output> {
    let o = ctl(args)?;
    if o.status.code() != Some(want) {
        bail!(
            "`{CTL} {}`: expected exit {want}; {}",
            args.join(" "),
            show(&o)
        );
    }
    Ok(o)
}

/// Run with `--json` appended, require exit `want`, parse stdout.
fn ctl_json(args: &[&str], want: i32) -> Result<Value> {
    let mut all = args.to_vec();
    all.push("--json");
    let o = ctl_expect(&all, want)?;
    let text = String::from_utf8_lossy(&o.stdout);
    ensure!(
        text.trim_end().lines().count() == 1,
        "`{CTL} {}`: --json printed more than one line: {text}",
        all.join(" ")
    );
    serde_json::from_str(&text)
        .with_context(|| format!("`{CTL} {}`: stdout is not JSON: {text}", all.join(" ")))
}

/// How long a process told to stop may take before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Reap `child`, waiting at most `grace`; past that, SIGKILL and reap it, and fail.
fn reap(child: &mut Child, grace: Duration) -> Result<ExitStatus> {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().context("waitpid")? {
            return Ok(st);
        }
        if t0.elapsed() >= grace {
            let _ = child.kill();
            let st = child.wait().context("waitpid after SIGKILL")?;
            bail!(
                "pid {} still ran {grace:?} after it was told to stop: killed ({st})",
                child.id()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL a process that is not our child (it was orphaned, so we cannot reap it) and
/// wait until it has exited (gone, or a zombie: its fds and memory are released by then).
fn kill_orphan(pid: Pid) -> Result<()> {
    match kill(pid, Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => bail!("SIGKILL to {pid}: {e}"),
    }
    let t0 = Instant::now();
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.trim_start().chars().next())
            });
        match state {
            None | Some('Z') | Some('X') => return Ok(()),
            Some(st) => ensure!(
                t0.elapsed() < Duration::from_secs(10),
                "{pid} still in state {st} 10 s after SIGKILL"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A background `udmabuf-ctl create --hold --json`. Dropping it kills and reaps the
/// holder, so no path out of a case leaves one running (with its buffer, huge pages
/// included).
struct Holder {
    child: Option<Child>,
    created: Value,
    handle: String,
}

impl Holder {
    fn start(args: &[&str]) -> Result<Self> {
        let mut all = vec!["create"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--hold", "--json"]);
        let mut h = Self::start_raw(&all)?;
        let handle = h.created["handle"]
            .as_str()
            .with_context(|| format!("no handle in {}", h.created))?
            .to_owned();
        expect_eq(
            "holder pid in its handle",
            handle.split(':').next().map(str::to_owned),
            Some(h.pid().to_string()),
        )?;
        h.handle = handle;
        Ok(h)
    }

    /// Any `udmabuf-ctl ARGS` that prints one JSON line and then keeps running.
    fn start_raw(args: &[&str]) -> Result<Self> {
        let mut cmd = Command::new(CTL);
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd.spawn().context("starting the holder")?;
        let pid = child.id();
        // From here every early return drops `h`, which kills and reaps the holder.
        let mut h = Self {
            child: Some(child),
            created: Value::Null,
            handle: String::new(),
        };
        let stdout = h
            .child
            .as_mut()
            .and_then(|c| c.stdout.take())
            .context("holder stdout")?;
        // Read its one line in a thread, so a holder that never prints cannot hang the case.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let r = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = tx.send(r);
        });
        let line = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(l)) if !l.trim().is_empty() => l,
            other => {
                let mut child = h.child.take().context("holder")?;
                let _ = child.kill();
                let out = child.wait_with_output()?;
                bail!(
                    "the holder printed no handle ({other:?}); exit {:?}, stderr: {}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        };
        h.created = serde_json::from_str(&line)
            .with_context(|| format!("holder output is not JSON: {line}"))?;
        ensure!(
            h.created.is_object(),
            "holder output is not a JSON object: {line}"
        );
        if h.created.get("pid").is_none() {
            h.created["pid"] = pid.into();
        }
        Ok(h)
    }

    fn pid(&self) -> i64 {
        self.created["pid"].as_i64().unwrap_or(-1)
    }

    /// SIGTERM, then the holder must exit 0 by itself within [`STOP_GRACE`] (else it is
    /// killed, and this fails). It is reaped on every path.
    fn stop(mut self) -> Result<()> {
        let mut child = self.child.take().context("holder already stopped")?;
        let pid = Pid::from_raw(child.id() as i32);
        if let Err(e) = kill(pid, Signal::SIGTERM) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("SIGTERM to the holder {pid}: {e}");
        }
        let status = reap(&mut child, STOP_GRACE).context("the holder after SIGTERM")?;
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        ensure!(
            status.code() == Some(0),
            "the holder exited {status} after SIGTERM: {}",
            stderr.trim()
        );
        Ok(())
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn module_refcnt() -> Result<u64> {
    let p = format!("/sys/module/{}/refcnt", udmabuf_live_uapi::MODULE_NAME);
    let s = std::fs::read_to_string(&p).with_context(|| format!("read {p}"))?;
    Ok(s.trim().parse()?)
}

/// Entries of `list --all --json` held by `pid`.
fn listed_for(pid: i64) -> Result<Vec<Value>> {
    let v = ctl_json(&["list", "--all"], 0)?;
    let bufs = v["buffers"].as_array().context("list: no buffers array")?;
    Ok(bufs
        .iter()
        .filter(|b| b["pid"].as_i64() == Some(pid))
        .cloned()
        .collect())
}

fn usage_errors_exit_2() -> CaseResult {
    for args in [
        &["create"][..],
        &["create", "--size", "1000"],
        &["create", "--size", "4MB"],
        &[
            "create", "--size", "4M", "--format", "XR24", "--width", "1", "--height", "1",
        ],
        &[
            "create", "--format", "ZZ99", "--width", "64", "--height", "64",
        ],
        &["create", "--size", "4M", "--fill", "bogus"],
        &["create", "--size", "4M", "--exec"],
        &["punch", "1:2", "--offset", "0", "--len", "4K"],
        &["punch", "1:02:3", "--offset", "0", "--len", "4K"],
        &["write", "1:2:3", "--pattern", "nonsense"],
        &["verify"],
        &["no-such-command"],
    ] {
        ctl_expect(args, 2)?;
    }
    Ok(())
}

fn missing_device_exits_3() -> CaseResult {
    ctl_expect(
        &[
            "create",
            "--size",
            "64K",
            "--device",
            "/dev/udmabuf-missing",
        ],
        3,
    )?;
    ctl_expect(&["status", "--device", "/dev/udmabuf-missing"], 3)?;
    let o = ctl_expect(
        &[
            "create",
            "--size",
            "64K",
            "--device",
            "/dev/udmabuf-live-missing",
        ],
        3,
    )?;
    ensure!(!o.stderr.is_empty(), "no explanation on stderr");
    Ok(())
}

fn bad_handles_exit_8() -> CaseResult {
    // A process that is gone.
    let mut c = Command::new("true").spawn()?;
    let gone = c.id();
    c.wait()?;
    ctl_expect(&["verify", &format!("{gone}:3:4")], 8)?;
    // A live holder, but fds that are not its memfd and dma-buf.
    let h = Holder::start(&["--size", "64K"])?;
    let memfd = h.created["memfd_fd"].as_i64().context("memfd_fd")?;
    let dmabuf = h.created["dmabuf_fd"].as_i64().context("dmabuf_fd")?;
    let pid = h.pid();
    ctl_expect(&["info", &format!("{pid}:{memfd}:900")], 8)?; // no such fd
    ctl_expect(&["info", &format!("{pid}:{dmabuf}:{memfd}")], 8)?; // swapped: not a memfd
    ctl_expect(
        &[
            "punch",
            &format!("{pid}:{memfd}:{dmabuf}"),
            "--offset",
            "60K",
            "--len",
            "8K",
        ],
        2,
    )?; // past the end
    h.stop()?;
    Ok(())
}

/// The common flow on udmabuf-live: punch two pages, rewrite, sync, verify.
fn live_flow(create: &[&str], punch_off: &str, punch_len: &str, punched_pages: u64) -> CaseResult {
    let base = module_refcnt()?;
    let h = Holder::start(create)?;
    expect_eq(
        "created on",
        h.created["device"].as_str(),
        Some(device_path().as_str()),
    )?;
    let handle = h.handle.clone();

    let v = ctl_json(&["verify", &handle], 0).context("verify right after create")?;
    expect_eq("coherent", v["coherent"].as_bool(), Some(true))?;
    expect_eq(
        "ioctl check",
        v["checks"]["ioctl"]["status"].as_str(),
        Some("ok"),
    )?;
    expect_eq(
        "pfns check (root)",
        v["checks"]["pfns"]["status"].as_str(),
        Some("ok"),
    )?;
    expect_eq(
        "bytes check",
        v["checks"]["bytes"]["status"].as_str(),
        Some("ok"),
    )?;

    let i = ctl_json(&["info", &handle], 0)?;
    let state: Vec<&str> = i["live"]["state"]
        .as_array()
        .context("state")?
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    ensure!(
        state.contains(&"watched"),
        "the holder's mapping is not watched: {i}"
    );
    ensure!(
        i["live"]["notifiers"].as_u64() >= Some(1),
        "no notifier: {i}"
    );
    expect_eq(
        "info size",
        i["live"]["size"].as_u64(),
        h.created["size"].as_u64(),
    )?;

    ctl_json(
        &["punch", &handle, "--offset", punch_off, "--len", punch_len],
        0,
    )?;
    ctl_json(&["write", &handle, "--pattern", "random:7"], 0)?;
    let s = ctl_json(&["sync", &handle, "--timeout-ms", "5000"], 0)?;
    ensure!(
        s["live"]["updates"].as_u64() >= Some(1),
        "no update applied: {s}"
    );

    let v = ctl_json(&["verify", &handle], 0).context("verify after punch + write + sync")?;
    expect_eq(
        "coherent after the update",
        v["coherent"].as_bool(),
        Some(true),
    )?;
    expect_eq(
        "pfns after the update",
        v["checks"]["pfns"]["status"].as_str(),
        Some("ok"),
    )?;
    ctl_expect(&["verify", &handle], 0)?; // the human form agrees

    let i = ctl_json(&["info", &handle], 0)?;
    ensure!(
        i["live"]["pages_swapped"].as_u64() >= Some(punched_pages),
        "pages_swapped below {punched_pages}: {i}"
    );

    let listed = listed_for(h.pid())?;
    ensure!(
        listed.len() == 1,
        "list shows {} buffers for the holder: {listed:?}",
        listed.len()
    );
    expect_eq(
        "list exporter",
        listed[0]["exporter"].as_str(),
        Some(udmabuf_live_uapi::MODULE_NAME),
    )?;
    expect_eq(
        "list fd",
        listed[0]["fd"].as_i64(),
        h.created["dmabuf_fd"].as_i64(),
    )?;
    expect_eq(
        "list memfd fd",
        listed[0]["memfd_fd"].as_i64(),
        h.created["memfd_fd"].as_i64(),
    )?;
    expect_eq(
        "list handle",
        listed[0]["handle"].as_str(),
        Some(handle.as_str()),
    )?;
    ensure!(
        listed[0]["live"].is_object(),
        "list has no INFO for the buffer: {}",
        listed[0]
    );
    let human = ctl_expect(&["list"], 0)?;
    let text = String::from_utf8_lossy(&human.stdout);
    ensure!(
        text.contains(udmabuf_live_uapi::MODULE_NAME),
        "human list: {}",
        show(&human)
    );
    ensure!(
        text.lines().next().is_some_and(|l| l.contains("HANDLE")) && text.contains(&handle),
        "no HANDLE column: {text}"
    );

    let pid = h.pid();
    h.stop()?;
    ensure!(
        listed_for(pid)?.is_empty(),
        "buffers still listed for the stopped holder"
    );
    let live_left = ctl_json(&["list"], 0)?;
    ensure!(
        live_left["buffers"]
            .as_array()
            .is_some_and(|b| b.is_empty()),
        "udmabuf-live buffers left: {live_left}"
    );
    expect_eq(
        "module refcnt after the holder stopped",
        module_refcnt()?,
        base,
    )?;
    Ok(())
}

fn live_buffer_follows_punch_and_write() -> CaseResult {
    let ps = page_size();
    let size = format!("{}", 64 * ps);
    let (off, len) = (format!("{}", 4 * ps), format!("{}", 2 * ps));
    live_flow(&["--size", &size, "--fill", "seq"], &off, &len, 2)
}

fn live_hugetlb_buffer_follows_punch_and_write() -> CaseResult {
    let pool = hugepage_pool()?;
    // One of two huge pages: 512 base pages move.
    live_flow(
        &["--size", "4M", "--hugetlb", "--fill", "seq"],
        "2M",
        "2M",
        512,
    )?;
    expect_hugepage_pool("after the hugetlb holder stopped", pool)
}

fn builtin_buffer_diverges_and_verify_names_offsets() -> CaseResult {
    if !std::path::Path::new(REFERENCE_DEVICE).exists() {
        bail!("{REFERENCE_DEVICE} missing: the test kernel needs CONFIG_UDMABUF=y");
    }
    let ps = page_size();
    let size = format!("{}", 64 * ps);
    let h = Holder::start(&[
        "--size",
        &size,
        "--fill",
        "seq",
        "--device",
        REFERENCE_DEVICE,
    ])?;
    let handle = h.handle.clone();
    let v = ctl_json(&["verify", &handle], 0).context("verify right after create")?;
    expect_eq(
        "ioctl check on the built-in driver",
        v["checks"]["ioctl"]["status"].as_str(),
        Some("skipped"),
    )?;
    ensure!(
        v["checks"]["ioctl"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("udmabuf")),
        "the skip does not say why: {v}"
    );
    // INFO and SYNC are udmabuf-live's: exit 9 on another exporter's buffer.
    ctl_expect(&["info", &handle], 9)?;
    ctl_expect(&["sync", &handle], 9)?;

    // Punch pages 4 and 5, then rewrite the whole memfd: the memfd gets new pages there,
    // the built-in driver keeps the old ones. Every other page is written in place.
    ctl_json(
        &[
            "punch",
            &handle,
            "--offset",
            &format!("{}", 4 * ps),
            "--len",
            &format!("{}", 2 * ps),
        ],
        0,
    )?;
    ctl_json(&["write", &handle, "--pattern", "0xab"], 0)?;
    let v = ctl_json(&["verify", &handle], 5)
        .context("verify after punch + write on the built-in driver")?;
    expect_eq("coherent", v["coherent"].as_bool(), Some(false))?;
    expect_eq(
        "bytes check",
        v["checks"]["bytes"]["status"].as_str(),
        Some("mismatch"),
    )?;
    expect_eq(
        "pages differing",
        v["checks"]["bytes"]["mismatched"].as_u64(),
        Some(2),
    )?;
    let diffs = v["checks"]["bytes"]["diffs"].as_array().context("diffs")?;
    let offsets: Vec<u64> = diffs.iter().filter_map(|d| d["offset"].as_u64()).collect();
    expect_eq("diverging page offsets", offsets, vec![4 * ps, 5 * ps])?;
    expect_eq(
        "expected byte (memfd)",
        diffs[0]["expected"].as_u64(),
        Some(0xab),
    )?;
    // seq: the first word of page 4 is (4 * ps / 4) = ps, little-endian; its first byte.
    expect_eq(
        "got byte (dma-buf, old content)",
        diffs[0]["got"].as_u64(),
        Some(ps & 0xff),
    )?;
    let human = ctl_expect(&["verify", &handle], 5)?;
    let text = String::from_utf8_lossy(&human.stdout);
    for want in [
        format!("page at offset {:#x}", 4 * ps),
        format!("page at offset {:#x}", 5 * ps),
        "NOT coherent".to_owned(),
    ] {
        ensure!(
            text.contains(&want),
            "human verify does not say '{want}': {text}"
        );
    }
    let listed = listed_for(h.pid())?;
    ensure!(
        listed.len() == 1 && listed[0]["exporter"] == "udmabuf",
        "list --all: {listed:?}"
    );
    expect_eq(
        "list handle of the built-in buffer",
        listed[0]["handle"].as_str(),
        Some(handle.as_str()),
    )?;
    let pid = h.pid();
    h.stop()?;
    ensure!(
        listed_for(pid)?.is_empty(),
        "buffers still listed for the stopped holder"
    );
    Ok(())
}

fn exec_passes_fds_layout_and_status() -> CaseResult {
    // The command sees both fds (inherited), the size and the handle, can use the handle
    // from a grandchild, and its exit status becomes ours.
    let script = r#"test -e /proc/self/fd/$UDMABUF_DMABUF_FD || exit 90
test -e /proc/self/fd/$UDMABUF_MEMFD_FD || exit 91
test "$UDMABUF_SIZE" = 65536 || exit 92
udmabuf-ctl verify "$UDMABUF_HANDLE" >/dev/null || exit 93
exit 42"#;
    ctl_expect(
        &[
            "create", "--size", "64K", "--fill", "0x5a", "--exec", "--", "sh", "-c", script,
        ],
        42,
    )?;
    // One NV12 command prints the layout and the fourcc/modifier variables, one line each.
    let env = "echo $UDMABUF_FORMAT $UDMABUF_WIDTH $UDMABUF_HEIGHT $UDMABUF_PLANES $UDMABUF_STRIDES $UDMABUF_OFFSETS; \
               echo $UDMABUF_FOURCC $UDMABUF_MODIFIER";
    let o = ctl_expect(
        &[
            "create", "--format", "NV12", "--width", "64", "--height", "32", "--exec", "--", "sh",
            "-c", env,
        ],
        0,
    )?;
    let text = String::from_utf8_lossy(&o.stdout);
    let mut lines = text.lines();
    expect_eq(
        "environment of the command",
        lines.next().map(str::trim),
        Some("NV12 64 32 2 256,256 0,8192"),
    )?;
    expect_eq(
        "fourcc number and modifier",
        lines.next().map(str::trim),
        Some("0x3231564e 0x0"),
    )?;
    let v = ctl_json(
        &[
            "create", "--format", "NV12", "--width", "64", "--height", "32",
        ],
        0,
    )?;
    expect_eq(
        "layout fourcc_code",
        v["layout"]["fourcc_code"].as_u64(),
        Some(0x3231_564e),
    )?;
    expect_eq("layout modifier", v["layout"]["modifier"].as_u64(), Some(0))?;
    ctl_expect(
        &[
            "create",
            "--size",
            "64K",
            "--exec",
            "--",
            "/no/such/program",
        ],
        127,
    )?;
    Ok(())
}

fn format_layout_is_printed() -> CaseResult {
    let v = ctl_json(
        &[
            "create", "--format", "NV12", "--width", "1920", "--height", "1080",
        ],
        0,
    )?;
    let l = &v["layout"];
    expect_eq("Y stride", l["planes"][0]["stride"].as_u64(), Some(2048))?;
    expect_eq(
        "UV offset",
        l["planes"][1]["offset"].as_u64(),
        Some(2048 * 1080),
    )?;
    expect_eq("UV height", l["planes"][1]["height"].as_u64(), Some(540))?;
    expect_eq(
        "buffer size (pages)",
        v["size"].as_u64(),
        Some((2048 * 1620u64).div_ceil(page_size()) * page_size()),
    )?;
    let o = ctl_expect(
        &[
            "create", "--format", "XR24", "--width", "1920", "--height", "1080",
        ],
        0,
    )?;
    ensure!(
        String::from_utf8_lossy(&o.stdout).contains("stride   7680"),
        "human layout: {}",
        show(&o)
    );
    Ok(())
}

/// One huge page more than the guest's whole pool (hugepages=1100 on its command line):
/// exit 6 with the nr_hugepages advice. `create` checks size_limit_mb first (exit 2), so
/// the limit is raised past the request for this case only (ParamGuard puts it back, also
/// on failure). The mmap's reservation fails, so nothing is allocated: the pool must be
/// as before.
fn hugepage_shortage_exits_6() -> CaseResult {
    let dev = test_device();
    let pool = hugepage_pool()?;
    let size = (meminfo("HugePages_Total")? + 1) * HUGE_PAGE;
    let _limit = ParamGuard::set(&dev, "size_limit_mb", (size >> 20) + 2)?;
    let o = ctl_expect(
        &[
            "create",
            "--size",
            &size.to_string(),
            "--hugetlb",
            "--device",
            &dev,
        ],
        6,
    )?;
    let err = String::from_utf8_lossy(&o.stderr);
    ensure!(
        err.contains("nr_hugepages") && err.contains("HugePages_Free"),
        "no advice: {}",
        show(&o)
    );
    ensure!(
        !err.contains("size_limit_mb"),
        "the size limit was in the way: {}",
        show(&o)
    );
    expect_hugepage_pool("after the refused hugetlb create", pool)?;
    Ok(())
}

/// Defect 1 of issue 17: the command of --exec started with SIGHUP, SIGINT and SIGTERM
/// blocked, so neither Ctrl-C nor kill reached it.
fn exec_command_gets_clean_signals() -> CaseResult {
    let o = ctl_expect(
        &[
            "create",
            "--size",
            "4K",
            "--exec",
            "--",
            "sh",
            "-c",
            "grep -E 'SigBlk|SigIgn' /proc/self/status",
        ],
        0,
    )?;
    let text = String::from_utf8_lossy(&o.stdout);
    ensure!(
        text.contains("SigBlk:\t0000000000000000"),
        "the command starts with blocked signals: {text}"
    );
    for (sig, want) in [(Signal::SIGTERM, 143), (Signal::SIGINT, 130)] {
        // Its own process group, so a failure can kill the command (`sleep`) as well.
        let mut child = Command::new(CTL)
            .args(["create", "--size", "4K", "--exec", "--", "sleep", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let group = Pid::from_raw(child.id() as i32);
        std::thread::sleep(Duration::from_millis(1500));
        let sent = kill(group, sig);
        let status = reap(&mut child, Duration::from_secs(15));
        if sent.is_err() || status.is_err() {
            let _ = nix::sys::signal::killpg(group, Signal::SIGKILL);
        }
        sent.with_context(|| format!("{sig} to create --exec"))?;
        let status =
            status.with_context(|| format!("{sig} to create --exec did not stop the command"))?;
        expect_eq(
            &format!("exit status after {sig}"),
            status.code(),
            Some(want),
        )?;
    }
    Ok(())
}

/// Defect 4 of issue 17: a handle whose memfd is another buffer's was accepted. On
/// udmabuf-live (PFNs through its PFNS ioctl) and on the built-in udmabuf (pagemap shows no
/// PFNs of its VM_PFNMAP mapping: the bytes decide, and the two buffers' fills differ).
fn mixed_handle_exits_8() -> CaseResult {
    let mut tested = Vec::new();
    if super::Require::LiveDevice.check().is_ok() {
        tested.push(device_path());
    }
    if std::path::Path::new(REFERENCE_DEVICE).exists() {
        tested.push(REFERENCE_DEVICE.to_owned());
    }
    if tested.is_empty() {
        skip!("neither {} nor {REFERENCE_DEVICE} is there", device_path());
    }
    for dev in &tested {
        mixed_handles_on(dev).with_context(|| format!("on {dev}"))?;
    }
    Ok(())
}

fn mixed_handles_on(dev: &str) -> Result<()> {
    // One process (the innermost sh) holds two buffers: the outer one's fds are M1/D1.
    let inner = r#"h=$$:$M1:$UDMABUF_DMABUF_FD
udmabuf-ctl info $h >/dev/null 2>&1; a=$?
udmabuf-ctl punch $h --offset 0 --len 4K >/dev/null 2>&1; b=$?
udmabuf-ctl verify $h >/dev/null 2>&1; c=$?
udmabuf-ctl info $$:$UDMABUF_MEMFD_FD:$D1 >/dev/null 2>&1; d=$?
udmabuf-ctl verify $$:$UDMABUF_MEMFD_FD:$UDMABUF_DMABUF_FD >/dev/null 2>&1; e=$?
udmabuf-ctl verify $$:$M1:$D1 >/dev/null 2>&1; f=$?
echo $a $b $c $d $e $f"#;
    let outer = format!(
        "M1=$UDMABUF_MEMFD_FD D1=$UDMABUF_DMABUF_FD exec udmabuf-ctl create --size 64K --fill 0x11 --device {dev} --exec -- sh -c '{inner}'"
    );
    let o = ctl_expect(
        &[
            "create", "--size", "64K", "--fill", "seq", "--device", dev, "--exec", "--", "sh",
            "-c", &outer,
        ],
        0,
    )?;
    expect_eq(
        "exit codes of info/punch/verify/info (mixed), verify, verify (matched)",
        String::from_utf8_lossy(&o.stdout).trim(),
        "8 8 8 8 0 0",
    )
}

/// Defect 5 of issue 17: after the creator exits (the buffer is not watched), a punch and
/// a write, the first verify said NOT coherent and the second coherent.
fn unwatched_buffer_verdict_is_stable() -> CaseResult {
    let o = ctl_expect(
        &[
            "create",
            "--size",
            "64K",
            "--fill",
            "seq",
            "--exec",
            "--",
            "sh",
            "-c",
            "sleep 120 </dev/null >/dev/null 2>&1 & echo $! $UDMABUF_MEMFD_FD $UDMABUF_DMABUF_FD",
        ],
        0,
    )?;
    let text = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    let f: Vec<&str> = text.split(' ').collect();
    // The keeper (an orphan now) holds the buffer: it is killed on every path below.
    let keeper = f
        .first()
        .and_then(|p| p.parse::<i32>().ok())
        .filter(|&p| p > 1)
        .map(Pid::from_raw);
    let result = (|| -> CaseResult {
        ensure!(
            f.len() == 3 && keeper.is_some(),
            "unexpected output: {text}"
        );
        let handle = format!("{}:{}:{}", f[0], f[1], f[2]);
        let human = ctl_expect(&["info", &handle], 0)?;
        let info = String::from_utf8_lossy(&human.stdout);
        let state = info
            .lines()
            .find(|l| l.starts_with("state"))
            .unwrap_or_default();
        ensure!(
            !state.trim_end().ends_with('-') && state.contains("watched"),
            "state not in words: {info}"
        );
        let i = ctl_json(&["info", &handle], 0)?;
        let watched = i["live"]["state"]
            .as_array()
            .is_some_and(|s| s.iter().any(|v| v == "watched"));
        ctl_json(&["punch", &handle, "--offset", "8K", "--len", "4K"], 0)?;
        ctl_json(&["write", &handle, "--pattern", "random:3"], 0)?;
        let v1 = ctl_json(&["verify", &handle], 0).context("first verify")?;
        let v2 = ctl_json(&["verify", &handle], 0).context("second verify")?;
        expect_eq(
            "verdicts agree",
            v1["coherent"].as_bool(),
            v2["coherent"].as_bool(),
        )?;
        if !watched {
            expect_eq("watched in verify", v1["watched"].as_bool(), Some(false))?;
            let st = v1["checks"]["ioctl"]["status"].as_str().unwrap_or_default();
            ensure!(
                st == "not_watched" || st == "ok",
                "first verify's ioctl check: {v1}"
            );
            ensure!(
                info.contains("not watched"),
                "info does not say 'not watched': {info}"
            );
        }
        Ok(())
    })();
    let stopped = keeper.map_or(Ok(()), kill_orphan);
    result?;
    stopped.context("the keeper of the unwatched buffer")
}

/// Defect 6 of issue 17: `status --device /dev/udmabuf` described udmabuf_live, and
/// `info LIVE_HANDLE --device /dev/udmabuf` refused the buffer.
fn handle_commands_find_the_device() -> CaseResult {
    if !std::path::Path::new(REFERENCE_DEVICE).exists() {
        bail!("{REFERENCE_DEVICE} missing: the test kernel needs CONFIG_UDMABUF=y");
    }
    let o = ctl_expect(&["status", "--device", REFERENCE_DEVICE], 0)?;
    let text = String::from_utf8_lossy(&o.stdout);
    ensure!(
        !text.contains(udmabuf_live_uapi::MODULE_NAME) && text.contains("driver  udmabuf"),
        "status of {REFERENCE_DEVICE}: {text}"
    );
    let v = ctl_json(&["status"], 0)?;
    expect_eq(
        "status module",
        v["module"]["name"].as_str(),
        Some(udmabuf_live_uapi::MODULE_NAME),
    )?;
    ensure!(
        v["module"]["parameters"]["size_limit_mb"].is_u64(),
        "parameters are not typed: {v}"
    );
    let h = Holder::start(&["--size", "64K"])?;
    ctl_json(&["info", &h.handle, "--device", REFERENCE_DEVICE], 0)?;
    ctl_json(&["sync", &h.handle, "--device", REFERENCE_DEVICE], 0)?;
    h.stop()?;
    Ok(())
}

/// Item 11 of issue 17: `read` dumps the dma-buf's bytes.
fn read_dumps_the_buffer() -> CaseResult {
    let h = Holder::start(&["--size", "64K", "--fill", "0xab"])?;
    let o = ctl_expect(&["read", &h.handle, "--len", "32"], 0)?;
    let text = String::from_utf8_lossy(&o.stdout);
    // Two identical lines: the second is folded into `*`, then the end offset.
    ensure!(
        text.starts_with("00000000  ab ab ab ab")
            && text.contains("\n*\n")
            && text.ends_with("00000020\n"),
        "hex dump: {text}"
    );
    let path = "/tmp/ulive-cli-read.bin";
    ctl_expect(&["read", &h.handle, "--offset", "4K", "--out", path], 0)?;
    let bytes = std::fs::read(path)?;
    let _ = std::fs::remove_file(path);
    expect_eq("bytes read", bytes.len(), 60 << 10)?;
    ensure!(
        bytes.iter().all(|&b| b == 0xab),
        "read returned other bytes"
    );
    ctl_expect(&["read", &h.handle, "--offset", "64K"], 2)?;
    h.stop()?;
    Ok(())
}

/// Defect 10 of issue 17: a punch inside one page said "punched 100 bytes".
fn partial_punch_says_no_page_dropped() -> CaseResult {
    let h = Holder::start(&["--size", "64K", "--fill", "seq"])?;
    let o = ctl_expect(&["punch", &h.handle, "--offset", "100", "--len", "100"], 0)?;
    ensure!(
        String::from_utf8_lossy(&o.stdout).contains("no page dropped"),
        "{}",
        show(&o)
    );
    let v = ctl_json(&["punch", &h.handle, "--offset", "8K", "--len", "8K"], 0)?;
    expect_eq(
        "pages dropped",
        v["pages_dropped"].as_u64(),
        Some(8192 / page_size()),
    )?;
    let o = ctl_expect(
        &["write", &h.handle, "--offset", "64K", "--pattern", "zero"],
        2,
    )?;
    ensure!(
        String::from_utf8_lossy(&o.stderr).contains("past the end"),
        "{}",
        show(&o)
    );
    h.stop()?;
    Ok(())
}

/// Item 11 of issue 17: `hold --pin` through the test importer defers updates, and `sync`
/// then times out with exit 7.
fn hold_pin_defers_sync() -> CaseResult {
    let loaded_here = super::importer_client::ensure_loaded()?;
    let result = (|| -> CaseResult {
        let h = Holder::start(&["--size", "64K", "--fill", "seq"])?;
        let pin = Holder::start_raw(&["hold", &h.handle, "--pin", "--json"])?;
        expect_eq("hold kind", pin.created["hold"].as_str(), Some("pin"))?;
        ctl_json(&["punch", &h.handle, "--offset", "0", "--len", "4K"], 0)?;
        ctl_json(&["write", &h.handle, "--pattern", "0x5a", "--len", "4K"], 0)?;
        ctl_expect(&["sync", &h.handle, "--timeout-ms", "100"], 7)?;
        pin.stop()?;
        ctl_json(&["sync", &h.handle, "--timeout-ms", "5000"], 0)?;
        ctl_expect(&["verify", &h.handle], 0)?;
        h.stop()?;
        Ok(())
    })();
    if loaded_here {
        let _ = super::importer_client::unload();
    }
    result
}

/// Last: no `udmabuf-ctl` (a holder, a `create --exec`) and no `sleep` keeper of this
/// suite outlives it, and none of our children is left unreaped. Whatever is found is
/// killed, so the suites after this one (stress, fuzz: they need free huge pages) do not
/// inherit its buffers.
fn nothing_left_running() -> CaseResult {
    let me = std::process::id().to_string();
    let mut left = Vec::new();
    for e in std::fs::read_dir("/proc")?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(pid) = name.parse::<i32>() else {
            continue;
        };
        if name == me {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (state, ppid) = (
            fields.first().copied().unwrap_or("?"),
            fields.get(1).copied().unwrap_or("?"),
        );
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline)
            .replace('\0', " ")
            .trim()
            .to_owned();
        let ours = comm == CTL || cmdline.starts_with(CTL) || cmdline == "sleep 120";
        let unreaped = state == "Z" && ppid == me;
        if (ours && state != "Z") || unreaped {
            left.push(format!(
                "{pid} ({comm}, state {state}, parent {ppid}): {cmdline}"
            ));
            if state != "Z" {
                let _ = kill_orphan(Pid::from_raw(pid));
            }
            if ppid == me {
                let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
            }
        }
    }
    ensure!(
        left.is_empty(),
        "left running by the cases above (killed now): {}",
        left.join("; ")
    );
    Ok(())
}
