#!/usr/bin/env python3
"""The cloud on the built hci image: time to the first ACTIVE VM, what HAProxy costs the
API, and what the control plane holds in memory.

Nodes are ``systemd-nspawn`` containers of the image (``tests/lib/nspawn.py``), formed
the operator's way (``tests/lib/harack.py``); the VM is the tests' tiny guest
(``tests/lib/guestimage.py``) under QEMU TCG inside the node (no KVM here).

Measured, per rack (``aio``: one node; ``3+1``: three converged controllers and a
compute node), in one run:

- **Time to the first ACTIVE VM**: from the node agents' start (the earliest
  ``InactiveExitTimestampMonotonic``) to ``openstack server show`` saying ACTIVE, the user
  journey of the end-to-end test in between (images, networks, router, volume,
  server create); and to its console showing the DHCP address.
- **API latency through the VIP vs directly to one controller** (3+1; aio: the VIP
  on the only node): REQUESTS token issues and server lists each way, p50 and p95,
  from a compute node; the ratio VIP / direct is HAProxy's cost (the baseline is the
  direct run, in the same script, right after).
- **Resident memory of the control plane per controller**: the RSS of every process in
  the cgroup of each OpenStack, database, broker, OVN and Ceph unit, summed by unit.

Figures are printed and written to ``bench/results/cloud.json``.

Usage: bench/cloud.py [--racks aio,3+1] [--requests N]
(needs root and ``rackforge build hci`` first; 30-45 minutes on this machine)
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "lib"), str(REPO)]

import apiloop  # noqa: E402
import cloud  # noqa: E402
import guestimage  # noqa: E402
import harack  # noqa: E402
from nspawn import rack, unpack  # noqa: E402

SQUASHFS = REPO / "images" / "hci" / "pxe" / "rootfs.squashfs"
UNITS = ("keystone", "glance-api", "placement-api", "nova-api", "nova-api-metadata",
         "nova-conductor", "nova-scheduler", "nova-novncproxy", "nova-compute", "neutron-api",
         "rackforge-neutron-ovn-maintenance-worker", "rackforge-neutron-periodic-workers",
         "neutron-ovn-metadata-agent", "cinder-api", "cinder-scheduler", "cinder-volume",
         "apache2", "mariadb", "rabbitmq-server", "memcached", "haproxy", "keepalived",
         "ovn-ovsdb-server-nb", "ovn-ovsdb-server-sb", "ovn-northd", "ovn-controller",
         "openvswitch-switch", "libvirtd", "rackforge-nodeagent", "rackforge-etcd")
RSS_SCRIPT = r'''
import json, os, sys
want = {u + ".service": u for u in sys.argv[1:]}
kib = {}
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        parts = open("/proc/%s/cgroup" % pid).read().strip().split("/")
        unit = next((want[p] for p in parts if p in want), None)
        if unit is None:
            continue
        for line in open("/proc/%s/status" % pid):
            if line.startswith("VmRSS:"):
                kib[unit] = kib.get(unit, 0) + int(line.split()[1])
    except OSError:
        pass
print(json.dumps({u: k // 1024 for u, k in kib.items()}))
'''


def fail(line):
    print("cloud: %s" % line, file=sys.stderr)
    sys.exit(2)


def started_at(node, unit, timeout=300):
    """When ``unit`` started (left inactive), on the host's monotonic clock (nspawn gives
    a node no time namespace, so its monotonic stamps are the host's).  First boot starts
    the agent at its hand-over, and a Type=notify agent is "activating" until its first
    pass, so the start is read, not the moment it became active."""
    deadline = time.monotonic() + timeout
    while True:
        us = node.run("systemctl", "show", "-P", "InactiveExitTimestampMonotonic",
                      unit).stdout.strip()
        if us and int(us) > 0:
            return int(us) / 1e6
        if time.monotonic() > deadline:
            fail("%s: %s did not start within %d s of first boot" % (node.name, unit,
                                                                     timeout))
        time.sleep(2)


def rss(node):
    """{unit: MiB} of the control plane's units on ``node``."""
    leader = node.leader()
    import subprocess
    res = subprocess.run(["nsenter", "-t", str(leader), "-m", "-u", "-i", "-n", "-p", "-r",
                          "-w", "--", "python3", "-c", RSS_SCRIPT, *UNITS],
                         capture_output=True, text=True, timeout=120)
    return json.loads(res.stdout or "{}")


def latencies(runner, base, password, requests):
    """p50/p95 (ms) of token issues and server lists against ``base``."""
    stop = "/var/tmp/bench-api.stop"  # not /tmp: a tmpfs inside the node hides it
    runner.run("rm", "-f", stop)
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as out:
        proc = apiloop.start(runner, base, stop, password, out.name)
        try:
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline and proc.poll() is None and sum(
                    1 for r in apiloop.results(out.name) if r["kind"] == "servers") < requests:
                time.sleep(1)
        finally:
            runner.write(stop, "", mode=0o644)
            proc.wait(timeout=60)
        lines = apiloop.results(out.name)
    out = {}
    for kind in ("token", "servers"):
        ms = [r["ms"] for r in lines if r["kind"] == kind and r["ok"]]
        out[kind] = {"n": len(ms), "p50_ms": round(apiloop.percentile(ms, 50), 1),
                     "p95_ms": round(apiloop.percentile(ms, 95), 1),
                     "failed": sum(1 for r in lines if r["kind"] == kind and not r["ok"])}
    return out


def one_rack(label, root, workdir, guest, requests):
    figures = {}
    with rack(root, workdir) as node:
        if label == "aio":
            nodes = harack.form(node, 1, controllers=1, disks="loop", provider=(1,))
        else:
            nodes = harack.form(node, 4, provider=(1, 2, 3, 4))
        named = {n.name: n for n in nodes}
        start = min(started_at(n, "rackforge-nodeagent.service") for n in nodes)
        harack.wait_converged(nodes[0], want_nodes=len(nodes))
        converged = time.monotonic()
        ctrl = harack.controllers(named)
        c = cloud.Cloud(ctrl[0])
        timings = {}
        cloud.boot_vm(c, guest, guestimage.MARKER, timings=timings)
        active_at = converged + timings["active"]
        figures["first_vm"] = {"converged_from_agents_s": round(converged - start, 1),
                               "active_from_agents_s": round(active_at - start, 1),
                               "console_from_agents_s": round(converged + timings["console"]
                                                              - start, 1),
                               "journey_s": {k: round(v, 1) for k, v in timings.items()}}
        print("%s first VM: %s" % (label, figures["first_vm"]), flush=True)
        password = cloud.admin_password(ctrl[0])
        runner = harack.compute(named) if len(nodes) > 1 else nodes[0]
        vip = latencies(runner, "http://" + harack.VIP, password, requests)
        direct = latencies(runner, "http://" + harack.address(int(ctrl[0].name[4:])),
                           password, requests)
        figures["api"] = {"through_vip": vip, "direct": direct, "vip_over_direct": {
            kind: {p: round(vip[kind][p] / direct[kind][p], 2) for p in ("p50_ms", "p95_ms")}
            for kind in ("token", "servers")}}
        print("%s API: %s" % (label, figures["api"]), flush=True)
        figures["rss_mib"] = {n.name: rss(n) for n in ctrl}
        figures["rss_total_mib"] = {name: sum(units.values())
                                    for name, units in figures["rss_mib"].items()}
        print("%s control plane RSS per controller (MiB): %s" % (
            label, figures["rss_total_mib"]), flush=True)
    return figures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--racks", default="aio,3+1", help="which racks (default aio,3+1)")
    ap.add_argument("--requests", type=int, default=100,
                    help="token issues and server lists each way (default 100)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        fail("needs root (network namespaces, systemd-nspawn); run it with sudo")
    if not SQUASHFS.is_file():
        fail("%s is missing; build it first: rackforge build hci" % SQUASHFS)
    racks = [r for r in args.racks.split(",") if r]
    if set(racks) - {"aio", "3+1"}:
        fail("--racks takes aio and 3+1, got %s" % args.racks)
    figures = {}
    with tempfile.TemporaryDirectory(prefix="rf-bench-cloud-") as tmp:
        guest = guestimage.build(Path(tmp) / "guest")
        root = Path(os.environ.get("RACKFORGE_TEST_HCI_ROOT") or
                    unpack(SQUASHFS, Path(tmp) / "root"))
        for label in racks:
            print("%s: forming ..." % label, flush=True)
            figures[label] = one_rack(label, root, Path(tmp) / label, guest, args.requests)
    print(json.dumps(figures, indent=1))
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "cloud.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
