//! Mapping an fd into JS memory, unmapping it, reserving a file's memory,
//! and sealing memfds.
//!
//! `mmap(fd, length, writable, ownFd)` maps the fd MAP_SHARED and wraps the
//! mapping in exactly one external ArrayBuffer (two ArrayBuffers over one
//! address crash some V8 versions). With `ownFd` the mapping also takes the
//! fd: `munmap` or the finalizer closes it with the memory, so a region
//! dropped without close() gives its fd back at GC too. The mapping's state
//! is one heap [`Mapping`] shared by:
//!  - the ArrayBuffer's finalizer (GC, or env teardown), which unmaps it if
//!    it is still mapped;
//!  - this env's registry (`EnvState::mappings`, keyed by address), through
//!    which `munmap(buffer)` finds it.
//!
//! Our ArrayBuffers carry a type tag (`napi_type_tag_object`), so `munmap`
//! tells "not one of ours" (TypeError) from "ours, already unmapped"
//! (detached: a no-op). The same wrapping (`expose`) serves the System V
//! segments attached by `shmAttach` (sysv.rs): their `Mapping` is undone by
//! shmdt instead of munmap, and `munmap(buffer)` releases either kind.
//! Explicit unmap: wake the async waits on the mapping, detach the ArrayBuffer (stale views become length 0 and Atomics
//! on them throw instead of faulting), then munmap, then close the owned fd.
//!
//! A read-only mapping (`writable` false) must not be written through a
//! view: the write would fault like any write to read-only memory.

use std::ffi::c_void;
use std::ptr;
use std::sync::Arc;

use crate::env::EnvState;
use crate::libc::{self, cvt};
use crate::mapping::Mapping;
use crate::napi::{self, Env, JsResult, MAX_SAFE_INTEGER, Throw, napi_callback_info, napi_env};

/// Tags the ArrayBuffers made by `mmap` and `shmAttach` (a random 128-bit value).
const MAPPING_TAG: napi::napi_type_tag =
    napi::napi_type_tag { lower: 0x7368_6d72_696e_6701, upper: 0x9c1e_4b3a_d25f_8e67 };

/// The largest length accepted.
const MAX_LENGTH: f64 = napi::MAX_SAFE_INTEGER;

/// `mmap(fd, length, writable, ownFd = false): ArrayBuffer`.
pub fn mmap(env: Env, info: napi_callback_info) -> JsResult {
    let [fd, length, writable, own_fd] = env.args::<4>(info)?;
    let fd = env.fd(fd, "fd")?;
    let len = env.number(length, "length")?;
    if !((1.0..=MAX_LENGTH).contains(&len) && len.fract() == 0.0) {
        return Err(Throw::Range(format!("length={len} must be a positive safe integer")));
    }
    let len = len as usize;
    let writable = env.boolean(writable, "writable")?;
    let own_fd = env.type_of(own_fd)? != napi::NAPI_UNDEFINED && env.boolean(own_fd, "ownFd")?;
    // SAFETY: the state is used within this callback on the JS thread.
    let state = unsafe { EnvState::current(env) }?;

    let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
    // SAFETY: a fresh MAP_SHARED mapping chosen by the kernel (addr null):
    // it cannot overlap anything Rust or V8 owns.
    let addr = cvt(unsafe { libc::mmap(ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0) } as isize, "mmap")?;
    let mapping = Arc::new(Mapping::new(addr as usize, len));
    let buffer = expose(env, state, &mapping)?;
    // Only now, with nothing left to fail, does the fd change hands: on an
    // error above the caller still owns it (and closes it).
    if own_fd {
        mapping.own_fd(fd);
        // The mapping closes it from now on (munmap, or the ArrayBuffer's
        // finalizer, which Node also runs when the env is torn down).
        crate::fds::forget(fd);
    }
    Ok(buffer)
}

/// Wraps a fresh `mapping` (made by mmap here, or shmat in sysv.rs) in its
/// one external ArrayBuffer, tagged as ours, whose finalizer releases it,
/// and enters it in the env's registry so that `munmap` finds it. Once
/// napi_create_external_arraybuffer is called, its finalizer owns the
/// mapping whatever happens next, even if the call fails (see below).
pub fn expose(env: Env, state: &EnvState, mapping: &Arc<Mapping>) -> JsResult {
    let hint = Arc::into_raw(Arc::clone(mapping)) as *mut c_void;
    let mut buffer = ptr::null_mut();
    // SAFETY: mapping.addr points at mapping.len mapped bytes that stay
    // mapped until the finalizer (or munmap after detaching); hint is an
    // Arc<Mapping> that finalize_mapping reclaims.
    let st = unsafe {
        napi::napi_create_external_arraybuffer(
            env.0,
            mapping.addr as *mut c_void,
            mapping.len,
            Some(finalize_mapping),
            hint,
            &mut buffer,
        )
    };
    // The hint is left to the finalizer, not reclaimed here: Node 20
    // makes this ArrayBuffer as a Buffer, and when Buffer::New refuses
    // the length (above buffer.constants.MAX_LENGTH, 4 GiB) it still
    // calls the finalizer with our hint. Reclaiming the hint here too
    // freed it twice: heap corruption and an abort, for a region of
    // 4 GiB + 1. But Node returns before that on other failures (an env
    // that can no longer run JavaScript, a build that refuses external
    // buffers) and never calls the finalizer: the mapping is released
    // here whatever happened. No ArrayBuffer reached JavaScript, and
    // release() is idempotent (the finalizer's, if it runs, does
    // nothing more); at worst the hint's one Arc leaks.
    if let Err(err) = env.check(st, "napi_create_external_arraybuffer") {
        let _ = mapping.release();
        return Err(err);
    }
    // From here on the finalizer owns the mapping's lifetime.
    // SAFETY: buffer is an object of this env; the tag outlives the call.
    let st = unsafe { napi::napi_type_tag_object(env.0, buffer, &MAPPING_TAG) };
    env.check(st, "napi_type_tag_object")?;
    state.mappings.borrow_mut().insert(mapping.addr, Arc::clone(mapping));
    Ok(buffer)
}

/// Whether `value` is an ArrayBuffer made by `mmap` or `shmAttach` (live or
/// detached): its memory stays mapped until `munmap` (or its finalizer),
/// which stops the waits on it first (and makes the reactor read their
/// words through the kernel from then on).
pub fn is_mapping(env: Env, value: napi::napi_value) -> Result<bool, Throw> {
    if !env.is_arraybuffer(value)? {
        return Ok(false);
    }
    let mut tagged = false;
    // SAFETY: value is an object of this env; out-pointer valid.
    let st = unsafe { napi::napi_check_object_type_tag(env.0, value, &MAPPING_TAG, &mut tagged) };
    env.check(st, "napi_check_object_type_tag")?;
    Ok(tagged)
}

/// The live mapping behind `buffer`: TypeError if it is not an ArrayBuffer
/// made by `mmap` or `shmAttach`, `None` if it is ours but detached.
fn mapping_of(env: Env, buffer: napi::napi_value) -> Result<Option<(*mut u8, usize)>, Throw> {
    let not_ours = || Throw::Type("buffer must be an ArrayBuffer returned by mmap or shmAttach".to_string());
    if !env.is_arraybuffer(buffer)? {
        return Err(not_ours());
    }
    let mut tagged = false;
    // SAFETY: buffer is an object of this env; out-pointer valid.
    let st = unsafe { napi::napi_check_object_type_tag(env.0, buffer, &MAPPING_TAG, &mut tagged) };
    env.check(st, "napi_check_object_type_tag")?;
    if !tagged {
        return Err(not_ours());
    }
    let (data, len) = env.arraybuffer_info(buffer)?;
    Ok(if data.is_null() { None } else { Some((data, len)) })
}

/// `munmap(buffer): void` — see the module docs.
pub fn munmap(env: Env, info: napi_callback_info) -> JsResult {
    let [buffer] = env.args::<1>(info)?;
    let Some((data, _)) = mapping_of(env, buffer)? else {
        return env.undefined(); // detached: already unmapped
    };
    // SAFETY: the state is used within this callback on the JS thread.
    let state = unsafe { EnvState::current(env) }?;
    let mapping = state.mappings.borrow_mut().remove(&(data as usize));
    let Some(mapping) = mapping else {
        return Err(Throw::Type("buffer is not a live mapping made by mmap or shmAttach on this thread".to_string()));
    };
    state.settle_waits_in_range(env, mapping.addr, mapping.len);
    // SAFETY: buffer is an external ArrayBuffer of this env.
    let st = unsafe { napi::napi_detach_arraybuffer(env.0, buffer) };
    if let Err(err) = env.check(st, "napi_detach_arraybuffer") {
        // Still attached: unmapping now would make its views fault.
        state.mappings.borrow_mut().insert(mapping.addr, mapping);
        return Err(err);
    }
    mapping.release()?;
    env.undefined()
}

/// Finalizer of a mapping's ArrayBuffer: after GC, or at env teardown (when
/// Node detaches it first). Stops async waits on it, then unmaps it and
/// closes the fd it owns, unless `munmap` already did.
///
/// # Safety
/// Called once by Node, on the env's JS thread, with the `Arc<Mapping>`
/// given as hint to napi_create_external_arraybuffer.
unsafe extern "C" fn finalize_mapping(env: napi_env, _data: *mut c_void, hint: *mut c_void) {
    // SAFETY: hint is the Arc<Mapping> leaked in mmap().
    let mapping = unsafe { Arc::from_raw(hint.cast::<Mapping>().cast_const()) };
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: finalizers run on the env's JS thread; the state outlives
        // every ArrayBuffer of the env (see env.rs).
        if let Some(state) = unsafe { EnvState::get(Env(env)) } {
            // try_borrow: never panic, even if Node ran this finalizer while
            // an entry point held the registry (it does not in Node 20).
            if let Ok(mut mappings) = state.mappings.try_borrow_mut()
                && mappings.get(&mapping.addr).is_some_and(|m| Arc::ptr_eq(m, &mapping))
            {
                mappings.remove(&mapping.addr);
            }
            if mapping.is_mapped() && state.stop_waits_in_range(mapping.addr, mapping.len) {
                // Teardown: unmapped once the stopped waits' wakes are passed on (env_cleanup).
                state.defer_release(Arc::clone(&mapping));
                return;
            }
        }
        let _ = mapping.release();
    });
}

/// `populate(buffer): void` — madvise(MADV_POPULATE_WRITE) over the whole
/// mapping: every page is faulted in (allocated) now, so that a mapping whose
/// pages the kernel cannot provide (huge pages running out, a hugetlb cgroup
/// limit) fails here with an error instead of a SIGBUS at the first touch.
/// A writable mapping only (it writes nothing, but faults as a write would).
/// EINVAL on Linux < 5.14, which lacks the advice; EINTR is retried (the
/// pages populated so far stay).
pub fn populate(env: Env, info: napi_callback_info) -> JsResult {
    let [buffer] = env.args::<1>(info)?;
    let Some((data, len)) = mapping_of(env, buffer)? else {
        return Err(Throw::Type("buffer is detached (its region was closed)".to_string()));
    };
    loop {
        // SAFETY: data/len are the live mapping behind an attached buffer of
        // ours (checked above), page-aligned by mmap / shmat; the advice
        // only faults pages in and never changes their contents.
        match cvt(unsafe { libc::madvise(data.cast(), len, libc::MADV_POPULATE_WRITE) }, "madvise") {
            Err(err) if err.errno == libc::EINTR => continue,
            result => {
                result?;
                return env.undefined();
            }
        }
    }
}

/// `allocate(fd, offset, length): void` — fallocate(fd, 0, offset, length):
/// the file's blocks (a tmpfs file's pages) in that range are reserved now,
/// growing the file if the range ends past it, so that a file system too
/// small for it (a container's 64 MiB /dev/shm) fails here with ENOSPC
/// instead of a SIGBUS at the first touch of a page it cannot provide.
/// EOPNOTSUPP where the file system cannot reserve; EINTR is retried.
pub fn allocate(env: Env, info: napi_callback_info) -> JsResult {
    let [fd, offset, length] = env.args::<3>(info)?;
    let fd = env.fd(fd, "fd")?;
    let offset = env.integer(offset, "offset", 0.0, MAX_SAFE_INTEGER)?;
    let length = env.integer(length, "length", 1.0, MAX_SAFE_INTEGER)?;
    loop {
        // SAFETY: plain integer arguments; no memory is involved.
        match cvt(unsafe { libc::fallocate(fd, 0, offset, length) }, "fallocate") {
            Err(err) if err.errno == libc::EINTR => continue,
            result => {
                result?;
                return env.undefined();
            }
        }
    }
}

/// `addSeals(fd, seals): void` — fcntl(fd, F_ADD_SEALS, seals).
pub fn add_seals(env: Env, info: napi_callback_info) -> JsResult {
    let [fd, seals] = env.args::<2>(info)?;
    let fd = env.fd(fd, "fd")?;
    let seals = env.integer(seals, "seals", 0.0, i32::MAX as f64)?;
    // SAFETY: F_ADD_SEALS takes an int argument (passed as a long, as the
    // variadic fcntl reads it); no memory is involved.
    cvt(unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals as std::ffi::c_long) }, "fcntl")?;
    env.undefined()
}

/// `getSeals(fd): number` — fcntl(fd, F_GET_SEALS); EINVAL for an fd that
/// does not support sealing.
pub fn get_seals(env: Env, info: napi_callback_info) -> JsResult {
    let [fd] = env.args::<1>(info)?;
    let fd = env.fd(fd, "fd")?;
    // SAFETY: F_GET_SEALS takes no argument; no memory is involved.
    let seals = cvt(unsafe { libc::fcntl(fd, libc::F_GET_SEALS) }, "fcntl")?;
    env.int32(seals)
}
