//! The udmabuf-live ioctl interface, shared by the kernel module, the CLI and the tests.
//!
//! `abi.rs` holds every definition and has no dependencies, so the kernel module compiles
//! the very same file (`#[path]` include) and nothing is copied. `include/linux/udmabuf_live.h`
//! is the C view of the same ABI; a test checks that the two agree.
#![no_std]

mod abi;
pub use abi::*;

/// The ABI of the test importer module (`selftests/importer/`).
pub mod importer;
