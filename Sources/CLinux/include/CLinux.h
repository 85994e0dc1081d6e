// Small helpers for Linux interfaces that Swift cannot import directly:
// function-like macros (CMSG_*), declarations glibc hides behind _GNU_SOURCE
// (struct ucred, accept4, pipe2, fallocate), headers outside the Glibc
// module (sys/eventfd.h, sys/vfs.h), atomics on shared-memory words and
// futex. Shared by the server and the client library, which need no libuv.
// Header-only (static inline); CLinux.c only gives the target a source.
#ifndef IVSERVER_CLINUX_H
#define IVSERVER_CLINUX_H

// No _GNU_SOURCE here: this header shares glibc's headers with Swift's
// Glibc module, and defining it would give types such as fd_set a second,
// conflicting definition. The few GNU pieces needed are declared below.

#include <errno.h>
#include <linux/futex.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/vfs.h>
#include <fcntl.h>
#include <unistd.h>

// MARK: files and processes (GNU calls, through syscall())

static inline int ivs_pipe_cloexec(int fds[2]) { return (int)syscall(SYS_pipe2, fds, O_CLOEXEC); }

// Allocates `length` bytes of `fd` from `offset` now (holes become zeroed
// pages, data is kept): fallocate(2) itself, never glibc's emulation, which
// writes zeros over bytes another process may be writing.
static inline int ivs_fallocate(int fd, long long offset, long long length) {
    return (int)syscall(SYS_fallocate, fd, 0, (off_t)offset, (off_t)length);
}

// The huge page size when `fd` is on hugetlbfs, 0 when it is not, -1 on error.
static inline long long ivs_hugetlbfs_page_size(int fd) {
    struct statfs info;
    if (fstatfs(fd, &info) != 0) return -1;
    return info.f_type == 0x958458f6 ? (long long)info.f_bsize : 0;
}

// MARK: ancillary data (SCM_RIGHTS)

static inline size_t ivs_cmsg_space(size_t length) { return CMSG_SPACE(length); }
static inline size_t ivs_cmsg_len(size_t length) { return CMSG_LEN(length); }

static inline struct cmsghdr *ivs_cmsg_firsthdr(struct msghdr *message) {
    return CMSG_FIRSTHDR(message);
}

static inline struct cmsghdr *ivs_cmsg_nxthdr(struct msghdr *message, struct cmsghdr *header) {
    return CMSG_NXTHDR(message, header);
}

static inline unsigned char *ivs_cmsg_data(struct cmsghdr *header) {
    return CMSG_DATA(header);
}

/// The layout of glibc's `struct mmsghdr` (declared only under _GNU_SOURCE).
struct ivs_mmsghdr {
    struct msghdr msg_hdr;
    unsigned int msg_len;
};

enum { IVS_SENDMMSG_MAX = 64 };

/// sendmmsg(2) over headers prepared by the caller (the kernel writes each
/// message's msg_len into them): how many messages went out, or -1.
static inline int ivs_sendmmsg_prepared(int fd, struct ivs_mmsghdr *batch, unsigned int count, int flags) {
    return (int)syscall(SYS_sendmmsg, fd, batch, count, flags);
}

// MARK: peer credentials

/// The fields of `struct ucred`, which glibc only declares under _GNU_SOURCE.
typedef struct {
    int32_t pid;
    uint32_t uid;
    uint32_t gid;
} ivs_peer_credentials;

/// getsockopt(SO_PEERCRED) into a struct laid out like `struct ucred`
/// (pid_t, uid_t, gid_t: three 32-bit fields); returns 0 or -1 with errno.
static inline int ivs_get_peer_credentials(int fd, ivs_peer_credentials *out) {
    socklen_t length = sizeof(*out);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, out, &length) != 0) {
        return -1;
    }
    if (length != sizeof(*out)) {
        errno = EPROTO;
        return -1;
    }
    return 0;
}

/// getsockopt(SO_PEERGROUPS): the peer's supplementary groups at connect
/// time. Returns how many were stored in `groups` (at most `capacity`), or
/// -1 with errno (ERANGE when `capacity` is too small).
static inline int ivs_get_peer_groups(int fd, uint32_t *groups, int capacity) {
#ifdef SO_PEERGROUPS
    socklen_t length = (socklen_t)(capacity * sizeof(uint32_t));
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &length) != 0) {
        return -1;
    }
    return (int)(length / sizeof(uint32_t));
#else
    (void)fd; (void)groups; (void)capacity;
    errno = ENOPROTOOPT;
    return -1;
#endif
}

// MARK: fd-creating calls, always close-on-exec

/// glibc declares accept4 only under _GNU_SOURCE; this is its prototype.
extern int accept4(int fd, struct sockaddr *address, socklen_t *length, int flags);

/// accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC: the new fd is never blocking
/// and never leaks into a child, with no window between accept and fcntl.
static inline int ivs_accept_nonblocking(int fd) {
    return accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

/// A non-blocking, close-on-exec eventfd with counter `initial`.
static inline int ivs_eventfd_nonblocking(unsigned int initial) {
    return eventfd(initial, EFD_NONBLOCK | EFD_CLOEXEC);
}

/// A non-blocking, close-on-exec UNIX stream socket.
static inline int ivs_unix_stream_socket(void) {
    return socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
}

static inline int ivs_unix_datagram_socket(void) {
    return socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
}

/// sizeof(sun_path), the longest socket path plus its NUL.
static inline size_t ivs_sun_path_capacity(void) {
    struct sockaddr_un address;
    return sizeof(address.sun_path);
}

#ifndef POLLRDHUP
#define POLLRDHUP 0x2000  /* Linux: peer closed its writing half */
#endif

/// 1 when the peer of a connected stream socket has hung up or the socket
/// has an error, 0 when it looks alive, -1 with errno on failure. Never
/// blocks (zero timeout); POLLRDHUP needs _GNU_SOURCE, hence the helper.
static inline int ivs_peer_has_hung_up(int fd) {
    struct pollfd entry = { .fd = fd, .events = POLLIN | POLLRDHUP, .revents = 0 };
    int ready = poll(&entry, 1, 0);
    if (ready < 0) return -1;
    return (entry.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL)) ? 1 : 0;
}

// MARK: shared-memory words (host client library)

// Sequentially consistent atomics on u32 words of a shared mapping. Swift's
// Atomic needs storage it owns; these work on any aligned address, such as
// a word of the vSoC shared memory that the guest also touches.

static inline uint32_t ivs_atomic_load_u32(const uint32_t *word) {
    return __atomic_load_n(word, __ATOMIC_SEQ_CST);
}

static inline void ivs_atomic_store_u32(uint32_t *word, uint32_t value) {
    __atomic_store_n(word, value, __ATOMIC_SEQ_CST);
}

static inline uint32_t ivs_atomic_exchange_u32(uint32_t *word, uint32_t value) {
    return __atomic_exchange_n(word, value, __ATOMIC_SEQ_CST);
}

/// Stores `desired` if the word holds `expected`; returns what it held.
static inline uint32_t ivs_atomic_compare_exchange_u32(uint32_t *word, uint32_t expected, uint32_t desired) {
    __atomic_compare_exchange_n(word, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return expected;
}

static inline uint32_t ivs_atomic_fetch_add_u32(uint32_t *word, uint32_t value) {
    return __atomic_fetch_add(word, value, __ATOMIC_SEQ_CST);
}

/// FUTEX_WAIT (shared: the word is in a file mapping other processes use)
/// with an optional relative timeout; 0 or -1 with errno (EAGAIN when the
/// word did not hold `expected`, ETIMEDOUT, EINTR). syscall(2) is variadic,
/// which Swift cannot call.
static inline int ivs_futex_wait(uint32_t *word, uint32_t expected, const struct timespec *timeout) {
    return (int)syscall(SYS_futex, word, FUTEX_WAIT, expected, timeout, NULL, 0);
}

/// FUTEX_WAKE of up to `count` waiters; how many were woken, or -1.
static inline int ivs_futex_wake(uint32_t *word, int count) {
    return (int)syscall(SYS_futex, word, FUTEX_WAKE, count, NULL, NULL, 0);
}

// MARK: waiting with a fine timeout

/// ppoll(2) with a timeout in nanoseconds (negative: none), for waits
/// shorter than poll's millisecond; glibc declares ppoll only with
/// _GNU_SOURCE, so the system call is made directly.
static inline int ivs_poll_nanoseconds(struct pollfd *fds, unsigned long count, long long nanoseconds) {
    struct timespec limit = { .tv_sec = nanoseconds / 1000000000LL, .tv_nsec = nanoseconds % 1000000000LL };
    return (int)syscall(SYS_ppoll, fds, count, nanoseconds < 0 ? NULL : &limit, NULL, (size_t)8);
}

// MARK: pidfds

/// pidfd_open(2): an fd (always close-on-exec) that refers to process `pid`
/// itself, not to whatever later reuses the number; it polls readable once
/// the process has exited. -1 with errno (ENOSYS before Linux 5.3, ESRCH).
static inline int ivs_pidfd_open(pid_t pid) {
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    errno = ENOSYS;
    return -1;
#endif
}

// MARK: epoll sets (the server's peer sockets, ivctl watch)

// struct epoll_event is packed on x86-64; these helpers keep it in C.

enum { IVS_EPOLL_BATCH = 64 };

static inline int ivs_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

/// epoll_ctl(op) of `fd` for `events` (EPOLLIN, EPOLLOUT, EPOLLET, ...),
/// reporting `token` with each event.
static inline int ivs_epoll_control(int epoll_fd, int op, int fd, uint32_t events, uint64_t token) {
    struct epoll_event event = { .events = events, .data = { .u64 = token } };
    return epoll_ctl(epoll_fd, op, fd, &event);
}

/// epoll_wait for up to IVS_EPOLL_BATCH events: each event's token and bits.
static inline int ivs_epoll_wait_events(int epoll_fd, uint64_t *tokens, uint32_t *events, int capacity, int timeout_ms) {
    struct epoll_event batch[IVS_EPOLL_BATCH];
    if (capacity > IVS_EPOLL_BATCH) capacity = IVS_EPOLL_BATCH;
    int count = epoll_wait(epoll_fd, batch, capacity, timeout_ms);
    for (int i = 0; i < count; i++) {
        tokens[i] = batch[i].data.u64;
        events[i] = batch[i].events;
    }
    return count;
}


/// SCM_CREDENTIALS and SO_PASSCRED (glibc declares them under _GNU_SOURCE
/// only): a datagram's sender, as the kernel vouches for it.
#ifndef SCM_CREDENTIALS
#define SCM_CREDENTIALS 0x02
#endif
#ifndef SO_PASSCRED
#define SO_PASSCRED 16
#endif
static const int IVS_SCM_CREDENTIALS = SCM_CREDENTIALS;

/// Asks the kernel to attach each sender's credentials to what `fd` receives.
static inline int ivs_pass_credentials(int fd) {
    int on = 1;
    return setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof(on));
}

/// kcmp(KCMP_FILE): 0 when fds `a` and `b` of this process are the same
/// open file, 1 or 2 when not (an order), -1 with errno when it cannot tell.
static inline int ivs_same_open_file(int a, int b) {
    pid_t self = getpid();
    return (int)syscall(SYS_kcmp, self, self, 0 /* KCMP_FILE */, (unsigned long)a, (unsigned long)b);
}

#ifndef MSG_CMSG_CLOEXEC
#define MSG_CMSG_CLOEXEC 0x40000000  /* Linux: received fds are close-on-exec */
#endif

#endif
