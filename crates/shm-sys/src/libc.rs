//! libc: the functions, structures and constants this addon calls, declared
//! by hand for Linux x86_64 with glibc (values from the kernel's uapi headers
//! and glibc's `<bits/*.h>`), and [`cvt`], the one helper every raw call goes
//! through to turn a `-1` return into a [`SysError`] carrying errno.
//!
//! `shm_open` / `shm_unlink` live in libc.so.6 itself since glibc 2.34; on an
//! older glibc they are in librt and the addon would not load.

#![allow(non_camel_case_types)]

use std::ffi::{CStr, c_char, c_int, c_long, c_uint, c_void};

pub type mode_t = u32;
pub type off_t = i64;
pub type socklen_t = u32;
pub type key_t = c_int;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct timespec {
    pub tv_sec: i64,
    pub tv_nsec: i64,
}

/// `struct futex_waitv` (linux/futex.h): 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct futex_waitv {
    pub val: u64,
    pub uaddr: u64,
    pub flags: u32,
    pub reserved: u32,
}

/// `struct io_sqring_offsets` (linux/io_uring.h): 40 bytes.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct io_sqring_offsets {
    pub head: u32,
    pub tail: u32,
    pub ring_mask: u32,
    pub ring_entries: u32,
    pub flags: u32,
    pub dropped: u32,
    pub array: u32,
    pub resv1: u32,
    pub user_addr: u64,
}

/// `struct io_cqring_offsets`: 40 bytes.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct io_cqring_offsets {
    pub head: u32,
    pub tail: u32,
    pub ring_mask: u32,
    pub ring_entries: u32,
    pub overflow: u32,
    pub cqes: u32,
    pub flags: u32,
    pub resv1: u32,
    pub user_addr: u64,
}

/// `struct io_uring_params`: 120 bytes.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct io_uring_params {
    pub sq_entries: u32,
    pub cq_entries: u32,
    pub flags: u32,
    pub sq_thread_cpu: u32,
    pub sq_thread_idle: u32,
    pub features: u32,
    pub wq_fd: u32,
    pub resv: [u32; 3],
    pub sq_off: io_sqring_offsets,
    pub cq_off: io_cqring_offsets,
}

/// `struct io_uring_sqe` (64 bytes), with the unions named after the
/// members this crate uses: `off` is also `addr2` (the futex value),
/// `op_flags` is `rw_flags` / `futex_flags` / `timeout_flags`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct io_uring_sqe {
    pub opcode: u8,
    pub flags: u8,
    pub ioprio: u16,
    pub fd: i32,
    pub off: u64,
    pub addr: u64,
    pub len: u32,
    pub op_flags: u32,
    pub user_data: u64,
    pub buf_index: u16,
    pub personality: u16,
    pub file_index: u32,
    pub addr3: u64,
    pub pad2: u64,
}

/// `struct io_uring_cqe` (16 bytes, without IORING_SETUP_CQE32).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct io_uring_cqe {
    pub user_data: u64,
    pub res: i32,
    pub flags: u32,
}

// io_uring constants (linux/io_uring.h; the FUTEX opcodes need Linux >= 6.7)
pub const IORING_SETUP_CQSIZE: u32 = 1 << 3;
pub const IORING_SETUP_CLAMP: u32 = 1 << 4;
pub const IORING_FEAT_SINGLE_MMAP: u32 = 1 << 0;
pub const IORING_FEAT_NODROP: u32 = 1 << 1;
pub const IORING_OFF_SQ_RING: i64 = 0;
pub const IORING_OFF_SQES: i64 = 0x1000_0000;
pub const IORING_ENTER_GETEVENTS: u32 = 1 << 0;
pub const IORING_SQ_CQ_OVERFLOW: u32 = 1 << 1;
pub const IOSQE_IO_LINK: u8 = 1 << 2;
pub const IORING_OP_ASYNC_CANCEL: u8 = 14;
pub const IORING_OP_LINK_TIMEOUT: u8 = 15;
pub const IORING_OP_FUTEX_WAIT: u8 = 51;
pub const IORING_OP_FUTEX_WAITV: u8 = 53;
pub const IORING_TIMEOUT_ABS: u32 = 1 << 0;
pub const MAP_POPULATE: c_int = 0x08000;

/// `struct ipc_perm` (glibc x86_64 = the kernel's `ipc64_perm`): 48 bytes.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct ipc_perm {
    pub key: key_t,
    pub uid: u32,
    pub gid: u32,
    pub cuid: u32,
    pub cgid: u32,
    pub mode: u32,
    pub seq: u16,
    pub pad2: u16,
    pub reserved1: u64,
    pub reserved2: u64,
}

/// `struct shmid_ds` (glibc x86_64 = the kernel's `shmid64_ds`): 112 bytes,
/// `shm_segsz` at 48, `shm_nattch` at 88 (checked by a test below).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct shmid_ds {
    pub shm_perm: ipc_perm,
    pub shm_segsz: usize,
    pub shm_atime: i64,
    pub shm_dtime: i64,
    pub shm_ctime: i64,
    pub shm_cpid: i32,
    pub shm_lpid: i32,
    pub shm_nattch: u64,
    pub reserved4: u64,
    pub reserved5: u64,
}

#[repr(C)]
pub struct iovec {
    pub iov_base: *mut c_void,
    pub iov_len: usize,
}

/// `struct flock` (x86_64: 32 bytes; `l_pid` must be 0 for the OFD commands).
#[repr(C)]
pub struct flock {
    pub l_type: i16,
    pub l_whence: i16,
    pub l_start: off_t,
    pub l_len: off_t,
    pub l_pid: c_int,
}

/// `struct msghdr` (x86_64: 56 bytes, `msg_namelen` padded to 8).
#[repr(C)]
pub struct msghdr {
    pub msg_name: *mut c_void,
    pub msg_namelen: socklen_t,
    pub msg_iov: *mut iovec,
    pub msg_iovlen: usize,
    pub msg_control: *mut c_void,
    pub msg_controllen: usize,
    pub msg_flags: c_int,
}

/// `struct cmsghdr` (x86_64: 16 bytes, the data follows at CMSG_ALIGN(16)).
#[repr(C)]
pub struct cmsghdr {
    pub cmsg_len: usize,
    pub cmsg_level: c_int,
    pub cmsg_type: c_int,
}

unsafe extern "C" {
    pub fn memfd_create(name: *const c_char, flags: c_uint) -> c_int;
    pub fn shm_open(name: *const c_char, oflag: c_int, mode: mode_t) -> c_int;
    pub fn shm_unlink(name: *const c_char) -> c_int;
    pub fn mmap(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, offset: off_t) -> *mut c_void;
    pub fn munmap(addr: *mut c_void, len: usize) -> c_int;
    pub fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    pub fn open(path: *const c_char, oflag: c_int, ...) -> c_int;
    pub fn close(fd: c_int) -> c_int;
    pub fn syscall(number: c_long, ...) -> c_long;
    pub fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> isize;
    pub fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> isize;
    pub fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int;
    pub fn fallocate(fd: c_int, mode: c_int, offset: off_t, len: off_t) -> c_int;
    pub fn shmget(key: key_t, size: usize, shmflg: c_int) -> c_int;
    pub fn shmat(shmid: c_int, shmaddr: *const c_void, shmflg: c_int) -> *mut c_void;
    pub fn shmdt(shmaddr: *const c_void) -> c_int;
    /// glibc adds IPC_64 itself, so `buf` is the 64-bit `shmid_ds` above.
    pub fn shmctl(shmid: c_int, cmd: c_int, buf: *mut shmid_ds) -> c_int;
    pub fn clock_gettime(clock: c_int, tp: *mut timespec) -> c_int;
    pub fn getpid() -> c_int;
    pub fn __errno_location() -> *mut c_int;
    /// Looks a symbol up at run time (`handle` RTLD_DEFAULT: every object loaded): for the functions some C
    /// libraries lack, which a declaration here would make the addon fail to load on.
    pub fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    /// The GNU variant (what the `strerror_r` symbol is in glibc): returns
    /// either `buf` or a static string, always NUL-terminated.
    #[cfg(target_env = "gnu")]
    pub fn strerror_r(errnum: c_int, buf: *mut c_char, buflen: usize) -> *mut c_char;
    /// The XSI variant (musl): fills `buf`, returns 0 on success.
    #[cfg(not(target_env = "gnu"))]
    #[link_name = "strerror_r"]
    pub fn xsi_strerror_r(errnum: c_int, buf: *mut c_char, buflen: usize) -> c_int;
}

// memfd_create(2)
pub const MFD_CLOEXEC: c_uint = 0x0001;
pub const MFD_ALLOW_SEALING: c_uint = 0x0002;
/// Back the memfd with huge pages of the default size (hugetlbfs).
pub const MFD_HUGETLB: c_uint = 0x0004;
// System V shared memory (sys/ipc.h, sys/shm.h)
pub const IPC_CREAT: c_int = 0o1000;
pub const IPC_EXCL: c_int = 0o2000;
pub const IPC_RMID: c_int = 0;
pub const IPC_STAT: c_int = 2;
pub const SHM_HUGETLB: c_int = 0o4000;
pub const SHM_RDONLY: c_int = 0o10000;
// madvise(2) (Linux >= 5.14): fault every page in now, and fail with an
// error instead of a later SIGBUS when that is impossible.
pub const MADV_POPULATE_WRITE: c_int = 23;
// open(2)
pub const O_CLOEXEC: c_int = 0o2000000;
// mmap(2)
pub const PROT_READ: c_int = 0x1;
#[cfg(test)]
pub const PROT_NONE: c_int = 0x0;
pub const PROT_WRITE: c_int = 0x2;
pub const MAP_SHARED: c_int = 0x01;
#[cfg(test)]
pub const MAP_ANONYMOUS: c_int = 0x20;
// fcntl(2)
pub const F_DUPFD_CLOEXEC: c_int = 1030;
// fcntl(2) open file description locks (Linux >= 3.15)
pub const F_OFD_GETLK: c_int = 36;
pub const F_OFD_SETLK: c_int = 37;
pub const F_RDLCK: i16 = 0;
pub const F_WRLCK: i16 = 1;
pub const F_UNLCK: i16 = 2;
pub const SEEK_SET: i16 = 0;
// fcntl(2) seals
pub const F_ADD_SEALS: c_int = 1033;
pub const F_GET_SEALS: c_int = 1034;
// System call numbers differ by architecture: x86_64's and aarch64's here, and
// a build for any other stops below rather than call the wrong ones.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("shm-sys knows the system call numbers of x86_64 and aarch64 only: add this architecture's to libc.rs");
// futex(2)
#[cfg(target_arch = "x86_64")]
pub const SYS_FUTEX: c_long = 202;
#[cfg(target_arch = "aarch64")]
pub const SYS_FUTEX: c_long = 98;
pub const FUTEX_WAKE: c_int = 1;
pub const FUTEX_WAIT_BITSET: c_int = 9;
pub const FUTEX_BITSET_MATCH_ANY: u32 = 0xffff_ffff;
// membarrier(2) (Linux >= 4.16 for the expedited global commands)
#[cfg(target_arch = "x86_64")]
pub const SYS_MEMBARRIER: c_long = 324;
#[cfg(target_arch = "aarch64")]
pub const SYS_MEMBARRIER: c_long = 283;
// futex_waitv(2) (Linux >= 5.16): FUTEX2_SIZE_U32, without FUTEX2_PRIVATE
// (the words are shared across processes); at most FUTEX_WAITV_MAX words.
// The same number on both architectures (the generic table's).
pub const SYS_FUTEX_WAITV: c_long = 449;
pub const FUTEX2_SIZE_U32: u32 = 0x02;
pub const FUTEX_WAITV_MAX: usize = 128;
// process_vm_readv(2): at most IOV_MAX iovecs per call
#[cfg(target_arch = "x86_64")]
pub const SYS_PROCESS_VM_READV: c_long = 310;
#[cfg(target_arch = "aarch64")]
pub const SYS_PROCESS_VM_READV: c_long = 270;
pub const IOV_MAX: usize = 1024;
// io_uring(7) (the same numbers on both architectures)
pub const SYS_IO_URING_SETUP: c_long = 425;
pub const SYS_IO_URING_ENTER: c_long = 426;
// clock_gettime(2)
pub const CLOCK_MONOTONIC: c_int = 1;
// sockets
pub const SOL_SOCKET: c_int = 1;
pub const SCM_RIGHTS: c_int = 1;
pub const MSG_DONTWAIT: c_int = 0x40;
pub const MSG_NOSIGNAL: c_int = 0x4000;
pub const MSG_CMSG_CLOEXEC: c_int = 0x4000_0000;
/// recvmsg(2) flag: control data was discarded (an fd the kernel could not install here).
pub const MSG_CTRUNC: c_int = 0x8;
// errno values the code branches on
pub const EPERM: i32 = 1;
pub const EINTR: i32 = 4;
pub const EINVAL: i32 = 22;
pub const EFAULT: i32 = 14;
pub const ENOSYS: i32 = 38;
pub const ECANCELED: i32 = 125;
pub const EAGAIN: i32 = 11;
pub const EACCES: i32 = 13;
pub const ETIMEDOUT: i32 = 110;

/// A failed system call: its name and the errno it left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysError {
    pub errno: i32,
    pub syscall: &'static str,
}

/// The calling thread's errno.
pub fn errno() -> i32 {
    // SAFETY: __errno_location always returns a valid pointer to this
    // thread's errno.
    unsafe { *__errno_location() }
}

/// Integer return types whose failure value is `-1`.
pub trait MinusOne: Copy + PartialEq {
    const MINUS_ONE: Self;
}
impl MinusOne for i32 {
    const MINUS_ONE: Self = -1;
}
impl MinusOne for i64 {
    const MINUS_ONE: Self = -1;
}
impl MinusOne for isize {
    const MINUS_ONE: Self = -1;
}

/// The one helper every raw call goes through: `-1` becomes a [`SysError`]
/// carrying errno (read immediately, before anything else can change it),
/// any other value is returned as is. For `mmap`, pass the pointer as
/// `isize` (`MAP_FAILED` is `(void*)-1`).
pub fn cvt<T: MinusOne>(ret: T, syscall: &'static str) -> Result<T, SysError> {
    if ret == T::MINUS_ONE { Err(SysError { errno: errno(), syscall }) } else { Ok(ret) }
}

/// `RTLD_DEFAULT` for dlsym (glibc and musl: a null handle).
pub const RTLD_DEFAULT: *mut c_void = std::ptr::null_mut();

/// The C library's name for an errno value ("EIDRM"), where it has
/// `strerrorname_np` (glibc 2.32 and later), looked up at run time; None
/// otherwise, or for a value it does not know.
pub fn errno_symbol(errnum: i32) -> Option<String> {
    type StrerrornameNp = unsafe extern "C" fn(c_int) -> *const c_char;
    static LOOKUP: std::sync::OnceLock<Option<StrerrornameNp>> = std::sync::OnceLock::new();
    let f = LOOKUP.get_or_init(|| {
        // SAFETY: a NUL-terminated symbol name; a null result means the C library lacks it.
        let found = unsafe { dlsym(RTLD_DEFAULT, c"strerrorname_np".as_ptr()) };
        // SAFETY: glibc's strerrorname_np has exactly this signature: const char *(int).
        (!found.is_null()).then(|| unsafe { std::mem::transmute::<*mut c_void, StrerrornameNp>(found) })
    });
    // SAFETY: strerrorname_np returns a static NUL-terminated string, or null for an unknown value.
    let name = unsafe { f.as_ref()?(errnum) };
    if name.is_null() {
        return None;
    }
    // SAFETY: checked non-null; static and NUL-terminated.
    Some(unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy().into_owned())
}

/// strerror for an errno value (thread-safe).
pub fn strerror(errnum: i32) -> String {
    let mut buf = [0 as c_char; 256];
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: buf is 256 writable bytes; the GNU strerror_r returns a
        // NUL-terminated string (in buf or static) that outlives this use.
        let text = unsafe { strerror_r(errnum, buf.as_mut_ptr(), buf.len()) };
        if text.is_null() {
            return format!("Unknown error {errnum}");
        }
        // SAFETY: text is a valid NUL-terminated string (see above).
        unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned()
    }
    #[cfg(not(target_env = "gnu"))]
    {
        // SAFETY: buf is 256 writable bytes; on success it holds a
        // NUL-terminated message.
        if unsafe { xsi_strerror_r(errnum, buf.as_mut_ptr(), buf.len()) } != 0 {
            return format!("Unknown error {errnum}");
        }
        // SAFETY: filled and NUL-terminated by strerror_r.
        unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
    }
}

/// CLOCK_MONOTONIC now.
pub fn monotonic_now() -> timespec {
    let mut now = timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: now is a valid out-pointer; CLOCK_MONOTONIC cannot fail on
    // Linux (the result is checked anyway and leaves zero on failure).
    let _ = cvt(unsafe { clock_gettime(CLOCK_MONOTONIC, &mut now) }, "clock_gettime");
    now
}

/// Closes an fd, ignoring errors (used to drop fds nobody will receive).
pub fn close_quietly(fd: c_int) {
    // SAFETY: closing an fd this code owns; an invalid fd only yields EBADF.
    let _ = unsafe { close(fd) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn shmid_ds_has_the_layout_of_glibc_x86_64() {
        // Offsets as gcc reports them for <sys/shm.h> on x86_64 glibc.
        assert_eq!(size_of::<ipc_perm>(), 48);
        assert_eq!(size_of::<shmid_ds>(), 112);
        assert_eq!(offset_of!(ipc_perm, mode), 20);
        assert_eq!(offset_of!(shmid_ds, shm_segsz), 48);
        assert_eq!(offset_of!(shmid_ds, shm_cpid), 80);
        assert_eq!(offset_of!(shmid_ds, shm_nattch), 88);
    }

    #[test]
    #[cfg(target_env = "gnu")]
    fn errno_symbol_names_the_errnos_libuv_does_not() {
        // glibc 2.32 and later has strerrorname_np; these are values libuv has no name for.
        assert_eq!(errno_symbol(43).as_deref(), Some("EIDRM"));
        assert_eq!(errno_symbol(122).as_deref(), Some("EDQUOT"));
        assert_eq!(errno_symbol(37).as_deref(), Some("ENOLCK"));
        assert_eq!(errno_symbol(100_000), None);
    }
}
