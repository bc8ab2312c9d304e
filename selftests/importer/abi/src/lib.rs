//! The ABI of `ulive_importer`, the tests' dma-buf importer module (`selftests/importer/`).
//!
//! `abi.rs` holds every definition; the importer module compiles the very same file with a
//! `#[path]` include, as the driver does with `uapi/src/abi.rs`. It takes the `_IOC`
//! helpers through `super::`, which here are the uapi crate's. With the `std` feature,
//! [`client`] is the one typed userspace wrapper of the ioctls (the tests, `udmabuf-ctl
//! hold` and `udmabuf-ctl bench` use it).
#![no_std]

#[cfg(feature = "std")]
extern crate std;

// `abi` reaches the _IOC helpers through `super::`, as in the importer module.
use udmabuf_live_uapi::{io, ior, iow};

mod abi;
pub use abi::*;

#[cfg(feature = "std")]
pub mod client;
