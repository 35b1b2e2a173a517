//! Creating shared memory objects: `memfd_create` (anonymous, sealable) and
//! POSIX `shm_open` / `shm_unlink` (named, under /dev/shm). Every fd made here
//! is close-on-exec; the caller owns it and closes it with node:fs.

use crate::libc::{self, cvt};
use crate::napi::{Env, JsResult, napi_callback_info};

/// The highest `mode` accepted by shmOpen (permission bits, setuid/setgid/sticky).
const MAX_MODE: f64 = 0o7777 as f64;

/// `memfdCreate(name: string): number` — memfd_create(name,
/// MFD_CLOEXEC | MFD_ALLOW_SEALING). The name only labels /proc/self/fd
/// links; the kernel rejects names over 249 bytes with EINVAL.
pub fn memfd_create(env: Env, info: napi_callback_info) -> JsResult {
    let [name] = env.args::<1>(info)?;
    let name = env.c_string(name, "name")?;
    // SAFETY: name is a valid NUL-terminated string for the whole call.
    let fd =
        cvt(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) }, "memfd_create")?;
    env.int32(fd)
}

/// `shmOpen(name: string, oflag: number, mode: number): number` —
/// shm_open(name, oflag | O_CLOEXEC, mode). The caller validated the name
/// (leading '/', no other slash); errors such as EEXIST or ENOENT come from
/// the system.
pub fn shm_open(env: Env, info: napi_callback_info) -> JsResult {
    let [name, oflag, mode] = env.args::<3>(info)?;
    let name = env.c_string(name, "name")?;
    let oflag = env.integer(oflag, "oflag", 0.0, i32::MAX as f64)? as i32;
    let mode = env.integer(mode, "mode", 0.0, MAX_MODE)? as u32;
    // SAFETY: name is a valid NUL-terminated string for the whole call.
    let fd = cvt(unsafe { libc::shm_open(name.as_ptr(), oflag | libc::O_CLOEXEC, mode) }, "shm_open")?;
    env.int32(fd)
}

/// `shmUnlink(name: string): void` — shm_unlink(name).
pub fn shm_unlink(env: Env, info: napi_callback_info) -> JsResult {
    let [name] = env.args::<1>(info)?;
    let name = env.c_string(name, "name")?;
    // SAFETY: name is a valid NUL-terminated string for the whole call.
    cvt(unsafe { libc::shm_unlink(name.as_ptr()) }, "shm_unlink")?;
    env.undefined()
}
