//! Opening and closing what a region maps: `memfd_create` (anonymous,
//! sealable), POSIX `shm_open` / `shm_unlink` (named, under /dev/shm), `open`
//! (a file), `dup` (a region's own copy of an fd it is given) and `close`. Every fd made here is close-on-exec; the caller owns
//! it and closes it with `close` here, or gives it to `mmap(…, ownFd)`.
//!
//! Every fd returned here is recorded as the calling env's (fds.rs) until
//! `close` closes it or `mmap` takes it: what an env (a worker) leaves open
//! when it ends is closed by its cleanup hook.
//!
//! Not node:fs: in a worker thread Node tracks the fds `fs.open` made (it
//! closes them when the worker ends, and warns when `fs.close` closes one it
//! did not make), so an fd opened here and one opened by fs must never be
//! closed by the other.

use crate::env::opened;
use crate::fds;
use crate::libc::{self, cvt};
use crate::napi::{self, Env, JsResult, napi_callback_info};

/// The highest `mode` accepted by shmOpen (permission bits, setuid/setgid/sticky).
const MAX_MODE: f64 = 0o7777 as f64;

/// `memfdCreate(name: string, hugePages = false): number` —
/// memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING, | MFD_HUGETLB with
/// `hugePages`). The name only labels /proc/self/fd links; the kernel
/// rejects names over 249 bytes with EINVAL.
pub fn memfd_create(env: Env, info: napi_callback_info) -> JsResult {
    let [name, huge_pages] = env.args::<2>(info)?;
    let name = env.c_string(name, "name")?;
    let huge_pages = env.type_of(huge_pages)? != napi::NAPI_UNDEFINED && env.boolean(huge_pages, "hugePages")?;
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | if huge_pages { libc::MFD_HUGETLB } else { 0 };
    // SAFETY: name is a valid NUL-terminated string for the whole call.
    let fd = cvt(unsafe { libc::memfd_create(name.as_ptr(), flags) }, "memfd_create")?;
    opened(env, fd)
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
    opened(env, fd)
}

/// `shmUnlink(name: string): void` — shm_unlink(name).
pub fn shm_unlink(env: Env, info: napi_callback_info) -> JsResult {
    let [name] = env.args::<1>(info)?;
    let name = env.c_string(name, "name")?;
    // SAFETY: name is a valid NUL-terminated string for the whole call.
    cvt(unsafe { libc::shm_unlink(name.as_ptr()) }, "shm_unlink")?;
    env.undefined()
}

/// `open(path: string, oflag: number, mode: number): number` —
/// open(path, oflag | O_CLOEXEC, mode), retried on EINTR (a FIFO can block).
pub fn open(env: Env, info: napi_callback_info) -> JsResult {
    let [path, oflag, mode] = env.args::<3>(info)?;
    let path = env.c_string(path, "path")?;
    let oflag = env.integer(oflag, "oflag", 0.0, i32::MAX as f64)? as i32;
    let mode = env.integer(mode, "mode", 0.0, MAX_MODE)? as u32;
    loop {
        // SAFETY: path is a valid NUL-terminated string for the whole call;
        // open reads the variadic mode as an unsigned int.
        match cvt(unsafe { libc::open(path.as_ptr(), oflag | libc::O_CLOEXEC, mode) }, "open") {
            Err(err) if err.errno == libc::EINTR => continue,
            fd => return opened(env, fd?),
        }
    }
}

/// `dup(fd: number): number` — fcntl(fd, F_DUPFD_CLOEXEC, 0): a new fd,
/// close-on-exec, for the same open file description.
pub fn dup(env: Env, info: napi_callback_info) -> JsResult {
    let [fd] = env.args::<1>(info)?;
    let fd = env.fd(fd, "fd")?;
    // SAFETY: F_DUPFD_CLOEXEC takes an int argument (passed as a long, as
    // the variadic fcntl reads it); no memory is involved.
    let copy = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0 as std::ffi::c_long) }, "fcntl")?;
    opened(env, copy)
}

/// `close(fd: number): void` — close(fd). EINTR counts as closed (Linux has
/// released the fd by then; a retry could close someone else's). The fd
/// leaves the table of open fds first (whichever env recorded it), so no
/// env's cleanup closes its number again.
pub fn close(env: Env, info: napi_callback_info) -> JsResult {
    let [fd] = env.args::<1>(info)?;
    let fd = env.fd(fd, "fd")?;
    fds::forget(fd);
    // SAFETY: closing a number touches no memory; the caller says it owns it.
    match cvt(unsafe { libc::close(fd) }, "close") {
        Err(err) if err.errno != libc::EINTR => Err(napi::Throw::Sys(err)),
        _ => env.undefined(),
    }
}
