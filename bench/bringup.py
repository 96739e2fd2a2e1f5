#!/usr/bin/env python3
"""Bring-up in the virtual rack: the seed's ISO install, then ``rack up`` for 1 vs 2 PXE nodes.

The operator's journey of ``tests/e2e/test_rack_up.py`` (its helpers:
``tests/lib/seedinstall.py``), timed:

- **Install**: the ``minimal`` ISO in a QEMU guest (TCG, UEFI) installs the
  seed's disk from an answer file: the installer's own figure (its console line
  ``rackforge installer: installed to ... in N s``) and the wall time from the
  ISO guest's start to its reboot; then, in each rack, the seed's boot from
  that disk to ``first boot complete`` (power-on through its BMC).
- **Bring-up**: ``rackforge rack up`` on the seed against the virtual rack's
  BMCs, from its start to every node active in ``rack status`` (polled every
  5 s), with 1 PXE node (a rack of 2; the baseline) and then 2 PXE nodes (a
  rack of 3), each from a fresh overlay over the same installed seed disk (a
  new cluster each time); each PXE node's own install figure from its console.

Ratios are 2 nodes / 1 node, against the baseline run in the same script: 1.0
would be perfect parallelism; on this 2-core machine each TCG guest takes about
a core, so two installing nodes beside the seed compete for CPU and the ratio
shows what that costs.  Figures are printed and written to
``bench/results/bringup.json``.

Usage: bench/bringup.py [--images DIR]
(needs root and ``rackforge build minimal`` first: DIR/minimal/rackforge-minimal.iso,
default images/; about 45 minutes on this machine)
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

import seedinstall  # noqa: E402

from rackforge.virt.guest import node_name  # noqa: E402


def fail(line):
    print("bringup: %s" % line, file=sys.stderr)
    sys.exit(2)


def say(line):
    print(line, flush=True)


def bring_up(workdir, pxe_count, seed_disk, key):
    """A rack of 1 + ``pxe_count`` from the seed disk, ``rack up`` to all active."""
    names = [node_name(i) for i in range(2, 2 + pxe_count)]
    with seedinstall.seed_rack(workdir, 1 + pxe_count, seed_disk, key, say=say) as rack:
        seed_boot, _ = rack.boot_seed()
        rack.copy_password()
        interface = rack.seed_nic()
        started = time.monotonic()
        run = rack.start_rack_up(names, interface)
        rack.wait_active(1 + pxe_count, seedinstall.BRINGUP_TIMEOUT, poll=5)
        took = time.monotonic() - started
        code = run.wait(seedinstall.RACK_UP_EXIT_TIMEOUT)
        if code != 0:
            raise AssertionError("rack up exited %d:\n%s" % (code, seedinstall.tail(
                run.output(), 40)))
        installs = {n: rack.installed_seconds(n) for n in names}
    say("%d PXE node(s): all active %.0f s after 'rack up' began (installs: %s)"
        % (pxe_count, took, ", ".join("%s %s s" % kv for kv in installs.items())))
    return {"pxe_nodes": pxe_count, "bringup_s": round(took, 1),
            "seed_first_boot_s": round(seed_boot, 1), "pxe_install_s": installs}


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def mean(values):
    values = [v for v in values if v]
    return sum(values) / len(values) if values else None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--images", type=Path, default=REPO / "images",
                   help="where 'rackforge build minimal' put minimal/ (default: images/)")
    args = p.parse_args()
    if os.geteuid() != 0:
        fail("run as root (network namespaces, taps, QEMU)")
    missing = seedinstall.missing_tools()
    if missing:
        fail("missing %s: tools/setup-host --e2e installs them" % ", ".join(missing))
    iso = args.images / "minimal" / seedinstall.ISO_NAME
    if not iso.is_file():
        fail("%s is missing; build it first: rackforge build minimal" % iso)

    with tempfile.TemporaryDirectory(prefix="rf-bench-bringup-", dir="/var/tmp") as tmp:
        tmp = Path(tmp)
        key, public = seedinstall.ssh_key(tmp)
        say("bringup: installing the seed's disk from %s ..." % iso)
        seed = seedinstall.install_seed(iso, tmp / "install", public)
        say("installed in %d s (the installer's count); %.0f s from the ISO's boot to its "
            "reboot" % (seed.installer_s, seed.wall_s))
        say("bringup: baseline, 1 PXE node ...")
        one = bring_up(tmp / "rack-1", 1, seed.disk, key)
        say("bringup: 2 PXE nodes ...")
        two = bring_up(tmp / "rack-2", 2, seed.disk, key)

    one_install = mean(one["pxe_install_s"].values())
    two_install = mean(two["pxe_install_s"].values())
    result = {
        "install": {"installer_s": seed.installer_s, "iso_boot_to_reboot_s": round(seed.wall_s, 1),
                    "seed_first_boot_s": one["seed_first_boot_s"]},
        "bringup": {"1": one, "2": two},
        "ratios_2_over_1": {
            "bringup": ratio(two["bringup_s"], one["bringup_s"]),
            "pxe_install": ratio(two_install, one_install),
        },
        "host": {"cpus": os.cpu_count(), "accel": "tcg"},
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    print("\nseed install: %d s by the installer's count, %.0f s ISO boot to reboot, first "
          "boot as the seed %.0f s" % (seed.installer_s, seed.wall_s, one["seed_first_boot_s"]))
    print("rack up to all active: 1 PXE node %.0f s, 2 PXE nodes %.0f s: ratio %s"
          % (one["bringup_s"], two["bringup_s"], result["ratios_2_over_1"]["bringup"]))
    print("a PXE node's install: %s s alone, %s s two at once: ratio %s"
          % (one_install, two_install, result["ratios_2_over_1"]["pxe_install"]))
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bringup.json").write_text(json.dumps(result, indent=2) + "\n")
    print("written to %s" % (out / "bringup.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
