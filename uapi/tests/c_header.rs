//! The C header and the Rust crate must describe the same ABI. This test compiles a C
//! program against `include/linux/udmabuf_live.h` that prints sizes, offsets and ioctl
//! numbers, and compares each with the Rust definitions.

use std::collections::HashMap;
use std::mem::{offset_of, size_of};
use std::process::Command;
use udmabuf_live_uapi::*;

const C_PROBE: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include <linux/udmabuf_live.h>
#define P(name, v) printf("%s %llu\n", name, (unsigned long long)(v))
int main(void) {
    P("sizeof_create", sizeof(struct udmabuf_create));
    P("create.memfd", offsetof(struct udmabuf_create, memfd));
    P("create.flags", offsetof(struct udmabuf_create, flags));
    P("create.offset", offsetof(struct udmabuf_create, offset));
    P("create.size", offsetof(struct udmabuf_create, size));
    P("sizeof_item", sizeof(struct udmabuf_create_item));
    P("item.memfd", offsetof(struct udmabuf_create_item, memfd));
    P("item.offset", offsetof(struct udmabuf_create_item, offset));
    P("item.size", offsetof(struct udmabuf_create_item, size));
    P("sizeof_list", sizeof(struct udmabuf_create_list));
    P("list.flags", offsetof(struct udmabuf_create_list, flags));
    P("list.count", offsetof(struct udmabuf_create_list, count));
    P("list.list", offsetof(struct udmabuf_create_list, list));
    P("UDMABUF_FLAGS_CLOEXEC", UDMABUF_FLAGS_CLOEXEC);
    P("UDMABUF_CREATE", UDMABUF_CREATE);
    P("UDMABUF_CREATE_LIST", UDMABUF_CREATE_LIST);
    P("sizeof_udmabuf_live_info", sizeof(struct udmabuf_live_info));
    P("udmabuf_live_info.dmabuf_fd", offsetof(struct udmabuf_live_info, dmabuf_fd));
    P("udmabuf_live_info.backing", offsetof(struct udmabuf_live_info, backing));
    P("udmabuf_live_info.size", offsetof(struct udmabuf_live_info, size));
    P("udmabuf_live_info.generation", offsetof(struct udmabuf_live_info, generation));
    P("udmabuf_live_info.updates", offsetof(struct udmabuf_live_info, updates));
    P("udmabuf_live_info.pages_swapped", offsetof(struct udmabuf_live_info, pages_swapped));
    P("udmabuf_live_info.state", offsetof(struct udmabuf_live_info, state));
    P("udmabuf_live_info.pins", offsetof(struct udmabuf_live_info, pins));
    P("udmabuf_live_info.notifiers", offsetof(struct udmabuf_live_info, notifiers));
    P("udmabuf_live_info.ranges", offsetof(struct udmabuf_live_info, ranges));
    P("udmabuf_live_info.repopulate", offsetof(struct udmabuf_live_info, repopulate));
    P("udmabuf_live_info.unpopulated", offsetof(struct udmabuf_live_info, unpopulated));
    P("UDMABUF_LIVE_REPOPULATE_EAGER", UDMABUF_LIVE_REPOPULATE_EAGER);
    P("UDMABUF_LIVE_REPOPULATE_LAZY", UDMABUF_LIVE_REPOPULATE_LAZY);
    P("sizeof_udmabuf_live_sync", sizeof(struct udmabuf_live_sync));
    P("udmabuf_live_sync.dmabuf_fd", offsetof(struct udmabuf_live_sync, dmabuf_fd));
    P("udmabuf_live_sync.timeout_ms", offsetof(struct udmabuf_live_sync, timeout_ms));
    P("sizeof_udmabuf_live_verify", sizeof(struct udmabuf_live_verify));
    P("udmabuf_live_verify.dmabuf_fd", offsetof(struct udmabuf_live_verify, dmabuf_fd));
    P("udmabuf_live_verify.__pad", offsetof(struct udmabuf_live_verify, __pad));
    P("udmabuf_live_verify.pages", offsetof(struct udmabuf_live_verify, pages));
    P("udmabuf_live_verify.matching", offsetof(struct udmabuf_live_verify, matching));
    P("udmabuf_live_verify.stale", offsetof(struct udmabuf_live_verify, stale));
    P("udmabuf_live_verify.holes", offsetof(struct udmabuf_live_verify, holes));
    P("udmabuf_live_verify.first_mismatch", offsetof(struct udmabuf_live_verify, first_mismatch));
    P("udmabuf_live_verify.unpopulated", offsetof(struct udmabuf_live_verify, unpopulated));
    P("sizeof_udmabuf_live_pfns", sizeof(struct udmabuf_live_pfns));
    P("udmabuf_live_pfns.dmabuf_fd", offsetof(struct udmabuf_live_pfns, dmabuf_fd));
    P("udmabuf_live_pfns.__pad", offsetof(struct udmabuf_live_pfns, __pad));
    P("udmabuf_live_pfns.first_page", offsetof(struct udmabuf_live_pfns, first_page));
    P("udmabuf_live_pfns.count", offsetof(struct udmabuf_live_pfns, count));
    P("udmabuf_live_pfns.pfns", offsetof(struct udmabuf_live_pfns, pfns));
    P("UDMABUF_LIVE_INFO", UDMABUF_LIVE_INFO);
    P("UDMABUF_LIVE_SYNC", UDMABUF_LIVE_SYNC);
    P("UDMABUF_LIVE_VERIFY", UDMABUF_LIVE_VERIFY);
    P("UDMABUF_LIVE_PFNS", UDMABUF_LIVE_PFNS);
    P("UDMABUF_LIVE_BACKING_SHMEM", UDMABUF_LIVE_BACKING_SHMEM);
    P("UDMABUF_LIVE_BACKING_HUGETLB", UDMABUF_LIVE_BACKING_HUGETLB);
    P("UDMABUF_LIVE_BACKING_MIXED", UDMABUF_LIVE_BACKING_MIXED);
    P("UDMABUF_LIVE_STATE_PENDING", UDMABUF_LIVE_STATE_PENDING);
    P("UDMABUF_LIVE_STATE_STALE", UDMABUF_LIVE_STATE_STALE);
    P("UDMABUF_LIVE_STATE_WATCHED", UDMABUF_LIVE_STATE_WATCHED);
    P("UDMABUF_LIVE_STATE_VMAPPED", UDMABUF_LIVE_STATE_VMAPPED);
    return 0;
}
"#;

fn c_values() -> HashMap<String, u64> {
    let dir = std::env::temp_dir().join(format!("ulive-uapi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("probe.c");
    let bin = dir.join("probe");
    std::fs::write(&src, C_PROBE).unwrap();
    let include = concat!(env!("CARGO_MANIFEST_DIR"), "/include");
    let st = Command::new("cc")
        .args(["-Wall", "-Werror", "-I", include, "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("a C compiler (cc) is needed for the header test");
    assert!(st.success(), "the C header does not compile");
    let out = Command::new(&bin).output().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn c_header_matches_rust_crate() {
    let c = c_values();
    let rust: &[(&str, u64)] = &[
        ("sizeof_create", size_of::<UdmabufCreate>() as u64),
        ("create.memfd", offset_of!(UdmabufCreate, memfd) as u64),
        ("create.flags", offset_of!(UdmabufCreate, flags) as u64),
        ("create.offset", offset_of!(UdmabufCreate, offset) as u64),
        ("create.size", offset_of!(UdmabufCreate, size) as u64),
        ("sizeof_item", size_of::<UdmabufCreateItem>() as u64),
        ("item.memfd", offset_of!(UdmabufCreateItem, memfd) as u64),
        ("item.offset", offset_of!(UdmabufCreateItem, offset) as u64),
        ("item.size", offset_of!(UdmabufCreateItem, size) as u64),
        ("sizeof_list", size_of::<UdmabufCreateList>() as u64),
        ("list.flags", offset_of!(UdmabufCreateList, flags) as u64),
        ("list.count", offset_of!(UdmabufCreateList, count) as u64),
        ("list.list", size_of::<UdmabufCreateList>() as u64),
        ("UDMABUF_FLAGS_CLOEXEC", UDMABUF_FLAGS_CLOEXEC as u64),
        ("UDMABUF_CREATE", UDMABUF_CREATE as u64),
        ("UDMABUF_CREATE_LIST", UDMABUF_CREATE_LIST as u64),
        (
            "sizeof_udmabuf_live_info",
            size_of::<UdmabufLiveInfo>() as u64,
        ),
        (
            "udmabuf_live_info.dmabuf_fd",
            offset_of!(UdmabufLiveInfo, dmabuf_fd) as u64,
        ),
        (
            "udmabuf_live_info.backing",
            offset_of!(UdmabufLiveInfo, backing) as u64,
        ),
        (
            "udmabuf_live_info.size",
            offset_of!(UdmabufLiveInfo, size) as u64,
        ),
        (
            "udmabuf_live_info.generation",
            offset_of!(UdmabufLiveInfo, generation) as u64,
        ),
        (
            "udmabuf_live_info.updates",
            offset_of!(UdmabufLiveInfo, updates) as u64,
        ),
        (
            "udmabuf_live_info.pages_swapped",
            offset_of!(UdmabufLiveInfo, pages_swapped) as u64,
        ),
        (
            "udmabuf_live_info.state",
            offset_of!(UdmabufLiveInfo, state) as u64,
        ),
        (
            "udmabuf_live_info.pins",
            offset_of!(UdmabufLiveInfo, pins) as u64,
        ),
        (
            "udmabuf_live_info.notifiers",
            offset_of!(UdmabufLiveInfo, notifiers) as u64,
        ),
        (
            "udmabuf_live_info.ranges",
            offset_of!(UdmabufLiveInfo, ranges) as u64,
        ),
        (
            "udmabuf_live_info.repopulate",
            offset_of!(UdmabufLiveInfo, repopulate) as u64,
        ),
        (
            "udmabuf_live_info.unpopulated",
            offset_of!(UdmabufLiveInfo, unpopulated) as u64,
        ),
        (
            "UDMABUF_LIVE_REPOPULATE_EAGER",
            UDMABUF_LIVE_REPOPULATE_EAGER as u64,
        ),
        (
            "UDMABUF_LIVE_REPOPULATE_LAZY",
            UDMABUF_LIVE_REPOPULATE_LAZY as u64,
        ),
        (
            "sizeof_udmabuf_live_sync",
            size_of::<UdmabufLiveSync>() as u64,
        ),
        (
            "udmabuf_live_sync.dmabuf_fd",
            offset_of!(UdmabufLiveSync, dmabuf_fd) as u64,
        ),
        (
            "udmabuf_live_sync.timeout_ms",
            offset_of!(UdmabufLiveSync, timeout_ms) as u64,
        ),
        (
            "sizeof_udmabuf_live_verify",
            size_of::<UdmabufLiveVerify>() as u64,
        ),
        (
            "udmabuf_live_verify.dmabuf_fd",
            offset_of!(UdmabufLiveVerify, dmabuf_fd) as u64,
        ),
        (
            "udmabuf_live_verify.__pad",
            offset_of!(UdmabufLiveVerify, __pad) as u64,
        ),
        (
            "udmabuf_live_verify.pages",
            offset_of!(UdmabufLiveVerify, pages) as u64,
        ),
        (
            "udmabuf_live_verify.matching",
            offset_of!(UdmabufLiveVerify, matching) as u64,
        ),
        (
            "udmabuf_live_verify.stale",
            offset_of!(UdmabufLiveVerify, stale) as u64,
        ),
        (
            "udmabuf_live_verify.holes",
            offset_of!(UdmabufLiveVerify, holes) as u64,
        ),
        (
            "udmabuf_live_verify.first_mismatch",
            offset_of!(UdmabufLiveVerify, first_mismatch) as u64,
        ),
        (
            "udmabuf_live_verify.unpopulated",
            offset_of!(UdmabufLiveVerify, unpopulated) as u64,
        ),
        (
            "sizeof_udmabuf_live_pfns",
            size_of::<UdmabufLivePfns>() as u64,
        ),
        (
            "udmabuf_live_pfns.dmabuf_fd",
            offset_of!(UdmabufLivePfns, dmabuf_fd) as u64,
        ),
        (
            "udmabuf_live_pfns.__pad",
            offset_of!(UdmabufLivePfns, __pad) as u64,
        ),
        (
            "udmabuf_live_pfns.first_page",
            offset_of!(UdmabufLivePfns, first_page) as u64,
        ),
        (
            "udmabuf_live_pfns.count",
            offset_of!(UdmabufLivePfns, count) as u64,
        ),
        (
            "udmabuf_live_pfns.pfns",
            offset_of!(UdmabufLivePfns, pfns) as u64,
        ),
        ("UDMABUF_LIVE_INFO", UDMABUF_LIVE_INFO as u64),
        ("UDMABUF_LIVE_SYNC", UDMABUF_LIVE_SYNC as u64),
        ("UDMABUF_LIVE_VERIFY", UDMABUF_LIVE_VERIFY as u64),
        ("UDMABUF_LIVE_PFNS", UDMABUF_LIVE_PFNS as u64),
        (
            "UDMABUF_LIVE_BACKING_SHMEM",
            UDMABUF_LIVE_BACKING_SHMEM as u64,
        ),
        (
            "UDMABUF_LIVE_BACKING_HUGETLB",
            UDMABUF_LIVE_BACKING_HUGETLB as u64,
        ),
        (
            "UDMABUF_LIVE_BACKING_MIXED",
            UDMABUF_LIVE_BACKING_MIXED as u64,
        ),
        (
            "UDMABUF_LIVE_STATE_PENDING",
            UDMABUF_LIVE_STATE_PENDING as u64,
        ),
        ("UDMABUF_LIVE_STATE_STALE", UDMABUF_LIVE_STATE_STALE as u64),
        (
            "UDMABUF_LIVE_STATE_WATCHED",
            UDMABUF_LIVE_STATE_WATCHED as u64,
        ),
        (
            "UDMABUF_LIVE_STATE_VMAPPED",
            UDMABUF_LIVE_STATE_VMAPPED as u64,
        ),
    ];
    for (name, want) in rust {
        assert_eq!(c.get(*name), Some(want), "{name}: C header vs Rust crate");
    }
    assert_eq!(
        c.len(),
        rust.len(),
        "every value the C probe prints is compared"
    );
}

#[test]
fn upstream_ioctl_numbers() {
    // Literal values of upstream _IOW('u', 0x42/0x43, ...) on every Linux architecture
    // with the asm-generic ioctl layout.
    assert_eq!(UDMABUF_CREATE, 0x4018_7542);
    assert_eq!(UDMABUF_CREATE_LIST, 0x4008_7543);
}
