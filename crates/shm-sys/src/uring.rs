//! A raw io_uring instance: `io_uring_setup`, the three shared rings mapped
//! into this process, pushing submission entries, `io_uring_enter`, and
//! reaping completions. No Node-API and no libuv here: the event-loop
//! reactor (reactor.rs) drives one of these per env.
//!
//! Shared-ring protocol (io_uring(7)): the application owns the SQ tail and
//! the CQ head, the kernel the SQ head and the CQ tail. An entry is written
//! before the tail that publishes it (Release); the other side's index is
//! read with Acquire before the entries it covers. Only the env's JS thread
//! touches a `Ring`.

use std::ffi::{c_int, c_long, c_void};
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::libc::{self, SysError, cvt, io_uring_cqe, io_uring_params, io_uring_sqe};

pub struct Ring {
    fd: c_int,
    /// The SQ and CQ rings, one mapping (IORING_FEAT_SINGLE_MMAP).
    rings: *mut u8,
    rings_len: usize,
    sqes: *mut io_uring_sqe,
    sqes_len: usize,
    sq_head: *const AtomicU32,
    sq_tail: *const AtomicU32,
    sq_flags: *const AtomicU32,
    sq_array: *mut u32,
    sq_mask: u32,
    sq_entries: u32,
    cq_head: *const AtomicU32,
    cq_tail: *const AtomicU32,
    cqes: *const io_uring_cqe,
    cq_mask: u32,
    /// Entries pushed but not yet handed to the kernel.
    unsubmitted: u32,
}

impl Ring {
    /// A ring of `entries` submission slots and `cq_entries` completion
    /// slots (rounded up to powers of two by the kernel).
    pub fn new(entries: u32, cq_entries: u32) -> Result<Ring, SysError> {
        let mut params = io_uring_params {
            flags: libc::IORING_SETUP_CQSIZE | libc::IORING_SETUP_CLAMP,
            cq_entries,
            ..Default::default()
        };
        // SAFETY: params is a valid io_uring_params the kernel fills in.
        let fd = cvt(
            unsafe { libc::syscall(libc::SYS_IO_URING_SETUP, entries as c_long, &mut params as *mut _ as c_long) }
                as i64,
            "io_uring_setup",
        )? as c_int;
        if params.features & libc::IORING_FEAT_SINGLE_MMAP == 0 || params.features & libc::IORING_FEAT_NODROP == 0 {
            libc::close_quietly(fd);
            return Err(SysError { errno: libc::EINVAL, syscall: "io_uring_setup" });
        }
        let sq_len = params.sq_off.array as usize + params.sq_entries as usize * 4;
        let cq_len = params.cq_off.cqes as usize + params.cq_entries as usize * size_of::<io_uring_cqe>();
        let rings_len = sq_len.max(cq_len);
        let sqes_len = params.sq_entries as usize * size_of::<io_uring_sqe>();
        let map = |len: usize, offset: i64| -> Result<*mut u8, SysError> {
            // SAFETY: maps the ring fd at one of its documented offsets.
            let addr = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_POPULATE,
                    fd,
                    offset,
                )
            };
            cvt(addr as isize, "mmap").map(|a| a as *mut u8)
        };
        let rings = match map(rings_len, libc::IORING_OFF_SQ_RING) {
            Ok(p) => p,
            Err(err) => {
                libc::close_quietly(fd);
                return Err(err);
            }
        };
        let sqes = match map(sqes_len, libc::IORING_OFF_SQES) {
            Ok(p) => p.cast::<io_uring_sqe>(),
            Err(err) => {
                // SAFETY: rings was mapped above with this length.
                unsafe { libc::munmap(rings.cast(), rings_len) };
                libc::close_quietly(fd);
                return Err(err);
            }
        };
        let at = |offset: u32| -> *const AtomicU32 {
            // SAFETY: the kernel's offsets lie inside the rings mapping.
            unsafe { rings.add(offset as usize) }.cast::<AtomicU32>()
        };
        // SAFETY (the reads below): the masks lie inside the mapping, and
        // the kernel never changes them after setup.
        let sq_mask = unsafe { *rings.add(params.sq_off.ring_mask as usize).cast::<u32>() };
        let cq_mask = unsafe { *rings.add(params.cq_off.ring_mask as usize).cast::<u32>() };
        Ok(Ring {
            fd,
            rings,
            rings_len,
            sqes,
            sqes_len,
            sq_head: at(params.sq_off.head),
            sq_tail: at(params.sq_off.tail),
            sq_flags: at(params.sq_off.flags),
            // SAFETY: inside the mapping (see above).
            sq_array: unsafe { rings.add(params.sq_off.array as usize) }.cast::<u32>(),
            sq_mask,
            sq_entries: params.sq_entries,
            cq_head: at(params.cq_off.head),
            cq_tail: at(params.cq_off.tail),
            // SAFETY: inside the mapping (see above).
            cqes: unsafe { rings.add(params.cq_off.cqes as usize) }.cast::<io_uring_cqe>(),
            cq_mask,
            unsubmitted: 0,
        })
    }

    pub fn fd(&self) -> c_int {
        self.fd
    }

    /// Queues one entry; hands the queue to the kernel first when it is full.
    pub fn push(&mut self, sqe: io_uring_sqe) -> Result<(), SysError> {
        // SAFETY: sq_head / sq_tail point into the live mapping.
        let (head, tail) = unsafe {
            // Acquire: the kernel has consumed the entries before its head,
            // so their slots may be rewritten.
            let head = (*self.sq_head).load(Ordering::Acquire);
            // Relaxed: only this thread writes the tail.
            (head, (*self.sq_tail).load(Ordering::Relaxed))
        };
        if tail.wrapping_sub(head) >= self.sq_entries {
            self.submit()?;
            return self.push(sqe);
        }
        let index = tail & self.sq_mask;
        // SAFETY: index < sq_entries: inside the sqes and array mappings.
        unsafe {
            self.sqes.add(index as usize).write(sqe);
            self.sq_array.add(index as usize).write(index);
            // Release: publishes the entry and its array slot before the
            // tail that lets the kernel read them.
            (*self.sq_tail).store(tail.wrapping_add(1), Ordering::Release);
        }
        self.unsubmitted += 1;
        Ok(())
    }

    /// Hands the queued entries to the kernel (one `io_uring_enter`). On
    /// failure the kernel took none of those left: they stay queued, for
    /// the next submission, unless their caller withdraws them
    /// (`withdraw_to`), as one whose operation failed must.
    pub fn submit(&mut self) -> Result<(), SysError> {
        while self.unsubmitted > 0 {
            match self.enter(self.unsubmitted, 0, 0) {
                Ok(n) => self.unsubmitted -= n.min(self.unsubmitted),
                Err(err) if err.errno == libc::EINTR => continue,
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Submits what is queued in one `io_uring_enter`, or fails: EAGAIN when
    /// the kernel took only the first entries (it stops where it cannot
    /// allocate a request, and queues a linked chain cut short there on its
    /// own, without the rest of it); `handed_since` then says how many.
    pub fn submit_whole(&mut self) -> Result<(), SysError> {
        loop {
            match self.enter(self.unsubmitted, 0, 0) {
                Ok(n) if n >= self.unsubmitted => {
                    self.unsubmitted = 0;
                    return Ok(());
                }
                Ok(n) => {
                    self.unsubmitted -= n;
                    return Err(SysError { errno: libc::EAGAIN, syscall: "io_uring_enter" });
                }
                Err(err) if err.errno == libc::EINTR => continue,
                Err(err) => return Err(err),
            }
        }
    }

    /// The SQ tail now: a mark that `withdraw_to` takes the queue back to.
    pub fn mark(&self) -> u32 {
        // SAFETY: sq_tail points into the live mapping. Relaxed: only this thread writes it.
        unsafe { (*self.sq_tail).load(Ordering::Relaxed) }
    }

    /// How many of the entries queued since `mark` the kernel has been
    /// handed (the first ones: it takes them in order). Entries queued
    /// before `mark` and still here (a cancel whose submission failed) do
    /// not count.
    pub fn handed_since(&self, mark: u32) -> u32 {
        let queued = self.mark().wrapping_sub(mark);
        queued - self.unsubmitted.min(queued)
    }

    /// Takes the entries queued since `mark` and not handed to the kernel
    /// yet back out of the queue (the kernel reads the tail only inside
    /// io_uring_enter, on this thread: it never saw them). For an operation
    /// whose submission failed: its caller is told so and may drop what its
    /// entries point to (a timespec, a list), so none may reach the kernel
    /// with a later submission. The entries queued before `mark` stay.
    pub fn withdraw_to(&mut self, mark: u32) {
        let tail = self.mark();
        let withdrawn = tail.wrapping_sub(mark).min(self.unsubmitted);
        // SAFETY: sq_tail points into the live mapping. Release: as in push.
        unsafe { (*self.sq_tail).store(tail.wrapping_sub(withdrawn), Ordering::Release) };
        self.unsubmitted -= withdrawn;
    }

    /// Lets the kernel post the completions it owes this thread (the task
    /// work of waits woken or cancelled) before a reap that must see them.
    pub fn get_events(&mut self) {
        let _ = self.enter(0, 0, libc::IORING_ENTER_GETEVENTS);
    }

    /// `io_uring_enter(fd, to_submit, min_complete, flags)`.
    fn enter(&self, to_submit: u32, min_complete: u32, flags: u32) -> Result<u32, SysError> {
        // SAFETY: no signal mask is passed (null, size 0); the kernel reads
        // only the rings it mapped for this fd.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_IO_URING_ENTER,
                self.fd as c_long,
                to_submit as c_long,
                min_complete as c_long,
                flags as c_long,
                0 as c_long,
                0 as c_long,
            )
        };
        cvt(ret as i64, "io_uring_enter").map(|n| n as u32)
    }

    /// Submits what is queued and blocks until at least one completion is
    /// there (used once, by the probe).
    pub fn submit_and_wait(&mut self) -> Result<(), SysError> {
        loop {
            match self.enter(self.unsubmitted, 1, libc::IORING_ENTER_GETEVENTS) {
                Ok(n) => {
                    self.unsubmitted -= n.min(self.unsubmitted);
                    return Ok(());
                }
                Err(err) if err.errno == libc::EINTR => continue,
                Err(err) => return Err(err),
            }
        }
    }

    /// Moves every posted completion into `out` as (user_data, res). When
    /// the kernel kept completions aside because the CQ was full
    /// (IORING_SQ_CQ_OVERFLOW), asks it to flush them and reaps again.
    pub fn reap(&mut self, out: &mut Vec<(u64, i32)>) {
        loop {
            // SAFETY: cq_head / cq_tail point into the live mapping.
            let (mut head, tail) = unsafe {
                // Relaxed: only this thread writes the head.
                let head = (*self.cq_head).load(Ordering::Relaxed);
                // Acquire: the kernel wrote the entries before the tail.
                (head, (*self.cq_tail).load(Ordering::Acquire))
            };
            while head != tail {
                // SAFETY: the slot is inside the CQ array and was published
                // by the tail read above.
                let cqe = unsafe { self.cqes.add((head & self.cq_mask) as usize).read() };
                out.push((cqe.user_data, cqe.res));
                head = head.wrapping_add(1);
            }
            // SAFETY: see above.
            unsafe {
                // Release: we are done reading the entries before the head;
                // the kernel may reuse their slots.
                (*self.cq_head).store(head, Ordering::Release);
            }
            // Relaxed: a hint the kernel sets; the enter below is what syncs.
            // SAFETY: sq_flags points into the live mapping.
            let overflow = unsafe { (*self.sq_flags).load(Ordering::Relaxed) } & libc::IORING_SQ_CQ_OVERFLOW != 0;
            if !overflow || self.enter(0, 0, libc::IORING_ENTER_GETEVENTS).is_err() {
                return;
            }
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: both regions were mapped in new() with these lengths and
        // no pointer into them outlives the Ring. Closing the fd cancels
        // whatever the kernel still holds for it.
        unsafe {
            libc::munmap(self.sqes.cast::<c_void>(), self.sqes_len);
            libc::munmap(self.rings.cast::<c_void>(), self.rings_len);
        }
        libc::close_quietly(self.fd);
    }
}

/// A FUTEX_WAIT entry (Linux >= 6.7): sleeps while the shared u32 at
/// `word` holds `expected`; completes with 0 when woken, -EAGAIN when the
/// word already differed, -ECANCELED when cancelled or its linked timeout
/// fired. FUTEX2_SIZE_U32 without FUTEX2_PRIVATE: a waker in another
/// process must find it. `linked` chains the next entry (a timeout) to it.
pub fn futex_wait_sqe(word: usize, expected: u32, user_data: u64, linked: bool) -> io_uring_sqe {
    io_uring_sqe {
        opcode: libc::IORING_OP_FUTEX_WAIT,
        flags: if linked { libc::IOSQE_IO_LINK } else { 0 },
        fd: libc::FUTEX2_SIZE_U32 as i32,
        off: expected as u64,
        addr: word as u64,
        addr3: libc::FUTEX_BITSET_MATCH_ANY as u64,
        user_data,
        ..Default::default()
    }
}

/// A FUTEX_WAITV entry (Linux >= 6.7): sleeps while every word of `list`
/// (at most FUTEX_WAITV_MAX; shared u32 words, FUTEX2_SIZE_U32 each)
/// holds its value; completes with the index of a word woken, -EAGAIN when
/// some word already differed, -ECANCELED when cancelled or its linked
/// timeout fired. The kernel copies `list` when it prepares the entry
/// (during the `io_uring_enter` that submits it): the caller keeps it
/// alive until the entry is submitted.
pub fn futex_waitv_sqe(list: &[libc::futex_waitv], user_data: u64, linked: bool) -> io_uring_sqe {
    io_uring_sqe {
        opcode: libc::IORING_OP_FUTEX_WAITV,
        flags: if linked { libc::IOSQE_IO_LINK } else { 0 },
        addr: list.as_ptr() as u64,
        len: list.len() as u32,
        user_data,
        ..Default::default()
    }
}

/// A LINK_TIMEOUT entry: cancels the entry linked before it at the absolute
/// CLOCK_MONOTONIC time `*deadline` (read by the kernel during submission,
/// so it must live until `submit` returns).
pub fn link_timeout_sqe(deadline: *const libc::timespec, user_data: u64) -> io_uring_sqe {
    io_uring_sqe {
        opcode: libc::IORING_OP_LINK_TIMEOUT,
        addr: deadline as u64,
        len: 1,
        op_flags: libc::IORING_TIMEOUT_ABS,
        user_data,
        ..Default::default()
    }
}

/// An ASYNC_CANCEL entry for the request whose user_data is `target`.
pub fn cancel_sqe(target: u64, user_data: u64) -> io_uring_sqe {
    io_uring_sqe { opcode: libc::IORING_OP_ASYNC_CANCEL, addr: target, user_data, ..Default::default() }
}

/// Whether this kernel runs IORING_OP_FUTEX_WAIT: a wait on a word that
/// does not hold the expected value completes at once with -EAGAIN where
/// the opcode exists, and -EINVAL where it does not.
pub fn probe_futex_wait(ring: &mut Ring) -> Result<bool, SysError> {
    let word = AtomicU32::new(1);
    ring.push(futex_wait_sqe(word.as_ptr() as usize, 0, u64::MAX, false))?;
    ring.submit_and_wait()?;
    let mut out = Vec::new();
    ring.reap(&mut out);
    Ok(out.iter().any(|&(user_data, res)| user_data == u64::MAX && res == -libc::EAGAIN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn futex_wait_completes_when_woken_from_another_thread() {
        let mut ring = Ring::new(8, 64).expect("io_uring_setup");
        if !probe_futex_wait(&mut ring).expect("probe") {
            return; // kernel older than 6.7: nothing to test here
        }
        let word = Box::new(AtomicU32::new(7));
        let addr = word.as_ptr() as usize;
        ring.push(futex_wait_sqe(addr, 7, 42, false)).expect("push");
        ring.submit().expect("submit");
        let mut out = Vec::new();
        ring.reap(&mut out);
        assert!(out.is_empty(), "completed before any wake: {out:?}");
        std::thread::spawn(move || {
            // SAFETY: the Box outlives this thread (joined below by waiting
            // for the completion, and leaked at the end of the test).
            unsafe { crate::sys::wake(addr, 1) }.expect("wake");
        })
        .join()
        .expect("join");
        ring.submit_and_wait().expect("wait");
        ring.reap(&mut out);
        assert_eq!(out, vec![(42, 0)]);
        std::mem::forget(word);
    }

    #[test]
    fn a_failed_submission_withdrawn_to_its_mark_never_reaches_the_kernel() {
        let mut ring = Ring::new(8, 64).expect("io_uring_setup");
        if !probe_futex_wait(&mut ring).expect("probe") {
            return;
        }
        let word = Box::new(AtomicU32::new(3));
        let addr = word.as_ptr() as usize;
        let mark = ring.mark();
        ring.push(futex_wait_sqe(addr, 3, 77, false)).expect("push");
        let fd = ring.fd;
        ring.fd = -1; // io_uring_enter fails (EBADF), as it may under memory pressure (EAGAIN, ENOMEM)
        assert!(ring.submit().is_err(), "a submission on a bad fd succeeded");
        ring.fd = fd;
        assert_eq!(ring.handed_since(mark), 0);
        ring.withdraw_to(mark);
        // The next submission hands over only the entry queued after the failure.
        ring.push(futex_wait_sqe(addr, 3, 78, false)).expect("push");
        ring.submit().expect("submit");
        // SAFETY: `word` is live (leaked at the end).
        let woken = unsafe { crate::sys::wake(addr, 2) }.expect("wake");
        assert_eq!(woken, 1, "the entry whose submission failed went to the kernel after all");
        ring.submit_and_wait().expect("wait");
        let mut out = Vec::new();
        ring.reap(&mut out);
        assert_eq!(out, vec![(78, 0)]);
        std::mem::forget(word);
    }

    #[test]
    fn handed_since_counts_none_of_the_entries_queued_before_the_mark() {
        let mut ring = Ring::new(8, 64).expect("io_uring_setup");
        let fd = ring.fd;
        ring.fd = -1; // every io_uring_enter fails (EBADF) until restored
        // A cancel whose submission failed: it stays queued, before the mark.
        ring.push(cancel_sqe(5, 6)).expect("push");
        assert!(ring.submit().is_err());
        let mark = ring.mark();
        ring.push(cancel_sqe(7, 8)).expect("push");
        assert!(ring.submit().is_err());
        assert_eq!(ring.handed_since(mark), 0, "an entry queued before the mark counted as handed (wrapped)");
        ring.withdraw_to(mark);
        assert_eq!(ring.unsubmitted, 1, "the entry before the mark was withdrawn too");
        ring.fd = fd;
        ring.submit().expect("submit"); // the older cancel goes now (and finds nothing: -ENOENT)
        ring.submit_and_wait().expect("wait");
        let mut out = Vec::new();
        ring.reap(&mut out);
        assert_eq!(out.iter().map(|&(user_data, _)| user_data).collect::<Vec<_>>(), vec![6]);
    }

    #[test]
    fn futex_waitv_completes_with_the_index_of_the_word_woken() {
        let mut ring = Ring::new(8, 64).expect("io_uring_setup");
        if !probe_futex_wait(&mut ring).expect("probe") {
            return;
        }
        let words: Box<[AtomicU32]> = (0..3).map(|_| AtomicU32::new(5)).collect();
        let list: Vec<libc::futex_waitv> = words
            .iter()
            .map(|w| libc::futex_waitv { val: 5, uaddr: w.as_ptr() as u64, flags: libc::FUTEX2_SIZE_U32, reserved: 0 })
            .collect();
        ring.push(futex_waitv_sqe(&list, 9, false)).expect("push");
        ring.submit().expect("submit");
        let mut out = Vec::new();
        ring.reap(&mut out);
        assert!(out.is_empty(), "completed before any wake: {out:?}");
        let woken = words[2].as_ptr() as usize;
        std::thread::spawn(move || {
            // SAFETY: `words` outlives this thread (joined here).
            unsafe { crate::sys::wake(woken, 1) }.expect("wake");
        })
        .join()
        .expect("join");
        ring.submit_and_wait().expect("wait");
        ring.reap(&mut out);
        assert_eq!(out, vec![(9, 2)]);

        // A word that already differs: -EAGAIN at once.
        words[1].store(6, Ordering::SeqCst);
        ring.push(futex_waitv_sqe(&list, 10, false)).expect("push");
        ring.submit_and_wait().expect("wait");
        out.clear();
        ring.reap(&mut out);
        assert_eq!(out, vec![(10, -libc::EAGAIN)]);
    }

    #[test]
    fn linked_timeout_cancels_the_wait() {
        let mut ring = Ring::new(8, 64).expect("io_uring_setup");
        if !probe_futex_wait(&mut ring).expect("probe") {
            return;
        }
        let word = AtomicU32::new(0);
        let deadline = crate::sys::deadline_after(5.0).expect("finite");
        ring.push(futex_wait_sqe(word.as_ptr() as usize, 0, 1, true)).expect("push");
        ring.push(link_timeout_sqe(&deadline, 2)).expect("push");
        ring.submit().expect("submit");
        let mut out = Vec::new();
        while out.len() < 2 {
            ring.submit_and_wait().expect("wait");
            ring.reap(&mut out);
        }
        out.sort();
        assert_eq!(out[0], (1, -libc::ECANCELED));
        assert_eq!(out[1].0, 2);
    }
}
