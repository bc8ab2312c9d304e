//! Documented exit codes. Scripts rely on these; tests check them.
//!
//! [`TABLE`] is the one source of the table: `--help` prints [`help_text`], the man page
//! gets an EXIT STATUS section from [`man_section`], and the README's table is
//! `udmabuf-ctl exit-codes --markdown` (a unit test checks that the README matches).

#[allow(dead_code)] // ExitCode::SUCCESS is what the commands return; listed for the table test
pub const SUCCESS: u8 = 0;
pub const ERROR: u8 = 1;
pub const USAGE: u8 = 2;
pub const NO_DEVICE: u8 = 3;
pub const PERMISSION: u8 = 4;
pub const INCOHERENT: u8 = 5;
pub const NO_MEMORY: u8 = 6;
pub const TIMEOUT: u8 = 7;
pub const BAD_HANDLE: u8 = 8;
pub const NOT_LIVE: u8 = 9;
pub const MEMLOCK: u8 = 10;
pub const NO_COMPOSITOR: u8 = 11;
pub const NOT_OFFERED: u8 = 12;
pub const BUFFER_FAILED: u8 = 13;
pub const PROTOCOL: u8 = 14;
/// `create --exec`: the command exists but could not be run.
pub const EXEC_FAILED: u8 = 126;
/// `create --exec`: the command was not found.
pub const EXEC_NOT_FOUND: u8 = 127;

/// One row of the table: the code as printed (`128+N` for the signal row) and its
/// meaning, in Markdown (backticks only; they are dropped for `--help` and the man page).
pub struct Row {
    pub code: &'static str,
    pub meaning: &'static str,
}

const fn row(code: &'static str, meaning: &'static str) -> Row {
    Row { code, meaning }
}

/// The exit-code table.
pub const TABLE: &[Row] = &[
    row("0", "success (`verify`: the dma-buf is coherent with its memfd)"),
    row("1", "any other error"),
    row("2", "usage error: bad arguments or options, a range outside the memfd, a buffer over the driver's `size_limit_mb`"),
    row("3", "device node missing or module not loaded (`insmod udmabuf_live.ko`)"),
    row("4", "permission denied: the device node (root or its mode), ptrace access for a handle, a sealed memfd"),
    row("5", "`verify`: the dma-buf is not coherent with its memfd"),
    row("6", "out of memory: huge pages not reserved (`echo N > /proc/sys/vm/nr_hugepages`) or ENOMEM"),
    row("7", "`sync`: updates still deferred (pinned or vmapped buffer) when the timeout expired"),
    row("8", "the handle does not resolve: no such process, fd closed, not a memfd / dma-buf, or the memfd does not back the dma-buf"),
    row("9", "the dma-buf is not a udmabuf-live buffer (`info`, `sync` need one)"),
    row("10", "`create`: over the locked-memory limit (`RLIMIT_MEMLOCK`, `ulimit -l`) that udmabuf-live charges when its `account_memlock` parameter is on"),
    row("11", "`present`: no Wayland compositor to connect to (`WAYLAND_DISPLAY`, `XDG_RUNTIME_DIR`), or it lacks `zwp_linux_dmabuf_v1` (version 3 or later), `wl_compositor` or `xdg_wm_base`"),
    row("12", "`present`: the compositor does not offer the buffer's DRM format with the LINEAR modifier (the message lists what it offers)"),
    row("13", "`present`: the compositor refused the buffer (`zwp_linux_buffer_params_v1.failed`)"),
    row("14", "`present`: a Wayland protocol error (the message names the object, the code and the compositor's text), or the compositor went away"),
    row("126", "`create --exec`: the command could not be run (not executable)"),
    row("127", "`create --exec`: the command was not found"),
    row("128+N", "`create --exec`: signal N ended the command (130 for SIGINT, 143 for SIGTERM); otherwise `create --exec` exits with the command's status"),
];

fn plain(s: &str) -> String {
    s.replace('`', "")
}

/// The table `--help` shows after the options.
pub fn help_text() -> String {
    let mut s = String::from("Exit codes:\n");
    for r in TABLE {
        s += &format!("  {:<5}  {}\n", r.code, plain(r.meaning));
    }
    s.trim_end().to_owned()
}

/// The README's table (`udmabuf-ctl exit-codes --markdown`).
pub fn markdown() -> String {
    let mut s = String::from("| code | meaning |\n|---|---|\n");
    for r in TABLE {
        s += &format!("| {} | {} |\n", r.code, r.meaning.replace('|', "\\|"));
    }
    s
}

/// Escape text for roff: backslashes, hyphens (so they are not hyphenation points) and a
/// leading dot or quote.
fn roff_escape(s: &str) -> String {
    let e = s.replace('\\', "\\e").replace('-', "\\-");
    if e.starts_with('.') || e.starts_with('\'') {
        format!("\\&{e}")
    } else {
        e
    }
}

/// The man page's EXIT STATUS section: one tagged paragraph per code.
pub fn man_section() -> String {
    let mut s = String::from(".SH \"EXIT STATUS\"\n");
    for r in TABLE {
        s += &format!(".TP\n\\fB{}\\fR\n{}\n", roff_escape(r.code), roff_escape(&plain(r.meaning)));
    }
    s
}

/// Errors that map to a specific exit code. Anything else exits 1.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NoDevice(String),
    #[error("{0}")]
    Permission(String),
    #[error("{0}")]
    NoMemory(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Handle(String),
    #[error("{0}")]
    NotLive(String),
    #[error("{0}")]
    Memlock(String),
    #[error("{0}")]
    NoCompositor(String),
    #[error("{0}")]
    NotOffered(String),
    #[error("{0}")]
    BufferFailed(String),
    #[error("{0}")]
    Protocol(String),
}

pub fn code_of(err: &anyhow::Error) -> u8 {
    // The typed error may sit under added context: look through the whole chain.
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<CtlError>() {
            return match e {
                CtlError::Usage(_) => USAGE,
                CtlError::NoDevice(_) => NO_DEVICE,
                CtlError::Permission(_) => PERMISSION,
                CtlError::NoMemory(_) => NO_MEMORY,
                CtlError::Timeout(_) => TIMEOUT,
                CtlError::Handle(_) => BAD_HANDLE,
                CtlError::NotLive(_) => NOT_LIVE,
                CtlError::Memlock(_) => MEMLOCK,
                CtlError::NoCompositor(_) => NO_COMPOSITOR,
                CtlError::NotOffered(_) => NOT_OFFERED,
                CtlError::BufferFailed(_) => BUFFER_FAILED,
                CtlError::Protocol(_) => PROTOCOL,
            };
        }
    }
    ERROR
}

/// A short name for the class of an exit code (the `kind` of a `--json` error object).
pub fn kind_of(code: u8) -> &'static str {
    match code {
        USAGE => "usage",
        NO_DEVICE => "no_device",
        PERMISSION => "permission",
        INCOHERENT => "incoherent",
        NO_MEMORY => "no_memory",
        TIMEOUT => "timeout",
        BAD_HANDLE => "bad_handle",
        NOT_LIVE => "not_live",
        MEMLOCK => "memlock",
        NO_COMPOSITOR => "no_compositor",
        NOT_OFFERED => "not_offered",
        BUFFER_FAILED => "buffer_failed",
        PROTOCOL => "protocol",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn codes_survive_context() {
        let e: anyhow::Result<()> = Err(CtlError::Handle("gone".into()).into());
        let e = e.context("verify").unwrap_err();
        assert_eq!(code_of(&e), BAD_HANDLE);
        assert_eq!(code_of(&anyhow::anyhow!("plain")), ERROR);
        assert_eq!(code_of(&CtlError::NoMemory("x".into()).into()), NO_MEMORY);
        assert_eq!(code_of(&CtlError::Memlock("x".into()).into()), MEMLOCK);
    }

    #[test]
    fn table_lists_every_code() {
        let all = [
            SUCCESS,
            ERROR,
            USAGE,
            NO_DEVICE,
            PERMISSION,
            INCOHERENT,
            NO_MEMORY,
            TIMEOUT,
            BAD_HANDLE,
            NOT_LIVE,
            MEMLOCK,
            NO_COMPOSITOR,
            NOT_OFFERED,
            BUFFER_FAILED,
            PROTOCOL,
            EXEC_FAILED,
            EXEC_NOT_FOUND,
        ];
        for c in all {
            assert!(TABLE.iter().any(|r| r.code == c.to_string()), "code {c} missing from TABLE");
            assert!(help_text().lines().any(|l| l.trim_start().starts_with(&format!("{c} "))), "code {c} missing from --help");
        }
        assert_eq!(TABLE.len(), all.len() + 1, "a row of TABLE has no constant (besides 128+N)");
    }

    /// The README's exit-code table is exactly `exit-codes --markdown`.
    #[test]
    fn readme_table_is_generated() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).expect("README.md");
        let begin = "<!-- exit-codes: begin";
        let end = "<!-- exit-codes: end -->";
        let start = readme.find(begin).expect("README has no exit-codes begin marker");
        let start = start + readme[start..].find('\n').unwrap() + 1;
        let stop = readme[start..].find(end).expect("README has no exit-codes end marker") + start;
        assert_eq!(
            readme[start..stop].trim(),
            markdown().trim(),
            "README.md's exit-code table differs from `udmabuf-ctl exit-codes --markdown`: regenerate it"
        );
    }

    #[test]
    fn man_section_has_one_code_per_paragraph() {
        let m = man_section();
        assert!(m.starts_with(".SH \"EXIT STATUS\"\n"));
        assert_eq!(m.matches(".TP\n").count(), TABLE.len());
        assert!(m.contains(".TP\n\\fB10\\fR\n"), "{m}");
        assert!(m.contains(".TP\n\\fB128+N\\fR\n"), "{m}");
        assert!(!m.contains('`'));
    }
}
