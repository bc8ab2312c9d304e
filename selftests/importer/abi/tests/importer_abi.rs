//! The test importer's ioctl numbers must be what `<linux/ioctl.h>` computes for the same
//! struct sizes, and its structs must have no padding (the module copies them whole).

use std::mem::size_of;
use std::process::Command;
use ulive_importer_abi::*;

#[test]
fn structs_have_the_expected_layout() {
    assert_eq!(size_of::<ImporterAttach>(), 8);
    assert_eq!(size_of::<ImporterMap>(), 24);
    assert_eq!(size_of::<ImporterRead>(), 24);
    assert_eq!(size_of::<ImporterStats>(), 56);
    assert_eq!(size_of::<ImporterPfns>(), 32);
}

#[test]
fn ioctl_numbers_match_linux_ioctl_h() {
    let probe = format!(
        r#"#include <stdio.h>
#include <linux/ioctl.h>
int main(void) {{
    printf("%u %u %u %u %u %u %u %u %u\n", (unsigned)_IOW('i', 1, char[{a}]), (unsigned)_IOR('i', 2, char[{m}]),
           (unsigned)_IOW('i', 3, char[{r}]), (unsigned)_IOR('i', 4, char[{s}]), (unsigned)_IO('i', 5),
           (unsigned)_IOW('i', 6, char[{p}]), (unsigned)_IO('i', 7), (unsigned)_IO('i', 8),
           (unsigned)_IOW('i', 9, char[{r}]));
    return 0;
}}
"#,
        a = size_of::<ImporterAttach>(),
        m = size_of::<ImporterMap>(),
        r = size_of::<ImporterRead>(),
        s = size_of::<ImporterStats>(),
        p = size_of::<ImporterPfns>(),
    );
    let dir = std::env::temp_dir().join(format!("ulive-importer-abi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, bin) = (dir.join("probe.c"), dir.join("probe"));
    std::fs::write(&src, probe).unwrap();
    let st = Command::new("cc")
        .args(["-Wall", "-Werror", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("a C compiler (cc) is needed for the ABI test");
    assert!(st.success(), "the probe does not compile");
    let out = Command::new(&bin).output().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let c: Vec<u32> = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(
        c,
        [
            IMPORTER_ATTACH,
            IMPORTER_MAP,
            IMPORTER_READ,
            IMPORTER_STATS,
            IMPORTER_DETACH,
            IMPORTER_PFNS,
            IMPORTER_VMAP,
            IMPORTER_VUNMAP,
            IMPORTER_VREAD
        ]
    );
}
