#!/usr/bin/env python3
"""`make bench`: kuberules side by side with the stock tools, every comparison in the same run.

Environment: KUBERULES (binary, default .build/release/kuberules), BENCH_N (default "1000 10000";
add 30000 where it fits), BENCH_M (endpoints per service, default 10), BENCH_SLOW=0 to skip the
loads that take minutes (kube-proxy's nftables layout and iptables-nft-restore at 10k+;
BENCH_KUBE_PROXY=1 keeps kube-proxy's layout),
BENCH_LATENCY (service counts for the latency benchmark, default "100 10000": every later count
is measured side by side with the first), BENCH_SHARDS (the
--nft-shards of the sharded rows, default 32; 1 leaves them out), BENCH_LAT_ROUNDS and
BENCH_LAT_CONNECTIONS (latency: rounds, default 8, of connections per size, default 500).
Needs root: every load goes into a network namespace created for it (`ip netns add`), removed after.
Prints a Markdown report and writes it to .build/bench/report.md.
"""
import os, signal, platform, re, shutil, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.abspath(os.environ.get("KUBERULES", os.path.join(ROOT, ".build/release/kuberules")))
NS = [int(x) for x in os.environ.get("BENCH_N", "1000 10000").split()]
M = int(os.environ.get("BENCH_M", "10"))
COMPILE_RUNS = int(os.environ.get("BENCH_COMPILE_RUNS", "5"))
SLOW = os.environ.get("BENCH_SLOW", "1") == "1"
# kube-proxy's nftables layout at 10k+ (minutes); on by default unless BENCH_SLOW=0.
KUBE_PROXY = os.environ.get("BENCH_KUBE_PROXY", "1" if SLOW else "0") == "1"
LAT = [int(x) for x in os.environ.get("BENCH_LATENCY", "100 10000").split()]
SHARDS = int(os.environ.get("BENCH_SHARDS", "32"))
W = os.path.join(ROOT, ".build/bench")
GEN = os.path.join(ROOT, "bench/gen.py")
NODE = ["--node-name", "node-a", "--node-ip", "192.168.50.1"]
report = []

def out(line=""):
    print(line, flush=True)
    report.append(line)

def sh(cmd, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=True, capture_output=True, text=True, **kw)

class Netns:
    """A network namespace of our own (`ip netns add`), removed on exit."""
    count = 0
    def __init__(self):
        Netns.count += 1
        self.name = "krbench%d-%d" % (os.getpid(), Netns.count)
    def __enter__(self):
        sh(["ip", "netns", "add", self.name]); sh(["ip", "-n", self.name, "link", "set", "lo", "up"])
        return self
    def __exit__(self, *a):
        subprocess.run(["ip", "netns", "del", self.name])
    def run(self, cmd, stdin=None):
        """Runs cmd in the namespace; returns (seconds, peak RSS in MB, stdout)."""
        tf = os.path.join(W, "time.out")
        full = ["ip", "netns", "exec", self.name, "/usr/bin/time", "-f", "%e %M", "-o", tf] + cmd
        start = time.perf_counter()
        with open(stdin) if stdin else open(os.devnull) as f:
            p = subprocess.run(full, stdin=f, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if p.returncode != 0:
            raise SystemExit("failed (%d): %s\n%s" % (p.returncode, " ".join(cmd), p.stderr[-2000:]))
        rss = int(open(tf).read().split()[-1]) / 1024
        return wall, rss, p.stdout

def timed(cmd, stdout_path=None):
    """Runs cmd outside any namespace (pure compile); returns (seconds, peak RSS MB)."""
    tf = os.path.join(W, "time.out")
    start = time.perf_counter()
    with open(stdout_path or os.devnull, "w") as f:
        p = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", tf] + cmd, stdout=f, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if p.returncode != 0:
        raise SystemExit("failed: %s\n%s" % (" ".join(cmd), p.stderr[-2000:]))
    return wall, int(open(tf).read().split()[-1]) / 1024

def summary(text):
    """Parses `kuberules apply --backend nftables`'s summary line."""
    m = re.search(r"(\d+) messages, (\d+) bytes, \d+ attempt\(s\), (\d+) ms", text)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else (0, 0, 0)

def read_source(text):
    """What the applier read before diffing (the summary's `read:` part)."""
    m = re.search(r"read: (.*)$", text.strip())
    return m.group(1) if m else "?"

def ratio(a, b):
    return "%.1f×" % (a / b) if b > 0 else "–"

def machine():
    nproc = os.cpu_count()
    mem = int(open("/proc/meminfo").readline().split()[1]) // 1024 // 1024
    nft = sh(["nft", "--version"]).stdout.strip()
    ipt = sh(["iptables", "--version"]).stdout.strip()
    swift = sh(["swift", "--version"]).stdout.splitlines()[0] if shutil.which("swift") else "?"
    return "%d vCPU, %d GiB, kernel %s, %s, %s, %s" % (nproc, mem, platform.release(), nft, ipt, swift)

def gen(n, path, *extra):
    sh([sys.executable, GEN, str(n), str(M), path] + list(extra))

def bench_size(n):
    d = os.path.join(W, str(n)); os.makedirs(d, exist_ok=True)
    cluster, kp = os.path.join(d, "cluster.json"), os.path.join(d, "kube-proxy.nft")
    gen(n, cluster, "--kube-proxy-nft", kp)
    for change in ("endpoint", "add", "remove"):
        gen(n, os.path.join(d, "cluster-%s.json" % change), "--change", change)
    size = os.path.getsize(cluster) / 1e6
    out("### %d services × %d endpoints (%.0f MB of JSON)" % (n, M, size))
    out()
    out("| compile (render to text, written to /dev/null), median of %d interleaved runs (range) | time | peak memory | output |" % COMPILE_RUNS)
    out("|---|---|---|---|")
    texts = {}
    backends = (("iptables", ["--with-jumps"]), ("nftables", []), ("ipvs", []))
    runs = {b: [] for b, _ in backends}
    # Interleaved, so that a slow moment of this shared machine falls on every backend alike.
    # The timed renders write to /dev/null: rewriting 60 MB of files each round set this VM's
    # disk writeback against the next render (up to +45 % on iptables). One more render per
    # backend writes the text used below.
    for _ in range(COMPILE_RUNS):
        for backend, extra in backends:
            runs[backend].append(timed([BIN, "render", "--backend", backend] + extra + NODE + [cluster]))
    for backend, extra in backends:
        path = os.path.join(d, "rules." + backend)
        timed([BIN, "render", "--backend", backend] + extra + NODE + [cluster], path)
        texts[backend] = path
    for backend, _ in backends:
        times = sorted(t for t, _ in runs[backend])
        rss = max(r for _, r in runs[backend])
        lines = sum(1 for _ in open(texts[backend]))
        out("| `render --backend %s` | %.2f s (%.2f–%.2f) | %.0f MB | %d lines |"
            % (backend, times[len(times) // 2], times[0], times[-1], rss, lines))
    out()

    out("| load into an empty namespace | time | ratio (time ÷ kuberules) |")
    out("|---|---|---|")
    # Three full applies, each into a fresh namespace: the median (this VM's speed moves by
    # 2x within the hour; one sample can fall on a slow moment).
    fulls = []
    for _ in range(3):
        with Netns() as ns:
            wall, rss, text = ns.run([BIN, "apply", "--backend", "nftables"] + NODE + [cluster])
        msgs, nbytes, ms = summary(text)
        fulls.append((ms, wall))
    fulls.sort()
    ms, wall = fulls[1]
    out("| `kuberules apply --backend nftables` (netlink, one batch; median of 3, range in the applier) | %.2f s end to end (%.2f s in the applier, %.2f–%.2f; %d messages, %.1f MB) | 1× |"
        % (wall, ms / 1000, fulls[0][0] / 1000, fulls[-1][0] / 1000, msgs, nbytes / 1e6))
    with Netns() as ns:
        t, _, _ = ns.run(["nft", "-f", texts["nftables"]])
    out("| `nft -f` of the same rules (render output) | %.2f s | %s of the applier |" % (t, ratio(t, ms / 1000)))
    if KUBE_PROXY or n <= 2000:
        with Netns() as ns:
            t, _, _ = ns.run(["nft", "-f", kp])
        out("| kube-proxy's nftables layout, same cluster, `nft -f` | %.2f s | %s of kuberules apply end to end, %s of the applier |"
            % (t, ratio(t, wall), ratio(t, ms / 1000)))
    with Netns() as ns:
        tl, _, _ = ns.run(["iptables-legacy-restore", "--noflush"], stdin=texts["iptables"])
    out("| `iptables-legacy-restore` of the iptables output | %.2f s | |" % tl)
    if SLOW or n <= 2000:
        with Netns() as ns:
            t, _, _ = ns.run(["iptables-nft-restore", "--noflush"], stdin=texts["iptables"])
        out("| `iptables-nft-restore` of the iptables output | %.2f s | %s of legacy |" % (t, ratio(t, tl)))
    out()

    out("| incremental, after a full apply | end to end | in the applier | netlink messages | bytes | state read |")
    out("|---|---|---|---|---|---|")
    with Netns() as ns:
        state = os.path.join(d, "nft-state")
        shutil.rmtree(state, ignore_errors=True)
        nft = [BIN, "apply", "--backend", "nftables", "--state-dir", state] + NODE
        ns.run(nft + [cluster])
        incremental_rows(ns, nft, d, cluster, "nftables")
        nostate = [BIN, "apply", "--backend", "nftables", "--state-dir", ""] + NODE
        wall, _, text = ns.run(nostate + [os.path.join(d, "cluster-endpoint.json")])
        msgs, nbytes, ms = summary(text)
        out("| nftables: one endpoint changed, without saved state (`--state-dir ''`) | %.2f s | %d ms | %d | %d | %s |"
            % (wall, ms, msgs, nbytes, read_source(text)))
    if SHARDS > 1:
        bench_sharded(n, d, cluster)
    with Netns() as ns:
        state = os.path.join(d, "state")
        shutil.rmtree(state, ignore_errors=True)
        args = ["--backend", "iptables", "--iptables", "legacy", "--state-dir", state] + NODE
        wall, _, full = ns.run([BIN, "apply"] + args + [cluster])
        wall2, _, part = ns.run([BIN, "apply"] + args + [os.path.join(d, "cluster-endpoint.json")])
        f = re.search(r"(\d+) restore rules, (\d+) bytes", full); p = re.search(r"(\d+) restore rules, (\d+) bytes", part)
        out("| iptables (legacy) full sync | %.2f s | | %s restore rules | %s |" % (wall, f.group(1), f.group(2)))
        out("| iptables (legacy) one endpoint changed: partial sync | %.2f s | | %s restore rules (%s of full) | %s |"
            % (wall2, p.group(1), "%.4f%%" % (100 * int(p.group(1)) / max(1, int(f.group(1)))), p.group(2)))
    out()

def bench_sharded(n, d, cluster):
    """The same applies with --nft-shards SHARDS: each change applied 5 times (and back), median and range."""
    with Netns() as ns:
        state = os.path.join(d, "nft-state-sharded")
        shutil.rmtree(state, ignore_errors=True)
        nft = [BIN, "apply", "--backend", "nftables", "--nft-shards", str(SHARDS), "--state-dir", state] + NODE
        wall, _, text = ns.run(nft + [cluster])
        msgs, nbytes, ms = summary(text)
        out("| nftables `--nft-shards %d`: full apply into an empty namespace | %.2f s | %d ms | %d | %d | %s |"
            % (SHARDS, wall, ms, msgs, nbytes, read_source(text)))
        incremental_rows(ns, nft, d, cluster, "nftables `--nft-shards %d`" % SHARDS)

def incremental_rows(ns, nft, d, cluster, label):
    """One endpoint changed, one service added, one removed, nothing changed: each applied 5
    times after the full cluster (and back), in namespace ns; median and range."""
    for change, what in (("endpoint", "one endpoint changed"), ("add", "one service added"), ("remove", "one service removed"), (None, "nothing changed")):
        walls, mss = [], []
        for _ in range(5):
            wall, _, text = ns.run(nft + [os.path.join(d, "cluster-%s.json" % change) if change else cluster])
            msgs, nbytes, ms = summary(text)
            walls.append(wall); mss.append(ms)
            ns.run(nft + [cluster])
        walls.sort(); mss.sort()
        out("| %s: %s (median of 5; range) | %.2f s | %d ms (%d–%d) | %d | %d | %s |"
            % (label, what, walls[2], mss[2], mss[0], mss[-1], msgs, nbytes, read_source(text)))

ROUNDS = int(os.environ.get("BENCH_LAT_ROUNDS", "8"))
PER_ROUND = int(os.environ.get("BENCH_LAT_CONNECTIONS", "500"))

class World:
    """A node (namespace) with a client pod and a server pod behind veths, the rules of an
    n-service cluster applied with `backend`, and a TCP server on the endpoint."""
    def __init__(self, n, backend):
        self.n, self.backend = n, backend
        self.node, self.a, self.b = Netns(), Netns(), Netns()
    def __enter__(self):
        self.server = None
        try:
            return self.setup()
        except BaseException:
            self.__exit__(None, None, None)
            raise
    def setup(self):
        d = os.path.join(W, "lat"); os.makedirs(d, exist_ok=True)
        cluster = os.path.join(d, "cluster-%d.json" % self.n)
        if not os.path.exists(cluster):
            gen(self.n, cluster, "--target", "10.244.0.3")
        node, a, b = self.node.__enter__(), self.a.__enter__(), self.b.__enter__()
        for i, (ns, ip) in enumerate(((a, "10.244.0.2"), (b, "10.244.0.3")), 1):
            sh(["ip", "link", "add", "v%d" % i, "netns", node.name, "type", "veth", "peer", "name", "eth0", "netns", ns.name])
            sh(["ip", "-n", ns.name, "link", "set", "eth0", "up"]); sh(["ip", "-n", ns.name, "addr", "add", ip + "/24", "dev", "eth0"])
            sh(["ip", "-n", node.name, "link", "set", "v%d" % i, "up"]); sh(["ip", "-n", node.name, "addr", "add", "10.244.0.1/32", "dev", "v%d" % i])
            sh(["ip", "-n", node.name, "route", "add", ip + "/32", "dev", "v%d" % i])
            sh(["ip", "netns", "exec", node.name, "sysctl", "-qw", "net.ipv4.conf.v%d.proxy_arp=1" % i])
            sh(["ip", "-n", ns.name, "route", "add", "default", "via", "10.244.0.1", "dev", "eth0", "onlink"])
        sh(["ip", "netns", "exec", node.name, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        # In a session of its own, without our stdout: killed as a group on exit.
        self.server = subprocess.Popen(["ip", "netns", "exec", b.name, "timeout", "1800", sys.executable, "-c",
                                        "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                                        "s.bind(('0.0.0.0',8080));s.listen(512)\nwhile True:\n c,_=s.accept();c.close()"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        if self.backend.startswith("nftables"):
            shards = ["--nft-shards", str(SHARDS)] if self.backend == "nftables-sharded" else []
            node.run([BIN, "apply", "--backend", "nftables", "--ip-family", "ipv4", "--state-dir", ""] + shards + NODE + [cluster])
        else:
            rules = os.path.join(d, "rules-%d.iptables" % self.n)
            timed([BIN, "render", "--backend", "iptables", "--with-jumps"] + NODE + [cluster], rules)
            node.run(["iptables-legacy-restore", "--noflush"], stdin=rules)
        time.sleep(0.5)
        self.connect(500)  # warm-up: ARP, caches, conntrack
        return self
    def __exit__(self, *exc):
        if self.server is not None:
            os.killpg(self.server.pid, signal.SIGKILL)
            self.server.wait()
        for ns in (self.b, self.a, self.node):
            ns.__exit__(*exc)
    def connect(self, count):
        """Connect times (seconds) of `count` TCP connections from the client pod to the ClusterIP."""
        code = ("import socket,time\nts=[]\nfor i in range(%d):\n t=time.perf_counter();s=socket.create_connection(('10.95.255.254',80),2)\n"
                " ts.append(time.perf_counter()-t);s.close()\nprint(' '.join('%%.9f' %% t for t in ts))" % count)
        return [float(x) for x in sh(["ip", "netns", "exec", self.a.name, sys.executable, "-c", code]).stdout.split()]

def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]

def latency_pair(backend, lo, hi):
    """The two sizes set up side by side and measured in alternating rounds (the order flips
    each round), so that drift of the machine hits both alike. Returns per size (p50, p99) in
    µs over all rounds, and the median over rounds of the per-round p50 ratio hi/lo."""
    with World(lo, backend) as small, World(hi, backend) as large:
        samples = {lo: [], hi: []}
        ratios = []
        for r in range(ROUNDS):
            got = {}
            for w in ((small, large) if r % 2 == 0 else (large, small)):
                got[w.n] = w.connect(PER_ROUND)
                samples[w.n] += got[w.n]
            ratios.append(quantile(got[hi], 0.5) / quantile(got[lo], 0.5))
        res = {n: (quantile(samples[n], 0.5) * 1e6, quantile(samples[n], 0.99) * 1e6) for n in (lo, hi)}
        return res, sorted(ratios)

def main():
    if os.geteuid() != 0:
        raise SystemExit("make bench needs root (it creates network namespaces)")
    if not os.access(BIN, os.X_OK):
        raise SystemExit("no binary at %s (make bench builds it with swift build -c release)" % BIN)
    os.makedirs(W, exist_ok=True)
    out("## Results (`make bench`, %s)" % time.strftime("%Y-%m-%d"))
    out()
    out("Machine: " + machine() + ".")
    out("Cluster mix (bench/gen.py): 10%% LoadBalancer with source ranges (half eTP=Local), 20%% NodePort, 10%% ClientIP affinity, "
        "10%% two ports (TCP+UDP), 10%% dual-stack, 40%% plain ClusterIP; %d ready endpoints each." % M)
    out()
    for n in NS:
        bench_size(n)
    if LAT:
        latency_table()
    with open(os.path.join(W, "report.md"), "w") as f:
        f.write("\n".join(report) + "\n")

def latency_table():
    lo = LAT[0]
    out("| first-packet latency: TCP connect to a ClusterIP, pod to pod through the node (%d rounds of %d connections per size, sizes interleaved, after 500 to warm up) | p50 | p99 |"
        % (ROUNDS, PER_ROUND))
    out("|---|---|---|")
    backends = ("nftables", "nftables-sharded", "iptables") if SHARDS > 1 else ("nftables", "iptables")
    how = {"nftables": "kuberules apply", "nftables-sharded": "kuberules apply --nft-shards %d" % SHARDS,
           "iptables": "iptables-legacy-restore of our rules"}
    summary = []
    for backend in backends:
        name = "%s (%s)" % (backend.split("-")[0], how[backend])
        if len(LAT) == 1:
            with World(lo, backend) as w:
                ts = [t for _ in range(ROUNDS) for t in w.connect(PER_ROUND)]
            out("| %s, %d services | %.0f µs | %.0f µs |" % (name, lo, quantile(ts, 0.5) * 1e6, quantile(ts, 0.99) * 1e6))
            continue
        # Every other size side by side with the smallest.
        for hi in LAT[1:]:
            res, ratios = latency_pair(backend, lo, hi)
            for n in (lo, hi):
                out("| %s, %d services | %.0f µs | %.0f µs |" % (name, n, res[n][0], res[n][1]))
            summary.append("| %s: p50 at %d services / at %d | %s overall; per round median %.2f× (range %.2f–%.2f×) | p99: %s |"
                           % (name, hi, lo, "%.2f×" % (res[hi][0] / res[lo][0]),
                              statistics.median(ratios), ratios[0], ratios[-1], "%.2f×" % (res[hi][1] / res[lo][1])))
    for line in summary:
        out(line)
    out()

if __name__ == "__main__":
    main()
