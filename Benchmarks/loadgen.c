// Load generator for `make bench`.
//
//   loadgen hald  SOCK REGION CLIENTS SECONDS SERVER_PID [SILENT]
//   loadgen qemu  SOCK REGIONS SECONDS SERVER_PID
//   loadgen ready SOCK REGION TIMEOUT_MS -- COMMAND...   (start-up to first handshake)
//   loadgen exit -- COMMAND...                           (spawn to exit: the floor)
//   loadgen hog   SOCK COUNT SECONDS SERVER_PID            (the server's CPU under a hog)
//
// hald: CLIENTS threads do full HALD handshakes (receive the 3 fds, close
// them) for SECONDS, while another process (forked) holds SILENT idle
// connections, opening each one again as soon as the server closes it.
// qemu: one client at a time connects, reads all 3+2N messages and fds,
// closes. Latency is connect to last fd. hog: the silent process alone,
// COUNT connections (every one the server closes opened again); the
// server's CPU over SECONDS once they are open, and how many were reopened. Server CPU comes from
// /proc/PID/schedstat (ns on CPU). Output: one line of key=value.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *sock_path, *region;
static int seconds;
static volatile int stop_flag;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + t.tv_nsec;
}

static uint64_t cpu_ns(int pid) {
    char path[64], buf[128];
    snprintf(path, sizeof path, "/proc/%d/schedstat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    unsigned long long on_cpu = 0;
    if (fgets(buf, sizeof buf, f)) sscanf(buf, "%llu", &on_cpu);
    fclose(f);
    return on_cpu;
}

static int connect_to(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    strncpy(a.sun_path, path, sizeof a.sun_path - 1);
    struct timeval tv = { 5, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { close(fd); return -1; }
    return fd;
}

static int read_all(int fd, void *buf, size_t size) {
    size_t have = 0;
    while (have < size) {
        ssize_t n = recv(fd, (char *)buf + have, size - have, 0);
        if (n <= 0) return -1;
        have += n;
    }
    return 0;
}

// Receives up to `size` bytes with fds; closes the fds; returns fd count or -1.
static int recv_fds(int fd, void *buf, size_t size) {
    char control[CMSG_SPACE(sizeof(int) * 4)] __attribute__((aligned(8)));
    struct iovec iov = { buf, size };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
    ssize_t n = recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
    if (n != (ssize_t)size) return -1;
    int count = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            int fds[4];
            memcpy(fds, CMSG_DATA(c), sizeof(int) * k);
            for (int i = 0; i < k; i++) close(fds[i]);
            count += k;
        }
    }
    return count;
}

static int hald_once(void) {
    int fd = connect_to(sock_path);
    if (fd < 0) return -1;
    uint32_t version;
    unsigned char request[18];
    int16_t length = (int16_t)strlen(region);
    memcpy(request, &length, 2);
    memcpy(request + 2, region, length);
    uint64_t payload;
    int ok = read_all(fd, &version, 4) == 0 && send(fd, request, 2 + length, MSG_NOSIGNAL) == 2 + length
        && recv_fds(fd, &payload, 8) == 3;
    close(fd);
    return ok ? 0 : -1;
}

struct samples { uint64_t *lat; size_t n, cap; size_t errors; };

static void add(struct samples *s, uint64_t v) {
    if (s->n == s->cap) { s->cap = s->cap ? s->cap * 2 : 65536; s->lat = realloc(s->lat, s->cap * sizeof *s->lat); }
    s->lat[s->n++] = v;
}

static void *hald_thread(void *arg) {
    struct samples *s = arg;
    while (!stop_flag) {
        uint64_t t0 = now_ns();
        if (hald_once() == 0) add(s, now_ns() - t0); else s->errors++;
    }
    return NULL;
}

static int cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *mode, int clients, struct samples *all, double elapsed, uint64_t cpu) {
    qsort(all->lat, all->n, sizeof *all->lat, cmp);
    double p50 = all->n ? all->lat[all->n / 2] / 1e3 : 0;
    double p99 = all->n ? all->lat[(size_t)(all->n * 0.99)] / 1e3 : 0;
    double max = all->n ? all->lat[all->n - 1] / 1e3 : 0;
    printf("mode=%s clients=%d handshakes=%zu errors=%zu rate=%.0f p50_us=%.1f p99_us=%.1f max_us=%.1f cpu_ns_per=%.0f\n",
           mode, clients, all->n, all->errors, all->n / elapsed, p50, p99, max, all->n ? (double)cpu / all->n : 0);
}

// The silent process: `count` connections that never send a byte; each
// one the server closes is opened again. Writes one byte to `ready` once
// all are open, then runs until it is killed.
static volatile uint64_t *reopened;  // shared with the parent (hog)

static void hold_silent(int count, int ready) {
    int epoll = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < count + 1; i++) {
        if (i == count) { char byte = 1; if (write(ready, &byte, 1) != 1) _exit(1); continue; }
        int fd = connect_to(sock_path);
        if (fd < 0) { fprintf(stderr, "silent connection %d failed: %s\n", i, strerror(errno)); _exit(1); }
        struct epoll_event e = { .events = EPOLLIN, .data.fd = fd };
        epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &e);
    }
    struct epoll_event events[256];
    char buf[64];
    for (;;) {
        int n = epoll_wait(epoll, events, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            ssize_t got = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
            if (got > 0 || (got < 0 && errno == EAGAIN)) continue;
            close(fd);
            int again = connect_to(sock_path);
            if (reopened) __atomic_add_fetch(reopened, 1, __ATOMIC_RELAXED);
            if (again < 0) continue;
            struct epoll_event e = { .events = EPOLLIN, .data.fd = again };
            epoll_ctl(epoll, EPOLL_CTL_ADD, again, &e);
        }
    }
}

static void raise_fd_limit(void) {
    struct rlimit r;
    getrlimit(RLIMIT_NOFILE, &r);
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
}

// Starts COMMAND with its output going nowhere; its pid.
static pid_t spawn_quiet(char **command) {
    pid_t child = fork();
    if (child == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1); dup2(null, 2);
        execvp(command[0], command);
        _exit(127);
    }
    return child;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    if (argc >= 7 && !strcmp(argv[1], "hald")) {
        sock_path = argv[2]; region = argv[3];
        int clients = atoi(argv[4]); seconds = atoi(argv[5]); int pid = atoi(argv[6]);
        int silent = argc > 7 ? atoi(argv[7]) : 0;
        pid_t holder = 0;
        if (silent) {
            int ready[2];
            if (pipe(ready) != 0) return 1;
            holder = fork();
            if (holder == 0) { close(ready[0]); hold_silent(silent, ready[1]); _exit(0); }
            close(ready[1]);
            char byte;
            if (read(ready[0], &byte, 1) != 1) { fprintf(stderr, "the silent process failed\n"); return 1; }
            close(ready[0]);
            sleep(1);  // let the server take them in
        }
        struct samples *per = calloc(clients, sizeof *per);
        pthread_t *threads = calloc(clients, sizeof *threads);
        uint64_t cpu0 = cpu_ns(pid), t0 = now_ns();
        for (int i = 0; i < clients; i++) pthread_create(&threads[i], NULL, hald_thread, &per[i]);
        sleep(seconds);
        stop_flag = 1;
        struct samples all = {0};
        for (int i = 0; i < clients; i++) {
            pthread_join(threads[i], NULL);
            for (size_t k = 0; k < per[i].n; k++) add(&all, per[i].lat[k]);
            all.errors += per[i].errors;
        }
        double elapsed = (now_ns() - t0) / 1e9;
        uint64_t cpu = cpu_ns(pid) - cpu0;
        if (holder) { kill(holder, SIGKILL); waitpid(holder, NULL, 0); }
        report("hald", clients, &all, elapsed, cpu);
        return 0;
    }
    if (argc == 6 && !strcmp(argv[1], "qemu")) {
        sock_path = argv[2]; int regions = atoi(argv[3]); seconds = atoi(argv[4]); int pid = atoi(argv[5]);
        int count = 3 + 2 * regions;
        struct samples all = {0};
        uint64_t cpu0 = cpu_ns(pid), t0 = now_ns(), end = t0 + (uint64_t)seconds * 1000000000u;
        while (now_ns() < end) {
            uint64_t start = now_ns();
            int fd = connect_to(sock_path), ok = fd >= 0;
            for (int i = 0; ok && i < count; i++) {
                int64_t value;
                int fds = recv_fds(fd, &value, 8);
                ok = fds == (i < 2 ? 0 : 1);
            }
            if (fd >= 0) close(fd);
            if (ok) add(&all, now_ns() - start); else all.errors++;
        }
        report("qemu", 1, &all, (now_ns() - t0) / 1e9, cpu_ns(pid) - cpu0);
        return 0;
    }
    if (argc >= 6 && !strcmp(argv[1], "ready") && !strcmp(argv[5], "--")) {
        sock_path = argv[2]; region = argv[3]; int timeout_ms = atoi(argv[4]);
        uint64_t t0 = now_ns();
        pid_t child = spawn_quiet(argv + 6);
        uint64_t deadline = t0 + (uint64_t)timeout_ms * 1000000u;
        int ok = 0;
        while (now_ns() < deadline) {
            if (hald_once() == 0) { ok = 1; break; }
            usleep(50);
        }
        uint64_t elapsed = now_ns() - t0;
        char path[64], line[256];
        long rss = 0;
        snprintf(path, sizeof path, "/proc/%d/status", child);
        FILE *f = fopen(path, "r");
        while (f && fgets(line, sizeof line, f)) if (!strncmp(line, "VmRSS:", 6)) rss = atol(line + 6);
        if (f) fclose(f);
        kill(child, SIGTERM);
        waitpid(child, NULL, 0);
        if (!ok) { fprintf(stderr, "no handshake within %d ms\n", timeout_ms); return 1; }
        printf("mode=ready us=%.1f rss_kb=%ld\n", elapsed / 1e3, rss);
        return 0;
    }
    if (argc == 6 && !strcmp(argv[1], "hog")) {
        sock_path = argv[2]; int count = atoi(argv[3]); seconds = atoi(argv[4]); int pid = atoi(argv[5]);
        reopened = mmap(NULL, sizeof *reopened, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (reopened == MAP_FAILED) return 1;
        int ready[2];
        if (pipe(ready) != 0) return 1;
        pid_t holder = fork();
        if (holder == 0) { close(ready[0]); hold_silent(count, ready[1]); _exit(0); }
        close(ready[1]);
        char byte;
        if (read(ready[0], &byte, 1) != 1) { fprintf(stderr, "the silent process failed\n"); return 1; }
        sleep(1);  // let the server take them in
        uint64_t cpu0 = cpu_ns(pid), reopened0 = *reopened, t0 = now_ns();
        sleep(seconds);
        uint64_t cpu = cpu_ns(pid) - cpu0, again = *reopened - reopened0;
        double elapsed = (now_ns() - t0) / 1e9;
        kill(holder, SIGKILL);
        waitpid(holder, NULL, 0);
        printf("mode=hog connections=%d cpu_ms=%.1f cpu_percent=%.2f reopened=%llu\n",
               count, cpu / 1e6, cpu / 1e7 / elapsed, (unsigned long long)again);
        return 0;
    }
    if (argc >= 4 && !strcmp(argv[1], "exit") && !strcmp(argv[2], "--")) {
        uint64_t t0 = now_ns();
        pid_t child = spawn_quiet(argv + 3);
        int status = 0;
        waitpid(child, &status, 0);
        uint64_t elapsed = now_ns() - t0;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) { fprintf(stderr, "%s failed\n", argv[3]); return 1; }
        printf("mode=exit us=%.1f\n", elapsed / 1e3);
        return 0;
    }
    fprintf(stderr, "usage: see the comment at the top of loadgen.c\n");
    return 64;
}
