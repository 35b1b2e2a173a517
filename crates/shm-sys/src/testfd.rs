//! Test helpers for fds (compiled for `cargo test` only).
//!
//! Cargo runs a crate's tests on parallel threads of one process, which share
//! one fd table: once a test closes an fd, the kernel may give its number to
//! another test's `memfd_create` at once. "Is fd N open?" then answers for
//! the wrong file. A [`TestFd`] remembers the inode its number was opened on,
//! so that [`TestFd::is_open`] is true only while that very file is open
//! under that number.

use std::ffi::{CStr, c_int};
use std::os::unix::fs::MetadataExt;

use crate::libc::{self, cvt};

/// An fd number and the identity (device, inode) of the file it was
/// opened on.
#[derive(Clone, Copy)]
pub struct TestFd {
    pub fd: c_int,
    identity: (u64, u64),
}

/// The (device, inode) that fd `fd` refers to now, if it is open.
fn identity_of(fd: c_int) -> Option<(u64, u64)> {
    // /proc/self/fd/N resolves to the open file itself (a memfd too).
    std::fs::metadata(format!("/proc/self/fd/{fd}")).ok().map(|m| (m.dev(), m.ino()))
}

impl TestFd {
    /// A new memfd named `name` (close-on-exec).
    pub fn memfd(name: &CStr) -> TestFd {
        // SAFETY: a valid NUL-terminated name; flags are memfd_create's.
        let fd = cvt(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) }, "memfd_create").unwrap();
        TestFd { fd, identity: identity_of(fd).expect("a memfd just created is open") }
    }

    /// Whether this fd's number still refers to the file it was opened on.
    pub fn is_open(&self) -> bool {
        identity_of(self.fd) == Some(self.identity)
    }
}
