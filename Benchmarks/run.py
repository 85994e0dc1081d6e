#!/usr/bin/env python3
"""`make bench`: ivserver against the limit (Benchmarks/limit-server.c), side
by side in one run, scenarios interleaved (limit, ivserver, limit, ...),
medians of 3 and the ratio ivserver/limit. Writes bench/results.md."""
import datetime, json, os, re, signal, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, ".build-bench")
IVSERVER = os.path.join(OUT, "release", "ivserver")
LIMIT = os.path.join(OUT, "limit-server")
LOADGEN = os.path.join(OUT, "loadgen")
PEERLOAD = os.path.join(OUT, "peerload")
HELLO = os.path.join(OUT, "hello")
# An earlier ivserver binary to measure side by side with this one
# (`make bench BASELINE=<commit>` builds it).
BASELINE = os.environ.get("BENCH_BASELINE", "")
SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
REGIONS = ["hwcomposer", "fb_broadcast", "gralloc_manager", "gralloc_memory",
           "e2e_primary", "e2e_secondary", "e2e_manager", "e2e_managed"]


def run(*args, **kw):
    return subprocess.run(args, check=True, text=True, capture_output=True, **kw).stdout


def shm_path(directory):
    """The shared memory on tmpfs, where ivserver keeps it by default (and
    where the limit's memfd lives): on a disk file system, writing the
    header page costs milliseconds of journaling that say nothing about
    ivserver."""
    return "/dev/shm/" + os.path.basename(directory)


def parse(line):
    return {k: float(v) if re.fullmatch(r"[-0-9.]+", v) else v for k, v in (f.split("=") for f in line.split())}


class Server:
    """One server on fresh paths; `kind` is "limit", "ivserver" or
    "baseline" (the BASELINE binary)."""
    def __init__(self, kind, extra=()):
        self.dir = tempfile.mkdtemp(prefix="ivs-bench-")
        self.qemu, self.client = self.dir + "/q.sock", self.dir + "/c.sock"
        if kind == "limit":
            cmd = [LIMIT, self.qemu, self.client] + REGIONS
        else:
            cmd = [BASELINE if kind == "baseline" else IVSERVER, "--shm-path", shm_path(self.dir), "--qemu-sock", self.qemu,
                   "--client-sock", self.client] + list(extra)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while not os.path.exists(self.client) and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

    def cpu_ns(self):
        with open(f"/proc/{self.proc.pid}/schedstat") as f:
            return int(f.read().split()[0])

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)
        subprocess.run(["rm", "-rf", self.dir, shm_path(self.dir), shm_path(self.dir) + ".lock"])


def hald(server, clients=16, silent=0, seconds=SECONDS):
    return parse(run(LOADGEN, "hald", server.client, "e2e_primary", str(clients), str(seconds),
                     str(server.proc.pid), str(silent)))


def qemu(server, seconds=SECONDS):
    return parse(run(LOADGEN, "qemu", server.qemu, str(len(REGIONS)), str(seconds), str(server.proc.pid)))


def ready(command, client):
    return parse(run(LOADGEN, "ready", client, "e2e_primary", "5000", "--", *command))


def hald_fds(path, region="e2e_primary"):
    """One HALD handshake; the three fds (closed by the caller), or None
    while nobody serves the socket yet."""
    import array, socket, struct
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        s.settimeout(5)
        if s.recv(4) != b"\0\0\0\0":
            return None
        s.send(struct.pack("<h", len(region)) + region.encode())
        msg, anc, _, _ = s.recvmsg(8, socket.CMSG_SPACE(12))
        fds = array.array("i")
        for _, _, data in anc:
            fds.frombytes(data)
        return list(fds) if len(fds) == 3 else None
    except OSError:
        return None
    finally:
        s.close()


def restart_times(count=20, load=False):
    """Kill -9 to the first host client served again with the same memory,
    with a manager emulated here: it keeps what the server stores
    (FDSTORE=1) and starts the next server at once with LISTEN_FDS, as
    systemd does with RestartSec=0. A VM (this process) stays attached.
    With `load`, 16 clients make handshakes all along (retrying through
    the restarts) and each kill comes at a random moment, 0 to 200 ms after
    the server served again."""
    import array, random, socket
    d = tempfile.mkdtemp(prefix="ivs-bench-")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(d + "/notify.sock")
    store = {}

    def drain(until_ready):
        notify.settimeout(10)
        while True:
            msg, anc, _, _ = notify.recvmsg(4096, socket.CMSG_SPACE(64 * 4))
            fields = dict(line.split("=", 1) for line in msg.decode().split("\n") if "=" in line)
            fds = array.array("i")
            for _, _, data in anc:
                fds.frombytes(data[: len(data) - len(data) % 4])
            if fields.get("FDSTOREREMOVE") == "1":
                for fd in store.pop(fields["FDNAME"], []):
                    os.close(fd)
            if fields.get("FDSTORE") == "1":
                store.setdefault(fields["FDNAME"], []).extend(fds)
            if until_ready and fields.get("READY") == "1":
                return
            if not until_ready:
                notify.settimeout(0.05)

    cmd = [IVSERVER, "--shm-path", shm_path(d), "--qemu-sock", d + "/q.sock", "--client-sock", d + "/c.sock"]
    env = dict(os.environ, NOTIFY_SOCKET=d + "/notify.sock")

    def start(handed):
        names = [name for name, fds in handed for _ in fds]
        numbers = [fd for _, fds in handed for fd in fds]

        def place_fds():
            moved = [os.dup(fd) for fd in numbers]   # out of the way of 3, 4, ...
            for index, fd in enumerate(moved):
                os.dup2(fd, 3 + index)
            os.environ["LISTEN_PID"] = str(os.getpid())
            os.environ["LISTEN_FDS"] = str(len(numbers))
            os.environ["LISTEN_FDNAMES"] = ":".join(names)
        saved = dict(os.environ)
        os.environ.clear(); os.environ.update(env)
        try:
            return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=False,
                                    preexec_fn=place_fds if handed else None)
        finally:
            os.environ.clear(); os.environ.update(saved)

    server = start([])
    drain(until_ready=True)
    vm = socket.socket(socket.AF_UNIX)
    vm.connect(d + "/q.sock")
    try:
        drain(until_ready=False)
    except socket.timeout:
        pass
    memory = os.fstat(store["ivs-shm"][0]).st_ino
    times = []
    clients = None
    if load:
        clients = subprocess.Popen([LOADGEN, "hald", d + "/c.sock", "e2e_primary", "16", "3600", str(server.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    for _ in range(count):
        if load:
            time.sleep(random.uniform(0, 0.2))
        server.kill(); server.wait()
        t0 = time.perf_counter()
        server = start(sorted(store.items()))
        while True:
            fds = hald_fds(d + "/c.sock")
            if fds:
                same = os.fstat(fds[2]).st_ino == memory
                for fd in fds:
                    os.close(fd)
                if same:
                    break
        times.append((time.perf_counter() - t0) * 1000)
        try:
            drain(until_ready=False)
        except socket.timeout:
            pass
    if clients:
        clients.kill(); clients.wait()
    server.terminate(); server.wait()
    vm.close()
    subprocess.run(["rm", "-rf", d, shm_path(d), shm_path(d) + ".lock"])
    return times


def median(values):
    return statistics.median(values)


def main():
    results = {"limit": {}, "ivserver": {}}
    def record(kind, name, value):
        results[kind].setdefault(name, []).append(value)

    print(f"throughput and latency: {ROUNDS} rounds of {SECONDS} s, interleaved", flush=True)
    for round_ in range(ROUNDS):
        for kind in ("limit", "ivserver"):
            server = Server(kind)
            h = hald(server)
            q = qemu(server)
            server.stop()
            for key in ("rate", "p50_us", "p99_us", "max_us", "cpu_ns_per"):
                record(kind, "hald_" + key, h[key])
                record(kind, "qemu_" + key, q[key])
            print(f"  round {round_ + 1} {kind}: hald {h['rate']:.0f}/s p99 {h['p99_us']} us, "
                  f"qemu p50 {q['p50_us']} us p99 {q['p99_us']} us", flush=True)

    print("start-up to first handshake", flush=True)
    layouts = tempfile.mkdtemp(prefix="ivs-bench-layouts-")
    big = os.path.join(layouts, "64-regions.json")
    regions = [{"device_name": f"r{i}", "current_version": 1, "min_compatible_version": 1,
                "region_size": (32 << 20) - 4096, "guest_to_host_signal_table": {"num_nodes_lg2": 2},
                "host_to_guest_signal_table": {"num_nodes_lg2": 2}} for i in range(64)]
    regions[4]["device_name"] = "e2e_primary"
    with open(big, "w") as f:
        json.dump({"vsoc_device_regions": regions}, f)
    startup = {}
    for round_ in range(20):
        for name, layout in (("limit", None), ("ivserver", None), ("ivserver-64", big)):
            d = tempfile.mkdtemp(prefix="ivs-bench-")
            if name == "limit":
                cmd = [LIMIT, d + "/q.sock", d + "/c.sock"] + REGIONS
            else:
                cmd = [IVSERVER, "--shm-path", shm_path(d), "--qemu-sock", d + "/q.sock", "--client-sock", d + "/c.sock"]
                if layout:
                    cmd += ["--layout", layout]
            r = ready(cmd, d + "/c.sock")
            startup.setdefault(name, []).append(r)
            subprocess.run(["rm", "-rf", d, shm_path(d), shm_path(d) + ".lock"])
        # the floor: a static Swift "hello", spawn to exit, measured the same way
        startup.setdefault("hello", []).append(parse(run(LOADGEN, "exit", "--", HELLO)))
    subprocess.run(["rm", "-rf", layouts])

    print("memory, idle CPU and silent connections", flush=True)
    memory = {}
    for kind in ("limit", "ivserver"):
        # default options: the silent process's connections beyond its share
        # are closed (and it opens them again), as a user would have it
        server = Server(kind, [])
        memory[kind + "_start"] = server.rss_kb()
        idle0 = server.cpu_ns()
        time.sleep(10)
        memory[kind + "_idle_cpu_ms"] = (server.cpu_ns() - idle0) / 1e6
        done = 0
        while done < 1_000_000:
            done += hald(server, seconds=5)["rate"] * 5
        memory[kind + "_after_1m"] = server.rss_kb()
        quiet = hald(server)
        before_silent = server.rss_kb()
        loaded = hald(server, silent=10000)
        # the silent connections are gone when loadgen exits; measure while they were open:
        memory[kind + "_p99_quiet"] = quiet["p99_us"]
        memory[kind + "_p99_silent"] = loaded["p99_us"]
        memory[kind + "_before_silent"] = before_silent
        server.stop()

    # RSS per silent connection, measured while they are open: room for
    # all of them, from one process
    per_pending = {}
    for kind in ("limit", "ivserver"):
        server = Server(kind, ["--max-pending", "20000", "--max-pending-per-process", "20000", "--max-pending-per-user", "20000",
                               "--handshake-timeout", "3600"] if kind == "ivserver" else [])
        base = server.rss_kb()
        holder = subprocess.Popen([sys.executable, "-c", f"""
import socket, time, resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks = []
for _ in range(10000):
    s = socket.socket(socket.AF_UNIX); s.connect({server.client!r}); socks.append(s)
print('open', flush=True)
time.sleep(30)
"""], stdout=subprocess.PIPE, text=True)
        holder.stdout.readline()
        time.sleep(1)
        per_pending[kind] = (server.rss_kb() - base) * 1024 / 10000
        holder.kill(); holder.wait()
        server.stop()

    print("a hog: 10,000 silent connections from one process, each reopened as closed; the server's CPU", flush=True)
    hog = {}
    for kind in ("limit", "ivserver"):
        server = Server(kind)
        hog[kind] = parse(run(LOADGEN, "hog", server.client, "10000", "10", str(server.proc.pid)))
        server.stop()
        print(f"  {kind}: {hog[kind]['cpu_percent']} % of a core, {hog[kind]['reopened']:.0f} reopened", flush=True)

    print("restart: kill -9 to the first host client served with the same memory", flush=True)
    restarts = restart_times()
    print("restart under load: 16 clients all along, 40 kills at random moments", flush=True)
    loaded_restarts = restart_times(count=40, load=True)

    print("multi-peer: a peer's join with 0, 100 and 1,000 peers attached (4 vectors)", flush=True)
    peers = multi_peer()

    baseline = compare_baseline() if BASELINE else None
    write_report(results, startup, memory, per_pending, restarts, peers, hog, loaded_restarts, baseline)


def compare_baseline():
    """This ivserver against BASELINE, an earlier build, interleaved in the
    same run: the HALD and QEMU scenarios and a multi-peer join."""
    results = {"baseline": {}, "ivserver": {}}
    print(f"side by side with the baseline {BASELINE}: {ROUNDS} rounds, interleaved", flush=True)
    for round_ in range(ROUNDS):
        for kind in ("baseline", "ivserver"):
            server = Server(kind)
            h = hald(server)
            q = qemu(server)
            server.stop()
            for key in ("rate", "p99_us", "cpu_ns_per"):
                results[kind].setdefault("hald_" + key, []).append(h[key])
            for key in ("p50_us", "p99_us", "cpu_ns_per"):
                results[kind].setdefault("qemu_" + key, []).append(q[key])
            print(f"  round {round_ + 1} {kind}: hald {h['rate']:.0f}/s, qemu p50 {q['p50_us']} us", flush=True)
    joined, _ = multi_peer(attached_counts=(100,), kinds=("baseline", "ivserver"))
    for kind in ("baseline", "ivserver"):
        for key in ("p50_us", "p99_us"):
            results[kind]["join100_" + key] = [r[key] for r in joined[(kind, 100)]]
    return results


def multi_peer(vectors=4, joins=200, attached_counts=(0, 100, 1000), kinds=("limit", "ivserver")):
    """Join latency (connect -> own eventfds received) with N peers attached,
    servers of `kinds` interleaved; and server RSS per attached peer."""
    joined, rss = {}, {}
    for round_ in range(ROUNDS):
        for attached in attached_counts:
            for kind in kinds:
                d = tempfile.mkdtemp(prefix="ivs-bench-peers-")
                sock = d + "/peers.sock"
                if kind == "limit":
                    cmd = [LIMIT, "--peers", sock, str(vectors)]
                else:
                    binary = BASELINE if kind == "baseline" else IVSERVER
                    cmd = [binary, "multi-peer", "-F", "-S", sock, "-M", os.path.basename(d), "-n", str(vectors)]
                server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                deadline = time.time() + 10
                while not os.path.exists(sock) and time.time() < deadline:
                    time.sleep(0.01)
                time.sleep(0.1)
                load = subprocess.Popen([PEERLOAD, sock, str(attached), str(vectors), str(joins if attached < 1000 else joins // 2)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                assert load.stdout.readline().strip() == "attached"
                time.sleep(0.5)
                with open(f"/proc/{server.pid}/status") as f:
                    rss.setdefault((kind, attached), []).append(int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)))
                load.stdin.write("go\n"); load.stdin.flush()
                result = parse(load.stdout.readline())
                load.wait(timeout=120)
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=10)
                subprocess.run(["rm", "-rf", d])
                joined.setdefault((kind, attached), []).append(result)
                print(f"  round {round_ + 1}, {attached} attached, {kind}: join p50 {result['p50_us']} us, p99 {result['p99_us']} us", flush=True)
    return joined, rss


def write_report(results, startup, memory, per_pending, restarts, peers, hog, loaded_restarts, baseline):
    def row(label, key, target, better="lower"):
        l, i = median(results["limit"][key]), median(results["ivserver"][key])
        return f"| {label} | {l:,.1f} | {i:,.1f} | {i / l:.2f}× | {target} |"

    s_limit = median([r["us"] for r in startup["limit"]]) / 1000
    s_iv = median([r["us"] for r in startup["ivserver"]]) / 1000
    s_iv64 = median([r["us"] for r in startup["ivserver-64"]]) / 1000
    s_hello = median([r["us"] for r in startup["hello"]]) / 1000
    lines = [
        "# ivserver benchmark",
        "",
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"{ROUNDS} interleaved rounds of {SECONDS} s per scenario (medians). "
        "Limit: `Benchmarks/limit-server.c`, a bare epoll server doing the same exchanges. "
        "ivserver: release build, static Swift stdlib, default options (info log to /dev/null).",
        "",
        "| measure | limit | ivserver | ratio | target |",
        "|---|---|---|---|---|",
        row("HALD handshakes/s, 16 clients", "hald_rate", "≥ 0.9×"),
        row("HALD server CPU per handshake (ns)", "hald_cpu_ns_per", "≤ 1.3×"),
        row("HALD p99 latency (µs)", "hald_p99_us", "≤ 1.5×"),
        row("HALD p50 latency (µs)", "hald_p50_us", "–"),
        row("QEMU handshake p50 latency (µs), 1 client", "qemu_p50_us", "≤ 1.2×"),
        row("QEMU handshake p99 latency (µs)", "qemu_p99_us", "≤ 1.2×"),
        row("QEMU server CPU per handshake (ns)", "qemu_cpu_ns_per", "≤ 1.3×"),
        row("QEMU handshakes/s", "qemu_rate", "–"),
        "",
        "| measure | limit | ivserver | target |",
        "|---|---|---|---|",
        f"| start-up to first handshake, default layout (ms, median of 20) | {s_limit:.2f} | {s_iv:.2f} | ≤ 3 ms |",
        f"| start-up, 64 regions / 2 GiB (ms) | – | {s_iv64:.2f} | ≤ 6 ms |",
        f"| the floor: a static Swift \"hello\", spawn to exit (ms, median of 20) | – | {s_hello:.2f} | – |",
        f"| ivserver's start-up to its first handshake above that floor (ms) | – | {s_iv - s_hello:.2f} | ≤ 1 ms |",
        f"| RSS after start (KiB) | {memory['limit_start']} | {memory['ivserver_start']} | ≤ 12 MiB |",
        f"| RSS after 1,000,000 HALD handshakes (KiB) | {memory['limit_after_1m']} | {memory['ivserver_after_1m']} | no growth |",
        f"| CPU over 10 s idle (ms) | {memory['limit_idle_cpu_ms']:.2f} | {memory['ivserver_idle_cpu_ms']:.2f} | 0 |",
        f"| HALD p99 with no silent connections (µs) | {memory['limit_p99_quiet']} | {memory['ivserver_p99_quiet']} | – |",
        f"| HALD p99 with 10,000 silent connections from one process, reopened as closed, default options (µs) | {memory['limit_p99_silent']} | {memory['ivserver_p99_silent']} | ≤ 2× without |",
        f"| memory per pending connection beyond the kernel's (bytes) | {per_pending['limit']:.0f} | {per_pending['ivserver']:.0f} | ≤ 1 KiB |",
        f"| kill -9 to a host client served the same memory, emulated manager (ms, median of {len(restarts)}; "
        f"min {min(restarts):.2f}, max {max(restarts):.2f}) | – | {median(restarts):.2f} | ≤ 20 ms |",
        f"| the same with 16 clients making handshakes all along, {len(loaded_restarts)} kills at random moments "
        f"(ms, median; worst {max(loaded_restarts):.2f}) | – | {median(loaded_restarts):.2f} | – |",
        f"| server CPU while one process holds 10,000 silent connections and reopens each one closed, "
        f"default options, 10 s (% of a core; reopened: limit {hog['limit']['reopened']:.0f}, ivserver {hog['ivserver']['reopened']:.0f}) "
        f"| {hog['limit']['cpu_percent']:.2f} | {hog['ivserver']['cpu_percent']:.2f} | < 10 % |",
        "",
    ]
    joined, rss = peers
    def join_row(attached, key):
        l = median([r[key] for r in joined[("limit", attached)]])
        i = median([r[key] for r in joined[("ivserver", attached)]])
        return f"| join with {attached:,} peers attached, {key.split('_')[0]} (µs) | {l:,.0f} | {i:,.0f} | {i / l:.2f}× |"
    def per_peer(kind):
        return (median(rss[(kind, 1000)]) - median(rss[(kind, 0)])) * 1024 / 1000
    lines += [
        "Multi-peer mode (QEMU's ivshmem-server protocol), 4 vectors per peer: a peer's join, connect to its own "
        "eventfds received, while the attached peers read everything they are sent (`Benchmarks/peerload.c`). "
        "Limit: `limit-server --peers`, the same protocol with blocking sends and no checks.",
        "",
        "| measure | limit | ivserver | ratio |",
        "|---|---|---|---|",
    ]
    for attached in (0, 100, 1000):
        lines += [join_row(attached, "p50_us"), join_row(attached, "p99_us")]
    lines += [
        f"| server RSS per attached peer (bytes) | {per_peer('limit'):,.0f} | {per_peer('ivserver'):,.0f} | – |",
        "",
    ]
    if baseline:
        def base_row(label, key):
            b, i = median(baseline["baseline"][key]), median(baseline["ivserver"][key])
            return f"| {label} | {b:,.1f} | {i:,.1f} | {i / b:.2f}× |"
        lines += [
            f"This build against an earlier one, `{os.path.relpath(BASELINE, ROOT)}` "
            f"({os.environ.get('BENCH_BASELINE_NAME', 'baseline')}), interleaved in this run:",
            "",
            "| measure | baseline | this build | ratio |",
            "|---|---|---|---|",
            base_row("HALD handshakes/s, 16 clients", "hald_rate"),
            base_row("HALD server CPU per handshake (ns)", "hald_cpu_ns_per"),
            base_row("HALD p99 latency (µs)", "hald_p99_us"),
            base_row("QEMU handshake p50 latency (µs)", "qemu_p50_us"),
            base_row("QEMU handshake p99 latency (µs)", "qemu_p99_us"),
            base_row("QEMU server CPU per handshake (ns)", "qemu_cpu_ns_per"),
            base_row("multi-peer join with 100 peers attached, p50 (µs)", "join100_p50_us"),
            base_row("multi-peer join with 100 peers attached, p99 (µs)", "join100_p99_us"),
            "",
        ]
    text = "\n".join(lines)
    os.makedirs(os.path.join(ROOT, "bench"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
