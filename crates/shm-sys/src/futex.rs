//! The futex entry points: wait and wake on a 32-bit word of a buffer,
//! shared (no FUTEX_PRIVATE_FLAG), so a waiter and a waker in different
//! processes that map the same memfd / shm object meet.
//!
//!  - `futexWait(buffer, byteOffset, expected, timeoutMs)` blocks the calling
//!    thread; 0 woken, 1 not equal, 2 timed out.
//!  - `futexWaitAny(list, timeoutMs)` blocks on several words at once
//!    (`futex_waitv`); `list` is flat: buffer, byteOffset, expected, ...
//!  - `futexWake(buffer, byteOffset, count)` returns how many were woken.
//!  - `membarrier(cmd)` runs membarrier(2) with that command: the
//!    asymmetric fence of an MpscRing consumer that parks (see
//!    packages/core/src/native/membarrier.ts).
//!  - `futexWaitStart(buffer, byteOffset, expected, timeoutMs, id)` returns a
//!    Promise of the same 0 / 1 / 2 without blocking: the env's io_uring
//!    reactor waits (reactor.rs), or where io_uring is not available a
//!    futex_waitv lane (lanes.rs), or a pool thread (pool.rs); `futexWaitCancel(id)` settles it with 0 at once.
//!    index.cjs builds the `{ promise, cancel }` handle from this pair.
//!  - `futexWaitAnyStart(list, timeoutMs, id, ref)`: the Promise of
//!    `futexWaitAny` (index, -1, -2), on any number of words up to
//!    reactor::MAX_WAIT_ANY_WORDS, in the env's io_uring only; cancelled
//!    by `futexWaitCancel(id)` as the others are.
//!  - `asyncWaitKind()`: 'io_uring', 'futex_waitv' or 'threads', how this env's async
//!    waits wait (decided at the first call or the first async wait).
//!
//! `buffer` is an ArrayBuffer or any typed array / DataView (then
//! `byteOffset` counts from the view's start); index.cjs turns a
//! SharedArrayBuffer into a Uint8Array over it, because Node 20's
//! `napi_get_arraybuffer_info` rejects SharedArrayBuffers.

use std::ffi::c_void;
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::delivery::Completion;
use crate::env::{AsyncMode, EnvState};
use crate::lanes::{self, LaneWait};
use crate::libc;
use crate::memory;
use crate::napi::{self, Env, JsResult, Throw, napi_callback_info, napi_env, napi_value};
use crate::pool::{self, Wait};
use crate::reactor;
use crate::sys::{self, AnyOutcome, NOT_EQUAL, TIMED_OUT, WOKEN, deadline_after};
use crate::waits::{self, PendingWait, Waiter};

/// Ids of async waits are JS safe integers (index.cjs counts from 1).
use crate::napi::MAX_SAFE_INTEGER;

/// Element size of each `napi_typedarray_type`; None for a kind this
/// build does not know (a later Node's), which is refused rather than
/// guessed: a wrong size would let a word lie past the array's end.
fn element_size(kind: napi::napi_typedarray_type) -> Option<usize> {
    match kind {
        0..=2 => Some(1),  // int8, uint8, uint8_clamped
        3 | 4 => Some(2),  // int16, uint16
        5..=7 => Some(4),  // int32, uint32, float32
        8..=10 => Some(8), // float64, bigint64, biguint64
        11 => Some(2),     // float16 (Node's NODE_API_HAS_FLOAT16_ARRAY)
        _ => None,
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
        let Some(size) = element_size(kind) else {
            return Err(Throw::Type(format!("a typed array of kind {kind} is not a buffer shm-sys knows the size of")));
        };
        return Ok((data.cast(), length * size));
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
    let timeout = timeout_ms(env, timeout)?;
    // SeqCst: the check the kernel would make, without the system call when
    // the word already moved on.
    // SAFETY: word is an aligned u32 inside the live buffer argument.
    if unsafe { &*(word as *const AtomicU32) }.load(Ordering::SeqCst) != expected {
        return env.uint32(NOT_EQUAL);
    }
    if timeout == 0.0 {
        // No FUTEX_WAIT of an expired deadline: it would sit in the word's
        // queue for a moment, where a wake-one meant for a sleeper could pick it.
        return env.uint32(TIMED_OUT);
    }
    let deadline = deadline_after(timeout);
    // SAFETY: word is inside the buffer, which this synchronous call keeps
    // alive (and nothing can unmap it while JS is blocked here).
    let result = unsafe { sys::wait_until(word, expected, deadline.as_ref(), || false) }?;
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
    let woken = unsafe { sys::wake(word, count) }?;
    env.int32(woken)
}

/// `membarrier(cmd): number` — membarrier(cmd, 0, 0) (`cmd` an int32);
/// the errno of a refusal (EINVAL, EPERM, ENOSYS) is thrown.
pub fn membarrier(env: Env, info: napi_callback_info) -> JsResult {
    let [cmd] = env.args::<1>(info)?;
    let cmd = env.number(cmd, "cmd")?;
    if !(0.0..=i32::MAX as f64).contains(&cmd) || cmd.fract() != 0.0 {
        return Err(Throw::Range(format!("cmd={cmd} must be a membarrier command (an integer >= 0)")));
    }
    env.int32(sys::membarrier(cmd as i32)?)
}

/// `futexWaitAny(list, timeoutMs): number` — `list` is flat (buffer,
/// byteOffset, expected, ...), at most FUTEX_WAITV_MAX words. Returns the
/// index of the woken word, -1 when some word already differed (which one
/// is not told: re-check them all), -2 on timeout.
pub fn futex_wait_any(env: Env, info: napi_callback_info) -> JsResult {
    let [list, timeout] = env.args::<2>(info)?;
    let words = words_of(env, list, libc::FUTEX_WAITV_MAX, None)?;
    let timeout = timeout_ms(env, timeout)?;
    if timeout == 0.0 {
        // As futexWait: answered from the words, without queueing on them.
        return env.int32(if any_differs(&words) { -1 } else { -2 });
    }
    let deadline = deadline_after(timeout);
    // SAFETY: every word lies inside a buffer held by `list`, an argument
    // of this synchronous call (nothing can unmap it while JS is blocked).
    match unsafe { sys::waitv(&words, deadline.as_ref()) }? {
        AnyOutcome::Woken(index) => env.int32(index as i32),
        AnyOutcome::NotEqual => env.int32(-1),
        AnyOutcome::TimedOut => env.int32(-2),
    }
}

/// Whether some word no longer holds its expected value (each an aligned
/// u32 inside a buffer the caller holds).
fn any_differs(words: &[(usize, u32)]) -> bool {
    // SeqCst: the kernel's check; SAFETY: see above.
    words.iter().any(|&(word, expected)| unsafe { &*(word as *const AtomicU32) }.load(Ordering::SeqCst) != expected)
}

/// The words of a flat list (buffer, byteOffset, expected, ...) of 1 to
/// `most` triples: each word's address and expected value.
/// With `mappings`, also whether every buffer is a mapping of ours
/// (memory::is_mapping): false as soon as one is not.
fn words_of(
    env: Env,
    list: napi_value,
    most: usize,
    mut mappings: Option<&mut bool>,
) -> Result<Vec<(usize, u32)>, Throw> {
    let mut is_array = false;
    // SAFETY: out-pointer valid; env live.
    let st = unsafe { napi::napi_is_array(env.0, list, &mut is_array) };
    env.check(st, "napi_is_array")?;
    if !is_array {
        return Err(Throw::Type("list must be an array of buffer, byteOffset, expected triples".to_string()));
    }
    let mut length = 0u32;
    // SAFETY: list is an array; out-pointer valid.
    let st = unsafe { napi::napi_get_array_length(env.0, list, &mut length) };
    env.check(st, "napi_get_array_length")?;
    let count = length as usize / 3;
    if !length.is_multiple_of(3) || count == 0 || count > most {
        return Err(Throw::Range(format!("list.length={length} must be 3 × n with 1 <= n <= {most}")));
    }
    let element = |index: u32| -> Result<napi_value, Throw> {
        let mut value = ptr::null_mut();
        // SAFETY: index < length; out-pointer valid.
        let st = unsafe { napi::napi_get_element(env.0, list, index, &mut value) };
        env.check(st, "napi_get_element")?;
        Ok(value)
    };
    let mut words = Vec::with_capacity(count);
    for i in 0..count as u32 {
        let buffer = element(3 * i)?;
        if let Some(all) = mappings.as_deref_mut() {
            *all = *all && memory::is_mapping(env, buffer)?;
        }
        let word = word_address(env, buffer, element(3 * i + 1)?)?;
        let expected = expected_value(env, element(3 * i + 2)?)?;
        words.push((word, expected));
    }
    Ok(words)
}

/// A promise already resolved with `value` (as settle does: an i32).
fn resolved(env: Env, value: u32) -> JsResult {
    let (mut deferred, mut promise) = (ptr::null_mut(), ptr::null_mut());
    // SAFETY: out-pointers valid; JS thread.
    let st = unsafe { napi::napi_create_promise(env.0, &mut deferred, &mut promise) };
    env.check(st, "napi_create_promise")?;
    // SAFETY: deferred was just created and is settled exactly once.
    let st = unsafe { napi::napi_resolve_deferred(env.0, deferred, env.int32(value as i32)?) };
    env.check(st, "napi_resolve_deferred")?;
    Ok(promise)
}

/// `asyncWaitKind(): 'io_uring' | 'futex_waitv' | 'threads'`.
pub fn async_wait_kind(env: Env, _info: napi_callback_info) -> JsResult {
    // SAFETY: JS thread, inside a callback of this env.
    let state = unsafe { EnvState::current(env) }?;
    env.string(state.async_mode(env)?.name())
}

/// `chooseAsyncWait(way): boolean` — this env's `SHMRING_ASYNC_WAIT` ('' for
/// unset), read by index.cjs from its thread's own `process.env` at load;
/// checked at the first async wait. False once that wait fixed the mode.
pub fn choose_async_wait(env: Env, info: napi_callback_info) -> JsResult {
    let [way] = env.args::<1>(info)?;
    let way = env.c_string(way, "way")?.into_string().map_err(|_| Throw::Type("way must be UTF-8".to_string()))?;
    // SAFETY: JS thread, inside a callback of this env.
    let state = unsafe { EnvState::current(env) }?;
    env.bool(state.choose_async_wait(way))
}

/// Refuses a new async wait during env teardown (`in_teardown` names it), or with the id of one pending.
fn check_new_wait(state: &EnvState, id: u64, in_teardown: &'static str) -> Result<(), Throw> {
    if state.is_closing() {
        return Err(Throw::Napi(in_teardown, napi::NAPI_OK));
    }
    if state.waits.contains(id) {
        return Err(Throw::Range(format!("id={id} is already the id of a pending wait")));
    }
    Ok(())
}

/// A reference to `held` (kept while the wait pends) and a new promise with its deferred.
fn promise_holding(env: Env, held: napi_value) -> Result<(napi::napi_ref, napi::napi_deferred, napi_value), Throw> {
    let mut held_ref = ptr::null_mut();
    // SAFETY: held is a live object of this env; out-pointer valid.
    let st = unsafe { napi::napi_create_reference(env.0, held, 1, &mut held_ref) };
    env.check(st, "napi_create_reference")?;
    let (mut deferred, mut promise) = (ptr::null_mut(), ptr::null_mut());
    // SAFETY: out-pointers valid; JS thread.
    let st = unsafe { napi::napi_create_promise(env.0, &mut deferred, &mut promise) };
    if let Err(err) = env.check(st, "napi_create_promise") {
        // SAFETY: the reference was just created and is not stored anywhere.
        unsafe { napi::napi_delete_reference(env.0, held_ref) };
        return Err(err);
    }
    Ok((held_ref, deferred, promise))
}

/// `futexWaitStart(buffer, byteOffset, expected, timeoutMs, id, ref): Promise`.
/// Settles at once when the word already differs (1) or the timeout is 0
/// (2); otherwise the reactor or a pool thread waits. `ref` false: the
/// pending wait does not keep the event loop alive.
pub fn futex_wait_start(env: Env, info: napi_callback_info) -> JsResult {
    let [buffer, offset, expected, timeout, id, keeps_alive] = env.args::<6>(info)?;
    let keeps_alive = env.boolean(keeps_alive, "ref")?;
    let word = word_address(env, buffer, offset)?;
    let expected = expected_value(env, expected)?;
    let timeout = timeout_ms(env, timeout)?;
    let id = env.integer(id, "id", 1.0, MAX_SAFE_INTEGER)? as u64;
    // SAFETY: JS thread, inside a callback of this env.
    let state = unsafe { EnvState::current(env) }?;
    check_new_wait(state, id, "futexWaitAsync during env teardown")?;
    // SeqCst: the same fast check the kernel makes; the kernel re-checks
    // atomically with going to sleep anyway.
    // SAFETY: word is an aligned u32 inside the live buffer argument.
    let current = unsafe { &*(word as *const AtomicU32) }.load(Ordering::SeqCst);
    if current != expected {
        return resolved(env, NOT_EQUAL);
    }
    if timeout == 0.0 {
        return resolved(env, TIMED_OUT);
    }
    let mode = state.async_mode(env)?;
    if mode != AsyncMode::Ring {
        state.tsfn(env, Some(call_js))?;
    }

    let (buffer_ref, deferred, promise) = promise_holding(env, buffer)?;
    let deadline = deadline_after(timeout);
    let started = match (mode, state.reactor()) {
        (AsyncMode::Ring, Some(reactor)) => {
            reactor.wait(id, word, expected, deadline.as_ref()).map(|()| Waiter::Ring(expected))
        }
        (AsyncMode::Lanes, _) => {
            // Only a word in a mapping of ours is loaded directly by the lane's thread (lanes.rs).
            let direct = memory::is_mapping(env, buffer)?;
            let wait = Arc::new(LaneWait::new(id, word, expected, deadline, direct, Arc::clone(&state.delivery)));
            lanes::submit(Arc::clone(&wait)).map(|()| Waiter::Lane(wait))
        }
        _ => {
            let wait = Arc::new(Wait::new(id, word, expected, deadline, Arc::clone(&state.delivery)));
            pool::submit(Arc::clone(&wait)).map(|()| Waiter::Thread(wait))
        }
    };
    match started {
        Ok(waiter) => {
            // Nothing can deliver before this callback returns: completions
            // are handled on this thread.
            state.waits.insert(id, PendingWait { word, deferred, buffer_ref, waiter, keeps_alive });
            state.sync_loop_ref();
        }
        Err(err) => {
            waits::settle_parts(env, deferred, buffer_ref, Err(err));
        }
    }
    Ok(promise)
}

/// `futexWaitAnyStart(list, timeoutMs, id, ref): Promise` — the wait of
/// `futexWaitAny` without blocking, on up to MAX_WAIT_ANY_WORDS words, in
/// the env's io_uring only (a TypeError where async waits wait otherwise:
/// callers wait on each word instead). Resolves with the index of a word
/// woken, -1 when some word differs (at once, when one already does), -2
/// on timeout; `futexWaitCancel(id)` settles it with 0 ('woken': callers
/// re-check). `list` is held while the wait pends: the caller must not
/// change it.
pub fn futex_wait_any_start(env: Env, info: napi_callback_info) -> JsResult {
    let [list, timeout, id, keeps_alive] = env.args::<4>(info)?;
    let keeps_alive = env.boolean(keeps_alive, "ref")?;
    // Whether the reactor may load the words while the wait is registered (see reactor::Swallowed).
    let mut mappings = true;
    let words = words_of(env, list, reactor::MAX_WAIT_ANY_WORDS, Some(&mut mappings))?;
    let timeout = timeout_ms(env, timeout)?;
    let id = env.integer(id, "id", 1.0, MAX_SAFE_INTEGER)? as u64;
    // SAFETY: JS thread, inside a callback of this env.
    let state = unsafe { EnvState::current(env) }?;
    check_new_wait(state, id, "futexWaitAnyStart during env teardown")?;
    let (AsyncMode::Ring, Some(reactor)) = (state.async_mode(env)?, state.reactor()) else {
        return Err(Throw::Type(
            "futexWaitAnyStart needs io_uring async waits (asyncWaitKind() 'io_uring')".to_string(),
        ));
    };
    // The same fast check the kernel makes (it re-checks atomically with queueing the waits anyway).
    if any_differs(&words) {
        return resolved(env, reactor::ANY_NOT_EQUAL);
    }
    if timeout == 0.0 {
        return resolved(env, reactor::ANY_TIMED_OUT);
    }
    let (list_ref, deferred, promise) = promise_holding(env, list)?;
    let deadline = deadline_after(timeout);
    match reactor.wait_any(id, &words, deadline.as_ref(), mappings) {
        Ok(()) => {
            let addresses: Box<[usize]> = words.iter().map(|&(word, _)| word).collect();
            let word = addresses[0];
            let waiter = Waiter::RingAny(addresses);
            // Nothing can deliver before this callback returns: completions are handled on this thread.
            state.waits.insert(id, PendingWait { word, deferred, buffer_ref: list_ref, waiter, keeps_alive });
            state.sync_loop_ref();
        }
        Err(err) => {
            waits::settle_parts(env, deferred, list_ref, Err(err));
        }
    }
    Ok(promise)
}

/// `futexWaitCancel(id): boolean` — stops the wait and resolves it with 0
/// (a wake it took is passed on): true. False for an id not pending (settled
/// already, or unknown): a no-op; a settled wait's promise keeps its outcome.
pub fn futex_wait_cancel(env: Env, info: napi_callback_info) -> JsResult {
    let [id] = env.args::<1>(info)?;
    let id = env.integer(id, "id", 0.0, MAX_SAFE_INTEGER)? as u64;
    // SAFETY: JS thread, inside a callback of this env.
    let state = unsafe { EnvState::current(env) }?;
    let Some(pending) = state.waits.take(id) else {
        // Settled already (or cancelled before): its promise has its own outcome.
        return env.bool(false);
    };
    // The buffer is still referenced, so the word is mapped, until
    // settle lets go of it: after the reap that passes wakes on.
    pending.stop(id, state.reactor());
    if let Some(reactor) = state.reactor() {
        reactor.deliver_now(env);
    }
    waits::settle(env, pending, Ok(WOKEN));
    state.sync_loop_ref();
    env.bool(true)
}

/// The threadsafe function's callback (waiter threads: lanes or pool):
/// settles the promise of a finished wait on the JS thread, unless it was
/// cancelled or settled by munmap meanwhile (ids are never reused). A null
/// env means the function is being torn down: just drop the completion.
///
/// # Safety
/// Called by Node with `data` a `Box<Completion>` from `Delivery::send`.
unsafe extern "C" fn call_js(env: napi_env, _js_callback: napi_value, _context: *mut c_void, data: *mut c_void) {
    // SAFETY: data is the Box<Completion> passed to napi_call_threadsafe_function.
    let (id, outcome) = *unsafe { Box::from_raw(data.cast::<Completion>()) };
    if env.is_null() {
        return;
    }
    let env = Env(env);
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: JS thread of this env, inside a Node-API callback.
        let Some(state) = (unsafe { EnvState::get(env) }) else { return };
        if let Some(pending) = state.waits.take(id) {
            waits::settle(env, pending, outcome);
            state.sync_loop_ref();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_size_knows_every_typed_array_kind_and_refuses_a_later_one() {
        let sizes: Vec<Option<usize>> = (0..=12).map(element_size).collect();
        let expected = [1, 1, 1, 2, 2, 4, 4, 4, 8, 8, 8, 2].map(Some);
        assert_eq!(sizes[..12], expected);
        assert_eq!(sizes[12], None, "a kind this build does not know");
    }
}
