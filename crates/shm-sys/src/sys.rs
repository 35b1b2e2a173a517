//! Raw futex system calls, the layer just above the declarations of
//! [`crate::libc`]: blocking wait with an absolute deadline, wake, and
//! `futex_waitv` over several words. No Node-API here; the entry points in
//! `futex.rs`, the waiter threads of `pool.rs` and the event-loop reactor
//! call these.
//!
//! All words are shared (no FUTEX_PRIVATE_FLAG): the kernel keys a wait on
//! the page, so a waiter and a waker in different processes that map the
//! same memfd / shm object meet.

use std::ffi::c_long;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::libc::{self, SysError, cvt, futex_waitv, timespec};

pub const WOKEN: u32 = 0;
pub const NOT_EQUAL: u32 = 1;
pub const TIMED_OUT: u32 = 2;

const NANOS_PER_SEC: i64 = 1_000_000_000;
/// Timeouts longer than this (~31 years) are treated as no timeout.
const MAX_TIMEOUT_MS: f64 = 1.0e12;

/// Waits on `word` while it holds `expected`, until woken, `deadline`
/// passes, or `cancelled()` says so (checked before every FUTEX_WAIT; a
/// canceller must also FUTEX_WAKE the word, see `pool::Wait::stop`). EINTR
/// is retried with the same absolute deadline.
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

/// What `waitv` saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnyOutcome {
    /// The word at this index was woken (possibly spuriously).
    Woken(usize),
    /// Some word did not hold its expected value (which one is not told).
    NotEqual,
    TimedOut,
}

/// `futex_waitv` on `words` (address, expected) until one is woken, one
/// differs, or the absolute CLOCK_MONOTONIC `deadline` passes. EINTR is
/// retried with the same deadline. At most `FUTEX_WAITV_MAX` words.
///
/// # Safety
/// Every address must be a 4-aligned u32 that stays mapped for the call.
pub unsafe fn waitv(words: &[(usize, u32)], deadline: Option<&timespec>) -> Result<AnyOutcome, SysError> {
    let list: Vec<futex_waitv> = words
        .iter()
        .map(|&(addr, expected)| futex_waitv {
            val: expected as u64,
            uaddr: addr as u64,
            flags: libc::FUTEX2_SIZE_U32,
            reserved: 0,
        })
        .collect();
    let timeout = deadline.map_or(ptr::null(), |d| d as *const timespec);
    loop {
        // SAFETY: list holds `len` valid entries whose addresses are mapped
        // aligned u32s (caller contract); timeout is null or a live timespec.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_FUTEX_WAITV,
                list.as_ptr() as c_long,
                list.len() as c_long,
                0 as c_long,
                timeout as c_long,
                libc::CLOCK_MONOTONIC as c_long,
            )
        };
        match cvt(ret as i64, "futex_waitv") {
            Ok(index) => return Ok(AnyOutcome::Woken(index as usize)),
            Err(err) if err.errno == libc::EAGAIN => return Ok(AnyOutcome::NotEqual),
            Err(err) if err.errno == libc::ETIMEDOUT => return Ok(AnyOutcome::TimedOut),
            Err(err) if err.errno == libc::EINTR => continue,
            Err(err) => return Err(err),
        }
    }
}

/// process_vm_readv was refused once (read_words).
static READ_REFUSED: AtomicBool = AtomicBool::new(false);

/// Reads the u32 at each address of `words` into `out` (as long) without
/// risking a fault: process_vm_readv(2) on this process, for which an
/// address no longer mapped is an error (EFAULT), not a SIGSEGV. A word
/// that cannot be read keeps what `out` held; so do all the words left
/// when the call is refused (ENOSYS, or EPERM from a seccomp profile; then
/// it is not tried again). Returns how many were read.
pub fn read_words(words: &[usize], out: &mut [u32]) -> usize {
    debug_assert_eq!(words.len(), out.len());
    // Relaxed: a hint that spares later calls a refused system call; any thread may set it.
    if READ_REFUSED.load(Ordering::Relaxed) {
        return 0;
    }
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    let (mut start, mut read) = (0, 0);
    while start < words.len() {
        let n = (words.len() - start).min(libc::IOV_MAX);
        let local: Vec<libc::iovec> = out[start..start + n]
            .iter_mut()
            .map(|w| libc::iovec { iov_base: (w as *mut u32).cast(), iov_len: 4 })
            .collect();
        let remote: Vec<libc::iovec> =
            words[start..start + n].iter().map(|&a| libc::iovec { iov_base: a as *mut _, iov_len: 4 }).collect();
        // SAFETY: `local` points into `out`, live and writable; the kernel
        // checks every remote address itself.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_PROCESS_VM_READV,
                pid as c_long,
                local.as_ptr() as c_long,
                n as c_long,
                remote.as_ptr() as c_long,
                n as c_long,
                0 as c_long,
            )
        };
        if ret < 0 {
            let errno = libc::errno();
            if errno == libc::ENOSYS || errno == libc::EPERM {
                READ_REFUSED.store(true, Ordering::Relaxed); // (see the load above)
            }
            if errno != libc::EFAULT {
                return read; // nothing more to learn this way
            }
            start += 1; // the first word is not mapped
            continue;
        }
        let got = ret as usize / 4;
        read += got;
        // A short read stops at a word that is not mapped: skip it.
        start += if got < n { got + 1 } else { got };
    }
    read
}

/// Reads the u32 at `word` without risking a fault (process_vm_readv, as
/// read_words): the value, or the errno (EFAULT: the memory is gone; any
/// other: the read is refused here, and nothing is known).
pub fn read_word(word: usize) -> Result<u32, i32> {
    let mut value = 0u32;
    let local = libc::iovec { iov_base: (&mut value as *mut u32).cast(), iov_len: 4 };
    let remote = libc::iovec { iov_base: word as *mut _, iov_len: 4 };
    // SAFETY: `local` points at `value`, live and writable; the kernel checks the remote address itself.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_PROCESS_VM_READV,
            libc::getpid() as c_long,
            &local as *const libc::iovec as c_long,
            1 as c_long,
            &remote as *const libc::iovec as c_long,
            1 as c_long,
            0 as c_long, // flags: a full long (a bare literal is an i32, whose upper half the callee reads as garbage)
        )
    };
    if ret == 4 {
        Ok(value)
    } else if ret < 0 {
        Err(libc::errno())
    } else {
        Err(libc::EFAULT)
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

/// membarrier(`cmd`, 0, 0): the command's result (a bit mask for
/// MEMBARRIER_CMD_QUERY, else 0).
pub fn membarrier(cmd: i32) -> Result<i32, SysError> {
    // SAFETY: membarrier takes no pointer; any command number is safe to
    // pass (an unknown one fails with EINVAL).
    let ret = unsafe { libc::syscall(libc::SYS_MEMBARRIER, cmd as c_long, 0 as c_long, 0 as c_long) };
    cvt(ret as i64, "membarrier").map(|n| n as i32)
}

/// The absolute CLOCK_MONOTONIC deadline `timeout_ms` from now, or `None`
/// for "forever": NaN, negative, infinite or absurdly long timeouts.
pub fn deadline_after(timeout_ms: f64) -> Option<timespec> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn deadline_after_adds_the_timeout_to_now() {
        let before = libc::monotonic_now();
        let d = deadline_after(1500.0).expect("finite");
        assert!(d.tv_nsec < NANOS_PER_SEC);
        let delta = (d.tv_sec - before.tv_sec) * NANOS_PER_SEC + (d.tv_nsec - before.tv_nsec);
        // At least the timeout; the upper bound leaves a loaded machine a
        // second between the two clock reads (cargo runs tests in parallel).
        assert!((1_500_000_000..2_500_000_000).contains(&delta), "{delta}");
        assert!(deadline_after(f64::INFINITY).is_none());
        assert!(deadline_after(-1.0).is_none());
        assert!(deadline_after(f64::NAN).is_none());
    }

    #[test]
    fn waitv_sees_a_word_that_already_differs() {
        let a = AtomicU32::new(1);
        let b = AtomicU32::new(2);
        let words = [(a.as_ptr() as usize, 1), (b.as_ptr() as usize, 3)];
        // SAFETY: both words live on this stack frame for the call.
        assert_eq!(unsafe { waitv(&words, None) }, Ok(AnyOutcome::NotEqual));
    }

    #[test]
    fn waitv_times_out_and_wakes_by_index() {
        let a = AtomicU32::new(0);
        let b = AtomicU32::new(0);
        let words = [(a.as_ptr() as usize, 0), (b.as_ptr() as usize, 0)];
        let soon = deadline_after(5.0);
        // SAFETY: both words outlive the call.
        assert_eq!(unsafe { waitv(&words, soon.as_ref()) }, Ok(AnyOutcome::TimedOut));
        let b_addr = b.as_ptr() as usize;
        std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(20));
                // SAFETY: b outlives the scope.
                unsafe { wake(b_addr, 1) }.expect("wake");
            });
            let later = deadline_after(5000.0);
            // SAFETY: both words outlive the call.
            assert_eq!(unsafe { waitv(&words, later.as_ref()) }, Ok(AnyOutcome::Woken(1)));
        });
    }
}

#[cfg(test)]
mod read_tests {
    use super::*;

    /// The address of a page mapped and unmapped again: surely not mapped.
    /// A page no read may reach: mapped PROT_NONE (not unmapped, whose address a test running beside this one
    /// could map again meanwhile: the read would then find it). Unmapped when dropped.
    struct NoAccessPage(usize);

    impl NoAccessPage {
        fn new() -> NoAccessPage {
            // SAFETY: a fresh anonymous mapping nobody touches; only its address is used.
            let page = unsafe {
                libc::mmap(ptr::null_mut(), 4096, libc::PROT_NONE, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, 0)
            };
            assert_ne!(page as isize, -1, "mmap");
            NoAccessPage(page as usize)
        }
    }

    impl Drop for NoAccessPage {
        fn drop(&mut self) {
            // SAFETY: the mapping made in new(), of that length.
            unsafe { libc::munmap(self.0 as *mut _, 4096) };
        }
    }

    #[test]
    fn read_words_reads_mapped_words_and_skips_unmapped_ones() {
        let words = [7u32, 8, 9];
        if read_words(&[words.as_ptr() as usize], &mut [0]) == 0 {
            return; // process_vm_readv refused here (a seccomp profile): callers only lose the pass-on
        }
        let page = NoAccessPage::new();
        let gone = page.0;
        // Unreadable first, in the middle, and last.
        let addrs = [gone, words.as_ptr() as usize, gone + 4, words[2..].as_ptr() as usize, gone + 8];
        let mut out = [41, 0, 42, 0, 43];
        assert_eq!(read_words(&addrs, &mut out), 2);
        assert_eq!(out, [41, 7, 42, 9, 43]);
    }

    /// Leaves the stack below the caller's frame full of ones: where a
    /// call's stack-passed arguments go next, so an argument passed narrower
    /// than the callee reads it shows up as garbage.
    #[inline(never)]
    fn dirty_the_stack() -> u64 {
        let mut junk = [u64::MAX; 256];
        // Through a volatile read, so the stores are not optimized away.
        for slot in junk.iter_mut() {
            // SAFETY: a valid, aligned element of a live local array.
            *slot = unsafe { ptr::read_volatile(slot) };
        }
        junk.iter().fold(0, |a, b| a ^ b)
    }

    #[test]
    fn read_word_reads_a_mapped_word_whatever_the_stack_held() {
        let word = 0x5eed_u32;
        if read_words(&[&word as *const u32 as usize], &mut [0]) == 0 {
            return; // process_vm_readv refused here (a seccomp profile)
        }
        for _ in 0..100 {
            std::hint::black_box(dirty_the_stack());
            assert_eq!(read_word(&word as *const u32 as usize), Ok(0x5eed));
        }
        let page = NoAccessPage::new();
        assert_eq!(read_word(page.0), Err(libc::EFAULT));
    }
}
