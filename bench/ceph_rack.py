#!/usr/bin/env python3
"""Ceph on the built hci image's 3+1 rack: time to HEALTH_OK, and what RADOS makes of the
disks it is given.

Nodes are ``systemd-nspawn`` containers of the image (``tests/lib/nspawn.py``), formed
the operator's way (``tests/lib/harack.py``), each with one 8 GiB file disk in its data
directory (the test profile's ``storage.file_disks``), all four on this machine's disk.

Measured, in one run:

- **Time to HEALTH_OK**: from the node agents' start (each agent's
  ``ActiveEnterTimestamp``, the earliest) to ``ceph status`` saying HEALTH_OK with
  three monitors, four OSDs, the five pools made and every PG active+clean; and
  from the seed's first boot.
- **RADOS throughput**: ``rados bench`` on a pool of the rack's size (3
  replicas, host failure domain), SECONDS of 4 MiB writes (16 in flight), then
  SECONDS of sequential reads of what it wrote; against the baseline, run in the
  same script on the same file system: a direct (O_DIRECT) sequential write and
  read of a file as large as what RADOS wrote, with ``dd`` (4 MiB blocks).  The
  ratio is RADOS / direct: on one shared disk every client byte is written three
  times (replicas) plus BlueStore's journal, so ~0.3 is what 3 replicas on one
  disk allow.

Figures are printed and written to ``bench/results/ceph_rack.json``.

Usage: bench/ceph_rack.py [--seconds N]
(needs root and ``rackforge build hci`` first; 10-15 minutes on this machine)
"""

import argparse
import json
import os
import re
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
POOL = "bench"


def fail(line):
    print("ceph_rack: %s" % line, file=sys.stderr)
    sys.exit(2)


def ceph_status(node):
    res = node.run("ceph", "--connect-timeout", "20", "status", "--format", "json",
                   check=False, timeout=120)
    try:
        return json.loads(res.stdout) if res.returncode == 0 else {}
    except ValueError:
        return {}


def monotonic_of(node, unit):
    """When ``unit`` entered active, on the host's monotonic clock (nspawn shares it)."""
    us = node.run("systemctl", "show", "-P", "ActiveEnterTimestampMonotonic", unit).stdout
    return int(us.strip() or 0) / 1e6


def healthy(node, pools=5):
    """HEALTH_OK with three monitors, four OSDs up, the pools made and every PG clean."""
    s = ceph_status(node)
    osds, pgmap = s.get("osdmap") or {}, s.get("pgmap") or {}
    clean = sum(p["count"] for p in pgmap.get("pgs_by_state") or []
                if p["state_name"] == "active+clean")
    return ((s.get("health") or {}).get("status") == "HEALTH_OK"
            and len(s.get("quorum_names") or []) == 3 and osds.get("num_up_osds") == 4
            and pgmap.get("num_pools", 0) >= pools and clean == pgmap.get("num_pgs"))


def rados_bench(node, seconds):
    node.run("ceph", "osd", "pool", "create", POOL)
    node.run("ceph", "osd", "pool", "application", "enable", POOL, "rbd")
    wait_until(lambda: healthy(node, 6), 300, "the bench pool's PGs to be clean", interval=3)
    write = node.run("rados", "bench", "-p", POOL, str(seconds), "write", "-b", "4194304",
                     "-t", "16", "--no-cleanup", timeout=seconds * 4 + 120).stdout
    read = node.run("rados", "bench", "-p", POOL, str(seconds), "seq", "-t", "16",
                    timeout=seconds * 4 + 120).stdout
    node.run("rados", "-p", POOL, "cleanup")

    def figure(text, name):
        m = re.search(r"^%s:\s+([0-9.]+)" % re.escape(name), text, re.M)
        return float(m.group(1)) if m else None
    return {"write_mb_s": figure(write, "Bandwidth (MB/sec)"),
            "written_mb": figure(write, "Total writes made") and
            figure(write, "Total writes made") * 4,
            "read_mb_s": figure(read, "Bandwidth (MB/sec)"),
            "write_latency_s": figure(write, "Average Latency(s)")}


def direct_io(folder, mib):
    """The baseline: ``dd`` with O_DIRECT, a file of ``mib`` MiB written then read."""
    import subprocess
    path = Path(folder) / "direct.img"
    out = {}
    for what, argv in (("write", ["dd", "if=/dev/zero", "of=%s" % path, "bs=4M",
                                  "count=%d" % max(1, mib // 4), "oflag=direct",
                                  "conv=fsync"]),
                       ("read", ["dd", "if=%s" % path, "of=/dev/null", "bs=4M",
                                 "iflag=direct"])):
        start = time.monotonic()
        subprocess.run(argv, check=True, capture_output=True)
        out["%s_mb_s" % what] = round(max(1, mib // 4) * 4 * 1.048576
                                      / (time.monotonic() - start), 1)
    path.unlink()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=30, help="each rados bench (default 30)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        fail("needs root (network namespaces, systemd-nspawn); run it with sudo")
    if not SQUASHFS.is_file():
        fail("%s is missing; build it first: rackforge build hci" % SQUASHFS)
    figures = {}
    with tempfile.TemporaryDirectory(prefix="rf-bench-ceph-") as tmp:
        root = unpack(SQUASHFS, Path(tmp) / "root")
        with rack(root, Path(tmp) / "rack") as node:
            print("3+1: forming four nodes ...", flush=True)
            start = time.monotonic()
            nodes = harack.form(node, 4)
            c1 = nodes[0]
            wait_until(lambda: healthy(c1), 1500, "HEALTH_OK with 3 monitors and 4 OSDs",
                       interval=3)
            done = time.monotonic()
            agents = min(monotonic_of(n, "rackforge-nodeagent.service") for n in nodes)
            figures["health_ok"] = {"from_agents_start_s": round(done - agents, 1),
                                    "from_seed_boot_s": round(done - start, 1)}
            print("HEALTH_OK: %s" % figures["health_ok"], flush=True)
            figures["rados"] = rados_bench(c1, args.seconds)
            print("rados bench: %s" % figures["rados"], flush=True)
            written = int(figures["rados"]["written_mb"] or 1024)
            figures["direct"] = direct_io(tmp, written)
            print("direct dd: %s" % figures["direct"], flush=True)
    figures["summary"] = {
        "write_rados_over_direct": round(figures["rados"]["write_mb_s"]
                                         / figures["direct"]["write_mb_s"], 3),
        "read_rados_over_direct": round(figures["rados"]["read_mb_s"]
                                        / figures["direct"]["read_mb_s"], 3)}
    for key, value in figures.items():
        print("%-12s %s" % (key, value))
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ceph_rack.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
