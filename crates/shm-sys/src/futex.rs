//! Futex wait and wake on a 32-bit word of a buffer, shared (no
//! FUTEX_PRIVATE_FLAG): the kernel keys the wait on the page, so a waiter and
//! a waker in different processes that map the same memfd / shm object meet.
//!
//! Waits use FUTEX_WAIT_BITSET with an absolute CLOCK_MONOTONIC deadline
//! (bitset = all, so plain FUTEX_WAKE from any program wakes them): an EINTR
//! is retried with the same deadline, i.e. with the remaining time.
//!
//! JS entry points:
//!  - `futexWait(buffer, byteOffset, expected, timeoutMs)` blocks the calling
//!    thread; 0 woken, 1 not equal, 2 timed out.
//!  - `futexWake(buffer, byteOffset, count)` returns how many were woken.
//!  - `futexWaitStart(buffer, byteOffset, expected, timeoutMs, id)` returns a
//!    Promise of the same 0 / 1 / 2, waited for on a pool thread (pool.rs);
//!    `futexWaitCancel(id)` settles it with 0 at once. index.cjs builds the
//!    `{ promise, cancel }` handle from this pair.
//!
//! `buffer` is an ArrayBuffer or any typed array / DataView (then
//! `byteOffset` counts from the view's start); index.cjs turns a
//! SharedArrayBuffer into a Uint8Array over it, because Node 20's
//! `napi_get_arraybuffer_info` rejects SharedArrayBuffers.

use std::ffi::{c_long, c_void};
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::env::{EnvState, PendingWait};
use crate::libc::{self, SysError, cvt, timespec};
use crate::napi::{self, Env, JsResult, Throw, napi_callback_info, napi_env, napi_value};
use crate::pool::{self, Wait};

pub const WOKEN: u32 = 0;
pub const NOT_EQUAL: u32 = 1;
pub const TIMED_OUT: u32 = 2;

/// Ids of async waits are JS safe integers (index.cjs counts from 1).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;
const NANOS_PER_SEC: i64 = 1_000_000_000;
/// Timeouts longer than this (~31 years) are treated as no timeout.
const MAX_TIMEOUT_MS: f64 = 1.0e12;

/// Waits on `word` while it holds `expected`, until woken, `deadline`
/// passes, or `cancelled()` says so (checked before every FUTEX_WAIT; a
/// canceller must also FUTEX_WAKE the word, see `Wait::stop`). EINTR is
/// retried with the same absolute deadline.
///
/// # Safety
/// `word` must be the address of a 4-aligned u32 that stays mapped for the
/// whole call.
pub unsafe fn wait_until(
    word: usize,
    expected: u32,
    deadline: Option<&timespec>,
    cancelled: impl Fn() -> bool,
) -> Result<u32, SysError> {
    let timeout = deadline.map_or(ptr::null(), |d| d as *const timespec);
    loop {
        if cancelled() {
            return Ok(WOKEN);
        }
        // SAFETY: word is a mapped aligned u32 (caller contract); timeout is
        // null or points at a live timespec; the kernel reads nothing else.
        // Arguments are passed as longs, as syscall(2) reads them.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_FUTEX,
                word as c_long,
                libc::FUTEX_WAIT_BITSET as c_long,
                expected as c_long,
                timeout as c_long,
                0 as c_long,
                libc::FUTEX_BITSET_MATCH_ANY as c_long,
            )
        };
        match cvt(ret as i64, "futex") {
            Ok(_) => return Ok(WOKEN),
            Err(err) if err.errno == libc::EAGAIN => return Ok(NOT_EQUAL),
            Err(err) if err.errno == libc::ETIMEDOUT => return Ok(TIMED_OUT),
            Err(err) if err.errno == libc::EINTR => continue,
            Err(err) => return Err(err),
        }
    }
}

/// FUTEX_WAKE up to `count` (> 0) waiters on `word`; returns how many woke.
///
/// # Safety
/// `word` must be the address of a 4-aligned u32 that is mapped.
pub unsafe fn wake(word: usize, count: i32) -> Result<i32, SysError> {
    // SAFETY: see the caller contract; the kernel only hashes the address.
    let ret = unsafe {
        libc::syscall(libc::SYS_FUTEX, word as c_long, libc::FUTEX_WAKE as c_long, count as c_long, 0 as c_long)
    };
    cvt(ret as i64, "futex").map(|n| n as i32)
}

/// The absolute deadline `timeout_ms` from now, or `None` for "forever":
/// NaN, negative, infinite or absurdly long timeouts.
fn deadline_after(timeout_ms: f64) -> Option<timespec> {
    if !(0.0..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
        return None;
    }
    let now = libc::monotonic_now();
    let nanos = (timeout_ms * 1.0e6).round() as i64;
    let total = now.tv_nsec + nanos % NANOS_PER_SEC;
    Some(timespec {
        tv_sec: now.tv_sec + nanos / NANOS_PER_SEC + total / NANOS_PER_SEC,
        tv_nsec: total % NANOS_PER_SEC,
    })
}

/// Element size of each `napi_typedarray_type`.
fn element_size(kind: napi::napi_typedarray_type) -> usize {
    match kind {
        0..=2 => 1, // int8, uint8, uint8_clamped
        3 | 4 => 2, // int16, uint16
        5..=7 => 4, // int32, uint32, float32
        _ => 8,     // float64, bigint64, biguint64
    }
}

/// The bytes of `buffer` (an ArrayBuffer, typed array or DataView): data
/// pointer and length (null, 0 when detached).
fn buffer_bytes(env: Env, buffer: napi_value) -> Result<(*mut u8, usize), Throw> {
    if env.is_arraybuffer(buffer)? {
        return env.arraybuffer_info(buffer);
    }
    let mut is_typed = false;
    // SAFETY: out-pointer valid; env live.
    let st = unsafe { napi::napi_is_typedarray(env.0, buffer, &mut is_typed) };
    env.check(st, "napi_is_typedarray")?;
    let mut data: *mut c_void = ptr::null_mut();
    if is_typed {
        let (mut kind, mut length) = (0, 0usize);
        // SAFETY: buffer is a typed array; unused out-pointers are null.
        let st = unsafe {
            napi::napi_get_typedarray_info(
                env.0,
                buffer,
                &mut kind,
                &mut length,
                &mut data,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        env.check(st, "napi_get_typedarray_info")?;
        return Ok((data.cast(), length * element_size(kind)));
    }
    let mut is_view = false;
    // SAFETY: out-pointer valid; env live.
    let st = unsafe { napi::napi_is_dataview(env.0, buffer, &mut is_view) };
    env.check(st, "napi_is_dataview")?;
    if is_view {
        let mut length = 0usize;
        // SAFETY: buffer is a DataView; unused out-pointers are null.
        let st = unsafe {
            napi::napi_get_dataview_info(env.0, buffer, &mut length, &mut data, ptr::null_mut(), ptr::null_mut())
        };
        env.check(st, "napi_get_dataview_info")?;
        return Ok((data.cast(), length));
    }
    Err(Throw::Type(format!(
        "buffer must be an ArrayBuffer, a SharedArrayBuffer or a typed array (got {})",
        napi::type_name(env.type_of(buffer)?)
    )))
}

/// The address of the futex word at `byte_offset` of `buffer`: a multiple
/// of 4 with the whole word inside the buffer, else RangeError.
fn word_address(env: Env, buffer: napi_value, byte_offset: napi_value) -> Result<usize, Throw> {
    let (data, len) = buffer_bytes(env, buffer)?;
    let offset = env.number(byte_offset, "byteOffset")?;
    let inside = offset >= 0.0 && offset.fract() == 0.0 && offset + 4.0 <= len as f64;
    if !inside || offset % 4.0 != 0.0 {
        return Err(Throw::Range(format!(
            "byteOffset={offset} must be a multiple of 4 with byteOffset + 4 <= byteLength={len}"
        )));
    }
    let address = data as usize + offset as usize;
    if !address.is_multiple_of(4) {
        return Err(Throw::Range(format!("byteOffset={offset}: the view's data is not 4-byte aligned")));
    }
    Ok(address)
}

/// `expected`: an integer in [-2^31, 2^32), compared as its 32 low bits.
fn expected_value(env: Env, value: napi_value) -> Result<u32, Throw> {
    Ok(env.integer(value, "expected", i32::MIN as f64, u32::MAX as f64)? as u32)
}

/// `timeoutMs`: a number (undefined = no timeout); see `deadline_after`.
fn timeout_ms(env: Env, value: napi_value) -> Result<f64, Throw> {
    if env.type_of(value)? == napi::NAPI_UNDEFINED {
        return Ok(f64::INFINITY);
    }
    env.number(value, "timeoutMs")
}

/// `futexWait(buffer, byteOffset, expected, timeoutMs): 0 | 1 | 2`.
pub fn futex_wait(env: Env, info: napi_callback_info) -> JsResult {
    let [buffer, offset, expected, timeout] = env.args::<4>(info)?;
    let word = word_address(env, buffer, offset)?;
    let expected = expected_value(env, expected)?;
    let deadline = deadline_after(timeout_ms(env, timeout)?);
    // SeqCst: the check the kernel would make, without the system call when
    // the word already moved on.
    // SAFETY: word is an aligned u32 inside the live buffer argument.
    if unsafe { &*(word as *const AtomicU32) }.load(Ordering::SeqCst) != expected {
        return env.uint32(NOT_EQUAL);
    }
    // SAFETY: word is inside the buffer, which this synchronous call keeps
    // alive (and nothing can unmap it while JS is blocked here).
    let result = unsafe { wait_until(word, expected, deadline.as_ref(), || false) }?;
    env.uint32(result)
}

/// `futexWake(buffer, byteOffset, count): number`. `count` is clamped like
/// Atomics.notify's: undefined = all, NaN or <= 0 = none (no system call).
pub fn futex_wake(env: Env, info: napi_callback_info) -> JsResult {
    let [buffer, offset, count] = env.args::<3>(info)?;
    let word = word_address(env, buffer, offset)?;
    let count = if env.type_of(count)? == napi::NAPI_UNDEFINED { f64::INFINITY } else { env.number(count, "count")? };
    if count.is_nan() || count < 1.0 {
        return env.int32(0);
    }
    let count = if count >= i32::MAX as f64 { i32::MAX } else { count as i32 };
    // SAFETY: word is inside the live buffer argument.
    let woken = unsafe { wake(word, count) }?;
    env.int32(woken)
}

/// A promise already resolved with `value`.
fn resolved(env: Env, value: u32) -> JsResult {
    let (mut deferred, mut promise) = (ptr::null_mut(), ptr::null_mut());
    // SAFETY: out-pointers valid; JS thread.
    let st = unsafe { napi::napi_create_promise(env.0, &mut deferred, &mut promise) };
    env.check(st, "napi_create_promise")?;
    // SAFETY: deferred was just created and is settled exactly once.
    let st = unsafe { napi::napi_resolve_deferred(env.0, deferred, env.uint32(value)?) };
    env.check(st, "napi_resolve_deferred")?;
    Ok(promise)
}

/// `futexWaitStart(buffer, byteOffset, expected, timeoutMs, id): Promise`.
/// Settles at once when the word already differs (1) or the timeout is 0
/// (2); otherwise a pool thread waits.
pub fn futex_wait_start(env: Env, info: napi_callback_info) -> JsResult {
    let [buffer, offset, expected, timeout, id] = env.args::<5>(info)?;
    let word = word_address(env, buffer, offset)?;
    let expected = expected_value(env, expected)?;
    let timeout = timeout_ms(env, timeout)?;
    let id = env.integer(id, "id", 1.0, MAX_SAFE_INTEGER)? as u64;
    // SAFETY: JS thread, inside a callback of this env.
    let state = unsafe { EnvState::current(env) }?;
    if state.is_closing() {
        return Err(Throw::Napi("futexWaitAsync during env teardown", napi::NAPI_OK));
    }
    if state.waits.borrow().contains_key(&id) {
        return Err(Throw::Range(format!("id={id} is already the id of a pending wait")));
    }
    // SeqCst: the same fast check the kernel makes; the thread's FUTEX_WAIT
    // re-checks atomically anyway.
    // SAFETY: word is an aligned u32 inside the live buffer argument.
    let current = unsafe { &*(word as *const AtomicU32) }.load(Ordering::SeqCst);
    if current != expected {
        return resolved(env, NOT_EQUAL);
    }
    if timeout == 0.0 {
        return resolved(env, TIMED_OUT);
    }
    state.tsfn(env, Some(call_js))?;

    let mut buffer_ref = ptr::null_mut();
    // SAFETY: buffer is a live object of this env; out-pointer valid.
    let st = unsafe { napi::napi_create_reference(env.0, buffer, 1, &mut buffer_ref) };
    env.check(st, "napi_create_reference")?;
    let (mut deferred, mut promise) = (ptr::null_mut(), ptr::null_mut());
    // SAFETY: out-pointers valid; JS thread.
    let st = unsafe { napi::napi_create_promise(env.0, &mut deferred, &mut promise) };
    if let Err(err) = env.check(st, "napi_create_promise") {
        // SAFETY: the reference was just created and is not stored anywhere.
        unsafe { napi::napi_delete_reference(env.0, buffer_ref) };
        return Err(err);
    }
    let wait = Arc::new(Wait::new(id, word, expected, deadline_after(timeout), Arc::clone(&state.delivery)));
    if let Err(err) = pool::submit(Arc::clone(&wait)) {
        let pending = PendingWait { wait, deferred, buffer_ref };
        settle(env, pending, Err(err));
        return Ok(promise);
    }
    // The thread cannot deliver before this callback returns: call_js runs
    // on this thread.
    state.waits.borrow_mut().insert(id, PendingWait { wait, deferred, buffer_ref });
    state.sync_loop_ref();
    Ok(promise)
}

/// `futexWaitCancel(id): void` — stops the wait and resolves it with 0; a
/// no-op for an unknown or settled id.
pub fn futex_wait_cancel(env: Env, info: napi_callback_info) -> JsResult {
    let [id] = env.args::<1>(info)?;
    let id = env.integer(id, "id", 0.0, MAX_SAFE_INTEGER)? as u64;
    // SAFETY: JS thread, inside a callback of this env.
    let state = unsafe { EnvState::current(env) }?;
    let pending = state.waits.borrow_mut().remove(&id);
    if let Some(pending) = pending {
        // The buffer is still referenced, so the word is mapped.
        pending.wait.stop();
        settle(env, pending, Ok(WOKEN as i32));
        state.sync_loop_ref();
    }
    env.undefined()
}

/// Settles a pending wait (already removed from `EnvState::waits`) and drops
/// its buffer reference. Failures are ignored: there is no JS caller to
/// report them to.
fn settle(env: Env, pending: PendingWait, outcome: Result<i32, SysError>) {
    let value = match outcome {
        Ok(result) => env.int32(result),
        Err(err) => env.sys_error(err),
    };
    if let Ok(value) = value {
        // SAFETY: the deferred is settled exactly once: the pending entry
        // owning it was removed from the map by the caller.
        unsafe {
            if outcome.is_ok() {
                napi::napi_resolve_deferred(env.0, pending.deferred, value)
            } else {
                napi::napi_reject_deferred(env.0, pending.deferred, value)
            }
        };
    }
    // SAFETY: the reference belongs to this env and is deleted once.
    unsafe { napi::napi_delete_reference(env.0, pending.buffer_ref) };
}

/// Pending waits of `state` whose word lies in `[start, start + len)`.
fn waits_in_range(state: &EnvState, start: usize, len: usize) -> Vec<u64> {
    let Ok(waits) = state.waits.try_borrow() else { return Vec::new() };
    waits.iter().filter(|(_, p)| p.wait.word.wrapping_sub(start) < len).map(|(id, _)| *id).collect()
}

/// Before an explicit munmap: stop the waits on words of the mapping and
/// resolve them with 0 (callers re-check their condition).
pub fn settle_waits_in_range(env: Env, state: &EnvState, start: usize, len: usize) {
    let ids = waits_in_range(state, start, len);
    for id in ids {
        let pending = state.waits.borrow_mut().remove(&id);
        if let Some(pending) = pending {
            pending.wait.stop();
            settle(env, pending, Ok(WOKEN as i32));
        }
    }
    state.sync_loop_ref();
}

/// Before a finalizer's munmap (env teardown): only make sure no waiter
/// thread touches the mapping any more; the cleanup hook drops the rest.
pub fn stop_waits_in_range(state: &EnvState, start: usize, len: usize) {
    let ids = waits_in_range(state, start, len);
    let Ok(waits) = state.waits.try_borrow() else { return };
    for id in ids {
        if let Some(pending) = waits.get(&id) {
            pending.wait.stop();
        }
    }
}

/// The threadsafe function's callback: settles the promise of a finished
/// wait on the JS thread. A null env means the function is being torn down:
/// just drop the wait.
///
/// # Safety
/// Called by Node with `data` an `Arc<Wait>` leaked by `Wait::run`.
unsafe extern "C" fn call_js(env: napi_env, _js_callback: napi_value, _context: *mut c_void, data: *mut c_void) {
    // SAFETY: data is the Arc<Wait> passed to napi_call_threadsafe_function.
    let wait = unsafe { Arc::from_raw(data.cast::<Wait>().cast_const()) };
    if env.is_null() {
        return;
    }
    let env = Env(env);
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: JS thread of this env, inside a Node-API callback.
        let Some(state) = (unsafe { EnvState::get(env) }) else { return };
        let pending = {
            let mut waits = state.waits.borrow_mut();
            match waits.get(&wait.id) {
                Some(p) if Arc::ptr_eq(&p.wait, &wait) => waits.remove(&wait.id),
                _ => None, // cancelled, or settled by munmap
            }
        };
        if let Some(pending) = pending {
            settle(env, pending, wait.outcome());
            state.sync_loop_ref();
        }
    });
}
