//! Open file description locks (`fcntl` `F_OFD_SETLK` / `F_OFD_GETLK`) on
//! one byte of a file: how a ring's roles say they are alive. The kernel
//! drops such a lock when the last fd of its open file description closes,
//! which a process's death does, in whatever PID namespace it ran; and it
//! answers `F_OFD_GETLK` for every process that can reach the file.
//!
//! A lock belongs to an open file description, not to a process: two fds
//! of one description (dup, fork, SCM_RIGHTS) share their locks and never
//! conflict with each other. The caller therefore takes each role's lock
//! on a description of its own (a fresh `open`), and asks with another.

use crate::libc::{self, cvt};
use crate::napi::{Env, JsResult, napi_callback_info};

/// A lock type as JS passes it: 0 shared, 1 exclusive, 2 none (up to `max`).
fn lock_type(env: Env, value: crate::napi::napi_value, max: f64) -> Result<i16, crate::napi::Throw> {
    Ok(match env.integer(value, "type", 0.0, max)? {
        0 => libc::F_RDLCK,
        1 => libc::F_WRLCK,
        _ => libc::F_UNLCK,
    })
}

/// A one-byte range at `start`, with no pid (the OFD commands require 0).
fn one_byte(l_type: i16, start: i64) -> libc::flock {
    libc::flock { l_type, l_whence: libc::SEEK_SET, l_start: start, l_len: 1, l_pid: 0 }
}

/// `ofdLock(fd: number, start: number, type: number): number` —
/// fcntl(fd, F_OFD_SETLK) of the byte at `start`: type 0 takes a shared
/// lock, 1 an exclusive one, 2 releases. Returns 1, or 0 (nothing taken) when
/// another open file description holds a conflicting lock; other errors
/// throw. Never waits.
pub fn ofd_lock(env: Env, info: napi_callback_info) -> JsResult {
    let [fd, start, l_type] = env.args::<3>(info)?;
    let fd = env.fd(fd, "fd")?;
    let start = env.integer(start, "start", 0.0, 9_007_199_254_740_991.0)?;
    let lock = one_byte(lock_type(env, l_type, 2.0)?, start);
    // SAFETY: F_OFD_SETLK reads one struct flock through the pointer, which
    // is valid for the whole call.
    match cvt(unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &lock as *const libc::flock) }, "fcntl") {
        Ok(_) => env.int32(1),
        Err(err) if err.errno == libc::EAGAIN || err.errno == libc::EACCES => env.int32(0),
        Err(err) => Err(err.into()),
    }
}

/// `ofdTest(fd: number, start: number, type: number): number` —
/// fcntl(fd, F_OFD_GETLK) of the byte at `start`: the type of a lock that
/// another open file description holds there and that would conflict with
/// one of `type` (0 shared, 1 exclusive), or 2 (F_UNLCK) if none would.
/// Ask with type 1 to learn whether anyone holds the byte at all.
pub fn ofd_test(env: Env, info: napi_callback_info) -> JsResult {
    let [fd, start, l_type] = env.args::<3>(info)?;
    let fd = env.fd(fd, "fd")?;
    let start = env.integer(start, "start", 0.0, 9_007_199_254_740_991.0)?;
    let mut lock = one_byte(lock_type(env, l_type, 1.0)?, start);
    // SAFETY: F_OFD_GETLK reads and rewrites one struct flock through the
    // pointer, which is valid and exclusively ours for the whole call.
    cvt(unsafe { libc::fcntl(fd, libc::F_OFD_GETLK, &mut lock as *mut libc::flock) }, "fcntl")?;
    env.int32(match lock.l_type {
        libc::F_RDLCK => 0,
        libc::F_WRLCK => 1,
        _ => 2,
    })
}
