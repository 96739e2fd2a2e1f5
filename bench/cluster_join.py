#!/usr/bin/env python3
"""N nodes join the cluster at once: wall time until all N hold a role, for N = 3, 12, 48.

The rack is a set of network namespaces this script creates and deletes:
a "rack" namespace holds a bridge ``br0`` with the seed's address
(``10.214.0.1``), a fresh one-member etcd (``tests/lib/etcd.py``) on that
address and the real join server (``rackforge.cluster.joinserver.JoinServer``,
HTTPS on port 9443, in this process: the bench's main thread enters the
rack namespace with ``setns`` while it runs the seed).  Each joining node is
an OS process of its own, started with ``ip netns exec`` in a namespace of
its own, attached to ``br0`` by a veth pair (its MAC ``52:54:00:b1:00:XX``,
its address ``10.214.0.(10 + i)``).  It runs the real client,
``join(endpoint, token, pin, name, addresses, inventory)``.  Nothing binds
outside these namespaces; there is no DHCP.

One run of N: fresh etcd, fresh cluster CA (``CertificateAuthority.init``
in a temporary directory), one token with N uses, the join server, then N
node processes.  Each node imports what ``join()`` needs (including the
``cryptography`` modules the pin check loads) and reports ready; the clock
starts when every node is ready and the bench closes the write end of the
one pipe all of them read as stdin (every node sees EOF at the same time).
It stops when every node process has exited 0 and the registry on the etcd
shows N nodes, each with a role.  Then, outside the clock, the bench checks
loudly: exactly min(N, 3) controllers (the default policy), the answers'
roles are the registry's, the token was spent N times, every certificate
is from the cluster CA.

Each N runs REPEAT times, interleaved (3, 12, 48, 3, 12, 48, ...), after one
unmeasured warm-up run of N=3; the table shows every run, the best and the
median, and the median ratios N=12/N=3 and N=48/N=3.  Per join, as the node
processes see it: the time ``join()`` took (p50/p95/max over all runs of an
N) and the start lag (release to the node's first instruction after the
barrier).  Also counted: SYN retransmissions in the node namespaces (the
node's own counter: each has a namespace to itself), listen-queue
overflows on the seed, and warnings the seed logged (e.g. urllib3's "pool
is full"), and the CPU seconds the seed process, etcd and the nodes' join()
calls spent inside the clock.  A listen-queue overflow costs the node a
SYN retransmission, 1 s later (then 2 s): when "syn" is not 0 the wall time
is set by TCP's timers, not by the work.  Figures are printed and written
to ``bench/results/cluster_join.json``.

Namespaces are the whole setup: 48 nodes take well under a second to
build, so there is no loopback variant.

Usage: bench/cluster_join.py [N ...]   (default 3 12 48; needs root, ip, etcd)
"""

import ctypes
import json
import logging
import os
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COUNTS = (3, 12, 48)
REPEAT = 3
SUBNET = "10.214.0"
SEED = SUBNET + ".1"
PORT = 9443
RUN_TIMEOUT = 120
CONTROLLERS = 3             # roles.DEFAULT_CONTROLLERS: the policy the seed runs with


def node_name(i):
    return "node%02d" % i


def node_mac(i):
    return "52:54:00:b1:00:%02x" % i


def node_address(i):
    return "%s.%d" % (SUBNET, 10 + i)


def tcp_counters(path="/proc/thread-self/net"):
    """TcpExt and Tcp counters of the current thread's network namespace."""
    out = {}
    for name in ("netstat", "snmp"):
        lines = Path(path, name).read_text().splitlines()
        for head, values in zip(lines[::2], lines[1::2]):
            prefix, keys = head.split(":", 1)
            for key, value in zip(keys.split(), values.split(":", 1)[1].split()):
                out[prefix + key] = int(value)
    return out


# -- the node: one process per joining machine -------------------------------------------
def node_main(params_path, index):
    """Join as node ``index``; prints ``ready``, waits for EOF on stdin, prints the result."""
    params = json.loads(Path(params_path).read_text())
    from cryptography import x509  # noqa: F401  - join() loads these for the pin check
    from cryptography.hazmat.primitives import serialization  # noqa: F401

    from rackforge.cluster import ca, joinclient

    csr, _ = ca.make_csr(node_name(index))          # the node's own key, made here
    before = tcp_counters()
    inventory = {"interfaces": [{"name": "eth0", "mac": node_mac(index), "kind": "physical"}]}
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    os.read(0, 1)                       # EOF: the bench released every node at once
    go = time.monotonic()
    cpu = time.process_time()
    answer = joinclient.join([params["endpoint"]], params["token"], params["pin"],
                             node_name(index), csr, inventory=inventory,
                             source=node_address(index))
    done = time.monotonic()
    cpu = time.process_time() - cpu
    after = tcp_counters()
    sys.stdout.write(json.dumps({
        "index": index, "go": go, "done": done, "cpu": cpu, "node_id": answer["node_id"],
        "role": answer["role"], "roles": answer["roles"], "certificate": answer["certificate"],
        "syn_retrans": after["TcpExtTCPSynRetrans"] - before["TcpExtTCPSynRetrans"],
        "retrans_segs": after["TcpRetransSegs"] - before["TcpRetransSegs"]}) + "\n")
    sys.stdout.flush()
    return 0


def cpu_seconds(pid):
    """User + system CPU time of process ``pid`` so far."""
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pid(comm):
    """The pid of this process's child named ``comm`` (the etcd tests/lib/etcd.py started)."""
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            if Path("/proc/%s/comm" % pid).read_text().strip() == comm:
                return int(pid)
    raise SystemExit("bench/cluster_join: no %s child process" % comm)


# -- namespaces -------------------------------------------------------------------------
_LIBC = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _setns(fd):
    if _LIBC.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "setns: " + os.strerror(err))


@contextmanager
def inside(netns):
    """Run the calling thread (and the threads it starts) in ``netns``; come back after."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open("/var/run/netns/" + netns, os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def build_rack(stack, count, netns_mod):
    """The rack namespace (bridge, seed address) and ``count`` node namespaces on it."""
    ip = netns_mod.ip
    rack = stack.enter_context(netns_mod.namespace("rfb-rack"))
    ip("-n", rack, "link", "add", "br0", "type", "bridge", "forward_delay", "0")
    ip("-n", rack, "addr", "add", SEED + "/24", "dev", "br0")
    ip("-n", rack, "link", "set", "br0", "up")
    nodes = []
    for i in range(count):
        ns = stack.enter_context(netns_mod.namespace("rfb-n%02d" % i))
        port = "rfv%d" % i
        ip("link", "add", "eth0", "netns", ns, "address", node_mac(i), "type", "veth",
           "peer", "name", port, "netns", rack)
        ip("-n", rack, "link", "set", port, "master", "br0", "up")
        ip("-n", ns, "addr", "add", node_address(i) + "/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        nodes.append(ns)
    for i in range(count):
        port = "rfv%d" % i
        netns_mod.wait_until(lambda: netns_mod._forwarding(rack, port), 30,
                             "bridge port %s forwarding" % port, interval=0.05)
    return rack, nodes


# -- one run ----------------------------------------------------------------------------
class WarningCounter(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.counts = {}
        self.samples = []

    def emit(self, record):
        key = record.name
        self.counts[key] = self.counts.get(key, 0) + 1
        if len(self.samples) < 5:
            self.samples.append("%s: %s" % (record.name, record.getMessage()[:200]))


def read_lines(procs, want, deadline):
    """Read the nodes' stdout until ``want(buffer)`` holds for each; returns the buffers."""
    bufs = {p.pid: b"" for p in procs}
    pending = {p.stdout.fileno(): p for p in procs if not want(bufs[p.pid])}
    with selectors.DefaultSelector() as sel:
        for fd, p in pending.items():
            sel.register(fd, selectors.EVENT_READ, p)
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SystemExit("bench/cluster_join: %d node(s) did not answer in time"
                                 % len(pending))
            for key, _ in sel.select(timeout=left):
                p = key.data
                chunk = os.read(key.fd, 65536)
                bufs[p.pid] += chunk
                if want(bufs[p.pid]) or not chunk:
                    sel.unregister(key.fd)
                    del pending[key.fd]
    return bufs


def fail(msg, work=None, procs=()):
    for i, p in enumerate(procs):
        if p.returncode not in (0, None) and work is not None:
            err = (work / ("node%02d.err" % i)).read_text(errors="replace")[-1500:]
            msg += "\n-- node%02d exited %s:\n%s" % (i, p.returncode, err)
    raise SystemExit("bench/cluster_join: " + msg)


def run_once(n, nodes, work, warnings):
    """One run of ``n`` simultaneous joins; returns its figures."""
    from etcd import etcd_server

    from rackforge import registry
    from rackforge.cluster import ca, join, joinserver, roles, tokens
    from rackforge.etcdkv import EtcdKV
    from rackforge.proc import stop_process

    work.mkdir(parents=True, mode=0o700)
    procs = []
    with etcd_server(work, host=SEED) as url:
        kv = EtcdKV(url)
        etcd_pid = child_pid("etcd")
        reg = registry.NodeRegistry(kv)
        authority = ca.CertificateAuthority.init(work / "ca", cluster="bench")
        token, _ = tokens.TokenStore(kv).create(uses=n, ttl=600, description="bench")
        service = join.JoinService(reg, authority, etcd_endpoints=[url])
        warnings.counts.clear()
        warnings.samples.clear()
        with joinserver.JoinServer(service, SEED, PORT, cert_dir=work / "srv") as server:
            params = work / "params.json"       # the token never goes on a command line
            params.write_text(json.dumps({"endpoint": server.endpoint, "token": token,
                                          "pin": authority.pin}))
            params.chmod(0o600)
            release_r, release_w = os.pipe()
            try:
                for i in range(n):
                    with open(work / ("node%02d.err" % i), "wb") as err:
                        procs.append(subprocess.Popen(
                            ["ip", "netns", "exec", nodes[i], sys.executable,
                             str(Path(__file__).resolve()), "node", str(params), str(i)],
                            stdin=release_r, stdout=subprocess.PIPE, stderr=err))
                os.close(release_r)
                release_r = None
                deadline = time.monotonic() + RUN_TIMEOUT
                ready = read_lines(procs, lambda b: b"\n" in b, deadline)
                if any(ready[p.pid] != b"ready\n" for p in procs):
                    for p in procs:
                        if ready[p.pid] != b"ready\n":
                            p.wait(timeout=10)
                    fail("a node did not get ready", work, procs)
                seed_before = tcp_counters()
                seed_cpu, etcd_cpu = time.process_time(), cpu_seconds(etcd_pid)
                # -- the clock runs from here ...
                start = time.monotonic()
                os.close(release_w)
                release_w = None
                out = read_lines(procs, lambda b: False, deadline)
                for p in procs:
                    p.wait(timeout=max(1, deadline - time.monotonic()))
                exited = time.monotonic()
                if any(p.returncode != 0 for p in procs):
                    fail("%d of %d joins failed" % (sum(p.returncode != 0 for p in procs), n),
                         work, procs)

                def all_have_roles():
                    found = reg.list_nodes()
                    return found if len(found) == n and all(x.role for x in found) else None
                found = all_have_roles()
                if found is None:
                    found = _poll(all_have_roles, deadline, "%d nodes with a role" % n)
                stop = time.monotonic()
                # ... to here
                seed_cpu = time.process_time() - seed_cpu
                etcd_cpu = cpu_seconds(etcd_pid) - etcd_cpu
                seed_after = tcp_counters()
            finally:
                for fd in (release_r, release_w):
                    if fd is not None:
                        os.close(fd)
                for p in procs:
                    stop_process(p, timeout=5)
                    p.stdout.close()
            posts = server.posts

        # -- the checks, outside the clock
        answers = [json.loads(out[p.pid].decode().splitlines()[-1]) for p in procs]
        controllers = [x for x in found if x.role.split(",")[0] == "controller"]
        members = roles.RoleElection(kv).controllers()
        want = min(n, CONTROLLERS)
        if len(controllers) != want or len(members) != want:
            fail("N=%d: %d controllers in the registry, %d in the election, expected %d"
                 % (n, len(controllers), len(members), want))
        if sorted(members) != sorted(x.id for x in controllers):
            fail("N=%d: the election's controllers %s are not the registry's %s"
                 % (n, members, [x.id for x in controllers]))
        by_id = {x.id: x for x in found}
        if sorted(x.name for x in found) != [node_name(i) for i in range(n)]:
            fail("N=%d: the registry holds %s" % (n, sorted(x.name for x in found)))
        for a in answers:
            node = by_id.get(a["node_id"])
            if node is None or node.name != node_name(a["index"]) or \
                    node.role != ",".join(a["roles"]) or \
                    node.macs != [node_mac(a["index"])] or \
                    node.boot.get("addresses") != [node_address(a["index"])]:
                fail("N=%d: %s's answer %s does not match the registry (%s)"
                     % (n, node_name(a["index"]), a["role"], node))
            if not authority.verify(a["certificate"].encode()):
                fail("N=%d: %s's certificate is not from the cluster CA"
                     % (n, node_name(a["index"])))
        record = tokens.TokenStore(kv).get(token.split(".")[0])
        if record.used != n or posts != n:
            fail("N=%d: the token was spent %d times, %d POSTs reached the seed"
                 % (n, record.used, posts))

    return {
        "n": n,
        "wall_s": stop - start,
        "exited_s": exited - start,
        "join_s": [a["done"] - a["go"] for a in answers],
        "start_lag_s": [a["go"] - start for a in answers],
        "controllers": len(controllers),
        "seed_cpu_s": seed_cpu,
        "etcd_cpu_s": etcd_cpu,
        "nodes_join_cpu_s": sum(a["cpu"] for a in answers),
        "syn_retrans": sum(a["syn_retrans"] for a in answers),
        "retrans_segs": sum(a["retrans_segs"] for a in answers),
        "listen_overflows": seed_after["TcpExtListenOverflows"]
        - seed_before["TcpExtListenOverflows"],
        "listen_drops": seed_after["TcpExtListenDrops"] - seed_before["TcpExtListenDrops"],
        "seed_warnings": dict(warnings.counts),
        "seed_warning_samples": list(warnings.samples),
    }


def _poll(condition, deadline, what):
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise SystemExit("bench/cluster_join: timed out waiting for " + what)
        time.sleep(0.005)


def pct(values, q):
    values = sorted(values)
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def ms(seconds):
    return round(seconds * 1000, 1)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "node":
        return node_main(sys.argv[2], int(sys.argv[3]))
    counts = tuple(int(a) for a in sys.argv[1:]) or COUNTS
    if os.geteuid() != 0 or not shutil.which("etcd") or not shutil.which("ip"):
        print("bench/cluster_join: needs root, ip and etcd (tools/setup-host --test)")
        return 2
    sys.path.insert(0, str(REPO / "tests" / "lib"))
    import netns as netns_mod  # noqa: E402 - tests/lib is on the path only now

    warnings = WarningCounter()
    logging.getLogger().addHandler(warnings)
    work = Path(tempfile.mkdtemp(prefix="rackforge-bench-join-"))
    figures = {"counts": list(counts), "repeat": REPEAT, "controllers_policy": CONTROLLERS,
               "cpus": os.cpu_count(), "network": "namespaces (veth on a bridge)"}
    runs = {n: [] for n in counts}
    try:
        with ExitStack() as stack:
            began = time.monotonic()
            rack, nodes = build_rack(stack, max(counts), netns_mod)
            figures["setup_namespaces_s"] = round(time.monotonic() - began, 2)
            with inside(rack):
                began = time.monotonic()
                warm = run_once(min(counts), nodes, work / "warm-up", warnings)
                figures["warm_up_run_s"] = round(warm["wall_s"], 3)
                figures["warm_up_total_s"] = round(time.monotonic() - began, 2)
                for rep in range(REPEAT):
                    for n in counts:
                        runs[n].append(run_once(n, nodes, work / ("n%d-r%d" % (n, rep)),
                                                warnings))
                        print("  N=%-3d run %d: %.3f s" % (n, rep + 1, runs[n][-1]["wall_s"]),
                              flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        left = set(netns_mod.CREATED) & netns_mod.namespaces()
        if left:
            print("bench/cluster_join: namespaces left behind: %s" % sorted(left))

    base = counts[0]
    per_n = {}
    for n in counts:
        walls = [r["wall_s"] for r in runs[n]]
        joins = [t for r in runs[n] for t in r["join_s"]]
        lags = [t for r in runs[n] for t in r["start_lag_s"]]
        warned = {}
        for r in runs[n]:
            for k, v in r["seed_warnings"].items():
                warned[k] = warned.get(k, 0) + v
        per_n[n] = {
            "runs_s": [round(w, 3) for w in walls],
            "best_s": round(min(walls), 3),
            "median_s": round(statistics.median(walls), 3),
            "all_exited_median_s": round(statistics.median(r["exited_s"] for r in runs[n]), 3),
            "join_p50_ms": ms(pct(joins, 50)),
            "join_p95_ms": ms(pct(joins, 95)),
            "join_max_ms": ms(max(joins)),
            "start_lag_p50_ms": ms(pct(lags, 50)),
            "start_lag_p95_ms": ms(pct(lags, 95)),
            "controllers": runs[n][0]["controllers"],
            # CPU seconds inside the clock (median over the runs): the seed process (join
            # server threads, under one GIL), etcd, and the nodes' join() calls together
            "seed_cpu_s": round(statistics.median(r["seed_cpu_s"] for r in runs[n]), 3),
            "etcd_cpu_s": round(statistics.median(r["etcd_cpu_s"] for r in runs[n]), 3),
            "nodes_join_cpu_s": round(statistics.median(r["nodes_join_cpu_s"]
                                                        for r in runs[n]), 3),
            "syn_retrans": sum(r["syn_retrans"] for r in runs[n]),
            "retrans_segs": sum(r["retrans_segs"] for r in runs[n]),
            "seed_listen_overflows": sum(r["listen_overflows"] for r in runs[n]),
            "seed_listen_drops": sum(r["listen_drops"] for r in runs[n]),
            "seed_warnings": warned,
            "seed_warning_samples": sorted({s for r in runs[n]
                                            for s in r["seed_warning_samples"]})[:5],
        }
    figures["per_n"] = {str(n): v for n, v in per_n.items()}
    for n in counts[1:]:
        figures["ratio_median_n%d_vs_n%d" % (n, base)] = round(
            per_n[n]["median_s"] / per_n[base]["median_s"], 2)
        figures["ratio_best_n%d_vs_n%d" % (n, base)] = round(
            per_n[n]["best_s"] / per_n[base]["best_s"], 2)

    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "cluster_join.json").write_text(json.dumps(figures, indent=2) + "\n")

    print()
    print("%4s  %-23s %7s %7s %6s  %8s %8s %8s  %8s  %4s %4s %4s" % (
        "N", "runs (s)", "best", "median", "ratio", "join p50", "join p95", "join max",
        "lag p95", "ctl", "syn", "ovf"))
    for n in counts:
        f = per_n[n]
        print("%4d  %-23s %7.3f %7.3f %6.2f  %8.1f %8.1f %8.1f  %8.1f  %4d %4d %4d" % (
            n, " ".join("%.3f" % w for w in f["runs_s"]), f["best_s"], f["median_s"],
            f["median_s"] / per_n[base]["median_s"], f["join_p50_ms"], f["join_p95_ms"],
            f["join_max_ms"], f["start_lag_p95_ms"], f["controllers"], f["syn_retrans"],
            f["seed_listen_overflows"]))
    print("(join/lag in ms, as the node processes saw them; ratio: median / median of N=%d; "
          "ctl: controllers; syn: SYN retransmissions by the nodes; ovf: listen-queue "
          "overflows on the seed; all over %d runs)" % (base, REPEAT))
    for n in counts[1:]:
        print("N=%d / N=%d: %.2f (median), %.2f (best)" % (
            n, base, figures["ratio_median_n%d_vs_n%d" % (n, base)],
            figures["ratio_best_n%d_vs_n%d" % (n, base)]))
    for n in counts:
        if per_n[n]["seed_warnings"]:
            print("N=%d: the seed logged warnings %s, e.g. %s" % (
                n, per_n[n]["seed_warnings"], per_n[n]["seed_warning_samples"][:1]))
    for n in counts:
        f = per_n[n]
        print("N=%d CPU inside the clock (median): seed %.2f s, etcd %.2f s, nodes' join() "
              "%.2f s, wall %.2f s on %d CPUs" % (n, f["seed_cpu_s"], f["etcd_cpu_s"],
                                                  f["nodes_join_cpu_s"], f["median_s"],
                                                  os.cpu_count()))
    print("namespaces: %.2f s to build; warm-up run %.3f s" % (
        figures["setup_namespaces_s"], figures["warm_up_run_s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
