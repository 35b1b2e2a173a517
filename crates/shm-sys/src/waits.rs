//! The registry of one env's pending async waits (`futexWaitAsync`), keyed
//! by the id index.cjs gives each. Owned by the env's state (env.rs); used
//! only on the env's JS thread. A `RefCell` borrow is never held across a
//! Node-API call that could run JS: entries are taken out first, then
//! settled.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

use crate::lanes::LaneWait;
use crate::libc::SysError;
use crate::napi::{self, Env, napi_deferred, napi_ref};
use crate::pool::Wait;
use crate::reactor::Reactor;
use crate::sys::{self, WOKEN};

/// Who waits in the kernel on behalf of a pending wait.
pub enum Waiter {
    /// A FUTEX_WAIT entry of the env's io_uring, and the value its word was expected to hold.
    Ring(u32),
    /// FUTEX_WAITV entries of the env's io_uring (`futexWaitAnyStart`): the
    /// words, whose first is also `PendingWait::word`.
    RingAny(Box<[usize]>),
    /// A futex_waitv lane.
    Lane(Arc<LaneWait>),
    /// A thread of the pool.
    Thread(Arc<Wait>),
}

/// The JS-thread half of a pending `futexWaitAsync`.
pub struct PendingWait {
    /// Address of the futex word (the first, for a wait on several).
    pub word: usize,
    /// Settles the promise returned to JS.
    pub deferred: napi_deferred,
    /// Keeps the buffer (and so the mapping) alive while the wait pends:
    /// the buffer, or for a wait on several words the list that holds theirs.
    pub buffer_ref: napi_ref,
    pub waiter: Waiter,
    /// The wait keeps the event loop alive while it pends (`ref`; false:
    /// like an unref'd timer, it lets the process exit).
    pub keeps_alive: bool,
}

impl PendingWait {
    /// Whether the wait is on a word in `[start, start + len)`.
    fn waits_in(&self, start: usize, len: usize) -> bool {
        match &self.waiter {
            Waiter::RingAny(words) => words.iter().any(|w| w.wrapping_sub(start) < len),
            _ => self.word.wrapping_sub(start) < len,
        }
    }

    /// Hands the wake `outcome` carries (woken: 0; for a wait on several
    /// words, the index of the one woken) to the word's next sleeper: for an
    /// outcome its promise could not deliver (the env is being torn down, so
    /// no JS will ever hear of it). A publisher that woke one waiter may have
    /// picked this one instead of a live sleeper in another thread or process.
    /// A cancelled wait on several words settles with 0 too: at worst its
    /// first word's next sleeper wakes for nothing and re-checks.
    fn pass_on(&self, outcome: Result<u32, SysError>) {
        let word = match (&self.waiter, outcome) {
            (Waiter::RingAny(words), Ok(index)) => words.get(index as usize).copied(),
            (_, Ok(WOKEN)) => Some(self.word),
            _ => None,
        };
        if let Some(word) = word {
            // SAFETY: the kernel only hashes the address (an unmapped one fails with EFAULT).
            let _ = unsafe { sys::wake(word, 1) };
        }
    }

    /// Makes sure nothing waits on the word for this entry any more (the
    /// word may be unmapped after this); does not settle the promise.
    pub fn stop(&self, id: u64, reactor: Option<&Reactor>) {
        match &self.waiter {
            Waiter::Ring(expected) => {
                if let Some(reactor) = reactor {
                    reactor.cancel(id, self.word, *expected);
                }
            }
            Waiter::RingAny(_) => {
                if let Some(reactor) = reactor {
                    reactor.cancel_any(id);
                }
            }
            Waiter::Lane(wait) => wait.stop(),
            Waiter::Thread(wait) => wait.stop(),
        }
    }
}

#[derive(Default)]
pub struct Registry {
    map: RefCell<HashMap<u64, PendingWait>>,
    /// How many entries of `map` keep the loop alive (kept with the map, so
    /// the loop's ref is decided without a walk over the waits).
    alive: Cell<usize>,
}

impl Registry {
    pub fn contains(&self, id: u64) -> bool {
        self.map.borrow().contains_key(&id)
    }

    /// At least one pending wait keeps the event loop alive.
    pub fn keeps_loop_alive(&self) -> bool {
        self.alive.get() > 0
    }

    pub fn insert(&self, id: u64, pending: PendingWait) {
        if pending.keeps_alive {
            self.alive.set(self.alive.get() + 1);
        }
        self.map.borrow_mut().insert(id, pending);
    }

    pub fn take(&self, id: u64) -> Option<PendingWait> {
        let taken = self.map.borrow_mut().remove(&id);
        self.forget(taken.as_ref());
        taken
    }

    /// An entry left the map: it no longer counts toward `alive`.
    fn forget(&self, taken: Option<&PendingWait>) {
        if taken.is_some_and(|p| p.keeps_alive) {
            self.alive.set(self.alive.get() - 1);
        }
    }

    /// Takes every entry whose word lies in `[start, start + len)`.
    pub fn take_in_range(&self, start: usize, len: usize) -> Vec<(u64, PendingWait)> {
        let Ok(mut map) = self.map.try_borrow_mut() else { return Vec::new() };
        let ids: Vec<u64> = map.iter().filter(|(_, p)| p.waits_in(start, len)).map(|(id, _)| *id).collect();
        let taken: Vec<(u64, PendingWait)> =
            ids.into_iter().filter_map(|id| map.remove(&id).map(|p| (id, p))).collect();
        for (_, pending) in &taken {
            self.forget(Some(pending));
        }
        taken
    }

    /// Stops (without settling) the waits on words in the range: before a
    /// finalizer's munmap (after GC, or at env teardown).
    /// True if it stopped any.
    pub fn stop_in_range(&self, start: usize, len: usize, reactor: Option<&Reactor>) -> bool {
        let Ok(map) = self.map.try_borrow() else { return false };
        let mut stopped = false;
        for (id, pending) in map.iter().filter(|(_, p)| p.waits_in(start, len)) {
            pending.stop(*id, reactor);
            stopped = true;
        }
        stopped
    }

    /// Takes every entry (env teardown).
    pub fn drain(&self) -> Vec<(u64, PendingWait)> {
        self.alive.set(0);
        self.map.borrow_mut().drain().collect()
    }
}

/// Settles a pending wait (already taken out of the registry) and drops its
/// buffer reference. Failures are ignored: there is no JS caller to report
/// them to; but a wake the outcome carries is passed on when the promise
/// cannot take it (JS can no longer run: the env's teardown delivers what
/// its last turn of the loop reaps).
pub fn settle(env: Env, pending: PendingWait, outcome: Result<u32, SysError>) {
    if !settle_parts(env, pending.deferred, pending.buffer_ref, outcome) {
        pending.pass_on(outcome);
    }
}

/// [`settle`] for a wait that never got a waiter (its start failed): the
/// promise and the buffer reference alone. True when the promise was settled.
pub fn settle_parts(env: Env, deferred: napi_deferred, buffer_ref: napi_ref, outcome: Result<u32, SysError>) -> bool {
    // A wait on several words settles with an index, or -1 / -2 (reactor::ANY_*): as i32.
    let value = match outcome {
        Ok(result) => env.int32(result as i32),
        Err(err) => env.sys_error(err),
    };
    let settled = value.is_ok_and(|value| {
        // SAFETY: the deferred is settled exactly once: the caller owns it
        // (taken out of the registry, or never put in).
        let st = unsafe {
            if outcome.is_ok() {
                napi::napi_resolve_deferred(env.0, deferred, value)
            } else {
                napi::napi_reject_deferred(env.0, deferred, value)
            }
        };
        st == napi::NAPI_OK // napi_pending_exception where JS can no longer run
    });
    // SAFETY: the reference belongs to this env and is deleted once.
    unsafe { napi::napi_delete_reference(env.0, buffer_ref) };
    settled
}
