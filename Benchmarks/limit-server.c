// The "limit" for `make bench`: a minimal epoll server doing the same two
// exchanges as ivserver and nothing else (no layout parsing, no logging, no
// peer checks), so ivserver's cost can be read as a ratio to it.
//
//   limit-server QEMU_SOCK CLIENT_SOCK REGION_NAME...
//   limit-server --peers SOCKET VECTORS      (QEMU's multi-peer protocol)
//
// QEMU socket: on accept, the 3 + 2N messages of the ivshmem protocol in one
// sendmmsg, then the connection stays open until the peer closes it.
// Client socket: u32 version, read i16 length + name, 8 bytes + 3 fds, close.
// --peers: on accept an ID (the next one free), VECTORS eventfds, the
// greeting (version, ID, -1 + memory, every other peer's vectors, its own)
// with blocking sendmmsg, then its join to every other peer; on hang-up its
// departure. No queue, no limits, no checks: the floor for ivserver's
// multi-peer mode.
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_REGIONS 128
#define MAX_FDS 65536

enum kind { LISTEN_QEMU = 1, LISTEN_CLIENT, QEMU_PEER, CLIENT_PEER, LISTEN_PEERS, MULTI_PEER };

struct conn {
    enum kind kind;
    int id;               // MULTI_PEER: its peer ID
    int length;           // name length once read, -1 before
    int have;             // bytes of length+name received
    unsigned char buf[18];
};

static struct conn conns[MAX_FDS];
static int region_count;
static char *names[MAX_REGIONS];
static int g2h[MAX_REGIONS], h2g[MAX_REGIONS], shm_fd, epfd;

static int listen_on(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    strncpy(a.sun_path, path, sizeof a.sun_path - 1);
    unlink(path);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, SOMAXCONN)) { perror(path); exit(1); }
    return fd;
}

static void watch(int fd, enum kind kind) {
    conns[fd].kind = kind;
    conns[fd].length = -1;
    conns[fd].have = 0;
    struct epoll_event e = { .events = EPOLLIN, .data.fd = fd };
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e);
}

static void drop(int fd) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
}

static int send_fds(int fd, const void *data, size_t size, const int *fds, int count) {
    char control[CMSG_SPACE(sizeof(int) * 3)] __attribute__((aligned(8)));
    struct iovec iov = { (void *)data, size };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (count) {
        memset(control, 0, sizeof control);
        m.msg_control = control;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * count);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * count);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * count);
    }
    return sendmsg(fd, &m, MSG_NOSIGNAL) == (ssize_t)size ? 0 : -1;
}

static void qemu_handshake(int fd) {
    int n = 3 + 2 * region_count;
    int64_t values[3 + 2 * MAX_REGIONS];
    struct iovec iov[3 + 2 * MAX_REGIONS];
    char control[3 + 2 * MAX_REGIONS][CMSG_SPACE(sizeof(int))] __attribute__((aligned(8)));
    struct mmsghdr msgs[3 + 2 * MAX_REGIONS];
    memset(msgs, 0, sizeof(struct mmsghdr) * n);
    memset(control, 0, sizeof control);
    for (int i = 0; i < n; i++) {
        int attached = -1;
        if (i == 0) values[i] = 0;
        else if (i == 1) values[i] = 1024;
        else if (i == 2) { values[i] = -1; attached = shm_fd; }
        else if (i < 3 + region_count) { values[i] = 0; attached = g2h[i - 3]; }
        else { values[i] = 1024; attached = h2g[i - 3 - region_count]; }
        iov[i] = (struct iovec){ &values[i], 8 };
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        if (attached >= 0) {
            msgs[i].msg_hdr.msg_control = control[i];
            msgs[i].msg_hdr.msg_controllen = CMSG_SPACE(sizeof(int));
            struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[i].msg_hdr);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(c), &attached, sizeof(int));
        }
    }
    if (sendmmsg(fd, msgs, n, MSG_NOSIGNAL) != n) { drop(fd); return; }
    watch(fd, QEMU_PEER);
}

static void client_readable(int fd) {
    struct conn *c = &conns[fd];
    int want = c->length < 0 ? 2 : 2 + c->length;
    ssize_t got = recv(fd, c->buf + c->have, want - c->have, 0);
    if (got <= 0) { if (got == 0 || errno != EAGAIN) drop(fd); return; }
    c->have += got;
    if (c->length < 0 && c->have == 2) {
        int16_t length;
        memcpy(&length, c->buf, 2);
        if (length < 1 || length > 16) { drop(fd); return; }
        c->length = length;
        return;
    }
    if (c->length >= 0 && c->have == 2 + c->length) {
        for (int i = 0; i < region_count; i++) {
            if ((int)strlen(names[i]) == c->length && !memcmp(names[i], c->buf + 2, c->length)) {
                uint64_t zero = 0;
                int fds[3] = { g2h[i], h2g[i], shm_fd };
                send_fds(fd, &zero, 8, fds, 3);
                break;
            }
        }
        drop(fd);
    }
}

// --- QEMU's multi-peer protocol (--peers) ---------------------------------------

#define MAX_IDS 65536
static int vectors;
static int *peer_vectors;       // [id * vectors + v]
static int peer_socket[MAX_IDS];  // fd, or -1
static int joined[MAX_IDS], joined_count;
static int next_id;

// Sends `count` messages (value, optional fd each) with blocking sendmmsg.
static int send_messages(int fd, const int64_t *values, const int *fds, int count) {
    struct mmsghdr *msgs = calloc(count, sizeof *msgs);
    struct iovec *iov = calloc(count, sizeof *iov);
    char (*control)[CMSG_SPACE(sizeof(int))] = calloc(count, sizeof *control);
    for (int i = 0; i < count; i++) {
        iov[i] = (struct iovec){ (void *)&values[i], 8 };
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        if (fds[i] >= 0) {
            msgs[i].msg_hdr.msg_control = control[i];
            msgs[i].msg_hdr.msg_controllen = CMSG_SPACE(sizeof(int));
            struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[i].msg_hdr);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(c), &fds[i], sizeof(int));
        }
    }
    int sent = 0, result = 0;
    while (sent < count) {
        int n = sendmmsg(fd, msgs + sent, count - sent, MSG_NOSIGNAL);
        if (n <= 0) { result = -1; break; }
        sent += n;
    }
    free(msgs); free(iov); free(control);
    return result;
}

static void announce(int id, int except) {
    int64_t values[64];
    int fds[64];
    for (int v = 0; v < vectors; v++) { values[v] = id; fds[v] = peer_vectors[id * vectors + v]; }
    for (int i = 0; i < joined_count; i++)
        if (joined[i] != except) send_messages(peer_socket[joined[i]], values, fds, vectors);
}

static void peer_joins(int fd) {
    while (peer_socket[next_id] >= 0) next_id = (next_id + 1) % MAX_IDS;
    int id = next_id;
    next_id = (next_id + 1) % MAX_IDS;
    for (int v = 0; v < vectors; v++) peer_vectors[id * vectors + v] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int count = 3 + (joined_count + 1) * vectors;
    int64_t *values = malloc(count * sizeof *values);
    int *fds = malloc(count * sizeof *fds);
    values[0] = 0; fds[0] = -1;
    values[1] = id; fds[1] = -1;
    values[2] = -1; fds[2] = shm_fd;
    int n = 3;
    for (int i = 0; i < joined_count; i++)
        for (int v = 0; v < vectors; v++) { values[n] = joined[i]; fds[n++] = peer_vectors[joined[i] * vectors + v]; }
    for (int v = 0; v < vectors; v++) { values[n] = id; fds[n++] = peer_vectors[id * vectors + v]; }
    int failed = send_messages(fd, values, fds, count);
    free(values); free(fds);
    peer_socket[id] = fd;
    conns[fd].id = id;
    watch(fd, MULTI_PEER);
    if (failed) return;
    joined[joined_count++] = id;
    announce(id, id);
}

static void peer_leaves(int fd) {
    int id = conns[fd].id;
    drop(fd);
    peer_socket[id] = -1;
    for (int v = 0; v < vectors; v++) close(peer_vectors[id * vectors + v]);
    for (int i = 0; i < joined_count; i++)
        if (joined[i] == id) { joined[i] = joined[--joined_count]; break; }
    int64_t value = id;
    int none = -1;
    for (int i = 0; i < joined_count; i++) send_messages(peer_socket[joined[i]], &value, &none, 1);
}

static int serve_peers(const char *path, int count) {
    vectors = count;
    struct rlimit limit;
    if (!getrlimit(RLIMIT_NOFILE, &limit)) { limit.rlim_cur = limit.rlim_max; setrlimit(RLIMIT_NOFILE, &limit); }
    peer_vectors = calloc((size_t)MAX_IDS * vectors, sizeof(int));
    for (int i = 0; i < MAX_IDS; i++) peer_socket[i] = -1;
    shm_fd = memfd_create("limit-shm", MFD_CLOEXEC);
    if (shm_fd < 0 || ftruncate(shm_fd, 4 << 20)) { perror("shm"); return 1; }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    int listener = listen_on(path);
    watch(listener, LISTEN_PEERS);
    fprintf(stderr, "ready\n");
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(epfd, events, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (conns[fd].kind == LISTEN_PEERS) {
                for (;;) {
                    int peer = accept4(fd, NULL, NULL, SOCK_CLOEXEC);  // blocking: sends never queue
                    if (peer < 0) break;
                    if (peer >= MAX_FDS) { close(peer); continue; }
                    peer_joins(peer);
                }
            } else {
                char sink[64];
                ssize_t got = recv(fd, sink, sizeof sink, MSG_DONTWAIT);
                if (got == 0 || (got < 0 && errno != EAGAIN)) peer_leaves(fd);
            }
        }
    }
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "--peers")) return serve_peers(argv[2], atoi(argv[3]));
    if (argc < 4) { fprintf(stderr, "usage: %s QEMU_SOCK CLIENT_SOCK REGION...\n", argv[0]); return 64; }
    region_count = argc - 3;
    if (region_count > MAX_REGIONS) return 64;
    for (int i = 0; i < region_count; i++) {
        names[i] = argv[3 + i];
        g2h[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        h2g[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    }
    shm_fd = memfd_create("limit-shm", MFD_CLOEXEC);
    if (shm_fd < 0 || ftruncate(shm_fd, 1 << 29)) { perror("shm"); return 1; }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    int qemu = listen_on(argv[1]), client = listen_on(argv[2]);
    watch(qemu, LISTEN_QEMU);
    watch(client, LISTEN_CLIENT);
    fprintf(stderr, "ready\n");
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(epfd, events, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            switch (conns[fd].kind) {
            case LISTEN_QEMU:
            case LISTEN_CLIENT:
                for (;;) {
                    int peer = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (peer < 0) break;
                    if (peer >= MAX_FDS) { close(peer); continue; }
                    if (conns[fd].kind == LISTEN_QEMU) {
                        qemu_handshake(peer);
                    } else {
                        static const uint32_t version = 0;
                        if (send(peer, &version, 4, MSG_NOSIGNAL) != 4) { close(peer); continue; }
                        watch(peer, CLIENT_PEER);
                    }
                }
                break;
            case QEMU_PEER: {
                char sink[64];
                ssize_t got = recv(fd, sink, sizeof sink, 0);
                if (got == 0 || (got < 0 && errno != EAGAIN)) drop(fd);
                break;
            }
            case CLIENT_PEER:
                client_readable(fd);
                break;
            case LISTEN_PEERS:
            case MULTI_PEER:
                break;  // --peers only
            }
        }
    }
}
