#!/usr/bin/env python3
"""The node agent on the built hci image: convergence, VIP failover, and its idle cost.

Nodes are ``systemd-nspawn`` containers booting the image's root file system
(``images/hci/pxe/rootfs.squashfs``, unpacked once) on a bridge in a network
namespace this script creates and deletes (``tests/lib/nspawn.py``), formed
the operator's way (``tests/lib/harack.py``): a seed with a VIP, the others
joining with a token.

Measured, in one run:

- **Convergence**, 3+1 (three controllers, one compute) and aio (one node,
  the aio profile's policy): from the seed's start to ``cluster status``
  without a problem, split into first boot (every node joined) and the
  agents' part.  Ratio: 3+1 / aio.
- **VIP failover**, REPEAT times (default 5) on the 3+1 rack: the VIP
  holder's PID 1 is SIGKILLed; timed from the cut to the VIP answering on
  another controller (keepalived's own failover: the baseline) and to the
  first successful query through the VIP from the compute node (HAProxy's
  checks and Galera on top).  After each, the node boots again and the rack
  converges before the next.  Median and max; ratio query / VIP move.
- **Idle cost** per node, over WINDOW seconds (default 120) after
  convergence: the agent's CPU share (its process and the checks it ran and
  reaped: utime + stime + cutime + cstime from ``/proc``) and RSS, beside
  etcd's on the same controller as the baseline.

Figures are printed and written to ``bench/results/nodeagent_ha.json``.

Usage: bench/nodeagent_ha.py [--repeat N] [--window SECONDS]
(needs root and ``rackforge build hci`` first; 25-35 minutes on this machine)
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "lib"), str(REPO)]

import harack  # noqa: E402
from netns import wait_until  # noqa: E402
from nspawn import rack, unpack  # noqa: E402

SQUASHFS = REPO / "images" / "hci" / "pxe" / "rootfs.squashfs"
PROBE = ("probe", "probe-password-not-a-secret")      # a bench user, not a rackforge secret


def fail(line):
    print("nodeagent_ha: %s" % line, file=sys.stderr)
    sys.exit(2)


def form_and_converge(node, count, controllers):
    start = time.monotonic()
    nodes = harack.form(node, count, controllers=controllers)
    joined = time.monotonic()
    harack.wait_converged(nodes[0], want_nodes=count)
    done = time.monotonic()
    return nodes, {"first_boot_s": round(joined - start, 1),
                   "agents_s": round(done - joined, 1), "total_s": round(done - start, 1)}


def proc_figures(node, unit):
    """(CPU seconds incl. reaped children, RSS KiB) of ``unit``'s main process."""
    pid = node.run("systemctl", "show", "-P", "MainPID", unit).stdout.strip()
    stat = node.run("cat", "/proc/%s/stat" % pid).stdout
    fields = stat.rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))     # utime stime cutime cstime
    rss = next(int(line.split()[1]) for line in node.run(
        "cat", "/proc/%s/status" % pid).stdout.splitlines() if line.startswith("VmRSS:"))
    return ticks / os.sysconf("SC_CLK_TCK"), rss


def idle_cost(nodes, window):
    units = {n.name: ["rackforge-nodeagent.service"] for n in nodes}
    for n in nodes:
        if n.run("systemctl", "is-active", "rackforge-etcd.service",
                 check=False).stdout.strip() == "active":
            units[n.name].append("rackforge-etcd.service")
    before = {(n.name, u): proc_figures(n, u) for n in nodes for u in units[n.name]}
    t0 = time.monotonic()
    time.sleep(window)          # the measuring window itself, not a wait for a condition
    elapsed = time.monotonic() - t0
    out = {}
    for n in nodes:
        for u in units[n.name]:
            cpu, rss = proc_figures(n, u)
            out.setdefault(n.name, {})[u.split(".")[0]] = {
                "cpu_share_pct": round(100 * (cpu - before[(n.name, u)][0]) / elapsed, 2),
                "rss_mib": round(rss / 1024, 1)}
    return out


def can_query(compute):
    try:
        harack.sql(compute, "SELECT 1", host=harack.VIP, user=PROBE[0], password=PROBE[1])
        return True
    except RuntimeError:
        return False


def failover(nodes, controllers, compute):
    holder_name, = harack.vip_holders(controllers)
    holder = next(n for n in controllers if n.name == holder_name)
    others = [n for n in controllers if n is not holder]
    cut = time.monotonic()
    holder.power_cut()
    wait_until(lambda: len(harack.vip_holders(others)) == 1, 120, "the VIP to move",
               interval=0.1)
    moved = time.monotonic() - cut
    wait_until(lambda: can_query(compute), 300, "a query through the VIP", interval=0.1)
    answered = time.monotonic() - cut
    holder.boot()
    holder.wait_booted()
    harack.wait_converged(nodes[0], want_nodes=len(nodes))
    return {"holder": holder_name, "vip_moved_s": round(moved, 2),
            "query_s": round(answered, 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="VIP failovers (default 5)")
    ap.add_argument("--window", type=int, default=120,
                    help="seconds of the idle measurement (default 120)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        fail("needs root (network namespaces, systemd-nspawn); run it with sudo")
    if not SQUASHFS.is_file():
        fail("%s is missing; build it first: rackforge build hci" % SQUASHFS)
    manifest = json.loads((SQUASHFS.parents[1] / "manifest.json").read_text())
    figures = {"image": {"rackforge": manifest.get("rackforge"),
                         "distro": (manifest.get("profile") or {}).get("distro")}}
    with tempfile.TemporaryDirectory(prefix="rf-bench-agent-") as tmp:
        root = unpack(SQUASHFS, Path(tmp) / "root")
        with rack(root, Path(tmp) / "aio") as node:
            print("aio: forming one node ...", flush=True)
            nodes, figures["aio"] = form_and_converge(node, 1, 1)
            print("aio: %s" % figures["aio"], flush=True)
        with rack(root, Path(tmp) / "ha") as node:
            print("3+1: forming four nodes ...", flush=True)
            nodes, figures["rack_3_1"] = form_and_converge(node, 4, 3)
            print("3+1: %s" % figures["rack_3_1"], flush=True)
            print("idle cost over %d s ..." % args.window, flush=True)
            figures["idle"] = idle_cost(nodes, args.window)
            roles = {n["name"]: n["role"].split(",")[0] for n in json.loads(
                nodes[0].run("rackforge", "node", "list", "--json").stdout)}
            controllers = [n for n in nodes if roles[n.name] == "controller"]
            compute = next(n for n in nodes if roles[n.name] == "compute")
            harack.sql(controllers[0], "CREATE USER IF NOT EXISTS '%s'@'%%' IDENTIFIED BY "
                       "'%s'" % PROBE)
            runs = []
            for i in range(args.repeat):
                runs.append(failover(nodes, controllers, compute))
                print("failover %d/%d: %s" % (i + 1, args.repeat, runs[-1]), flush=True)
            figures["failover"] = runs
    moved = [r["vip_moved_s"] for r in runs]
    answered = [r["query_s"] for r in runs]
    figures["summary"] = {
        "converge_3_1_over_aio": round(figures["rack_3_1"]["total_s"]
                                       / figures["aio"]["total_s"], 2),
        "vip_moved_median_s": statistics.median(moved), "vip_moved_max_s": max(moved),
        "query_median_s": statistics.median(answered), "query_max_s": max(answered),
        "query_over_vip_moved": round(statistics.median(answered) / statistics.median(moved),
                                      2)}
    print("\n%-34s %s" % ("convergence 3+1 (s)", figures["rack_3_1"]))
    print("%-34s %s" % ("convergence aio (s)", figures["aio"]))
    for name, units in sorted(figures["idle"].items()):
        print("%-34s %s" % ("idle %s" % name, units))
    for key, value in figures["summary"].items():
        print("%-34s %s" % (key, value))
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "nodeagent_ha.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
