//! System V shared memory: `shmget` (create or look up a segment by key),
//! `shmat` (attach it, wrapped in one external ArrayBuffer like an mmap'd
//! region: see memory.rs) and `shmctl(IPC_RMID)` (mark it for removal).
//!
//! A segment is not an fd: it lives in the kernel until it is marked with
//! IPC_RMID *and* its last attach is gone (Linux still lets a process
//! attach a marked segment by id). An attach is released by `munmap(buffer)`
//! (memory.rs: detach the ArrayBuffer, then shmdt) or by the ArrayBuffer's
//! finalizer after GC or at the env's teardown, exactly as an mmap'd
//! region is unmapped.

use std::ptr;
use std::sync::Arc;

use crate::env::EnvState;
use crate::libc::{self, SysError, cvt, shmid_ds};
use crate::mapping::Mapping;
use crate::memory;
use crate::napi::{self, Env, JsResult, Throw, napi_callback_info};

/// The flags shmGet passes through: permission bits, IPC_CREAT, IPC_EXCL,
/// SHM_HUGETLB (anything else, such as SHM_NORESERVE, is refused).
const SHMGET_FLAGS: i32 = 0o777 | libc::IPC_CREAT | libc::IPC_EXCL | libc::SHM_HUGETLB;

/// `shmGet(key, size, flags): number` — shmget(key, size, flags): the id of
/// the segment with `key` (an integer in [-2^31, 2^32), taken modulo 2^32
/// as the C key_t; 0 is IPC_PRIVATE, a new segment only reachable by id).
/// `size` 0 looks up an existing segment.
pub fn shm_get(env: Env, info: napi_callback_info) -> JsResult {
    let [key, size, flags] = env.args::<3>(info)?;
    let key = env.integer(key, "key", i32::MIN as f64, u32::MAX as f64)? as u32 as libc::key_t;
    let size = env.integer(size, "size", 0.0, napi::MAX_SAFE_INTEGER)? as usize;
    let flags = env.integer(flags, "flags", 0.0, i32::MAX as f64)? as i32;
    if flags & !SHMGET_FLAGS != 0 {
        return Err(Throw::Range(format!(
            "flags={flags:#o} has bits other than mode, IPC_CREAT, IPC_EXCL, SHM_HUGETLB"
        )));
    }
    // SAFETY: shmget takes only integers and touches no memory of ours.
    let id = cvt(unsafe { libc::shmget(key, size, flags) }, "shmget")?;
    env.int32(id)
}

/// The size of segment `id` (IPC_STAT).
fn segment_size(id: i32) -> Result<usize, SysError> {
    let mut stat = shmid_ds::default();
    // SAFETY: stat is a writable shmid_ds of the size glibc's IPC_STAT fills.
    cvt(unsafe { libc::shmctl(id, libc::IPC_STAT, &mut stat) }, "shmctl")?;
    Ok(stat.shm_segsz)
}

/// `shmAttach(id, writable): ArrayBuffer` — shmat(id, NULL, writable ? 0 :
/// SHM_RDONLY) wrapped in one external ArrayBuffer of the segment's size
/// (IPC_STAT after the attach, which pins the segment), tagged like mmap's:
/// `munmap(buffer)` detaches it, or its finalizer after GC.
pub fn shm_attach(env: Env, info: napi_callback_info) -> JsResult {
    let [id, writable] = env.args::<2>(info)?;
    let id = env.integer(id, "id", 0.0, i32::MAX as f64)? as i32;
    let writable = env.boolean(writable, "writable")?;
    // SAFETY: the state is used within this callback on the JS thread.
    let state = unsafe { EnvState::current(env) }?;
    let flags = if writable { 0 } else { libc::SHM_RDONLY };
    // SAFETY: a fresh attach at an address chosen by the kernel (null): it
    // cannot overlap anything Rust or V8 owns. Failure is (void *)-1.
    let addr = cvt(unsafe { libc::shmat(id, ptr::null(), flags) } as isize, "shmat")? as usize;
    let size = match segment_size(id) {
        Ok(size) if size > 0 && size as f64 <= napi::MAX_SAFE_INTEGER => size,
        failed => {
            // SAFETY: addr is the attach just made, exposed to nothing yet.
            let _ = unsafe { libc::shmdt(addr as *const std::ffi::c_void) };
            return Err(match failed {
                Err(err) => Throw::Sys(err),
                Ok(size) => Throw::Range(format!("segment id={id} has size {size}, which cannot be mapped")),
            });
        }
    };
    let mapping = Arc::new(Mapping::attached(addr, size));
    memory::expose(env, state, &mapping)
}

/// `shmRemove(id): void` — shmctl(id, IPC_RMID, NULL): the segment's key is
/// freed at once, the segment goes with its last detach.
pub fn shm_remove(env: Env, info: napi_callback_info) -> JsResult {
    let [id] = env.args::<1>(info)?;
    let id = env.integer(id, "id", 0.0, i32::MAX as f64)? as i32;
    // SAFETY: IPC_RMID reads no buffer (null is what it expects).
    cvt(unsafe { libc::shmctl(id, libc::IPC_RMID, ptr::null_mut()) }, "shmctl")?;
    env.undefined()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IPC_PRIVATE (only the tests make such segments here).
    const IPC_PRIVATE: libc::key_t = 0;

    /// Whether segment `id` still exists (IPC_STAT finds it).
    fn exists(id: i32) -> bool {
        segment_size(id).is_ok()
    }

    #[test]
    fn a_marked_segment_goes_with_the_mappings_last_release() {
        // SAFETY: shmget touches no memory of ours.
        let id = cvt(unsafe { libc::shmget(IPC_PRIVATE, 10_000, 0o600 | libc::IPC_CREAT) }, "shmget").unwrap();
        assert_eq!(segment_size(id), Ok(10_000));
        // SAFETY: a fresh attach chosen by the kernel.
        let addr = cvt(unsafe { libc::shmat(id, ptr::null(), 0) } as isize, "shmat").unwrap() as usize;
        let mapping = Mapping::attached(addr, 10_000);
        // SAFETY: IPC_RMID reads no buffer.
        cvt(unsafe { libc::shmctl(id, libc::IPC_RMID, ptr::null_mut()) }, "shmctl").unwrap();
        assert!(exists(id), "still attached, so only marked");
        assert_eq!(mapping.unmap(), Ok(true));
        assert_eq!(mapping.unmap(), Ok(false));
        assert!(!exists(id), "gone after the last detach");
    }
}
