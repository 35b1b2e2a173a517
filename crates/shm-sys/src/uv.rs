//! libuv: the few functions this addon calls, declared by hand from libuv
//! 1.x's `uv.h` and resolved from the node binary when the addon is loaded
//! (Node exports libuv's symbols for addons). Handles are allocated with
//! `uv_handle_size`, so their layout stays libuv's business; the only field
//! we touch is `data`, the first member of every handle.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_void};

#[repr(C)]
pub struct uv_loop_t {
    _private: [u8; 0],
}
#[repr(C)]
pub struct uv_handle_t {
    _private: [u8; 0],
}

/// `uv_handle_type`: `UV_POLL`.
pub const UV_POLL: c_int = 8;
/// `uv_poll_event`: `UV_READABLE`.
pub const UV_READABLE: c_int = 1;

pub type uv_poll_cb = Option<unsafe extern "C" fn(handle: *mut uv_handle_t, status: c_int, events: c_int)>;
pub type uv_close_cb = Option<unsafe extern "C" fn(handle: *mut uv_handle_t)>;

unsafe extern "C" {
    pub fn uv_handle_size(kind: c_int) -> usize;
    pub fn uv_poll_init(event_loop: *mut uv_loop_t, handle: *mut uv_handle_t, fd: c_int) -> c_int;
    pub fn uv_poll_start(handle: *mut uv_handle_t, events: c_int, cb: uv_poll_cb) -> c_int;
    pub fn uv_poll_stop(handle: *mut uv_handle_t) -> c_int;
    pub fn uv_close(handle: *mut uv_handle_t, cb: uv_close_cb);
    pub fn uv_ref(handle: *mut uv_handle_t);
    pub fn uv_unref(handle: *mut uv_handle_t);
    /// Writes the error's name ("ENOENT" for `-ENOENT`) into `buf`: the
    /// names Node itself reports (`util.getSystemErrorName`).
    pub fn uv_err_name_r(err: c_int, buf: *mut c_char, buflen: usize) -> *mut c_char;
}

/// The errno name Node uses for `errno` (positive): libuv's, as
/// `util.getSystemErrorName` gives it; for the values libuv has no name
/// for (EIDRM, EDQUOT, ENOLCK, ESTALE, …) the C library's, as
/// `os.constants.errno` has them; `E<errno>` where neither has one.
pub fn errno_name(errno: i32) -> String {
    let mut buf = [0 as c_char; 64];
    // SAFETY: buf is 64 writable bytes; uv_err_name_r NUL-terminates it.
    unsafe { uv_err_name_r(-errno, buf.as_mut_ptr(), buf.len()) };
    // SAFETY: NUL-terminated by uv_err_name_r.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned();
    if name.starts_with('E') && !name.contains(' ') {
        return name;
    }
    crate::libc::errno_symbol(errno).filter(|n| n.starts_with('E')).unwrap_or_else(|| format!("E{errno}"))
}

/// The `data` member of a handle (its first field in every libuv handle).
///
/// # Safety
/// `handle` points at a live handle of at least `uv_handle_size` bytes.
pub unsafe fn set_data(handle: *mut uv_handle_t, data: *mut c_void) {
    // SAFETY: caller contract; `data` is the first, pointer-sized member.
    unsafe { handle.cast::<*mut c_void>().write(data) };
}

/// # Safety
/// As for [`set_data`].
pub unsafe fn data(handle: *mut uv_handle_t) -> *mut c_void {
    // SAFETY: caller contract.
    unsafe { handle.cast::<*mut c_void>().read() }
}
