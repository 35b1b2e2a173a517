//! Node-API: the types, status codes and functions this addon uses, declared
//! by hand from Node 20's `js_native_api.h`, `js_native_api_types.h` and
//! `node_api.h` (the symbols are resolved from the node binary when the
//! addon is loaded), plus the small safe helpers the entry points share:
//! reading arguments, making numbers and strings, and turning a [`Throw`]
//! into a pending JS exception.
//!
//! Conventions of the helpers: every function returning `Result<_, Throw>`
//! either succeeds or describes the exception to raise; nothing here throws
//! directly except [`Env::throw`]. A failed `napi_*` call becomes
//! [`Throw::Pending`] when it left an exception pending, else [`Throw::Napi`].

#![allow(non_camel_case_types)]

use std::ffi::{CStr, CString, c_char, c_void};
use std::ptr;

use crate::libc::SysError;

// ---------------------------------------------------------------------------
// Types (js_native_api_types.h, node_api_types.h)
// ---------------------------------------------------------------------------

macro_rules! opaque {
    ($($handle:ident => $inner:ident),* $(,)?) => {$(
        #[repr(C)]
        pub struct $inner {
            _private: [u8; 0],
        }
        pub type $handle = *mut $inner;
    )*};
}

opaque! {
    napi_env => napi_env__,
    napi_value => napi_value__,
    napi_ref => napi_ref__,
    napi_callback_info => napi_callback_info__,
    napi_deferred => napi_deferred__,
    napi_threadsafe_function => napi_threadsafe_function__,
    napi_handle_scope => napi_handle_scope__,
    napi_callback_scope => napi_callback_scope__,
    napi_async_context => napi_async_context__,
    napi_async_cleanup_hook_handle => napi_async_cleanup_hook_handle__,
}

pub type napi_status = i32;
pub const NAPI_OK: napi_status = 0;
/// `Number.MAX_SAFE_INTEGER`, the bound of the integer arguments that are
/// counts or ids.
pub const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;
pub const NAPI_PENDING_EXCEPTION: napi_status = 10;

pub type napi_valuetype = i32;
pub const NAPI_UNDEFINED: napi_valuetype = 0;
pub const NAPI_NULL: napi_valuetype = 1;
pub const NAPI_BOOLEAN: napi_valuetype = 2;
pub const NAPI_NUMBER: napi_valuetype = 3;
pub const NAPI_STRING: napi_valuetype = 4;
pub const NAPI_SYMBOL: napi_valuetype = 5;
pub const NAPI_OBJECT: napi_valuetype = 6;
pub const NAPI_FUNCTION: napi_valuetype = 7;
pub const NAPI_EXTERNAL: napi_valuetype = 8;
pub const NAPI_BIGINT: napi_valuetype = 9;

pub type napi_typedarray_type = i32;

/// `napi_property_attributes`: `napi_enumerable`.
pub const NAPI_ENUMERABLE: i32 = 1 << 1;

/// `napi_threadsafe_function_release_mode`: `napi_tsfn_abort`.
pub const NAPI_TSFN_ABORT: i32 = 1;
/// `napi_threadsafe_function_call_mode`: `napi_tsfn_nonblocking`.
pub const NAPI_TSFN_NONBLOCKING: i32 = 0;

pub type napi_callback = Option<unsafe extern "C" fn(napi_env, napi_callback_info) -> napi_value>;
pub type napi_finalize = Option<unsafe extern "C" fn(napi_env, *mut c_void, *mut c_void)>;
pub type napi_cleanup_hook = Option<unsafe extern "C" fn(*mut c_void)>;
pub type napi_async_cleanup_hook = Option<unsafe extern "C" fn(napi_async_cleanup_hook_handle, *mut c_void)>;
pub type napi_threadsafe_function_call_js =
    Option<unsafe extern "C" fn(napi_env, napi_value, *mut c_void, *mut c_void)>;

#[repr(C)]
pub struct napi_property_descriptor {
    pub utf8name: *const c_char,
    pub name: napi_value,
    pub method: napi_callback,
    pub getter: napi_callback,
    pub setter: napi_callback,
    pub value: napi_value,
    pub attributes: i32,
    pub data: *mut c_void,
}

#[repr(C)]
pub struct napi_type_tag {
    pub lower: u64,
    pub upper: u64,
}

// ---------------------------------------------------------------------------
// Functions (js_native_api.h, node_api.h); all available at NAPI_VERSION 8.
// ---------------------------------------------------------------------------

unsafe extern "C" {
    pub fn napi_get_cb_info(
        env: napi_env,
        info: napi_callback_info,
        argc: *mut usize,
        argv: *mut napi_value,
        this_arg: *mut napi_value,
        data: *mut *mut c_void,
    ) -> napi_status;
    pub fn napi_define_properties(
        env: napi_env,
        object: napi_value,
        property_count: usize,
        properties: *const napi_property_descriptor,
    ) -> napi_status;

    pub fn napi_typeof(env: napi_env, value: napi_value, result: *mut napi_valuetype) -> napi_status;
    pub fn napi_get_undefined(env: napi_env, result: *mut napi_value) -> napi_status;
    pub fn napi_get_boolean(env: napi_env, value: bool, result: *mut napi_value) -> napi_status;
    pub fn napi_get_value_double(env: napi_env, value: napi_value, result: *mut f64) -> napi_status;
    pub fn napi_get_value_bool(env: napi_env, value: napi_value, result: *mut bool) -> napi_status;
    pub fn napi_get_value_string_utf8(
        env: napi_env,
        value: napi_value,
        buf: *mut c_char,
        bufsize: usize,
        result: *mut usize,
    ) -> napi_status;
    pub fn napi_create_int32(env: napi_env, value: i32, result: *mut napi_value) -> napi_status;
    pub fn napi_create_uint32(env: napi_env, value: u32, result: *mut napi_value) -> napi_status;
    pub fn napi_create_string_utf8(
        env: napi_env,
        s: *const c_char,
        length: usize,
        result: *mut napi_value,
    ) -> napi_status;
    pub fn napi_set_named_property(
        env: napi_env,
        object: napi_value,
        utf8name: *const c_char,
        value: napi_value,
    ) -> napi_status;

    pub fn napi_create_error(env: napi_env, code: napi_value, msg: napi_value, result: *mut napi_value) -> napi_status;
    pub fn napi_throw(env: napi_env, error: napi_value) -> napi_status;
    pub fn napi_throw_error(env: napi_env, code: *const c_char, msg: *const c_char) -> napi_status;
    pub fn napi_throw_type_error(env: napi_env, code: *const c_char, msg: *const c_char) -> napi_status;
    pub fn napi_throw_range_error(env: napi_env, code: *const c_char, msg: *const c_char) -> napi_status;
    pub fn napi_is_exception_pending(env: napi_env, result: *mut bool) -> napi_status;

    pub fn napi_is_arraybuffer(env: napi_env, value: napi_value, result: *mut bool) -> napi_status;
    pub fn napi_create_external_arraybuffer(
        env: napi_env,
        external_data: *mut c_void,
        byte_length: usize,
        finalize_cb: napi_finalize,
        finalize_hint: *mut c_void,
        result: *mut napi_value,
    ) -> napi_status;
    pub fn napi_get_arraybuffer_info(
        env: napi_env,
        arraybuffer: napi_value,
        data: *mut *mut c_void,
        byte_length: *mut usize,
    ) -> napi_status;
    pub fn napi_detach_arraybuffer(env: napi_env, arraybuffer: napi_value) -> napi_status;
    pub fn napi_is_typedarray(env: napi_env, value: napi_value, result: *mut bool) -> napi_status;
    pub fn napi_get_typedarray_info(
        env: napi_env,
        typedarray: napi_value,
        kind: *mut napi_typedarray_type,
        length: *mut usize,
        data: *mut *mut c_void,
        arraybuffer: *mut napi_value,
        byte_offset: *mut usize,
    ) -> napi_status;
    pub fn napi_is_dataview(env: napi_env, value: napi_value, result: *mut bool) -> napi_status;
    pub fn napi_get_dataview_info(
        env: napi_env,
        dataview: napi_value,
        bytelength: *mut usize,
        data: *mut *mut c_void,
        arraybuffer: *mut napi_value,
        byte_offset: *mut usize,
    ) -> napi_status;
    pub fn napi_type_tag_object(env: napi_env, value: napi_value, type_tag: *const napi_type_tag) -> napi_status;
    pub fn napi_check_object_type_tag(
        env: napi_env,
        value: napi_value,
        type_tag: *const napi_type_tag,
        result: *mut bool,
    ) -> napi_status;

    pub fn napi_create_reference(
        env: napi_env,
        value: napi_value,
        initial_refcount: u32,
        result: *mut napi_ref,
    ) -> napi_status;
    pub fn napi_delete_reference(env: napi_env, reference: napi_ref) -> napi_status;

    pub fn napi_create_promise(env: napi_env, deferred: *mut napi_deferred, promise: *mut napi_value) -> napi_status;
    pub fn napi_resolve_deferred(env: napi_env, deferred: napi_deferred, resolution: napi_value) -> napi_status;
    pub fn napi_reject_deferred(env: napi_env, deferred: napi_deferred, rejection: napi_value) -> napi_status;

    pub fn napi_set_instance_data(
        env: napi_env,
        data: *mut c_void,
        finalize_cb: napi_finalize,
        finalize_hint: *mut c_void,
    ) -> napi_status;
    pub fn napi_get_instance_data(env: napi_env, data: *mut *mut c_void) -> napi_status;
    pub fn napi_add_env_cleanup_hook(env: napi_env, fun: napi_cleanup_hook, arg: *mut c_void) -> napi_status;

    pub fn napi_create_threadsafe_function(
        env: napi_env,
        func: napi_value,
        async_resource: napi_value,
        async_resource_name: napi_value,
        max_queue_size: usize,
        initial_thread_count: usize,
        thread_finalize_data: *mut c_void,
        thread_finalize_cb: napi_finalize,
        context: *mut c_void,
        call_js_cb: napi_threadsafe_function_call_js,
        result: *mut napi_threadsafe_function,
    ) -> napi_status;
    pub fn napi_call_threadsafe_function(
        func: napi_threadsafe_function,
        data: *mut c_void,
        is_blocking: i32,
    ) -> napi_status;
    pub fn napi_release_threadsafe_function(func: napi_threadsafe_function, mode: i32) -> napi_status;
    pub fn napi_get_uv_event_loop(env: napi_env, event_loop: *mut *mut crate::uv::uv_loop_t) -> napi_status;
    pub fn napi_open_handle_scope(env: napi_env, result: *mut napi_handle_scope) -> napi_status;
    pub fn napi_close_handle_scope(env: napi_env, scope: napi_handle_scope) -> napi_status;
    pub fn napi_async_init(
        env: napi_env,
        async_resource: napi_value,
        async_resource_name: napi_value,
        result: *mut napi_async_context,
    ) -> napi_status;
    pub fn napi_async_destroy(env: napi_env, async_context: napi_async_context) -> napi_status;
    pub fn napi_open_callback_scope(
        env: napi_env,
        resource_object: napi_value,
        context: napi_async_context,
        result: *mut napi_callback_scope,
    ) -> napi_status;
    pub fn napi_close_callback_scope(env: napi_env, scope: napi_callback_scope) -> napi_status;
    pub fn napi_create_object(env: napi_env, result: *mut napi_value) -> napi_status;
    pub fn napi_get_reference_value(env: napi_env, reference: napi_ref, result: *mut napi_value) -> napi_status;
    pub fn napi_is_array(env: napi_env, value: napi_value, result: *mut bool) -> napi_status;
    pub fn napi_get_array_length(env: napi_env, value: napi_value, result: *mut u32) -> napi_status;
    pub fn napi_get_element(env: napi_env, object: napi_value, index: u32, result: *mut napi_value) -> napi_status;
    pub fn napi_add_async_cleanup_hook(
        env: napi_env,
        hook: napi_async_cleanup_hook,
        arg: *mut c_void,
        remove_handle: *mut napi_async_cleanup_hook_handle,
    ) -> napi_status;
    pub fn napi_remove_async_cleanup_hook(remove_handle: napi_async_cleanup_hook_handle) -> napi_status;
    pub fn napi_ref_threadsafe_function(env: napi_env, func: napi_threadsafe_function) -> napi_status;
    pub fn napi_unref_threadsafe_function(env: napi_env, func: napi_threadsafe_function) -> napi_status;
}

// ---------------------------------------------------------------------------
// Safe helpers
// ---------------------------------------------------------------------------

/// Why an entry point failed: the exception [`Env::throw`] raises for it.
#[derive(Debug)]
pub enum Throw {
    /// A `TypeError` with code `ERR_INVALID_ARG_TYPE`.
    Type(String),
    /// A `RangeError` with code `ERR_OUT_OF_RANGE`.
    Range(String),
    /// A failed system call: an `Error` with `code`, `errno` and `syscall`.
    Sys(SysError),
    /// A Node-API call failed without leaving an exception.
    Napi(&'static str, napi_status),
    /// An exception is already pending; leave it as it is.
    Pending,
}

impl From<SysError> for Throw {
    fn from(err: SysError) -> Self {
        Throw::Sys(err)
    }
}

pub type JsResult = Result<napi_value, Throw>;

/// A Node-API environment, valid for the duration of the callback (or
/// finalizer, or cleanup hook) that received it, on the thread that runs it.
#[derive(Clone, Copy)]
pub struct Env(pub napi_env);

/// Builds a `CString` for a message, replacing interior NULs (user input
/// copied into a message must never make it fail).
fn c_message(text: &str) -> CString {
    CString::new(text.replace('\0', "\\0")).unwrap_or_default()
}

impl Env {
    /// Checks a Node-API status; `what` names the call for the error message.
    pub fn check(self, status: napi_status, what: &'static str) -> Result<(), Throw> {
        if status == NAPI_OK {
            return Ok(());
        }
        let mut pending = false;
        // SAFETY: self.0 is the live env of the current callback; `pending` is
        // a valid out-pointer.
        let st = unsafe { napi_is_exception_pending(self.0, &mut pending) };
        if status == NAPI_PENDING_EXCEPTION || (st == NAPI_OK && pending) {
            Err(Throw::Pending)
        } else {
            Err(Throw::Napi(what, status))
        }
    }

    /// Reads up to `N` arguments; missing ones are `undefined`.
    pub fn args<const N: usize>(self, info: napi_callback_info) -> Result<[napi_value; N], Throw> {
        let mut argv = [ptr::null_mut(); N];
        let mut argc = N;
        // SAFETY: argv has room for argc values; Node fills the missing ones
        // with undefined; this/data out-pointers may be null.
        let st =
            unsafe { napi_get_cb_info(self.0, info, &mut argc, argv.as_mut_ptr(), ptr::null_mut(), ptr::null_mut()) };
        self.check(st, "napi_get_cb_info")?;
        Ok(argv)
    }

    pub fn type_of(self, value: napi_value) -> Result<napi_valuetype, Throw> {
        let mut kind = NAPI_UNDEFINED;
        // SAFETY: value comes from this env's current scope; out-pointer valid.
        let st = unsafe { napi_typeof(self.0, value, &mut kind) };
        self.check(st, "napi_typeof")?;
        Ok(kind)
    }

    /// The JS number in `value`, or a TypeError naming `what`.
    pub fn number(self, value: napi_value, what: &str) -> Result<f64, Throw> {
        let mut out = 0.0;
        // SAFETY: value comes from this env's current scope; out-pointer valid.
        let st = unsafe { napi_get_value_double(self.0, value, &mut out) };
        if st == NAPI_OK {
            return Ok(out);
        }
        Err(Throw::Type(format!("{what} must be a number (got {})", type_name(self.type_of(value)?))))
    }

    /// A number that is an integer in `min..=max`: TypeError if not a
    /// number, RangeError if not an integer or out of range.
    pub fn integer(self, value: napi_value, what: &str, min: f64, max: f64) -> Result<i64, Throw> {
        let n = self.number(value, what)?;
        if n.fract() != 0.0 || !(min..=max).contains(&n) {
            return Err(Throw::Range(format!("{what}={n} must be an integer in [{min}, {max}]")));
        }
        Ok(n as i64)
    }

    /// A file descriptor: an integer in `0..=i32::MAX`.
    pub fn fd(self, value: napi_value, what: &str) -> Result<i32, Throw> {
        Ok(self.integer(value, what, 0.0, i32::MAX as f64)? as i32)
    }

    pub fn boolean(self, value: napi_value, what: &str) -> Result<bool, Throw> {
        let mut out = false;
        // SAFETY: value comes from this env's current scope; out-pointer valid.
        let st = unsafe { napi_get_value_bool(self.0, value, &mut out) };
        if st == NAPI_OK {
            return Ok(out);
        }
        Err(Throw::Type(format!("{what} must be a boolean (got {})", type_name(self.type_of(value)?))))
    }

    /// The string in `value` as a C string: TypeError if not a string or if
    /// it contains a NUL character.
    pub fn c_string(self, value: napi_value, what: &str) -> Result<CString, Throw> {
        let mut len = 0usize;
        // SAFETY: a null buffer asks only for the UTF-8 length.
        let st = unsafe { napi_get_value_string_utf8(self.0, value, ptr::null_mut(), 0, &mut len) };
        if st != NAPI_OK {
            return Err(Throw::Type(format!("{what} must be a string (got {})", type_name(self.type_of(value)?))));
        }
        let mut buf = vec![0u8; len + 1];
        let mut written = 0usize;
        // SAFETY: buf holds len + 1 bytes, room for the string and its NUL.
        let st = unsafe { napi_get_value_string_utf8(self.0, value, buf.as_mut_ptr().cast(), buf.len(), &mut written) };
        self.check(st, "napi_get_value_string_utf8")?;
        buf.truncate(written);
        CString::new(buf).map_err(|_| Throw::Type(format!("{what} must not contain a NUL character")))
    }

    pub fn undefined(self) -> JsResult {
        let mut out = ptr::null_mut();
        // SAFETY: out-pointer valid; env live.
        let st = unsafe { napi_get_undefined(self.0, &mut out) };
        self.check(st, "napi_get_undefined")?;
        Ok(out)
    }

    pub fn bool(self, value: bool) -> JsResult {
        let mut out = ptr::null_mut();
        // SAFETY: out-pointer valid; env live.
        let st = unsafe { napi_get_boolean(self.0, value, &mut out) };
        self.check(st, "napi_get_boolean")?;
        Ok(out)
    }

    pub fn int32(self, value: i32) -> JsResult {
        let mut out = ptr::null_mut();
        // SAFETY: out-pointer valid; env live.
        let st = unsafe { napi_create_int32(self.0, value, &mut out) };
        self.check(st, "napi_create_int32")?;
        Ok(out)
    }

    pub fn uint32(self, value: u32) -> JsResult {
        let mut out = ptr::null_mut();
        // SAFETY: out-pointer valid; env live.
        let st = unsafe { napi_create_uint32(self.0, value, &mut out) };
        self.check(st, "napi_create_uint32")?;
        Ok(out)
    }

    pub fn string(self, text: &str) -> JsResult {
        let mut out = ptr::null_mut();
        // SAFETY: text points at text.len() bytes of UTF-8 (no NUL needed
        // when the length is given).
        let st = unsafe { napi_create_string_utf8(self.0, text.as_ptr().cast(), text.len(), &mut out) };
        self.check(st, "napi_create_string_utf8")?;
        Ok(out)
    }

    pub fn set(self, object: napi_value, name: &CStr, value: napi_value) -> Result<(), Throw> {
        // SAFETY: name is NUL-terminated; object and value belong to this env.
        let st = unsafe { napi_set_named_property(self.0, object, name.as_ptr(), value) };
        self.check(st, "napi_set_named_property")
    }

    pub fn is_arraybuffer(self, value: napi_value) -> Result<bool, Throw> {
        let mut out = false;
        // SAFETY: out-pointer valid; env live.
        let st = unsafe { napi_is_arraybuffer(self.0, value, &mut out) };
        self.check(st, "napi_is_arraybuffer")?;
        Ok(out)
    }

    /// The data pointer and byte length of an ArrayBuffer (null, 0 once
    /// detached).
    pub fn arraybuffer_info(self, value: napi_value) -> Result<(*mut u8, usize), Throw> {
        let mut data = ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: value is an ArrayBuffer (checked by the caller, or the call
        // fails cleanly); out-pointers valid.
        let st = unsafe { napi_get_arraybuffer_info(self.0, value, &mut data, &mut len) };
        self.check(st, "napi_get_arraybuffer_info")?;
        Ok((data.cast(), len))
    }

    /// The JS `Error` for a failed system call: message
    /// `${syscall} failed: ${strerror} (${code})`, with `code`, `errno`
    /// (positive) and `syscall` properties, like Node's own fs errors.
    pub fn sys_error(self, err: SysError) -> JsResult {
        let code = crate::uv::errno_name(err.errno);
        let message = format!("{} failed: {} ({code})", err.syscall, crate::libc::strerror(err.errno));
        let code_value = self.string(&code)?;
        let message_value = self.string(&message)?;
        let mut error = ptr::null_mut();
        // SAFETY: both values are strings of this env; out-pointer valid.
        let st = unsafe { napi_create_error(self.0, code_value, message_value, &mut error) };
        self.check(st, "napi_create_error")?;
        self.set(error, c"errno", self.int32(err.errno)?)?;
        self.set(error, c"syscall", self.string(err.syscall)?)?;
        Ok(error)
    }

    /// Raises `throw` as the pending JS exception (best effort: if building
    /// the error itself fails, a plain Error is thrown instead).
    pub fn throw(self, throw: Throw) {
        let (kind, code, text) = match throw {
            Throw::Pending => return,
            Throw::Type(text) => (1, c"ERR_INVALID_ARG_TYPE", text),
            Throw::Range(text) => (2, c"ERR_OUT_OF_RANGE", text),
            Throw::Napi(what, status) => (0, c"ERR_SHMRING_NAPI", format!("{what} failed with napi_status {status}")),
            Throw::Sys(err) => match self.sys_error(err) {
                Ok(error) => {
                    // SAFETY: error is an Error object of this env.
                    unsafe { napi_throw(self.0, error) };
                    return;
                }
                Err(Throw::Pending) => return,
                Err(_) => (0, c"ERR_SHMRING_NAPI", format!("{} failed (errno {})", err.syscall, err.errno)),
            },
        };
        let message = c_message(&text);
        // SAFETY: code and message are NUL-terminated and outlive the call.
        unsafe {
            match kind {
                1 => napi_throw_type_error(self.0, code.as_ptr(), message.as_ptr()),
                2 => napi_throw_range_error(self.0, code.as_ptr(), message.as_ptr()),
                _ => napi_throw_error(self.0, code.as_ptr(), message.as_ptr()),
            }
        };
    }
}

/// The `typeof` of a value, for error messages.
pub fn type_name(kind: napi_valuetype) -> &'static str {
    match kind {
        NAPI_UNDEFINED => "undefined",
        NAPI_NULL => "null",
        NAPI_BOOLEAN => "boolean",
        NAPI_NUMBER => "number",
        NAPI_STRING => "string",
        NAPI_SYMBOL => "symbol",
        NAPI_OBJECT => "object",
        NAPI_FUNCTION => "function",
        NAPI_EXTERNAL => "external",
        NAPI_BIGINT => "bigint",
        _ => "unknown",
    }
}

/// Runs the body of a JS-callable function: converts its `Err` into a
/// pending exception, and a panic into an `Error` instead of letting it
/// unwind into Node.
pub fn run(env: napi_env, info: napi_callback_info, body: fn(Env, napi_callback_info) -> JsResult) -> napi_value {
    let env = Env(env);
    match std::panic::catch_unwind(|| body(env, info)) {
        Ok(Ok(value)) => value,
        Ok(Err(throw)) => {
            env.throw(throw);
            ptr::null_mut()
        }
        Err(_) => {
            // SAFETY: static NUL-terminated strings; env live.
            unsafe {
                napi_throw_error(env.0, c"ERR_SHMRING_PANIC".as_ptr(), c"shm-sys: internal error (panic)".as_ptr())
            };
            ptr::null_mut()
        }
    }
}

/// Declares `extern "C"` entry points that forward to safe bodies through
/// [`run`]: `js_fn!(name => path::to::body);`
#[macro_export]
macro_rules! js_fn {
    ($($name:ident => $body:path;)*) => {$(
        /// Node-API entry point (see the body it forwards to).
        ///
        /// # Safety
        /// Called by Node with a live env and callback info.
        pub unsafe extern "C" fn $name(
            env: $crate::napi::napi_env,
            info: $crate::napi::napi_callback_info,
        ) -> $crate::napi::napi_value {
            $crate::napi::run(env, info, $body)
        }
    )*};
}
