//! Passing file descriptors over a Unix domain socket (SCM_RIGHTS).
//!
//! A message is one byte of payload with the fd attached as ancillary data.
//! The control buffers are built by hand with the x86_64 arithmetic of
//! `<sys/socket.h>`: `CMSG_ALIGN` rounds up to `size_of::<usize>()` (8), the
//! header (`struct cmsghdr`) is 16 bytes, so one fd needs
//! `CMSG_SPACE(4) = 16 + 8 = 24` bytes with `cmsg_len = CMSG_LEN(4) = 20`.
//! Both calls are non-blocking (MSG_DONTWAIT): Node's sockets are
//! non-blocking anyway, and the event loop must never stall here.

use std::ffi::{c_int, c_void};
use std::mem::size_of;
use std::ptr;

use crate::libc::{self, cmsghdr, cvt, iovec, msghdr};
use crate::napi::{Env, JsResult, napi_callback_info};

/// `CMSG_ALIGN`: round up to the alignment of `size_t`.
const fn cmsg_align(len: usize) -> usize {
    (len + size_of::<usize>() - 1) & !(size_of::<usize>() - 1)
}
/// `CMSG_LEN`: header plus `len` bytes of data (the value of `cmsg_len`).
const fn cmsg_len(len: usize) -> usize {
    cmsg_align(size_of::<cmsghdr>()) + len
}
/// `CMSG_SPACE`: bytes a control message with `len` bytes of data occupies.
const fn cmsg_space(len: usize) -> usize {
    cmsg_align(size_of::<cmsghdr>()) + cmsg_align(len)
}

/// At most this many fds are accepted in one received message; any beyond
/// the first are closed (a well-behaved peer sends exactly one).
const MAX_RECEIVED_FDS: usize = 16;
const SEND_SPACE: usize = cmsg_space(size_of::<c_int>());
const RECV_SPACE: usize = cmsg_space(MAX_RECEIVED_FDS * size_of::<c_int>());

/// A control buffer aligned like `struct cmsghdr` (8 bytes).
#[repr(C, align(8))]
struct Control<const N: usize>([u8; N]);

/// `recvFd` results that are not an fd.
const RECV_NOTHING_YET: i32 = -1;
const RECV_EOF: i32 = -2;
const RECV_NO_FD: i32 = -3;
/// A message came with an fd the kernel could not install in this process (MSG_CTRUNC: out of fds, or refused).
const RECV_FD_LOST: i32 = -4;

/// `sendFd(socketFd, fd): void`.
pub fn send_fd(env: Env, info: napi_callback_info) -> JsResult {
    let [socket, fd] = env.args::<2>(info)?;
    let socket = env.fd(socket, "socketFd")?;
    let fd = env.fd(fd, "fd")?;

    let mut payload = [0u8; 1];
    let mut iov = iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: payload.len() };
    let mut control = Control([0u8; SEND_SPACE]);
    let header =
        cmsghdr { cmsg_len: cmsg_len(size_of::<c_int>()), cmsg_level: libc::SOL_SOCKET, cmsg_type: libc::SCM_RIGHTS };
    // SAFETY: control is 8-aligned and SEND_SPACE (24) bytes: room for the
    // 16-byte header at 0 and the 4-byte fd at CMSG_ALIGN(16) = 16.
    unsafe {
        ptr::write_unaligned(control.0.as_mut_ptr().cast::<cmsghdr>(), header);
        ptr::write_unaligned(control.0.as_mut_ptr().add(cmsg_len(0)).cast::<c_int>(), fd);
    }
    let msg = msghdr {
        msg_name: ptr::null_mut(),
        msg_namelen: 0,
        msg_iov: &mut iov,
        msg_iovlen: 1,
        msg_control: control.0.as_mut_ptr().cast::<c_void>(),
        msg_controllen: SEND_SPACE,
        msg_flags: 0,
    };
    loop {
        // SAFETY: msg and everything it points at (iov, payload, control)
        // live on this stack frame for the whole call.
        match cvt(unsafe { libc::sendmsg(socket, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) }, "sendmsg") {
            Ok(_) => return env.undefined(),
            Err(err) if err.errno == libc::EINTR => continue,
            Err(err) => return Err(err.into()),
        }
    }
}

/// `recvFd(socketFd): number` — the received fd (close-on-exec), or -1
/// nothing yet (EAGAIN), -2 EOF, -3 a message without an fd, -4 a message
/// whose fd the kernel could not install here (MSG_CTRUNC).
pub fn recv_fd(env: Env, info: napi_callback_info) -> JsResult {
    let [socket] = env.args::<1>(info)?;
    let socket = env.fd(socket, "socketFd")?;

    let mut payload = [0u8; 1];
    let mut iov = iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: payload.len() };
    let mut control = Control([0u8; RECV_SPACE]);
    let mut msg = msghdr {
        msg_name: ptr::null_mut(),
        msg_namelen: 0,
        msg_iov: &mut iov,
        msg_iovlen: 1,
        msg_control: control.0.as_mut_ptr().cast::<c_void>(),
        msg_controllen: RECV_SPACE,
        msg_flags: 0,
    };
    let received = loop {
        // SAFETY: msg and everything it points at live on this stack frame.
        match cvt(unsafe { libc::recvmsg(socket, &mut msg, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) }, "recvmsg") {
            Ok(n) => break n,
            Err(err) if err.errno == libc::EINTR => continue,
            Err(err) if err.errno == libc::EAGAIN => return env.int32(RECV_NOTHING_YET),
            Err(err) => return Err(err.into()),
        }
    };
    let fd = take_fds(&control.0[..msg.msg_controllen.min(RECV_SPACE)]);
    match fd {
        Some(fd) => crate::env::opened(env, fd),
        // The kernel dropped the fd it could not install (EMFILE, a security module) and said so in the flags.
        None if msg.msg_flags & libc::MSG_CTRUNC != 0 => env.int32(RECV_FD_LOST),
        None if received == 0 => env.int32(RECV_EOF),
        None => env.int32(RECV_NO_FD),
    }
}

/// Walks the control messages (`CMSG_FIRSTHDR` / `CMSG_NXTHDR`) and returns
/// the first SCM_RIGHTS fd; every other received fd is closed.
fn take_fds(control: &[u8]) -> Option<c_int> {
    let mut first = None;
    let mut at = 0usize;
    while at + size_of::<cmsghdr>() <= control.len() {
        // SAFETY: the header lies inside `control` (checked above); read
        // unaligned to not depend on the slice's alignment.
        let header = unsafe { ptr::read_unaligned(control.as_ptr().add(at).cast::<cmsghdr>()) };
        if header.cmsg_len < cmsg_len(0) || at + header.cmsg_len > control.len() {
            break; // malformed or truncated: stop
        }
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
            let count = (header.cmsg_len - cmsg_len(0)) / size_of::<c_int>();
            for i in 0..count {
                let offset = at + cmsg_len(0) + i * size_of::<c_int>();
                // SAFETY: offset + 4 <= at + cmsg_len <= control.len().
                let fd = unsafe { ptr::read_unaligned(control.as_ptr().add(offset).cast::<c_int>()) };
                if first.is_none() {
                    first = Some(fd);
                } else {
                    libc::close_quietly(fd);
                }
            }
        }
        at += cmsg_align(header.cmsg_len);
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmsg_arithmetic_matches_x86_64_glibc() {
        assert_eq!(size_of::<cmsghdr>(), 16);
        assert_eq!(size_of::<msghdr>(), 56);
        assert_eq!(cmsg_len(4), 20);
        assert_eq!(cmsg_space(4), 24);
        assert_eq!(cmsg_space(64), 80);
    }
}
