//! The udmabuf-live ioctl interface, shared by the kernel module, the CLI and the tests.
//!
//! `abi.rs` holds every definition and has no dependencies, so the kernel module compiles
//! the very same file (`#[path]` include) and nothing is copied. `include/linux/udmabuf_live.h`
//! is the C view of the same ABI; a test checks that the two agree.
//!
//! With the `std` feature, [`sys`] is the one userspace layer over it: typed wrappers of
//! the ioctls, shared mappings and the page size, used by `udmabuf-ctl` and the tests.
#![no_std]

#[cfg(feature = "std")]
extern crate std;

mod abi;
pub use abi::*;

#[cfg(feature = "std")]
pub mod sys;
