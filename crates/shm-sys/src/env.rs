//! Per-environment state. Node loads the addon once per `napi_env`: the main
//! thread and every worker_thread each get their own [`EnvState`], stored as
//! the env's instance data (`napi_set_instance_data`) and torn down by an env
//! cleanup hook when that thread exits.
//!
//! Threading contract: everything in `EnvState` except [`Delivery`] is used
//! only on the env's JS thread (entry points, finalizers, the threadsafe
//! function's `call_js`, the cleanup hook), hence `Cell`/`RefCell`. A
//! `RefCell` borrow is never held across a Node-API call that could run JS.
//! `Delivery` is shared with the waiter threads (delivery.rs).
//!
//! Teardown order (Node runs cleanup hooks last-registered first):
//!  1. the cleanup hooks of our external ArrayBuffers (registered after this
//!     module's hook) detach them and call their finalizers, which stop the
//!     async waits on their words and munmap (memory.rs), except a mapping
//!     with waits stopped on it: that one waits for step 3
//!     (`defer_release`), so that the wakes those waits took can still be
//!     passed on to its words;
//!  2. the reactor's async cleanup hook (registered at the first async
//!     wait, io_uring mode) closes its poll handle (reactor.rs);
//!  3. [`env_cleanup`] stops every remaining async wait, deletes the
//!     references those held, closes the reactor's ring (after reaping the
//!     stopped waits' completions, passing on the wakes they took), unmaps
//!     the mappings step 1 left for it, and aborts the threadsafe function,
//!     so no waiter thread calls into this env again; then closes the fds
//!     this env opened and neither closed nor gave to a mapping (fds.rs);
//!  4. Node finalizes the threadsafe function (its finalizer clears
//!     `Delivery`; queued results are dropped through `call_js` with a null
//!     env), then deletes the env and, with it, calls [`finalize_state`].

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::ffi::c_void;
use std::ptr;
use std::sync::Arc;

use crate::delivery::{Completion, Delivery, Tsfn};
use crate::fds;
use crate::lanes;
use crate::libc;
use crate::mapping::Mapping;
use crate::napi::{self, Env, JsResult, Throw, napi_env, napi_threadsafe_function};
use crate::reactor::Reactor;
use crate::sys::WOKEN;
use crate::waits::{self, Registry};

/// How this env's async waits wait in the kernel.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AsyncMode {
    /// FUTEX_WAIT entries of one io_uring, polled by the env's loop.
    Ring,
    /// Threads in futex_waitv, up to 127 waits each (the fallback).
    Lanes,
    /// One pool thread per pending wait (the last resort, Linux < 5.16).
    Threads,
}

impl AsyncMode {
    pub fn name(self) -> &'static str {
        match self {
            AsyncMode::Ring => "io_uring",
            AsyncMode::Lanes => "futex_waitv",
            AsyncMode::Threads => "threads",
        }
    }
}

/// `SHMRING_ASYNC_WAIT`: `io_uring`, `futex_waitv` or `threads` (that one,
/// or an error where the kernel refuses it), or unset / `auto` (the first
/// of these the kernel allows). JavaScript hands it over (chooseAsyncWait).
const MODE_VARIABLE: &str = "SHMRING_ASYNC_WAIT";

pub struct EnvState {
    env: napi_env,
    /// This env's id in the table of open fds (fds.rs).
    pub fd_owner: u64,
    /// Live mappings made by `mmap` in this env, keyed by address.
    pub mappings: RefCell<HashMap<usize, Arc<Mapping>>>,
    /// Mappings whose finalizer stopped waits at teardown: unmapped by env_cleanup, after close_ring.
    deferred: RefCell<Vec<Arc<Mapping>>>,
    /// Pending async waits.
    pub waits: Registry,
    /// How async waits wait, decided at the first one.
    mode: Cell<Option<AsyncMode>>,
    /// This env's `SHMRING_ASYNC_WAIT`, as its JavaScript sees it (`chooseAsyncWait`, index.cjs at load):
    /// a worker's own environment, and no getenv here, which would race the main thread's setenv.
    wanted: RefCell<String>,
    /// The io_uring reactor, in AsyncMode::Ring.
    reactor: OnceCell<Box<Reactor>>,
    /// Shared with the waiter threads.
    pub delivery: Arc<Delivery>,
    /// The same threadsafe function as in `delivery`, for ref/unref from
    /// the JS thread; null before the first async wait and after teardown.
    tsfn: Cell<napi_threadsafe_function>,
    /// Whether `tsfn` currently keeps the event loop alive.
    tsfn_refed: Cell<bool>,
    /// Set by the cleanup hook: no new async wait may start.
    closing: Cell<bool>,
}

impl EnvState {
    /// Creates this env's state and registers its finalizer and cleanup hook.
    pub fn install(env: Env) -> Result<(), Throw> {
        let state = Box::into_raw(Box::new(EnvState {
            env: env.0,
            fd_owner: fds::new_owner(),
            mappings: RefCell::new(HashMap::new()),
            deferred: RefCell::new(Vec::new()),
            waits: Registry::default(),
            mode: Cell::new(None),
            wanted: RefCell::new(String::new()),
            reactor: OnceCell::new(),
            delivery: Arc::new(Delivery::new()),
            tsfn: Cell::new(ptr::null_mut()),
            tsfn_refed: Cell::new(false),
            closing: Cell::new(false),
        }));
        // SAFETY: state is a valid Box pointer; from here on Node owns it and
        // frees it through finalize_state.
        let st = unsafe { napi::napi_set_instance_data(env.0, state.cast(), Some(finalize_state), ptr::null_mut()) };
        if let Err(err) = env.check(st, "napi_set_instance_data") {
            // SAFETY: Node did not take the pointer; reclaim it.
            drop(unsafe { Box::from_raw(state) });
            return Err(err);
        }
        // SAFETY: state stays valid until finalize_state, which Node calls
        // after all cleanup hooks.
        let st = unsafe { napi::napi_add_env_cleanup_hook(env.0, Some(env_cleanup), state.cast()) };
        env.check(st, "napi_add_env_cleanup_hook")
    }

    /// This env's state, or `None` if it is gone or was never installed.
    ///
    /// # Safety
    /// Call only on `env`'s JS thread, from a callback, finalizer or cleanup
    /// hook of that env, and do not keep the reference beyond it: the state
    /// lives until Node calls `finalize_state` at the end of env teardown.
    pub unsafe fn get<'a>(env: Env) -> Option<&'a EnvState> {
        let mut data: *mut c_void = ptr::null_mut();
        // SAFETY: env is live (caller contract); out-pointer valid.
        let st = unsafe { napi::napi_get_instance_data(env.0, &mut data) };
        if st != napi::NAPI_OK || data.is_null() {
            return None;
        }
        // SAFETY: the only instance data this module sets is an EnvState,
        // alive for the duration promised by the caller.
        Some(unsafe { &*data.cast::<EnvState>() })
    }

    /// Like [`EnvState::get`], but an error for entry points.
    ///
    /// # Safety
    /// As for [`EnvState::get`].
    pub unsafe fn current<'a>(env: Env) -> Result<&'a EnvState, Throw> {
        // SAFETY: forwarded caller contract.
        unsafe { Self::get(env) }.ok_or(Throw::Napi("napi_get_instance_data", napi::NAPI_OK))
    }

    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    /// How this env's async waits wait: decided at the first call from
    /// `SHMRING_ASYNC_WAIT` and what the kernel allows, then fixed.
    pub fn async_mode(&self, env: Env) -> Result<AsyncMode, Throw> {
        if let Some(mode) = self.mode.get() {
            return Ok(mode);
        }
        let wanted = self.wanted.borrow().clone();
        let mode = match wanted.as_str() {
            "threads" => AsyncMode::Threads,
            "futex_waitv" if lanes::available() => AsyncMode::Lanes,
            "futex_waitv" => {
                return Err(Throw::Sys(crate::libc::SysError { errno: crate::libc::ENOSYS, syscall: "futex_waitv" }));
            }
            "io_uring" => {
                let reactor = Reactor::new(env, deliver_ring)?;
                let _ = self.reactor.set(reactor);
                AsyncMode::Ring
            }
            "" | "auto" => match Reactor::new(env, deliver_ring) {
                Ok(reactor) => {
                    let _ = self.reactor.set(reactor);
                    AsyncMode::Ring
                }
                Err(_) if lanes::available() => AsyncMode::Lanes,
                Err(_) => AsyncMode::Threads,
            },
            other => {
                return Err(Throw::Range(format!(
                    "{MODE_VARIABLE}={other} must be io_uring, futex_waitv, threads or auto (or unset)"
                )));
            }
        };
        self.mode.set(Some(mode));
        Ok(mode)
    }

    /// Takes this env's `SHMRING_ASYNC_WAIT` (checked at the first async
    /// wait); false once that wait has fixed the mode.
    pub fn choose_async_wait(&self, way: String) -> bool {
        if self.mode.get().is_some() {
            return false;
        }
        *self.wanted.borrow_mut() = way;
        true
    }

    /// The io_uring reactor, once AsyncMode::Ring was chosen.
    pub fn reactor(&self) -> Option<&Reactor> {
        self.reactor.get().map(|r| &**r)
    }

    /// Before an explicit munmap: stop the waits on words of the mapping and
    /// resolve them with 0 (callers re-check their condition).
    pub fn settle_waits_in_range(&self, env: Env, start: usize, len: usize) {
        let taken = self.waits.take_in_range(start, len);
        for (id, pending) in &taken {
            pending.stop(*id, self.reactor());
        }
        if let Some(reactor) = self.reactor() {
            // Passes on swallowed wakes while the words are still mapped
            // (and held: settle lets go of them); and those of completions
            // that have not come yet, for a word that moved.
            reactor.deliver_now(env);
            reactor.pass_on_moved_in_range(start, len);
        }
        for (_, pending) in taken {
            waits::settle(env, pending, Ok(WOKEN));
        }
        self.sync_loop_ref();
    }

    /// Before a finalizer's munmap: make sure nothing waits on the mapping
    /// any more; the cleanup hook drops the rest. True if it stopped any
    /// wait: only at env teardown (a pending wait holds its buffer, so GC
    /// never finalizes one), and then the munmap waits for env_cleanup
    /// (`defer_release`), so that the wakes the stopped waits took can be
    /// passed on to their words (close_ring) while those are still mapped.
    pub fn stop_waits_in_range(&self, start: usize, len: usize) -> bool {
        let stopped = self.waits.stop_in_range(start, len, self.reactor());
        if let Some(reactor) = self.reactor() {
            reactor.read_late_words_safely(); // nothing is reaped before the munmap
        }
        stopped
    }

    /// Keeps `mapping` mapped until env_cleanup has passed on the wakes of
    /// the waits stopped on it (see stop_waits_in_range).
    pub fn defer_release(&self, mapping: Arc<Mapping>) {
        self.deferred.borrow_mut().push(mapping);
    }

    /// The env's threadsafe function, created (unref'd) on first use.
    pub fn tsfn(&self, env: Env, call_js: napi::napi_threadsafe_function_call_js) -> Result<(), Throw> {
        if !self.tsfn.get().is_null() {
            return Ok(());
        }
        let name = env.string("shm-sys futexWaitAsync")?;
        let finalize_data = Arc::into_raw(Arc::clone(&self.delivery));
        let mut tsfn = ptr::null_mut();
        // SAFETY: no JS function (call_js does the work), unlimited queue, one
        // owning thread count released only in env_cleanup; finalize_data is
        // an Arc<Delivery> reclaimed by tsfn_finalized.
        let st = unsafe {
            napi::napi_create_threadsafe_function(
                env.0,
                ptr::null_mut(),
                ptr::null_mut(),
                name,
                0,
                1,
                finalize_data as *mut c_void,
                Some(tsfn_finalized),
                ptr::null_mut(),
                call_js,
                &mut tsfn,
            )
        };
        if let Err(err) = env.check(st, "napi_create_threadsafe_function") {
            // SAFETY: Node did not take the pointer; reclaim it.
            drop(unsafe { Arc::from_raw(finalize_data) });
            return Err(err);
        }
        // A new threadsafe function keeps the loop alive; ours does so only
        // while a wait is pending (sync_loop_ref).
        // SAFETY: tsfn was just created on this env's JS thread.
        let st = unsafe { napi::napi_unref_threadsafe_function(env.0, tsfn) };
        env.check(st, "napi_unref_threadsafe_function")?;
        *self.delivery.lock() = Some(Tsfn(tsfn));
        self.tsfn.set(tsfn);
        self.tsfn_refed.set(false);
        Ok(())
    }

    /// Refs the threadsafe function while at least one ref'd async wait is
    /// pending, unrefs it when none is: a pending wait keeps the event loop
    /// alive (unless started with `ref` false), a settled or cancelled one
    /// does not.
    pub fn sync_loop_ref(&self) {
        let want = self.waits.keeps_loop_alive();
        if let Some(reactor) = self.reactor() {
            reactor.set_ref(want);
        }
        let tsfn = self.tsfn.get();
        if tsfn.is_null() {
            return;
        }
        if want == self.tsfn_refed.get() {
            return;
        }
        // SAFETY: tsfn is this env's live threadsafe function (it is nulled
        // in env_cleanup before being released); JS thread.
        let st = unsafe {
            if want {
                napi::napi_ref_threadsafe_function(self.env, tsfn)
            } else {
                napi::napi_unref_threadsafe_function(self.env, tsfn)
            }
        };
        if st == napi::NAPI_OK {
            self.tsfn_refed.set(want);
        }
    }
}

/// Env cleanup hook: stop every async wait of this env, drop the references
/// they held and abort the threadsafe function (see the module docs).
///
/// # Safety
/// Called by Node on the env's JS thread with the EnvState registered in
/// `install`, before `finalize_state`.
unsafe extern "C" fn env_cleanup(arg: *mut c_void) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: arg is the EnvState registered with this hook, still alive
        // (finalize_state runs after all cleanup hooks).
        let state = unsafe { &*arg.cast::<EnvState>() };
        state.closing.set(true);
        for (id, pending) in state.waits.drain() {
            // Only the kernel's queues matter now (the finalizers may have
            // unmapped the words already; nothing reads them).
            pending.stop(id, state.reactor());
            // SAFETY: the reference was created in this env and not yet
            // deleted. The deferred cannot be settled during teardown (no JS
            // may run); Node drops its promise with the isolate.
            unsafe { napi::napi_delete_reference(state.env, pending.buffer_ref) };
        }
        if let Some(reactor) = state.reactor() {
            reactor.close_ring(); // passes on the wakes the stopped waits took, then closes the ring
        }
        // Their words are passed on to: the mappings the finalizers left mapped for it go now.
        for mapping in state.deferred.borrow_mut().drain(..) {
            let _ = mapping.release();
        }
        let tsfn = state.tsfn.replace(ptr::null_mut());
        // Taking it out of Delivery first means no waiter thread calls it
        // after this point; if it is already gone, Node finalized it.
        let taken = state.delivery.lock().take();
        if !tsfn.is_null() && taken.is_some() {
            // SAFETY: tsfn is alive (its finalizer has not cleared Delivery)
            // and no other thread can call it any more.
            unsafe { napi::napi_release_threadsafe_function(tsfn, napi::NAPI_TSFN_ABORT) };
        }
        // The fds opened for this env's JS that it never closed and no
        // mapping owns (a ring's role-lock fds, one opened between two
        // calls): nobody can close them after this, so they go now, and
        // the OFD locks held through them with them, as a dead side's
        // should. The mappings' fds went with their ArrayBuffers (step 1).
        fds::close_all_of(state.fd_owner);
    });
}

/// The reactor's `deliver`: settles the waits that finished.
fn deliver_ring(env: Env, done: &[Completion]) {
    // SAFETY: called by the reactor's poll callback on the env's JS thread.
    let Some(state) = (unsafe { EnvState::get(env) }) else { return };
    for (id, outcome) in done {
        if let Some(pending) = state.waits.take(*id) {
            waits::settle(env, pending, *outcome);
        }
    }
    state.sync_loop_ref();
}

/// Instance-data finalizer: frees the EnvState.
///
/// # Safety
/// Called once by Node with the pointer given to napi_set_instance_data.
unsafe extern "C" fn finalize_state(_env: napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: data is the Box<EnvState> leaked in install; Node calls this
    // exactly once, after every other use of the state.
    drop(unsafe { Box::from_raw(data.cast::<EnvState>()) });
}

/// Threadsafe-function finalizer: after this no waiter thread may call it.
///
/// # Safety
/// Called once by Node with the Arc<Delivery> given as finalize data.
unsafe extern "C" fn tsfn_finalized(_env: napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: data is the Arc<Delivery> leaked in EnvState::tsfn.
    let delivery = unsafe { Arc::from_raw(data.cast::<Delivery>().cast_const()) };
    delivery.lock().take();
}

/// Records `fd`, just opened for this env's JS, as the env's (fds.rs) and
/// returns it to JS.
pub fn opened(env: Env, fd: std::ffi::c_int) -> JsResult {
    // SAFETY: called from an entry point, on the env's JS thread.
    match unsafe { EnvState::current(env) } {
        Ok(state) => fds::record(state.fd_owner, fd),
        Err(err) => {
            libc::close_quietly(fd);
            return Err(err);
        }
    }
    env.int32(fd)
}
