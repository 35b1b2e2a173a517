//! The fds this addon opened for JS that are still open and that no mapping
//! owns, each with the env (thread) it was opened for, so that an env that
//! ends without closing them (a worker's `terminate()`, `process.exit()` in
//! the worker, or its script returning) gives them back: its cleanup hook
//! calls [`close_all_of`] (env.rs). Otherwise a role-lock fd of a ring (a
//! FileLocks of @shmring/core, released only by `close()` or a
//! FinalizationRegistry, which never runs at env teardown) stayed open for
//! the life of the process, and kept its memfd's memory alive.
//!
//! An fd gets here when `memfdCreate`, `shmOpen`, `open`, `dup` or `recvFd`
//! return it, and leaves when JS closes it with `close` or gives it to a
//! mapping (`mmap` with `ownFd`: the mapping's ArrayBuffer finalizer,
//! which Node runs at env teardown too, closes it from then on).
//!
//! One table for the whole process, not one per env, so that no number is
//! ever closed twice: `close` removes an fd whichever env recorded it, and
//! [`close_all_of`] removes what it closes under the same lock, so once an
//! fd is closed nothing here still holds its number, which the kernel may
//! give to another thread at once. The contract this relies on (stated in
//! index.d.ts): an fd these calls return is closed with `close` or handed
//! to `mmap`, never by other means (node:fs).

use std::collections::BTreeMap;
use std::ffi::c_int;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::libc;

/// Open fds no mapping owns, by number: the id of the env that opened them.
static OPEN: Mutex<BTreeMap<c_int, u64>> = Mutex::new(BTreeMap::new());

/// The source of env ids (never 0, never reused: an id outlives its env's
/// EnvState, whose address could be reused).
static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

/// A new owner id, one per env.
pub fn new_owner() -> u64 {
    // Relaxed: the id only has to be unique (an atomic add gives each caller
    // its own); it publishes nothing, and the table's mutex orders its uses.
    NEXT_OWNER.fetch_add(1, Ordering::Relaxed)
}

fn table() -> MutexGuard<'static, BTreeMap<c_int, u64>> {
    // A panic while holding the lock leaves the table consistent (each
    // operation is one insert or remove): go on with it.
    OPEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Records `fd`, just returned by the kernel, as `owner`'s. A stale entry
/// for the same number (an fd closed behind our back) is replaced: the
/// kernel has just given that number to us.
pub fn record(owner: u64, fd: c_int) {
    table().insert(fd, owner);
}

/// Removes `fd` (closed by its owner, or handed to a mapping); whether it
/// was recorded.
pub fn forget(fd: c_int) -> bool {
    table().remove(&fd).is_some()
}

/// Closes every fd recorded for `owner` (its env is being torn down) and
/// removes them; returns how many. They leave the table under its lock and
/// are closed after it is released: a close can be slow (a file on a hung
/// NFS server), and must not hold up every other thread's open, close and
/// mmap. Nothing else can record one of these numbers meanwhile, since the
/// kernel gives out no number that is still open.
pub fn close_all_of(owner: u64) -> usize {
    let mine: Vec<c_int> = {
        let mut open = table();
        let mine: Vec<c_int> = open.iter().filter(|&(_, &o)| o == owner).map(|(&fd, _)| fd).collect();
        for fd in &mine {
            open.remove(fd);
        }
        mine
    };
    for fd in &mine {
        // EINTR counts as closed (Linux frees the number first); a retry
        // could close an fd another thread was just given.
        libc::close_quietly(*fd);
    }
    mine.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testfd::TestFd;

    fn memfd() -> TestFd {
        TestFd::memfd(c"fds-test")
    }

    #[test]
    fn an_owner_closes_only_its_own_fds_and_only_once() {
        let (mine, theirs) = (new_owner(), new_owner());
        let (a, b, c) = (memfd(), memfd(), memfd());
        record(mine, a.fd);
        record(mine, b.fd);
        record(theirs, c.fd);
        // b is closed by its owner first: it must not be closed again.
        assert!(forget(b.fd));
        libc::close_quietly(b.fd);
        assert_eq!(close_all_of(mine), 1);
        assert!(!a.is_open());
        assert!(c.is_open());
        // Nothing is left for `mine`; `theirs` keeps its fd until it goes.
        assert_eq!(close_all_of(mine), 0);
        assert!(!forget(a.fd));
        assert_eq!(close_all_of(theirs), 1);
        assert!(!c.is_open());
    }

    #[test]
    fn a_number_the_kernel_gives_again_belongs_to_its_new_owner() {
        let (first, second) = (new_owner(), new_owner());
        let fd = memfd();
        record(first, fd.fd);
        record(second, fd.fd); // closed behind our back, then given to `second`
        assert_eq!(close_all_of(first), 0);
        assert!(fd.is_open());
        assert_eq!(close_all_of(second), 1);
        assert!(!fd.is_open());
    }
}
