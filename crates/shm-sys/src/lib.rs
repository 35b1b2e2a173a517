//! shm-sys: the Node-API addon of shmring, the only code of the project that
//! makes system calls. It has no dependencies: the Node-API functions are
//! declared in [`napi`] and resolved from the node binary when Node loads
//! the addon; the libc functions are declared in [`libc`].
//!
//! Modules, one per family of calls:
//!  - `shm`: memfd_create, shm_open, shm_unlink, open, dup, close
//!  - `memory`: mmap into an external ArrayBuffer, munmap, populate, seals
//!  - `sysv`: System V shared memory (shmget, shmat, IPC_RMID)
//!  - `lock`: open file description locks on one byte (role liveness)
//!
//! Layers, each using only those below it (no module cycles):
//!  1. declarations: `libc` (libc and kernel uapi), `napi` (Node-API, with
//!     its argument and error helpers), `uv` (libuv, errno names);
//!  2. raw system calls: `sys` (futex wait / wake / waitv), `uring` (an
//!     io_uring instance), `mapping` (one mmap'd region), `fds` (the fds
//!     each env opened and still holds, closed when it ends);
//!  3. waiting machinery: `reactor` (an io_uring polled by the env's event
//!     loop), `lanes` (futex_waitv threads, the fallback), `pool` (a thread
//!     per wait, the last resort), `delivery` (their way back to an env),
//!     `waits` (the registry of pending async waits);
//!  4. `env`: the per-env state that owns the registry, the reactor and the
//!     mappings;
//!  5. JS entry points: `shm` (memfd, shm_open, open, dup, close), `lock`
//!     (OFD locks), `memory` (mmap, munmap, populate, seals), `sysv`
//!     (shmget, shmat, IPC_RMID), `futex` (wait, wake, async wait), `socket`
//!     (SCM_RIGHTS).
//!
//! The raw exports are wrapped by index.cjs into the `NativeBackend`
//! interface of @shmring/core.

mod delivery;
mod env;
mod fds;
mod futex;
mod lanes;
mod libc;
mod lock;
mod mapping;
mod memory;
mod napi;
mod pool;
mod reactor;
mod shm;
mod socket;
mod sys;
mod sysv;
#[cfg(test)]
mod testfd;
mod uring;
mod uv;
mod waits;

use std::ptr;

use napi::{Env, JsResult, napi_env, napi_property_descriptor, napi_value};

js_fn! {
    js_memfd_create => shm::memfd_create;
    js_shm_open => shm::shm_open;
    js_shm_unlink => shm::shm_unlink;
    js_open => shm::open;
    js_dup => shm::dup;
    js_close => shm::close;
    js_ofd_lock => lock::ofd_lock;
    js_ofd_test => lock::ofd_test;
    js_mmap => memory::mmap;
    js_munmap => memory::munmap;
    js_add_seals => memory::add_seals;
    js_get_seals => memory::get_seals;
    js_populate => memory::populate;
    js_allocate => memory::allocate;
    js_shm_get => sysv::shm_get;
    js_shm_attach => sysv::shm_attach;
    js_shm_remove => sysv::shm_remove;
    js_futex_wait => futex::futex_wait;
    js_futex_wake => futex::futex_wake;
    js_futex_wait_any => futex::futex_wait_any;
    js_membarrier => futex::membarrier;
    js_async_wait_kind => futex::async_wait_kind;
    js_choose_async_wait => futex::choose_async_wait;
    js_futex_wait_start => futex::futex_wait_start;
    js_futex_wait_cancel => futex::futex_wait_cancel;
    js_futex_wait_any_start => futex::futex_wait_any_start;
    js_send_fd => socket::send_fd;
    js_recv_fd => socket::recv_fd;
}

/// The raw exports, by JS name.
const EXPORTS: [(&std::ffi::CStr, napi::napi_callback); 28] = [
    (c"memfdCreate", Some(js_memfd_create)),
    (c"shmOpen", Some(js_shm_open)),
    (c"shmUnlink", Some(js_shm_unlink)),
    (c"open", Some(js_open)),
    (c"dup", Some(js_dup)),
    (c"close", Some(js_close)),
    (c"ofdLock", Some(js_ofd_lock)),
    (c"ofdTest", Some(js_ofd_test)),
    (c"mmap", Some(js_mmap)),
    (c"munmap", Some(js_munmap)),
    (c"addSeals", Some(js_add_seals)),
    (c"getSeals", Some(js_get_seals)),
    (c"populate", Some(js_populate)),
    (c"allocate", Some(js_allocate)),
    (c"shmGet", Some(js_shm_get)),
    (c"shmAttach", Some(js_shm_attach)),
    (c"shmRemove", Some(js_shm_remove)),
    (c"futexWait", Some(js_futex_wait)),
    (c"futexWake", Some(js_futex_wake)),
    (c"futexWaitAny", Some(js_futex_wait_any)),
    (c"membarrier", Some(js_membarrier)),
    (c"asyncWaitKind", Some(js_async_wait_kind)),
    (c"chooseAsyncWait", Some(js_choose_async_wait)),
    (c"futexWaitStart", Some(js_futex_wait_start)),
    (c"futexWaitCancel", Some(js_futex_wait_cancel)),
    (c"futexWaitAnyStart", Some(js_futex_wait_any_start)),
    (c"sendFd", Some(js_send_fd)),
    (c"recvFd", Some(js_recv_fd)),
];

fn register(env: Env, exports: napi_value) -> JsResult {
    env::EnvState::install(env)?;
    let properties: Vec<napi_property_descriptor> = EXPORTS
        .iter()
        .map(|(name, method)| napi_property_descriptor {
            utf8name: name.as_ptr(),
            name: ptr::null_mut(),
            method: *method,
            getter: None,
            setter: None,
            value: ptr::null_mut(),
            attributes: napi::NAPI_ENUMERABLE,
            data: ptr::null_mut(),
        })
        .collect();
    // SAFETY: properties holds valid descriptors with static names and
    // function pointers; exports is the env's exports object.
    let st = unsafe { napi::napi_define_properties(env.0, exports, properties.len(), properties.as_ptr()) };
    env.check(st, "napi_define_properties")?;
    Ok(exports)
}

/// Module entry point, found by Node with dlsym when the addon is loaded
/// (once per env: main thread and each worker).
///
/// # Safety
/// Called by Node with a live env and its exports object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn napi_register_module_v1(env: napi_env, exports: napi_value) -> napi_value {
    let env = Env(env);
    match std::panic::catch_unwind(|| register(env, exports)) {
        Ok(Ok(exports)) => exports,
        Ok(Err(throw)) => {
            env.throw(throw);
            ptr::null_mut()
        }
        Err(_) => {
            env.throw(napi::Throw::Napi("shm-sys module registration (panic)", napi::NAPI_OK));
            ptr::null_mut()
        }
    }
}

/// The Node-API version this addon is written against (Node 20 supports 9;
/// 8 keeps finalizer semantics as documented for Node 20).
#[unsafe(no_mangle)]
pub extern "C" fn node_api_module_get_api_version_v1() -> i32 {
    8
}
