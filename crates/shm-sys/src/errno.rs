//! errno number → name, for the `code` property of JS errors ('ENOENT',
//! 'EEXIST', ...). The table covers every errno of Linux on x86_64
//! (asm-generic/errno-base.h and asm-generic/errno.h, 1..=133); where two
//! names share a number the one Node reports is used (EAGAIN over
//! EWOULDBLOCK, EOPNOTSUPP over ENOTSUP, EDEADLK over EDEADLOCK). Unknown
//! numbers become `E<number>`.

use std::borrow::Cow;

/// Names indexed by errno; `""` marks the numbers Linux leaves unused.
const NAMES: [&str; 134] = [
    "", // 0
    "EPERM",
    "ENOENT",
    "ESRCH",
    "EINTR",
    "EIO",
    "ENXIO",
    "E2BIG",
    "ENOEXEC",
    "EBADF",
    "ECHILD", // 10
    "EAGAIN",
    "ENOMEM",
    "EACCES",
    "EFAULT",
    "ENOTBLK",
    "EBUSY",
    "EEXIST",
    "EXDEV",
    "ENODEV",
    "ENOTDIR", // 20
    "EISDIR",
    "EINVAL",
    "ENFILE",
    "EMFILE",
    "ENOTTY",
    "ETXTBSY",
    "EFBIG",
    "ENOSPC",
    "ESPIPE",
    "EROFS", // 30
    "EMLINK",
    "EPIPE",
    "EDOM",
    "ERANGE",
    "EDEADLK",
    "ENAMETOOLONG",
    "ENOLCK",
    "ENOSYS",
    "ENOTEMPTY",
    "ELOOP", // 40
    "",      // 41: EWOULDBLOCK is EAGAIN on Linux
    "ENOMSG",
    "EIDRM",
    "ECHRNG",
    "EL2NSYNC",
    "EL3HLT",
    "EL3RST",
    "ELNRNG",
    "EUNATCH",
    "ENOCSI", // 50
    "EL2HLT",
    "EBADE",
    "EBADR",
    "EXFULL",
    "ENOANO",
    "EBADRQC",
    "EBADSLT",
    "", // 58: EDEADLOCK is EDEADLK on Linux
    "EBFONT",
    "ENOSTR", // 60
    "ENODATA",
    "ETIME",
    "ENOSR",
    "ENONET",
    "ENOPKG",
    "EREMOTE",
    "ENOLINK",
    "EADV",
    "ESRMNT",
    "ECOMM", // 70
    "EPROTO",
    "EMULTIHOP",
    "EDOTDOT",
    "EBADMSG",
    "EOVERFLOW",
    "ENOTUNIQ",
    "EBADFD",
    "EREMCHG",
    "ELIBACC",
    "ELIBBAD", // 80
    "ELIBSCN",
    "ELIBMAX",
    "ELIBEXEC",
    "EILSEQ",
    "ERESTART",
    "ESTRPIPE",
    "EUSERS",
    "ENOTSOCK",
    "EDESTADDRREQ",
    "EMSGSIZE", // 90
    "EPROTOTYPE",
    "ENOPROTOOPT",
    "EPROTONOSUPPORT",
    "ESOCKTNOSUPPORT",
    "EOPNOTSUPP",
    "EPFNOSUPPORT",
    "EAFNOSUPPORT",
    "EADDRINUSE",
    "EADDRNOTAVAIL",
    "ENETDOWN", // 100
    "ENETUNREACH",
    "ENETRESET",
    "ECONNABORTED",
    "ECONNRESET",
    "ENOBUFS",
    "EISCONN",
    "ENOTCONN",
    "ESHUTDOWN",
    "ETOOMANYREFS",
    "ETIMEDOUT", // 110
    "ECONNREFUSED",
    "EHOSTDOWN",
    "EHOSTUNREACH",
    "EALREADY",
    "EINPROGRESS",
    "ESTALE",
    "EUCLEAN",
    "ENOTNAM",
    "ENAVAIL",
    "EISNAM", // 120
    "EREMOTEIO",
    "EDQUOT",
    "ENOMEDIUM",
    "EMEDIUMTYPE",
    "ECANCELED",
    "ENOKEY",
    "EKEYEXPIRED",
    "EKEYREVOKED",
    "EKEYREJECTED",
    "EOWNERDEAD", // 130
    "ENOTRECOVERABLE",
    "ERFKILL",
    "EHWPOISON",
];

/// The name of an errno value: 'ENOENT' for 2, 'E41' for a number Linux
/// does not use.
pub fn name(errno: i32) -> Cow<'static, str> {
    match usize::try_from(errno).ok().and_then(|i| NAMES.get(i)) {
        Some(&known) if !known.is_empty() => Cow::Borrowed(known),
        _ => Cow::Owned(format!("E{errno}")),
    }
}

#[cfg(test)]
mod tests {
    use super::name;

    #[test]
    fn names_the_common_errnos() {
        assert_eq!(name(2), "ENOENT");
        assert_eq!(name(11), "EAGAIN");
        assert_eq!(name(17), "EEXIST");
        assert_eq!(name(36), "ENAMETOOLONG");
        assert_eq!(name(95), "EOPNOTSUPP");
        assert_eq!(name(110), "ETIMEDOUT");
        assert_eq!(name(133), "EHWPOISON");
    }

    #[test]
    fn falls_back_to_the_number() {
        assert_eq!(name(41), "E41");
        assert_eq!(name(0), "E0");
        assert_eq!(name(-3), "E-3");
        assert_eq!(name(4000), "E4000");
    }
}
