//! The last resort of `futexWaitAsync`, where neither the event-loop
//! reactor (reactor.rs, io_uring, Linux >= 6.7) nor the futex_waitv lanes
//! (lanes.rs, Linux >= 5.16) are available, or `SHMRING_ASYNC_WAIT=threads`
//! forces it: one thread per pending wait, delivering through the env's
//! threadsafe function.
//!
//! A futex wait blocks its thread, so an async wait needs a thread of its
//! own. It must not be one of libuv's threadpool (four threads shared with
//! fs, dns and zlib: four pending waits would starve them), and spawning a
//! thread per wait costs tens of microseconds, as much as the wake-up itself.
//! So the process keeps a pool of waiter threads shared by every env:
//!
//!  - an idle thread parks on its own `Condvar` and sits on the `IDLE` stack;
//!    [`submit`] pops the most recently parked one (its stack and caches are
//!    warm), hands it the [`Wait`] and notifies it, or spawns a new thread
//!    when none is idle, so the pool grows to the number of concurrent waits;
//!  - a thread idle for [`IDLE_RETIRE`] leaves the stack and exits;
//!  - the thread runs the wait (futex.rs), publishes the outcome, then hands
//!    the outcome to the env's threadsafe function (delivery.rs), whose
//!    `call_js` settles the promise on the JS thread (futex.rs).
//!
//! Cancellation ([`Wait::stop`]) sets a flag and FUTEX_WAKEs the word until
//! the thread says it is done, so when `stop` returns the thread will never
//! touch the word again (the word may then be unmapped).

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::delivery::Delivery;
use crate::libc::{SysError, timespec};
use crate::sys;

/// How long an idle waiter thread stays parked before it exits.
const IDLE_RETIRE: Duration = Duration::from_secs(30);
/// Waiter threads only make futex calls: a small stack is plenty.
const STACK_SIZE: usize = 128 * 1024;

/// `Wait::state` bits.
const STARTED: u32 = 1; // a thread took the wait and may be in FUTEX_WAIT
const DONE: u32 = 2; // the thread finished and will not touch the word again
const CANCELLED: u32 = 4; // stop() was called

/// One asynchronous wait, shared by the JS thread and a waiter thread.
pub struct Wait {
    /// The id index.cjs gave it (key of `EnvState::waits`).
    pub id: u64,
    /// Address of the 32-bit futex word (4-aligned, inside a buffer the JS
    /// side keeps referenced until the wait is settled or stopped).
    pub word: usize,
    pub expected: u32,
    /// Absolute CLOCK_MONOTONIC deadline, `None` for no timeout.
    pub deadline: Option<timespec>,
    /// STARTED | DONE | CANCELLED.
    state: AtomicU32,
    /// 0 / 1 / 2 as in futexWait, or -errno; valid once DONE is set. Read
    /// only by stop(), to pass on a wake nobody will see.
    outcome: AtomicI32,
    /// Where to send the finished wait.
    delivery: Arc<Delivery>,
}

impl Wait {
    pub fn new(id: u64, word: usize, expected: u32, deadline: Option<timespec>, delivery: Arc<Delivery>) -> Self {
        Wait { id, word, expected, deadline, state: AtomicU32::new(0), outcome: AtomicI32::new(0), delivery }
    }

    /// Cancels the wait and returns once the waiter thread will no longer
    /// touch the word: either it had not started (it will see CANCELLED and
    /// skip the wait) or it has set DONE. FUTEX_WAKE is repeated because the
    /// thread may be between its CANCELLED check and the futex call; each
    /// wake may also wake other waiters on the word (they re-check).
    /// Called on the JS thread while the word is still mapped.
    pub fn stop(&self) {
        // AcqRel: the RMW orders this cancel against the thread's
        // compare_exchange(0 -> STARTED) on the same word: exactly one of
        // them sees the other.
        let before = self.state.fetch_or(CANCELLED, Ordering::AcqRel);
        if before & DONE != 0 {
            // The thread already returned. If a FUTEX_WAKE of one waiter
            // ended its wait, that wake may have been meant for a waiter
            // still asleep on the word: pass it on.
            // Relaxed: ordered by the AcqRel fetch_or above, which read the
            // DONE published with Release after the outcome.
            if self.outcome.load(Ordering::Relaxed) == sys::WOKEN as i32 {
                // SAFETY: the word is mapped (caller contract).
                let _ = unsafe { sys::wake(self.word, 1) };
            }
            return;
        }
        if before & STARTED == 0 {
            return;
        }
        let mut round = 0u32;
        loop {
            // SAFETY: the word is mapped (caller contract: the buffer is
            // still referenced / not yet unmapped).
            let _ = unsafe { sys::wake(self.word, i32::MAX) };
            for _ in 0..64 {
                // Acquire: pairs with the Release fetch_or(DONE) in run().
                if self.state.load(Ordering::Acquire) & DONE != 0 {
                    return;
                }
                std::thread::yield_now();
            }
            round += 1;
            if round > 4 {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    /// Runs the wait on the current (waiter) thread, then delivers it.
    fn run(self: Arc<Self>) {
        /// Sets DONE even if the wait panics, so stop() never spins forever.
        struct Finish<'a>(&'a Wait);
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                // Release: publishes `outcome` to stop().
                self.0.state.fetch_or(DONE, Ordering::Release);
            }
        }
        let result = {
            let finish = Finish(&self);
            // AcqRel: see stop(); fails if CANCELLED was set first.
            let started = self.state.compare_exchange(0, STARTED, Ordering::AcqRel, Ordering::Acquire).is_ok();
            let result = if started {
                // Acquire: observes the flag set by stop()'s fetch_or.
                let cancelled = || self.state.load(Ordering::Acquire) & CANCELLED != 0;
                // SAFETY: the JS side keeps the buffer referenced, hence the
                // word mapped, until this wait is DONE or stopped (and stop
                // returns only after DONE).
                unsafe { sys::wait_until(self.word, self.expected, self.deadline.as_ref(), cancelled) }
            } else {
                Ok(sys::WOKEN)
            };
            let outcome = match result {
                Ok(n) => n as i32,
                Err(err) => -err.errno,
            };
            // Relaxed: published by the Release in Finish::drop.
            self.outcome.store(outcome, Ordering::Relaxed);
            drop(finish);
            result
        };
        self.delivery.send((self.id, result));
    }
}

/// An idle waiter thread's parking spot.
struct Worker {
    slot: Mutex<Option<Arc<Wait>>>,
    wakeup: Condvar,
}

/// Parked workers, most recently parked last. Lock order: never hold IDLE
/// while locking a worker's slot from `submit`; a worker may lock IDLE while
/// holding its own slot (only when retiring).
static IDLE: Mutex<VecDeque<Arc<Worker>>> = Mutex::new(VecDeque::new());

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Hands `wait` to an idle waiter thread, or to a new one.
pub fn submit(wait: Arc<Wait>) -> Result<(), SysError> {
    let idle = lock(&IDLE).pop_back();
    if let Some(worker) = idle {
        *lock(&worker.slot) = Some(wait);
        worker.wakeup.notify_one();
        return Ok(());
    }
    let worker = Arc::new(Worker { slot: Mutex::new(None), wakeup: Condvar::new() });
    std::thread::Builder::new()
        .name("shm-sys-wait".into())
        .stack_size(STACK_SIZE)
        .spawn(move || worker_main(worker, wait))
        .map(|_| ())
        .map_err(|err| SysError { errno: err.raw_os_error().unwrap_or(crate::libc::EAGAIN), syscall: "pthread_create" })
}

fn worker_main(me: Arc<Worker>, first: Arc<Wait>) {
    let mut next = Some(first);
    while let Some(wait) = next {
        // A panic here is a bug; it must not take the process down with it.
        let _ = catch_unwind(AssertUnwindSafe(|| wait.run()));
        next = park(&me);
    }
}

/// Parks until a wait is handed over; `None` when the thread should exit.
fn park(me: &Arc<Worker>) -> Option<Arc<Wait>> {
    lock(&IDLE).push_back(Arc::clone(me));
    let mut slot = lock(&me.slot);
    loop {
        if let Some(wait) = slot.take() {
            return Some(wait);
        }
        let (guard, timeout) = me.wakeup.wait_timeout(slot, IDLE_RETIRE).unwrap_or_else(|p| p.into_inner());
        slot = guard;
        if timeout.timed_out() && slot.is_none() {
            let mut idle = lock(&IDLE);
            if let Some(at) = idle.iter().position(|w| Arc::ptr_eq(w, me)) {
                idle.remove(at);
                return None;
            }
            // A submitter already popped this worker: its wait is on the way.
        }
    }
}
