//! One mapping made by `mmap` (memory.rs): where it is, and whether it is
//! still mapped. Shared by the ArrayBuffer's finalizer, the env's registry
//! and `munmap`, whoever comes first unmaps it.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::libc::{self, SysError, cvt};

/// One mapping: where it is, and whether it is still mapped.
pub struct Mapping {
    pub addr: usize,
    pub len: usize,
    mapped: AtomicBool,
}

impl Mapping {
    pub fn new(addr: usize, len: usize) -> Self {
        Mapping { addr, len, mapped: AtomicBool::new(true) }
    }

    pub fn is_mapped(&self) -> bool {
        // Acquire: pairs with the swap in unmap().
        self.mapped.load(Ordering::Acquire)
    }

    /// Unmaps the memory unless that was already done; `Ok(true)` if this
    /// call unmapped it. Callers detach the ArrayBuffer first, or are its
    /// finalizer (nothing can read it any more).
    pub fn unmap(&self) -> Result<bool, SysError> {
        // AcqRel: whoever wins the swap is the only one to call munmap.
        if !self.mapped.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        // SAFETY: addr/len are exactly a mapping made by mmap() below, which
        // this flag says nobody has unmapped yet, and no ArrayBuffer exposes
        // it any more (detached or finalized).
        cvt(unsafe { libc::munmap(self.addr as *mut c_void, self.len) }, "munmap")?;
        Ok(true)
    }
}
