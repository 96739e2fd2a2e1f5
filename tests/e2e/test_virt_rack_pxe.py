"""The virtual rack PXE-boots: 4 guests, powered on through their BMCs, boot the
``minimal`` bundle from ``rackforge pxe serve`` running in the rack's namespace.

Only the real commands: ``virt rack up 4``, ``bmc boot-device pxe`` and ``power
on`` against the four BMCs on 127.0.0.1, ``pxe serve`` (full DHCP: the rack's
bridge has no other DHCP server) with an etcd inside the namespace.  Done when
every MAC shows in ``pxe status --json`` and every guest has fetched the live
root (the serve log's ``IP fetches rootfs.squashfs`` line, per guest address).
Four TCG guests on two cores are slow: the wait allows 10 minutes.
"""

import json
import re
import subprocess
import sys

import pytest
from etcd import etcd_server
from netns import wait_until
from virtrack import virt_rack

from rackforge.proc import stop_process

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

NODES = 4
BOOT_TIMEOUT = 10 * 60
RANGE = "10.213.88.100,10.213.88.150"


def _fetchers(log):
    return set(re.findall(r"(\d+\.\d+\.\d+\.\d+) fetches rootfs\.squashfs",
                          log.read_text(errors="replace")))


def test_four_guests_pxe_boot_through_their_bmcs(minimal_build, tmp_path):
    out, _ = minimal_build
    with virt_rack(tmp_path, NODES) as rack:
        ns = rack.info["netns"]
        macs = {n["mac"] for n in rack.info["nodes"]}
        with etcd_server(tmp_path, netns=ns) as etcd:
            env = dict(rack.env, RACKFORGE_ETCD=etcd)
            log = tmp_path / "serve.log"
            serve = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "rackforge", "pxe", "serve",
                 "--interface", "br0", "--bundle", str(out / "pxe"), "--mode", "full",
                 "--range", RANGE, "--etcd", etcd],
                env=env, stdin=subprocess.DEVNULL, stdout=open(log, "ab"),
                stderr=subprocess.STDOUT)
            try:
                status_file = rack.state / "pxe" / "status.json"

                def serving():
                    assert serve.poll() is None, "pxe serve exited:\n" + log.read_text()[-3000:]
                    return status_file.exists() and json.loads(status_file.read_text()).get(
                        "serving")
                wait_until(serving, 60, "rackforge pxe serve to start")

                res = rack.bmc("bmc", "boot-device", "pxe")
                assert res.returncode == 0, res.stdout + res.stderr
                res = rack.bmc("power", "on")
                assert res.returncode == 0, res.stdout + res.stderr
                assert {n["power"] for n in rack.status()["nodes"]} == {"on"}

                def booted():
                    assert serve.poll() is None, "pxe serve exited:\n" + log.read_text()[-3000:]
                    res = subprocess.run(
                        ["ip", "netns", "exec", ns, sys.executable, "-m", "rackforge", "pxe",
                         "status", "--json", "--etcd", etcd], env=env, capture_output=True,
                        text=True, timeout=60)
                    boots = {b["mac"] for b in json.loads(res.stdout).get("boots") or []}
                    return macs <= boots and len(_fetchers(log)) >= NODES
                wait_until(booted, BOOT_TIMEOUT, "4 MACs in pxe status and 4 rootfs fetches",
                           interval=5)
                assert len(_fetchers(log)) == NODES
                assert {n["power"] for n in rack.status()["nodes"]} == {"on"}
            finally:
                stop_process(serve)
