//! The futex_waitv fallback of the async wait (Linux >= 5.16), for where
//! the io_uring reactor is refused (container seccomp profiles,
//! `kernel.io_uring_disabled`, Linux < 6.7), or forced with
//! `SHMRING_ASYNC_WAIT=futex_waitv`.
//!
//! One *lane* is one thread blocked in `futex_waitv` on its control word
//! and up to `LANE_WAITS` words of pending waits; the process keeps as few
//! lanes as the pending waits need (one up to 127 waits), shared by every
//! env, instead of a thread per wait. Finished waits go back to their env
//! through its threadsafe function (delivery.rs).
//!
//! Invariants:
//!  - a lane's thread reads a wait's word from user space only while it
//!    holds the lane's lock and the wait is in the lane's list; `stop`
//!    removes the wait under that lock, so once `stop` returns, the word
//!    may be unmapped (the kernel reading an unmapped word in a later
//!    futex_waitv fails it with EFAULT, which the thread treats as "rebuild
//!    the list"). It loads the word itself only when it is `direct`, in a
//!    mapping of ours (memory::is_mapping), whose munmap stops its waits
//!    first; any other (a plain ArrayBuffer's, which can be transferred away
//!    or shrunk while its wait is listed) is read through the kernel
//!    (sys::read_words), where memory gone is an error, not a SIGSEGV;
//!  - whoever changes a lane's list bumps the control word and wakes it,
//!    after the change, so the thread's next futex_waitv either sees the new
//!    control value (EAGAIN) or is woken: it never sleeps on a stale list;
//!  - a wake that reaches a wait which was stopped meanwhile, or ends a
//!    wait that is stopped before JS saw its result, is passed on (one more
//!    FUTEX_WAKE on its word): it may have been meant for another waiter.
//!
//! Limit: while a lane's thread is between two futex_waitv calls (settling
//! what finished, taking a new list) it is not in the kernel, and a
//! FUTEX_WAKE that does not change the word finds nobody there. A wake
//! that follows a change of the word is never lost: the thread compares
//! every word with its expected value before it sleeps again. shmring's
//! protocols always change the word before they wake (docs/LAYOUT.md,
//! "Waiting"), as futex users should.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::delivery::Delivery;
use crate::libc::{self, SysError, timespec};
use crate::sys::{self, AnyOutcome, TIMED_OUT, WOKEN};

/// Waits per lane: futex_waitv's limit, less the control word.
const LANE_WAITS: usize = libc::FUTEX_WAITV_MAX - 1;
/// How long a lane with nothing to wait for stays before its thread exits.
const IDLE_RETIRE: Duration = Duration::from_secs(30);
const STACK_SIZE: usize = 128 * 1024;

/// One pending wait handed to a lane.
pub struct LaneWait {
    pub id: u64,
    pub word: usize,
    pub expected: u32,
    pub deadline: Option<timespec>,
    /// The word is in a mapping of ours (see the invariants): the lane's thread may load it directly.
    direct: bool,
    delivery: Arc<Delivery>,
    /// The lane holding it, set by `submit`.
    lane: Mutex<Option<Arc<Lane>>>,
    /// Set by the lane's thread, under the lane's lock, when this wait
    /// finished 'ok' (a FUTEX_WAKE reported for it, or its word moved): it
    /// may hold a wake that stop() passes on.
    woken: AtomicBool,
}

struct Lane {
    /// Bumped (and woken) whenever the list changes.
    control: AtomicU32,
    waits: Mutex<Vec<Arc<LaneWait>>>,
}

/// Every live lane. Lock order: LANES, then a lane's `waits`.
static LANES: Mutex<Vec<Arc<Lane>>> = Mutex::new(Vec::new());

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Lane {
    /// Tells the thread its list changed.
    fn poke(&self) {
        // SeqCst: the change to the list (under the lock, released before)
        // happens before this bump; the thread's snapshot of the control
        // word is taken under the same lock, so it either saw the change or
        // sleeps on the old value, which this bump makes stale.
        self.control.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the control word lives as long as the Arc<Lane>.
        let _ = unsafe { sys::wake(self.control.as_ptr() as usize, 1) };
    }
}

/// Whether futex_waitv exists here (Linux >= 5.16): a word that does not
/// hold the expected value fails it with EAGAIN, an old kernel with ENOSYS.
pub fn available() -> bool {
    let word = AtomicU32::new(1);
    // SAFETY: the word lives on this frame for the call.
    matches!(unsafe { sys::waitv(&[(word.as_ptr() as usize, 0)], None) }, Ok(AnyOutcome::NotEqual))
}

impl LaneWait {
    pub fn new(
        id: u64,
        word: usize,
        expected: u32,
        deadline: Option<timespec>,
        direct: bool,
        delivery: Arc<Delivery>,
    ) -> Self {
        LaneWait {
            id,
            word,
            expected,
            deadline,
            direct,
            delivery,
            lane: Mutex::new(None),
            woken: AtomicBool::new(false),
        }
    }

    /// The word's value now (SeqCst): loaded directly if it is `direct`, else read through the kernel (see the
    /// invariants); a word whose memory is gone reads as moved (its wait ends 'ok', its caller re-checks and
    /// finds its view gone). None where the kernel refuses the read (a seccomp profile): nothing is known.
    fn current(&self) -> Option<u32> {
        if self.direct {
            // SeqCst: observes the publisher's store, made before its wake. SAFETY: a mapping of ours, and the
            // caller holds the lane's lock with the wait listed (or is stop(), whose caller still holds the
            // buffer): mapped.
            return Some(unsafe { &*(self.word as *const AtomicU32) }.load(Ordering::SeqCst));
        }
        match sys::read_word(self.word) {
            Ok(value) => Some(value),
            Err(libc::EFAULT) => Some(!self.expected),
            Err(_) => None,
        }
    }

    /// Takes the wait out of its lane: when this returns, the lane's thread
    /// no longer touches the word. Called on the JS thread.
    pub fn stop(self: &Arc<Self>) {
        let lane = lock(&self.lane).clone();
        let Some(lane) = lane else { return };
        let (removed, woken) = {
            let mut waits = lock(&lane.waits);
            let before = waits.len();
            waits.retain(|w| !Arc::ptr_eq(w, self));
            // Relaxed: written under the same lock.
            (waits.len() != before, self.woken.load(Ordering::Relaxed))
        };
        if removed {
            lane.poke();
            // A publisher may have woken this wait's entry in the lane's futex_waitv an instant ago, before
            // the lane's thread looked: that thread would pass the wake on only later, maybe after our
            // caller unmapped the word (munmap, teardown), where a FUTEX_WAKE finds nobody. A word that
            // moved is passed on now, while it is mapped; a second wake later is at worst spurious.
            // SeqCst: observes the publisher's store, made before its wake. Not known (reads refused): left to
            // the lane's thread, as before.
            if self.current().is_some_and(|now| now != self.expected) {
                // SAFETY: the kernel only hashes the address.
                let _ = unsafe { sys::wake(self.word, 1) };
            }
        } else if woken {
            // Finished by a wake whose result JS will now never see: the
            // wake may have been meant for another waiter of the word.
            // SAFETY: the word is mapped (the caller still holds the buffer).
            let _ = unsafe { sys::wake(self.word, 1) };
        }
    }
}

/// Hands `wait` to a lane with room, or to a new lane (and thread).
pub fn submit(wait: Arc<LaneWait>) -> Result<(), SysError> {
    let mut lanes = lock(&LANES);
    for lane in lanes.iter() {
        let mut waits = lock(&lane.waits);
        if waits.len() < LANE_WAITS {
            *lock(&wait.lane) = Some(Arc::clone(lane));
            waits.push(wait);
            drop(waits);
            lane.poke();
            return Ok(());
        }
    }
    let lane = Arc::new(Lane { control: AtomicU32::new(0), waits: Mutex::new(vec![Arc::clone(&wait)]) });
    *lock(&wait.lane) = Some(Arc::clone(&lane));
    let runner = Arc::clone(&lane);
    std::thread::Builder::new()
        .name("shm-sys-waitv".into())
        .stack_size(STACK_SIZE)
        .spawn(move || {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&runner)));
        })
        .map_err(|err| SysError { errno: err.raw_os_error().unwrap_or(libc::EAGAIN), syscall: "pthread_create" })?;
    lanes.push(lane);
    Ok(())
}

fn before(a: &timespec, b: &timespec) -> bool {
    (a.tv_sec, a.tv_nsec) < (b.tv_sec, b.tv_nsec)
}

/// A lane's thread: wait on the control word and the list, settle what
/// finished, repeat; exit after IDLE_RETIRE with an empty list.
fn run(lane: &Arc<Lane>) {
    let control = lane.control.as_ptr() as usize;
    loop {
        // The snapshot: what to wait on, taken under the lock (see the
        // invariants).
        let (words, snapshot, deadline) = {
            let waits = lock(&lane.waits);
            // SeqCst: pairs with poke()'s bump (see there).
            let seen = lane.control.load(Ordering::SeqCst);
            if waits.is_empty() {
                drop(waits);
                if retire_if_idle(lane, seen) {
                    return;
                }
                continue;
            }
            let mut words = Vec::with_capacity(waits.len() + 1);
            words.push((control, seen));
            let mut deadline: Option<timespec> = None;
            for w in waits.iter() {
                words.push((w.word, w.expected));
                if let Some(d) = w.deadline
                    && deadline.is_none_or(|cur| before(&d, &cur))
                {
                    deadline = Some(d);
                }
            }
            (words, waits.clone(), deadline)
        };
        // SAFETY: the kernel reads the words; an unmapped one fails the call
        // with EFAULT (handled below), it cannot fault this thread.
        let outcome = unsafe { sys::waitv(&words, deadline.as_ref()) };
        let woken = match outcome {
            Ok(AnyOutcome::Woken(index)) if index > 0 => Some(&snapshot[index - 1]),
            _ => None,
        };
        let now = libc::monotonic_now();
        let mut finished = Vec::new();
        let mut forward = None;
        {
            let mut waits = lock(&lane.waits);
            if let Some(w) = woken
                && !waits.iter().any(|x| Arc::ptr_eq(x, w))
            {
                forward = Some(w.word);
            }
            waits.retain(|w| {
                // The wait is in the list, under the lock (see the invariants). SeqCst: observes the store
                // that made the word move on. Reads refused (a seccomp profile): loaded as before, since a
                // moved word never seen to move would spin the lane (futex_waitv fails at once); only a
                // buffer transferred away or shrunk meanwhile could fault then.
                let value = w.current().unwrap_or_else(|| {
                    // SAFETY: listed, under the lock (see the invariants); the caller's buffer.
                    unsafe { &*(w.word as *const AtomicU32) }.load(Ordering::SeqCst)
                });
                let moved = value != w.expected;
                let by_wake = woken.is_some_and(|x| Arc::ptr_eq(x, w));
                if by_wake || moved {
                    // Finished 'ok': it may hold a wake (the one reported, or one a publisher of its
                    // moved word counted while this call was being woken by another), which stop()
                    // passes on if JS never hears of it. Relaxed: read by stop() under the same lock.
                    w.woken.store(true, Ordering::Relaxed);
                }
                let result = if moved || by_wake {
                    Some(WOKEN)
                } else if w.deadline.is_some_and(|d| !before(&now, &d)) {
                    Some(TIMED_OUT)
                } else {
                    None
                };
                match result {
                    Some(r) => {
                        finished.push((Arc::clone(w), Ok(r)));
                        false
                    }
                    None => true,
                }
            });
            if let Err(err) = outcome
                && err.errno != libc::EFAULT
            {
                // Not a stale word: nothing in this list can be waited on.
                for w in waits.drain(..) {
                    finished.push((w, Err(err)));
                }
            }
        }
        if let Some(word) = forward {
            // SAFETY: the kernel only hashes the address (EFAULT if gone).
            let _ = unsafe { sys::wake(word, 1) };
        }
        for (w, result) in finished {
            w.delivery.send((w.id, result));
        }
    }
}

/// Waits on the control word of an empty lane; true when the lane retired
/// (it is out of LANES and its thread must return).
fn retire_if_idle(lane: &Arc<Lane>, seen: u32) -> bool {
    let deadline = sys::deadline_after(IDLE_RETIRE.as_millis() as f64);
    // SAFETY: the control word lives with the lane.
    let outcome = unsafe { sys::waitv(&[(lane.control.as_ptr() as usize, seen)], deadline.as_ref()) };
    if outcome != Ok(AnyOutcome::TimedOut) {
        return false;
    }
    let mut lanes = lock(&LANES);
    if !lock(&lane.waits).is_empty() {
        return false;
    }
    lanes.retain(|l| !Arc::ptr_eq(l, lane));
    true
}
