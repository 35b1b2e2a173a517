//! The event-loop reactor: one io_uring per env (the main thread and each
//! worker), whose fd the env's own libuv loop polls. An async futex wait is
//! an `IORING_OP_FUTEX_WAIT` entry (Linux >= 6.7), so a pending wait holds
//! no thread, and a wake-up reaches JavaScript through one thread wake-up:
//! the event loop's own, when the kernel posts the completion and the ring
//! fd turns readable.
//!
//! The futex protocol of docs/LAYOUT.md is unchanged: the waits are plain
//! shared futex waits, so a C peer's or a Sync waiter's FUTEX_WAKE reaches
//! them like any other waiter.
//!
//!  - `wait` queues FUTEX_WAIT (user_data = the wait's id) and, with a
//!    deadline, a LINK_TIMEOUT chained to it (the kernel cancels the wait
//!    at the deadline: -ECANCELED means timed out), and submits at once.
//!  - `cancel` submits ASYNC_CANCEL for the id. The kernel may have woken
//!    the wait just before: a FUTEX_WAKE of one waiter then went to us and
//!    nobody else. So the word of a cancelled wait is kept until its
//!    completion arrives, and a cancelled wait that completed with 0 passes
//!    its wake on (FUTEX_WAKE of one more waiter on the word). Cancels made
//!    from JS reap at once (`deliver_now`), so the wake is passed on before
//!    munmap can give the address to another mapping.
//!  - the poll callback reaps every completion, then hands the finished
//!    waits to `deliver` inside one handle scope and one callback scope,
//!    whose close runs the microtasks (the promise reactions) once.
//!  - the poll handle keeps the loop alive only while waits are pending
//!    (`set_ref`).
//!
//! Teardown is an async env cleanup hook: it stops polling, closes the
//! ring (the kernel drops the waits still pending) and `uv_close`s the
//! handle; the close callback frees the handle and tells Node the hook is
//! done. Only the env's JS thread touches a reactor.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::ptr;

use crate::delivery::Completion;
use crate::libc::{self, SysError, timespec};
use crate::napi::{self, Env, Throw, napi_async_cleanup_hook_handle, napi_async_context, napi_env, napi_ref};
use crate::sys::{self, NOT_EQUAL, TIMED_OUT, WOKEN};
use crate::uring::{self, Ring};
use crate::uv::{self, uv_handle_t};

/// Settles finished waits; runs on the JS thread inside the scopes.
pub type Deliver = fn(Env, &[Completion]);

/// user_data bits of the entries that are not waits (wait ids are JS safe
/// integers, < 2^53).
const TAG_TIMEOUT: u64 = 1 << 62;
const TAG_CANCEL: u64 = 1 << 61;
const SQ_ENTRIES: u32 = 64;
/// Completions the kernel can post between two reaps before it keeps them
/// aside (IORING_FEAT_NODROP: nothing is lost; `Ring::reap` flushes them).
const CQ_ENTRIES: u32 = 4096;

pub struct Reactor {
    env: napi_env,
    ring: RefCell<Option<Ring>>,
    handle: *mut uv_handle_t,
    refed: Cell<bool>,
    context: napi_async_context,
    resource: napi_ref,
    deliver: Deliver,
    /// Cancelled waits whose completion has not arrived yet: id → word.
    cancelled: RefCell<HashMap<u64, usize>>,
    /// Reused buffers of `completions`: the reaped entries, and the
    /// finished waits handed to `deliver` (no allocation per callback).
    scratch: RefCell<Vec<(u64, i32)>>,
    done: RefCell<Vec<Completion>>,
}

/// Bytes of a uv_poll_t, in u64s (the handle is allocated as `[u64]`).
fn handle_words() -> usize {
    // SAFETY: a pure size query.
    unsafe { uv::uv_handle_size(uv::UV_POLL) }.div_ceil(8)
}

impl Reactor {
    /// The reactor of `env`, polling on `env`'s loop. Fails when io_uring
    /// is refused (seccomp, `kernel.io_uring_disabled`) or has no
    /// FUTEX_WAIT (Linux < 6.7): the caller falls back to waiter threads.
    pub fn new(env: Env, deliver: Deliver) -> Result<Box<Reactor>, Throw> {
        let mut ring = Ring::new(SQ_ENTRIES, CQ_ENTRIES)?;
        if !uring::probe_futex_wait(&mut ring)? {
            return Err(Throw::Sys(SysError { errno: libc::EINVAL, syscall: "io_uring FUTEX_WAIT" }));
        }
        let mut event_loop = ptr::null_mut();
        // SAFETY: out-pointer valid; env live.
        let st = unsafe { napi::napi_get_uv_event_loop(env.0, &mut event_loop) };
        env.check(st, "napi_get_uv_event_loop")?;

        let mut resource_object = ptr::null_mut();
        // SAFETY: out-pointer valid; JS thread.
        let st = unsafe { napi::napi_create_object(env.0, &mut resource_object) };
        env.check(st, "napi_create_object")?;
        let mut resource = ptr::null_mut();
        // SAFETY: resource_object is a live object of this env.
        let st = unsafe { napi::napi_create_reference(env.0, resource_object, 1, &mut resource) };
        env.check(st, "napi_create_reference")?;
        let mut context = ptr::null_mut();
        let name = env.string("shm-sys futexWaitAsync")?;
        // SAFETY: values of this env; out-pointer valid.
        let st = unsafe { napi::napi_async_init(env.0, resource_object, name, &mut context) };
        env.check(st, "napi_async_init")?;

        let words = handle_words();
        let handle = Box::into_raw(vec![0u64; words].into_boxed_slice()).cast::<uv_handle_t>();
        let reactor = Box::new(Reactor {
            env: env.0,
            ring: RefCell::new(Some(ring)),
            handle,
            refed: Cell::new(true),
            context,
            resource,
            deliver,
            cancelled: RefCell::new(HashMap::new()),
            scratch: RefCell::new(Vec::new()),
            done: RefCell::new(Vec::new()),
        });
        let fd = reactor.ring.borrow().as_ref().map_or(-1, Ring::fd);
        // SAFETY: handle is zeroed memory of uv_handle_size(UV_POLL) bytes
        // that lives until on_close; event_loop is this env's loop; the
        // data pointer (the boxed reactor) lives until finalize_state,
        // after teardown stopped the handle.
        let rc = unsafe { uv::uv_poll_init(event_loop, handle, fd) };
        if rc != 0 {
            // SAFETY: uv_poll_init failed: libuv does not know the handle.
            drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(handle.cast::<u64>(), words)) });
            return Err(Throw::Sys(SysError { errno: -rc, syscall: "uv_poll_init" }));
        }
        // SAFETY: see above.
        unsafe {
            uv::set_data(handle, (&*reactor as *const Reactor).cast_mut().cast());
            uv::uv_poll_start(handle, uv::UV_READABLE, Some(on_readable));
        }
        reactor.set_ref(false);
        let mut remove = ptr::null_mut();
        // SAFETY: the reactor outlives the hook (it is freed in
        // finalize_state, after every cleanup hook ran).
        let st = unsafe {
            napi::napi_add_async_cleanup_hook(
                env.0,
                Some(teardown),
                (&*reactor as *const Reactor).cast_mut().cast(),
                &mut remove,
            )
        };
        if let Err(err) = env.check(st, "napi_add_async_cleanup_hook") {
            // The handle polls with the reactor as its data: both must stay.
            Box::leak(reactor);
            return Err(err);
        }
        Ok(reactor)
    }

    /// Starts an async wait on `word` while it holds `expected`, until the
    /// absolute CLOCK_MONOTONIC `deadline` if any.
    pub fn wait(&self, id: u64, word: usize, expected: u32, deadline: Option<&timespec>) -> Result<(), SysError> {
        let mut ring = self.ring.borrow_mut();
        let Some(ring) = ring.as_mut() else { return Err(SysError { errno: libc::EINVAL, syscall: "io_uring" }) };
        match deadline {
            None => ring.push(uring::futex_wait_sqe(word, expected, id, false))?,
            Some(deadline) => {
                // A chain must not straddle two submissions.
                ring.submit()?;
                ring.push(uring::futex_wait_sqe(word, expected, id, true))?;
                ring.push(uring::link_timeout_sqe(deadline, TAG_TIMEOUT | id))?;
            }
        }
        // The deadline is read by the kernel during this call.
        ring.submit()
    }

    /// Cancels the wait `id` on `word` (see the module docs).
    pub fn cancel(&self, id: u64, word: usize) {
        let mut ring = self.ring.borrow_mut();
        let Some(ring) = ring.as_mut() else { return };
        if ring.push(uring::cancel_sqe(id, TAG_CANCEL | id)).and_then(|()| ring.submit()).is_ok() {
            self.cancelled.borrow_mut().insert(id, word);
        }
    }

    /// Keeps the loop alive (or not) through the poll handle.
    pub fn set_ref(&self, want: bool) {
        if want == self.refed.get() || self.ring.borrow().is_none() {
            return;
        }
        // SAFETY: the handle is live until teardown, which empties `ring`.
        unsafe { if want { uv::uv_ref(self.handle) } else { uv::uv_unref(self.handle) } };
        self.refed.set(want);
    }

    /// Called from a JS call (futexWaitCancel, munmap) right after
    /// `cancel`: the kernel has posted the cancelled waits' completions by
    /// the time the submitting `io_uring_enter` returned (their task work
    /// runs before it does), so a wake a cancelled wait swallowed is passed
    /// on now, while its word is still mapped; any other finished wait is
    /// settled too (the poll callback would find the ring empty).
    pub fn deliver_now(&self, env: Env) {
        self.reap_and(|done| (self.deliver)(env, done));
    }

    /// Reaps the ring, turns its completions into finished waits and, if
    /// there are any, hands them to `f`. The buffers are taken out of their
    /// cells meanwhile, so `f` may reach the reactor again.
    fn reap_and(&self, f: impl FnOnce(&[Completion])) {
        let mut done = std::mem::take(&mut *self.done.borrow_mut());
        self.completions(&mut done);
        if !done.is_empty() {
            f(&done);
        }
        done.clear();
        *self.done.borrow_mut() = done;
    }

    /// Reaps the ring and appends its finished waits to `done`.
    fn completions(&self, done: &mut Vec<Completion>) {
        let mut raw = std::mem::take(&mut *self.scratch.borrow_mut());
        if let Some(ring) = self.ring.borrow_mut().as_mut() {
            ring.reap(&mut raw);
        }
        let mut cancelled = self.cancelled.borrow_mut();
        for &(user_data, res) in &raw {
            if user_data & (TAG_TIMEOUT | TAG_CANCEL) != 0 {
                continue;
            }
            // Most callbacks have no cancelled wait: skip hashing the id.
            let cancelled_word = if cancelled.is_empty() { None } else { cancelled.remove(&user_data) };
            if let Some(word) = cancelled_word {
                if res == 0 {
                    // Woken before the cancel took: pass the wake on. The
                    // word may be unmapped by now; FUTEX_WAKE then fails
                    // with EFAULT and touches nothing.
                    // SAFETY: the kernel only hashes the address.
                    let _ = unsafe { sys::wake(word, 1) };
                }
                continue;
            }
            let outcome = match res {
                0 => Ok(WOKEN),
                r if r == -libc::EAGAIN => Ok(NOT_EQUAL),
                r if r == -libc::ECANCELED => Ok(TIMED_OUT),
                r if r == -libc::EINTR => Ok(WOKEN),
                r => Err(SysError { errno: -r, syscall: "io_uring FUTEX_WAIT" }),
            };
            done.push((user_data, outcome));
        }
        raw.clear();
        *self.scratch.borrow_mut() = raw;
    }
}

/// The poll callback: the ring fd is readable, completions are there.
///
/// # Safety
/// Called by libuv on the env's loop thread with our poll handle.
unsafe extern "C" fn on_readable(handle: *mut uv_handle_t, _status: c_int, _events: c_int) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: the data pointer is the live reactor until teardown stops
        // the handle (after which libuv calls no more callbacks).
        let reactor = unsafe { &*uv::data(handle).cast::<Reactor>() };
        reactor.reap_and(|done| deliver_in_scopes(reactor, done));
    });
}

/// Hands `done` to `deliver` inside a handle scope and a callback scope,
/// whose close runs the microtasks (the promise reactions) once.
fn deliver_in_scopes(reactor: &Reactor, done: &[Completion]) {
    let env = Env(reactor.env);
    let mut scope = ptr::null_mut();
    // SAFETY: we are on the env's JS thread, outside any JS frame: a
    // handle scope and a callback scope make Node-API calls legal here,
    // and closing the callback scope runs the microtasks.
    unsafe {
        if napi::napi_open_handle_scope(env.0, &mut scope) != napi::NAPI_OK {
            return;
        }
        let mut resource = ptr::null_mut();
        let mut callback_scope = ptr::null_mut();
        let opened = napi::napi_get_reference_value(env.0, reactor.resource, &mut resource) == napi::NAPI_OK
            && napi::napi_open_callback_scope(env.0, resource, reactor.context, &mut callback_scope) == napi::NAPI_OK;
        (reactor.deliver)(env, done);
        if opened {
            napi::napi_close_callback_scope(env.0, callback_scope);
        }
        napi::napi_close_handle_scope(env.0, scope);
    }
}

/// Async env cleanup hook: see the module docs.
///
/// # Safety
/// Called once by Node with the reactor registered in `Reactor::new`.
unsafe extern "C" fn teardown(remove: napi_async_cleanup_hook_handle, arg: *mut c_void) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: the reactor lives until finalize_state, after this hook.
        let reactor = unsafe { &*arg.cast::<Reactor>() };
        drop(reactor.ring.borrow_mut().take()); // closes the fd: the kernel drops the waits
        reactor.cancelled.borrow_mut().clear();
        // SAFETY: the handle is live; from now on its data is the hook's
        // removal handle, which on_close needs.
        unsafe {
            uv::uv_poll_stop(reactor.handle);
            uv::set_data(reactor.handle, remove.cast());
            uv::uv_close(reactor.handle, Some(on_close));
            napi::napi_async_destroy(reactor.env, reactor.context);
            napi::napi_delete_reference(reactor.env, reactor.resource);
        }
    });
}

/// Frees the poll handle and ends the async cleanup hook.
///
/// # Safety
/// Called once by libuv after `uv_close` with our handle.
unsafe extern "C" fn on_close(handle: *mut uv_handle_t) {
    // SAFETY: teardown stored the removal handle in data.
    let remove = unsafe { uv::data(handle) }.cast();
    // SAFETY: the handle was allocated in Reactor::new as [u64; words];
    // libuv is done with it.
    drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(handle.cast::<u64>(), handle_words())) });
    // SAFETY: the handle given to teardown, removed once.
    unsafe { napi::napi_remove_async_cleanup_hook(remove) };
}
