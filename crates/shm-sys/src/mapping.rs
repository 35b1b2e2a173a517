//! One mapping made by `mmap` (memory.rs) or `shmat` (sysv.rs): where it
//! is, how it goes away (munmap or shmdt), whether it is still mapped, and
//! the fd it owns, if it was given one. Shared by the ArrayBuffer's
//! finalizer, the env's registry and `munmap`: whoever comes first unmaps
//! (detaches) it and closes the fd.
//!
//! Owning the fd is what lets a region that is dropped without close() give
//! everything back at GC: the finalizer is the only code that runs then, so
//! it must hold the fd as well as the memory.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use crate::libc::{self, SysError, cvt};

/// No fd owned (or already closed).
const NO_FD: c_int = -1;

/// How a mapping was made, so how it is undone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `mmap` of an fd: undone by `munmap(addr, len)`.
    Mmap,
    /// `shmat` of a System V segment: undone by `shmdt(addr)` (which drops
    /// the segment's attach count; the kernel destroys a segment marked
    /// with IPC_RMID at its last detach).
    Shm,
}

/// One mapping: where it is, whether it is still mapped, the fd it owns.
pub struct Mapping {
    pub addr: usize,
    pub len: usize,
    kind: Kind,
    mapped: AtomicBool,
    /// The fd closed with the mapping, or NO_FD.
    fd: AtomicI32,
}

impl Mapping {
    /// A mapping made by `mmap`.
    pub fn new(addr: usize, len: usize) -> Self {
        Self::of_kind(Kind::Mmap, addr, len)
    }

    /// A System V segment attached at `addr` by `shmat`, `len` its size.
    pub fn attached(addr: usize, len: usize) -> Self {
        Self::of_kind(Kind::Shm, addr, len)
    }

    fn of_kind(kind: Kind, addr: usize, len: usize) -> Self {
        Mapping { addr, len, kind, mapped: AtomicBool::new(true), fd: AtomicI32::new(NO_FD) }
    }

    pub fn is_mapped(&self) -> bool {
        // Acquire: pairs with the swap in unmap().
        self.mapped.load(Ordering::Acquire)
    }

    /// Makes `fd` this mapping's: `close_fd` (munmap, or the finalizer)
    /// closes it. Called once, after the ArrayBuffer exists, so an mmap that
    /// fails leaves the fd to its caller.
    pub fn own_fd(&self, fd: c_int) {
        // Release: pairs with the swap in close_fd().
        self.fd.store(fd, Ordering::Release);
    }

    /// Unmaps the memory unless that was already done; `Ok(true)` if this
    /// call unmapped it. Callers detach the ArrayBuffer first, or are its
    /// finalizer (nothing can read it any more).
    pub fn unmap(&self) -> Result<bool, SysError> {
        // AcqRel: whoever wins the swap is the only one to call munmap.
        if !self.mapped.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        match self.kind {
            // SAFETY: addr/len are exactly a mapping made by mmap (memory.rs),
            // which this flag says nobody has unmapped yet, and no ArrayBuffer
            // exposes it any more (detached or finalized).
            Kind::Mmap => cvt(unsafe { libc::munmap(self.addr as *mut c_void, self.len) }, "munmap")?,
            // SAFETY: addr is exactly where shmat (sysv.rs) attached the
            // segment, which this flag says nobody has detached yet; no
            // ArrayBuffer exposes it any more (detached or finalized).
            Kind::Shm => cvt(unsafe { libc::shmdt(self.addr as *const c_void) }, "shmdt")?,
        };
        Ok(true)
    }

    /// Closes the owned fd unless there is none or it was closed already;
    /// `Ok(true)` if this call closed it. EINTR counts as closed: Linux
    /// releases the fd before it reports EINTR, and closing again could
    /// close an fd another thread has just been given.
    pub fn close_fd(&self) -> Result<bool, SysError> {
        // AcqRel: whoever takes the fd out is the only one to close it.
        let fd = self.fd.swap(NO_FD, Ordering::AcqRel);
        if fd == NO_FD {
            return Ok(false);
        }
        // SAFETY: fd was handed to this mapping by own_fd and nobody else
        // closes it; the swap above makes this the only close.
        match cvt(unsafe { libc::close(fd) }, "close") {
            Err(err) if err.errno != libc::EINTR => Err(err),
            _ => Ok(true),
        }
    }

    /// Unmaps and closes the fd; the first error, after both were tried.
    pub fn release(&self) -> Result<(), SysError> {
        let unmapped = self.unmap();
        let closed = self.close_fd();
        unmapped?;
        closed?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testfd::TestFd;

    // Only the tests use these (values from the uapi headers, x86_64).
    const MAP_PRIVATE: c_int = 0x02;
    const MAP_ANONYMOUS: c_int = 0x20;

    fn memfd() -> TestFd {
        TestFd::memfd(c"mapping-test")
    }

    fn anonymous_page() -> usize {
        // SAFETY: a fresh private anonymous mapping chosen by the kernel.
        let addr =
            unsafe { libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) };
        cvt(addr as isize, "mmap").unwrap() as usize
    }

    #[test]
    fn release_closes_the_owned_fd_once() {
        let fd = memfd();
        let mapping = Mapping::new(anonymous_page(), 4096);
        mapping.own_fd(fd.fd);
        mapping.release().unwrap();
        assert!(!fd.is_open());
        assert_eq!(mapping.close_fd(), Ok(false));
        assert_eq!(mapping.unmap(), Ok(false));
    }

    #[test]
    fn release_leaves_an_fd_it_does_not_own_open() {
        let fd = memfd();
        let mapping = Mapping::new(anonymous_page(), 4096);
        mapping.release().unwrap();
        assert!(fd.is_open());
        libc::close_quietly(fd.fd);
    }
}
