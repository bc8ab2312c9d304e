//! `udmabuf-ctl read HANDLE [--offset O] [--len L] [--out FILE]`: the dma-buf's bytes as
//! an importer's CPU access sees them: through a mapping of the dma-buf, bracketed by
//! DMA_BUF_IOCTL_SYNC. A hex dump (`hexdump -C` style, repeated lines as `*`), or the raw
//! bytes to a file.

use super::check_range_of;
use crate::cli::ReadArgs;
use crate::sys::{self, Mapping};
use anyhow::{Context, Result};
use std::io::Write;
use std::process::ExitCode;

/// Hex dump lines of 16 bytes, with runs of identical lines folded into one `*`.
#[derive(Default)]
pub struct HexDump {
    last: Option<Vec<u8>>,
    starred: bool,
}

impl HexDump {
    /// The text for the line of `bytes` (at most 16) at absolute offset `offset`.
    pub fn line(&mut self, offset: u64, bytes: &[u8]) -> String {
        if bytes.len() == 16 && self.last.as_deref() == Some(bytes) {
            if self.starred {
                return String::new();
            }
            self.starred = true;
            return "*\n".into();
        }
        self.starred = false;
        self.last = Some(bytes.to_vec());
        let mut hex = String::new();
        for (i, b) in bytes.iter().enumerate() {
            hex += &format!("{b:02x} ");
            if i == 7 {
                hex.push(' ');
            }
        }
        let ascii: String = bytes.iter().map(|&b| if (0x20..0x7f).contains(&b) { b as char } else { '.' }).collect();
        format!("{offset:08x}  {hex:<49} |{ascii}|\n")
    }
}

pub fn run(args: &ReadArgs) -> Result<ExitCode> {
    let (r, _live) = super::resolve(&args.handle, None, 0)?;
    let size = sys::dmabuf_size(&r.dmabuf).context("lseek on the dma-buf")?;
    let offset = args.offset.0;
    let len = args.len.map_or(size.saturating_sub(offset), |l| l.0);
    check_range_of("read", "dma-buf", offset, len, size)?;
    let map = Mapping::new(&r.dmabuf, size, false).context("mmap of the dma-buf")?;
    let mut out: Box<dyn Write> = match &args.out {
        Some(p) if p.as_os_str() != "-" => {
            Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)
        }
        _ => Box::new(std::io::stdout().lock()),
    };
    sys::dma_buf_sync(&r.dmabuf, sys::DMA_BUF_SYNC_START | sys::DMA_BUF_SYNC_READ).context("DMA_BUF_IOCTL_SYNC(START)")?;
    const CHUNK: u64 = 1 << 20;
    let mut buf = vec![0u8; CHUNK.min(len) as usize];
    let mut dump = HexDump::default();
    let mut done = 0;
    while done < len {
        let n = (len - done).min(CHUNK) as usize;
        map.read_into(offset + done, &mut buf[..n]);
        if args.out.is_some() {
            out.write_all(&buf[..n])?;
        } else {
            let mut text = String::new();
            for (i, line) in buf[..n].chunks(16).enumerate() {
                text += &dump.line(offset + done + 16 * i as u64, line);
            }
            out.write_all(text.as_bytes())?;
        }
        done += n as u64;
    }
    sys::dma_buf_sync(&r.dmabuf, sys::DMA_BUF_SYNC_END | sys::DMA_BUF_SYNC_READ).context("DMA_BUF_IOCTL_SYNC(END)")?;
    if args.out.is_none() {
        writeln!(out, "{:08x}", offset + len)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hexdump_lines_and_repeats() {
        let mut d = HexDump::default();
        let a: Vec<u8> = (0x41..0x51).collect();
        assert_eq!(d.line(0x1000, &a), "00001000  41 42 43 44 45 46 47 48  49 4a 4b 4c 4d 4e 4f 50  |ABCDEFGHIJKLMNOP|\n");
        assert_eq!(d.line(0x1010, &a), "*\n");
        assert_eq!(d.line(0x1020, &a), "");
        assert_eq!(d.line(0x1030, &[0, 1]), "00001030  00 01                                             |..|\n");
    }
}
