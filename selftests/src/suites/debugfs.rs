//! debugfs: /sys/kernel/debug/udmabuf_live/buffers lists every live buffer with its
//! state and counters, and forgets it when its dma-buf goes.

use super::common::*;
use super::live_util::{punch, sync};
use super::{cases, Suite};
use crate::ktap::CaseResult;
use anyhow::{bail, ensure, Context, Result};
use std::os::fd::AsFd;

const BUFFERS: &str = "/sys/kernel/debug/udmabuf_live/buffers";

pub fn suite() -> Suite {
    Suite::new("debugfs", cases![lists_buffer_state_and_counters])
}

/// The debugfs line of the buffer of `size` bytes, as key=value pairs.
fn line_for(size: u64) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(BUFFERS).with_context(|| format!("read {BUFFERS}"))?;
    let needle = format!(" size={size} ");
    let Some(line) = text.lines().find(|l| l.contains(&needle)) else {
        bail!("no line with{needle}in:\n{text}")
    };
    Ok(line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.into(), v.into()))
        .collect())
}

fn field(kv: &[(String, String)], key: &str) -> Result<String> {
    kv.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .with_context(|| format!("no {key}= field"))
}

fn lists_buffer_state_and_counters() -> CaseResult {
    if test_device() != "/dev/udmabuf-live" {
        skip!("debugfs is udmabuf-live's");
    }
    if !std::path::Path::new(BUFFERS).exists() {
        skip!("no {BUFFERS}: debugfs not mounted (mount -t debugfs none /sys/kernel/debug)");
    }
    let ps = page_size();
    let size = 77 * ps; // a size no other test uses, to find the line
    let dev = open_device(&test_device())?;
    let memfd = memfd(Backing::Shmem, size)?;
    let map = map_shared(&memfd, size)?;
    let buf = create(dev.as_fd(), &memfd, 0, size, 0).context("create")?;
    let kv = line_for(size)?;
    for (k, want) in [
        ("backing", "shmem"),
        ("ranges", "1"),
        ("notifiers", "1"),
        ("watched", "1"),
        ("generation", "0"),
    ] {
        ensure!(
            field(&kv, k)? == want,
            "{k}={}, expected {want}",
            field(&kv, k)?
        );
    }
    punch(&memfd, 3 * ps, ps)?;
    map.write(3 * ps, &pattern(9, ps));
    sync(&dev, &buf, 1000).context("SYNC")?;
    let kv = line_for(size)?;
    ensure!(
        field(&kv, "generation")? == "1",
        "generation after one update: {kv:?}"
    );
    ensure!(
        field(&kv, "pages_swapped")? == "1",
        "pages_swapped after one punched page: {kv:?}"
    );
    ensure!(
        field(&kv, "invalidations")?.parse::<u64>()? >= 1,
        "invalidations: {kv:?}"
    );
    drop(buf);
    drop(map);
    // Releasing the dma-buf may finish asynchronously (deferred fput): poll briefly.
    for _ in 0..100 {
        if line_for(size).is_err() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    bail!("buffer still listed after its dma-buf was closed")
}
