// Load for a multi-peer ivshmem server (QEMU's protocol), for `make bench`:
//
//   peerload SOCKET ATTACHED VECTORS JOINS
//
// Attaches ATTACHED peers (each reads its greeting), keeps them reading
// everything they are sent on a second thread, prints "attached", waits
// for a line on stdin, then JOINS times: connects a peer and times connect
// -> its own VECTORS eventfds received; closes it. Prints
// "joins=N p50_us=… p99_us=… max_us=…".
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char *path;
static int vectors, epfd;
static volatile int stopping;

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

// One message; its fd is closed at once. 0 on success, -1 at the end.
static int receive(int fd, int64_t *value) {
    char control[CMSG_SPACE(sizeof(int) * 4)] __attribute__((aligned(8)));
    size_t have = 0;
    while (have < 8) {
        struct iovec iov = { (char *)value + have, 8 - have };
        struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
        ssize_t got = recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
        if (got <= 0) return -1;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                int count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (int i = 0; i < count; i++) close(((int *)CMSG_DATA(c))[i]);
            }
        }
        have += got;
    }
    return 0;
}

// Connects and reads the greeting up to its own last vector; the socket.
static int join(void) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    strncpy(a.sun_path, path, sizeof a.sun_path - 1);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) { perror("connect"); exit(1); }
    int64_t value, id = -1;
    int index = 0, own = 0;
    while (own < vectors) {
        if (receive(fd, &value)) { fprintf(stderr, "peerload: the server closed the connection\n"); exit(1); }
        if (index == 0 && value != 0) { fprintf(stderr, "peerload: version %lld\n", (long long)value); exit(1); }
        if (index == 1) id = value;
        else if (index > 2 && value == id) own++;
        index++;
    }
    return fd;
}

static void *drain(void *unused) {
    (void)unused;
    struct epoll_event events[64];
    while (!stopping) {
        int n = epoll_wait(epfd, events, 64, 100);
        for (int i = 0; i < n; i++) {
            int64_t value;
            if (receive(events[i].data.fd, &value)) epoll_ctl(epfd, EPOLL_CTL_DEL, events[i].data.fd, NULL);
        }
    }
    return NULL;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: %s SOCKET ATTACHED VECTORS JOINS\n", argv[0]); return 64; }
    path = argv[1];
    struct rlimit limit;
    if (!getrlimit(RLIMIT_NOFILE, &limit)) { limit.rlim_cur = limit.rlim_max; setrlimit(RLIMIT_NOFILE, &limit); }
    int attached = atoi(argv[2]), joins = atoi(argv[4]);
    vectors = atoi(argv[3]);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < attached; i++) {
        int fd = join();
        struct epoll_event e = { .events = EPOLLIN, .data.fd = fd };
        epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e);
        if (i == 0) {
            pthread_t thread;
            pthread_create(&thread, NULL, drain, NULL);
            pthread_detach(thread);
        }
    }
    if (attached == 0) {
        pthread_t thread;
        pthread_create(&thread, NULL, drain, NULL);
        pthread_detach(thread);
    }
    printf("attached\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 1;
    double *times = calloc(joins, sizeof *times);
    for (int j = 0; j < joins; j++) {
        double start = now_us();
        int fd = join();
        times[j] = now_us() - start;
        close(fd);
    }
    qsort(times, joins, sizeof *times, compare);
    printf("joins=%d p50_us=%.1f p99_us=%.1f max_us=%.1f\n", joins, times[joins / 2], times[joins * 99 / 100], times[joins - 1]);
    stopping = 1;
    return 0;
}
