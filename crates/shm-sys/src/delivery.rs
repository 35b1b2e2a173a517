//! How waiter threads (pool.rs, lanes.rs) hand finished waits back to one
//! env: its threadsafe function, present from the first threaded async wait
//! until the env tears down. A thread sends a boxed [`Completion`]; the
//! env's `call_js` (futex.rs) settles the wait with that id, if it is still
//! pending, on the JS thread.
//!
//! Waiter threads call the function only while holding the lock, and
//! teardown removes it under the same lock before releasing it, so no call
//! can reach a released function.

use std::ffi::c_void;
use std::sync::{Mutex, MutexGuard};

use crate::libc::SysError;
use crate::napi::{self, napi_threadsafe_function};

/// A finished wait: its id and outcome (0 / 1 / 2; for a wait on several
/// words the index woken, or reactor::ANY_NOT_EQUAL / ANY_TIMED_OUT, the
/// bits of -1 / -2: settled as an i32), or the error.
pub type Completion = (u64, Result<u32, SysError>);

/// A threadsafe function handle that may be sent to waiter threads.
pub struct Tsfn(pub napi_threadsafe_function);

// SAFETY: napi_call_threadsafe_function may be called from any thread; the
// handle is only used while `Delivery::tsfn` holds it.
unsafe impl Send for Tsfn {}

pub struct Delivery {
    pub tsfn: Mutex<Option<Tsfn>>,
}

impl Delivery {
    pub fn new() -> Self {
        Delivery { tsfn: Mutex::new(None) }
    }

    /// Locks the handle; a poisoned lock is still usable (the data is a
    /// plain handle that a panic cannot leave half-written).
    pub fn lock(&self) -> MutexGuard<'_, Option<Tsfn>> {
        self.tsfn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `completion` for the env's JS thread; dropped if the env is
    /// tearing down.
    pub fn send(&self, completion: Completion) {
        let tsfn = self.lock();
        if let Some(tsfn) = tsfn.as_ref() {
            let data = Box::into_raw(Box::new(completion)).cast::<c_void>();
            // SAFETY: the handle is alive while held under the lock; data is
            // a Box<Completion> that call_js reclaims.
            let st = unsafe { napi::napi_call_threadsafe_function(tsfn.0, data, napi::NAPI_TSFN_NONBLOCKING) };
            if st != napi::NAPI_OK {
                // SAFETY: Node did not queue it (the env is closing).
                drop(unsafe { Box::from_raw(data.cast::<Completion>()) });
            }
        }
    }
}
