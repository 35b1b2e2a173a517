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
//!  - `wait_any` waits on many words as one wait (select over many
//!    queues): FUTEX_WAITV entries of up to FUTEX_WAITV_MAX words each
//!    (user_data = the wait's id, GROUP, and the entry's chunk number), each
//!    with its own linked timeout for a deadline. The first completion of
//!    any chunk ends the wait (the index of the word woken, counted over
//!    all chunks); the other chunks are cancelled at once, as `cancel`
//!    does: a cancelled chunk that completed with an index passes that
//!    word's wake on. Every chunk that completes also passes one on to
//!    each of its other words that changed (Swallowed). One kernel request
//!    per 128 words, not one per word: a cancel walks the ring's list of
//!    pending futex requests, so cancelling a thousand single waits costs
//!    a million steps.
//!  - the poll callback reaps every completion, then hands the finished
//!    waits to `deliver` inside one handle scope and one callback scope,
//!    whose close runs the microtasks (the promise reactions) once.
//!  - the poll handle keeps the loop alive only while waits are pending
//!    (`set_ref`).
//!
//! Teardown is an async env cleanup hook: it stops polling and
//! `uv_close`s the handle; the close callback frees the handle and tells
//! Node the hook is done. The ring stays until env_cleanup has stopped
//! every wait left, then `close_ring` reaps their completions, passing on
//! the wakes they took, and closes it. Only the env's JS thread touches a
//! reactor.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::delivery::Completion;
use crate::libc::{self, SysError, futex_waitv, timespec};
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
/// user_data of a chunk of a `wait_any`: GROUP | chunk << CHUNK_SHIFT | id.
const TAG_GROUP: u64 = 1 << 60;
const CHUNK_SHIFT: u32 = 53;
const ID_MASK: u64 = (1 << CHUNK_SHIFT) - 1;
/// Most chunks of one `wait_any` (what fits between the id and TAG_GROUP).
pub const MAX_CHUNKS: usize = 1 << (60 - CHUNK_SHIFT);
/// Most words of one `wait_any`.
pub const MAX_WAIT_ANY_WORDS: usize = MAX_CHUNKS * libc::FUTEX_WAITV_MAX;
/// What a `wait_any` settles with when no word was woken (as futexWaitAny's -1 and -2).
pub const ANY_NOT_EQUAL: u32 = -1i32 as u32;
pub const ANY_TIMED_OUT: u32 = -2i32 as u32;

/// A cancelled wait whose completion has not arrived yet: the wake it may
/// have swallowed goes to its word (res 0), or to the word of its list
/// that the completion names (a FUTEX_WAITV chunk's res, an index). The
/// list is the one the kernel was given: kept until the completion, so it
/// outlives the entry's submission whatever happens.
///
/// A FUTEX_WAITV entry can swallow more than the wake it reports: once a
/// wake (or the cancel) has claimed it, its other words stay queued until
/// its completion runs, and a FUTEX_WAKE of one waiter that meets one of
/// them counts it as woken. So when an entry completes, each of its words
/// that no longer holds its expected value gets a wake passed on too
/// (pass_on_changed). `direct`: its words may be loaded, not just read
/// through the kernel: they are all in mappings of ours (memory::
/// is_mapping), and the completion is reaped while its wait holds them:
/// before the wait is delivered (reap_and's loop), or before it is let go
/// of (deliver_now from a cancel, from munmap). An entry whose completion
/// comes later (a wake from another CPU claimed it just before its cancel),
/// or one cancelled before a finalizer's munmap, is read through the
/// kernel, where an unmapped word is an error (read_late_words_safely).
enum Swallowed {
    Word { word: usize, expected: u32 },
    AnyOf { list: Box<[futex_waitv]>, direct: bool },
}

/// Passes a wake on to each word of `list` (but `except`, whose wake the
/// completion reports) that no longer holds its expected value: a
/// publisher changed it and may have woken this entry in place of another
/// sleeper (see Swallowed). Not `direct`: the words are read with
/// sys::read_words, so a word unmapped by now reads as unchanged instead of
/// faulting, and one whose address was mapped again at worst gets a
/// spurious wake.
///
/// # Safety
/// `direct`: every word of `list` is mapped.
unsafe fn pass_on_changed(list: &[futex_waitv], except: Option<usize>, direct: bool) {
    let mut now: Vec<u32> = list.iter().map(|w| w.val as u32).collect();
    // Each read observes the store of a publisher whose wake met this entry: it stored before its FUTEX_WAKE,
    // which held the word's hash-bucket lock, which the entry's completion took after it to unqueue the word.
    if direct {
        for (n, w) in now.iter_mut().zip(list) {
            // SeqCst, as the kernel's own check. SAFETY: mapped (caller contract), an aligned u32.
            *n = unsafe { &*(w.uaddr as *const AtomicU32) }.load(Ordering::SeqCst);
        }
    } else {
        let words: Vec<usize> = list.iter().map(|w| w.uaddr as usize).collect();
        sys::read_words(&words, &mut now);
    }
    for (i, w) in list.iter().enumerate() {
        if Some(i) != except && u64::from(now[i]) != w.val {
            // SAFETY: the kernel only hashes the address.
            let _ = unsafe { sys::wake(w.uaddr as usize, 1) };
        }
    }
}

/// A pending `wait_any`: its chunks, and whether its words may be loaded (Swallowed).
struct Group {
    chunks: Chunks,
    direct: bool,
}

/// The chunks of a pending `wait_any`, by chunk number: the list of each
/// one still pending (None once completed).
type Chunks = Vec<Option<Box<[futex_waitv]>>>;
const SQ_ENTRIES: u32 = 64;
/// Completions the kernel can post between two reaps before it keeps them
/// aside (IORING_FEAT_NODROP: nothing is lost; `Ring::reap` flushes them).
const CQ_ENTRIES: u32 = 4096;

pub struct Reactor {
    env: napi_env,
    ring: RefCell<Option<Ring>>,
    handle: *mut uv_handle_t,
    refed: Cell<bool>,
    /// The poll handle is live (until teardown closes it).
    polling: Cell<bool>,
    context: napi_async_context,
    resource: napi_ref,
    deliver: Deliver,
    /// Cancelled waits (and chunks) whose completion has not arrived yet, by user_data.
    cancelled: RefCell<HashMap<u64, Swallowed>>,
    /// Pending `wait_any`s by id.
    groups: RefCell<HashMap<u64, Group>>,
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
            // ENOSYS, as a kernel without futex_waitv says: this kernel cannot (Linux < 6.7), not a bad argument.
            return Err(Throw::Sys(SysError { errno: libc::ENOSYS, syscall: "io_uring FUTEX_WAIT" }));
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
            polling: Cell::new(true),
            context,
            resource,
            deliver,
            cancelled: RefCell::new(HashMap::new()),
            groups: RefCell::new(HashMap::new()),
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
        let mark = ring.mark();
        let result = match deadline {
            None => ring.push(uring::futex_wait_sqe(word, expected, id, false)).and_then(|()| ring.submit()),
            Some(deadline) => {
                // A chain must not straddle two submissions: what was queued before goes first, then the chain
                // in one io_uring_enter, whole or an error.
                ring.submit()
                    .and_then(|()| ring.push(uring::futex_wait_sqe(word, expected, id, true)))
                    .and_then(|()| ring.push(uring::link_timeout_sqe(deadline, TAG_TIMEOUT | id)))
                    .and_then(|()| ring.submit_whole())
            }
        };
        // The deadline is read by the kernel during this call. Failed: the caller settles the wait with the
        // error and lets go of the deadline, so nothing of it may reach the kernel later.
        if result.is_err() {
            // Handed to the kernel all the same: the FUTEX_WAIT of a chain the kernel cut short, which it queues
            // without its timeout. Left there, it could take a wake meant for another sleeper, unseen: it is
            // cancelled as the wait of a caller that gave up is, and a wake it took is passed on.
            let handed = ring.handed_since(mark) > 0;
            ring.withdraw_to(mark);
            if handed {
                self.cancelled.borrow_mut().insert(id, Swallowed::Word { word, expected });
                let _ = ring.push(uring::cancel_sqe(id, TAG_CANCEL | id)).and_then(|()| ring.submit());
            }
        }
        result
    }

    /// Cancels the wait `id` on `word`, which it expected to hold `expected` (see the module docs).
    pub fn cancel(&self, id: u64, word: usize, expected: u32) {
        let mut ring = self.ring.borrow_mut();
        let Some(ring) = ring.as_mut() else { return };
        // Kept whether or not the cancel reaches the kernel: the wait is there either way, and its
        // completion, whenever it comes (woken, or at the ring's close), passes a wake it took on.
        self.cancelled.borrow_mut().insert(id, Swallowed::Word { word, expected });
        let _ = ring.push(uring::cancel_sqe(id, TAG_CANCEL | id)).and_then(|()| ring.submit());
    }

    /// Starts one async wait on every word of `words` while each holds its
    /// expected value (at most MAX_WAIT_ANY_WORDS), until the absolute
    /// CLOCK_MONOTONIC `deadline` if any. It settles with the index of a
    /// word woken, ANY_NOT_EQUAL or ANY_TIMED_OUT.
    /// `mappings`: every word is in a mapping of ours (see Swallowed).
    pub fn wait_any(
        &self,
        id: u64,
        words: &[(usize, u32)],
        deadline: Option<&timespec>,
        mappings: bool,
    ) -> Result<(), SysError> {
        let mut ring = self.ring.borrow_mut();
        let Some(ring) = ring.as_mut() else { return Err(SysError { errno: libc::EINVAL, syscall: "io_uring" }) };
        let lists: Chunks = words
            .chunks(libc::FUTEX_WAITV_MAX)
            .map(|chunk| {
                let list: Box<[futex_waitv]> = chunk
                    .iter()
                    .map(|&(word, expected)| futex_waitv {
                        val: expected as u64,
                        uaddr: word as u64,
                        flags: libc::FUTEX2_SIZE_U32,
                        reserved: 0,
                    })
                    .collect();
                Some(list)
            })
            .collect();
        debug_assert!(!lists.is_empty() && lists.len() <= MAX_CHUNKS);
        let mark = ring.mark();
        // Where each chunk's entry went in the SQ (wrapping positions, from `mark`).
        let mut positions: Vec<u32> = Vec::with_capacity(lists.len());
        let mut pushed = 0;
        let mut result = Ok(());
        for (k, list) in lists.iter().enumerate() {
            let list = list.as_deref().unwrap_or_default();
            let user_data = TAG_GROUP | (k as u64) << CHUNK_SHIFT | id;
            // A chain must not straddle two submissions.
            result = match deadline {
                None => Ok(()),
                Some(_) => ring.submit(),
            };
            positions.push(ring.mark());
            result = result.and_then(|()| ring.push(uring::futex_waitv_sqe(list, user_data, deadline.is_some())));
            if result.is_err() {
                break;
            }
            pushed = k + 1; // queued: from here on its list must outlive it
            if let Some(deadline) = deadline {
                // The chain in one io_uring_enter, whole or an error (as `wait`'s): the kernel queues one it cut
                // short without its timeout. Its FUTEX_WAITV, handed all the same, is cancelled below.
                result = ring
                    .push(uring::link_timeout_sqe(deadline, TAG_TIMEOUT | user_data))
                    .and_then(|()| ring.submit_whole());
                if result.is_err() {
                    break;
                }
            }
        }
        // The deadline and the lists are read by the kernel during this call (the lists stay in `groups`).
        result = result.and_then(|()| ring.submit());
        let mut lists = lists;
        lists.truncate(pushed);
        if result.is_err() {
            // The chunks the kernel was handed (by a submission before the one that failed, when the SQ filled
            // up or a deadline's chain began) may run: they are cancelled as a wait_any whose caller gave up
            // is (their lists kept until then). The others, and the deadline's timeouts, are withdrawn.
            let handed = ring.handed_since(mark);
            for (list, position) in lists.iter_mut().zip(&positions) {
                if position.wrapping_sub(mark) >= handed {
                    *list = None;
                }
            }
            ring.withdraw_to(mark);
            self.cancel_chunks(ring, id, Group { chunks: lists, direct: false });
            let _ = ring.submit();
        } else {
            self.groups.borrow_mut().insert(id, Group { chunks: lists, direct: mappings });
        }
        result
    }

    /// The completions still to come of the chunks cancelled so far will
    /// read their words through the kernel (see Swallowed): those words may
    /// be unmapped before then. Called after every reap, and before a
    /// finalizer's munmap (which no reap precedes).
    pub fn read_late_words_safely(&self) {
        for swallowed in self.cancelled.borrow_mut().values_mut() {
            if let Swallowed::AnyOf { direct, .. } = swallowed {
                *direct = false;
            }
        }
    }

    /// Cancels the pending `wait_any` `id` (see the module docs).
    pub fn cancel_any(&self, id: u64) {
        let Some(group) = self.groups.borrow_mut().remove(&id) else { return };
        let mut ring = self.ring.borrow_mut();
        let Some(ring) = ring.as_mut() else { return };
        self.cancel_chunks(ring, id, group);
        let _ = ring.submit();
    }

    /// Queues a cancel of each chunk still pending (the caller submits);
    /// each one's list waits in `cancelled` for its completion.
    fn cancel_chunks(&self, ring: &mut Ring, id: u64, group: Group) {
        for user_data in Self::set_aside(&mut self.cancelled.borrow_mut(), id, group) {
            // The list is kept even if the push fails (the entry may still
            // be in the SQ): it must outlive any chance of its submission.
            let _ = ring.push(uring::cancel_sqe(user_data, TAG_CANCEL | user_data));
        }
    }

    /// Moves the lists of the chunks still pending into `cancelled`, so
    /// that their completions, whenever they come (the same reap included),
    /// pass their wakes on; returns their user_data, to cancel.
    fn set_aside(cancelled: &mut HashMap<u64, Swallowed>, id: u64, group: Group) -> Vec<u64> {
        let mut pending = Vec::new();
        for (k, list) in group.chunks.into_iter().enumerate() {
            let Some(list) = list else { continue };
            let user_data = TAG_GROUP | (k as u64) << CHUNK_SHIFT | id;
            cancelled.insert(user_data, Swallowed::AnyOf { list, direct: group.direct });
            pending.push(user_data);
        }
        pending
    }

    /// Keeps the loop alive (or not) through the poll handle.
    pub fn set_ref(&self, want: bool) {
        if want == self.refed.get() || !self.polling.get() {
            return;
        }
        // SAFETY: the handle is live until teardown, which clears `polling` first.
        unsafe { if want { uv::uv_ref(self.handle) } else { uv::uv_unref(self.handle) } };
        self.refed.set(want);
    }

    /// Called from a JS call (futexWaitCancel, munmap) right after
    /// `cancel`: the kernel has usually posted the cancelled waits'
    /// completions by the time the submitting `io_uring_enter` returned
    /// (their task work runs before it does; not when a waker on another
    /// CPU claimed one first), so a wake a cancelled wait swallowed is passed
    /// on now, while its word is still mapped; any other finished wait is
    /// settled too (the poll callback would find the ring empty).
    pub fn deliver_now(&self, env: Env) {
        self.reap_and(|done| (self.deliver)(env, done));
    }

    /// Before the munmap of `[start, start + len)`, after deliver_now: a
    /// cancelled wait on a word there whose completion has not come yet (a
    /// wake on another CPU claimed it just before its cancel, and its task
    /// work is not queued yet) may hold a wake, which its completion would
    /// pass on only after the munmap, where a FUTEX_WAKE finds nobody. A
    /// word that moved is passed on now, while it is mapped; the later one
    /// is at worst spurious.
    pub fn pass_on_moved_in_range(&self, start: usize, len: usize) {
        for swallowed in self.cancelled.borrow().values() {
            if let Swallowed::Word { word, expected } = *swallowed
                && word.wrapping_sub(start) < len
            {
                // SeqCst: observes the publisher's store, made before its wake. SAFETY: the caller's mapping,
                // not unmapped yet; an aligned u32 (a wait's word).
                let now = unsafe { &*(word as *const AtomicU32) }.load(Ordering::SeqCst);
                if now != expected {
                    // SAFETY: the kernel only hashes the address.
                    let _ = unsafe { sys::wake(word, 1) };
                }
            }
        }
    }

    /// Closes the ring at the env's teardown (env_cleanup), once every wait
    /// left was stopped: their cancels are in, so no entry of ours sleeps
    /// on a futex any more. Their completions are reaped first, so that a
    /// wake one had taken (woken just before, its completion not yet
    /// delivered) is passed on to the word's next sleeper; nothing is
    /// delivered (no JS runs now). The words are read through the kernel
    /// only: a finalizer may have unmapped them.
    pub fn close_ring(&self) {
        self.read_late_words_safely();
        for group in self.groups.borrow_mut().values_mut() {
            group.direct = false;
        }
        if let Some(ring) = self.ring.borrow_mut().as_mut() {
            ring.get_events(); // the cancels' and the wakes' task work: their completions
        }
        let mut dropped = Vec::new();
        while self.completions(&mut dropped) {}
        drop(self.ring.borrow_mut().take()); // closes the fd
        self.cancelled.borrow_mut().clear();
        self.groups.borrow_mut().clear();
    }

    /// Reaps the ring, turns its completions into finished waits and, if
    /// there are any, hands them to `f`. The buffers are taken out of their
    /// cells meanwhile, so `f` may reach the reactor again.
    fn reap_and(&self, f: impl FnOnce(&[Completion])) {
        let mut done = std::mem::take(&mut *self.done.borrow_mut());
        // A wait_any that ends cancels its other chunks: their completions
        // (each may pass a swallowed wake on) are reaped before `f` runs,
        // while the words are most likely still mapped.
        while self.completions(&mut done) {}
        // What is still to come may come after its wait let go of its words.
        self.read_late_words_safely();
        if !done.is_empty() {
            f(&done);
        }
        done.clear();
        *self.done.borrow_mut() = done;
    }

    /// Reaps the ring and appends its finished waits to `done`. True when
    /// it cancelled chunks of a wait_any that ended (reap again).
    fn completions(&self, done: &mut Vec<Completion>) -> bool {
        let mut raw = std::mem::take(&mut *self.scratch.borrow_mut());
        if let Some(ring) = self.ring.borrow_mut().as_mut() {
            ring.reap(&mut raw);
        }
        // Chunks of wait_anys that ended in this reap, to cancel.
        let mut to_cancel: Vec<u64> = Vec::new();
        {
            let mut cancelled = self.cancelled.borrow_mut();
            for &(user_data, res) in &raw {
                if user_data & (TAG_TIMEOUT | TAG_CANCEL) != 0 {
                    continue;
                }
                // Most callbacks have no cancelled wait: skip hashing the id.
                let swallowed = if cancelled.is_empty() { None } else { cancelled.remove(&user_data) };
                if let Some(swallowed) = swallowed {
                    // Woken before the cancel took: pass the wake on. The
                    // word may be unmapped by now; FUTEX_WAKE then fails
                    // with EFAULT and touches nothing.
                    let word = match swallowed {
                        Swallowed::Word { word, .. } => (res == 0).then_some(word),
                        Swallowed::AnyOf { list, direct } => {
                            let woken = usize::try_from(res).ok().filter(|&i| i < list.len());
                            // The entry is off every futex queue now. SAFETY: `direct` (see Swallowed).
                            unsafe { pass_on_changed(&list, woken, direct) };
                            woken.map(|i| list[i].uaddr as usize)
                        }
                    };
                    if let Some(word) = word {
                        // SAFETY: the kernel only hashes the address.
                        let _ = unsafe { sys::wake(word, 1) };
                    }
                    continue;
                }
                if user_data & TAG_GROUP != 0 {
                    let id = user_data & ID_MASK;
                    let k = ((user_data & !TAG_GROUP) >> CHUNK_SHIFT) as usize;
                    let Some(mut group) = self.groups.borrow_mut().remove(&id) else { continue };
                    // This chunk is over: nothing of it to cancel. Its other words may have met wakes meant for
                    // other sleepers after it was claimed (see Swallowed): pass those on. SAFETY: `direct` means
                    // mapped here: the wait is registered (it was in `groups`), holding its buffers.
                    if let Some(list) = group.chunks.get_mut(k).and_then(Option::take) {
                        unsafe { pass_on_changed(&list, usize::try_from(res).ok(), group.direct) };
                    }
                    let base = (k * libc::FUTEX_WAITV_MAX) as u32;
                    let outcome = match res {
                        r if r >= 0 => Ok(base + r as u32),
                        r if r == -libc::EAGAIN => Ok(ANY_NOT_EQUAL),
                        r if r == -libc::ECANCELED => Ok(ANY_TIMED_OUT),
                        r if r == -libc::EINTR => Ok(base), // a spurious wake-up: callers re-check
                        r => Err(SysError { errno: -r, syscall: "io_uring FUTEX_WAITV" }),
                    };
                    done.push((id, outcome));
                    // The other chunks' completions, later in this reap or in the next, find their lists set aside.
                    to_cancel.extend(Self::set_aside(&mut cancelled, id, group));
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
        }
        raw.clear();
        *self.scratch.borrow_mut() = raw;
        if to_cancel.is_empty() {
            return false;
        }
        let mut ring = self.ring.borrow_mut();
        let Some(ring) = ring.as_mut() else { return false };
        for user_data in to_cancel {
            let _ = ring.push(uring::cancel_sqe(user_data, TAG_CANCEL | user_data));
        }
        ring.submit().is_ok()
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
        // The ring stays open until env_cleanup has stopped the waits left and passed on what they
        // took (close_ring): only the handle goes now.
        reactor.polling.set(false);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn pass_on_changed_wakes_a_sleeper_of_each_changed_word_but_the_one_named() {
        pass_on_changed_case(true);
        let probe = AtomicU32::new(1);
        if sys::read_words(&[probe.as_ptr() as usize], &mut [0]) == 1 {
            pass_on_changed_case(false); // (where process_vm_readv is refused, only the direct loads pass wakes on)
        }
    }

    /// `direct`: the words loaded, else read through process_vm_readv.
    fn pass_on_changed_case(direct: bool) {
        let words: Arc<[AtomicU32]> = (0..3).map(|_| AtomicU32::new(1)).collect();
        let list: Vec<futex_waitv> = words
            .iter()
            .map(|w| futex_waitv { val: 1, uaddr: w.as_ptr() as u64, flags: libc::FUTEX2_SIZE_U32, reserved: 0 })
            .collect();
        // Words 1 and 2 changed (a publisher's stores); word 0 did not. A thread sleeps on each, with a deadline.
        words[1].store(2, Ordering::SeqCst);
        words[2].store(2, Ordering::SeqCst);
        let sleeper = |i: usize, ms: f64| {
            let words = Arc::clone(&words);
            std::thread::spawn(move || {
                let deadline = sys::deadline_after(ms).expect("finite");
                let now = words[i].load(Ordering::SeqCst);
                // SAFETY: `words` is held by this thread for the whole wait.
                unsafe { sys::wait_until(words[i].as_ptr() as usize, now, Some(&deadline), || false) }.expect("futex")
            })
        };
        let (zero, one, two) = (sleeper(0, 500.0), sleeper(1, 5000.0), sleeper(2, 500.0));
        // Until word 1's sleeper is woken (it may not be asleep yet at the first call): never words 0 and 2.
        for _ in 0..250 {
            // SAFETY: every word lives in `words`, held here.
            unsafe { pass_on_changed(&list, Some(2), direct) };
            if one.is_finished() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(one.join().expect("join"), WOKEN, "the changed word's sleeper was not woken (direct: {direct})");
        assert_eq!(zero.join().expect("join"), TIMED_OUT, "a word that did not change was woken");
        assert_eq!(two.join().expect("join"), TIMED_OUT, "the word named (its wake already reported) was woken again");
    }
}
