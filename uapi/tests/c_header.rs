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
    let st = Command::new("cc").args(["-Wall", "-Werror", "-I", include, "-o"]).arg(&bin).arg(&src).status()
        .expect("a C compiler (cc) is needed for the header test");
    assert!(st.success(), "the C header does not compile");
    let out = Command::new(&bin).output().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    String::from_utf8(out.stdout).unwrap().lines()
        .map(|l| { let (k, v) = l.split_once(' ').unwrap(); (k.to_owned(), v.parse().unwrap()) })
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
    ];
    for (name, want) in rust {
        assert_eq!(c.get(*name), Some(want), "{name}: C header vs Rust crate");
    }
    assert_eq!(c.len(), rust.len(), "every value the C probe prints is compared");
}

#[test]
fn upstream_ioctl_numbers() {
    // Literal values of upstream _IOW('u', 0x42/0x43, ...) on every Linux architecture
    // with the asm-generic ioctl layout.
    assert_eq!(UDMABUF_CREATE, 0x4018_7542);
    assert_eq!(UDMABUF_CREATE_LIST, 0x4008_7543);
}
