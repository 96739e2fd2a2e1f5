"""The rack brought up from its seed, in the virtual rack: the operator's journey, end to end.

1. The ``minimal`` ISO installs the seed's disk from an answer file (QEMU, TCG,
   UEFI): a static address 10.213.88.10/24 on node-01's NIC, ``cluster:
   create``, root's SSH key made here (``tests/lib/seedinstall.py``).
2. ``virt rack up 4 --bmc-network --disk node-01=SEED_DISK``: node-01 boots an
   overlay over that disk; node-02, node-03 and node-04 have empty disks; every BMC
   answers on 10.213.88.1 inside the rack's namespace.  node-01, boot device
   disk, is powered on through its BMC and its first boot makes it the seed;
   its tty1 (``/dev/vcs1`` over SSH) is the console, showing the seed's own
   status from the node agent, and tty1's getty is gone.
3. Over SSH from the rack's namespace: the BMC password copied to the seed
   through stdin (0600), then ``rackforge rack up 10.213.88.1:6231-6232 --user
   admin --password-file F --interface NIC --mode full --range ...``: the seed
   enrols both BMCs (their FRU gives the MAC and serial), serves DHCP, TFTP and
   HTTP boot, and powers them on; each PXE-boots the seed's bundle, installs
   itself through the install API, reboots into its disk and joins.
4. ``rack status --json`` on the seed until three nodes are active (each
   state change printed as it comes); ``rack up`` exits 0 with one line per
   node and its summary; both BMCs now boot their node from disk.
5. node-02 power-cycled through its BMC boots its disk: the installed system's
   banner and login on its console, no network boot (or only a local-disk
   decision) in the seed's boot records, still active.
6. node-04, in the rack but given to nobody, is powered on to boot from the
   network: the seed's boot service sends it the discovery boot, its live
   system reports it, and it is ``discovered`` (its MAC and inventory in the
   registry, no role) beside three active nodes; it never joins.

Three TCG guests at once (a fourth at the end) on two cores: the installs are the slow
parts; the waits are generous (30 + 15 + 60 + 15 + 15 minutes at most).  On a failure
the tail of each console, the ``rack up`` output and the seed's journal of
``rackforge-pxe`` and ``rackforge-join`` are printed before the rack goes down.
"""

import json
import re

import pytest
from guest import banner_regex
from netns import wait_until
from seedinstall import (BOOT_TIMEOUT, BRINGUP_TIMEOUT, ISO_NAME, RACK_UP_EXIT_TIMEOUT,
                         install_seed, missing_tools, seed_rack, ssh_key, tail)
from virtrack import needs_virt, processes_naming

from rackforge import __version__

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

PXE_NODES = ["node-02", "node-03"]
STRANGER = "node-04"            # in the rack, never enrolled: it PXE-boots on its own


def test_the_seed_from_the_iso_brings_up_the_rack_and_a_node_reboots_from_its_disk(
        minimal_build, tmp_path):
    out, _ = minimal_build
    needs_virt()
    if missing_tools():
        pytest.skip("missing %s: tools/setup-host --e2e installs them"
                    % ", ".join(missing_tools()))
    key, public = ssh_key(tmp_path)

    seed = install_seed(out / ISO_NAME, tmp_path / "install", public)
    print("seed installed in %d s (the installer's count), %.0f s from the ISO's boot to "
          "its reboot" % (seed.installer_s, seed.wall_s))

    with seed_rack(tmp_path / "rack", 4, seed.disk, key) as rack:
        password = rack.rack.password
        rack.boot_seed()
        # the seed's own tty1 is the console (its getty gone), drawn from the node agent
        screen = wait_until(lambda: (lambda t: t if re.search(
            r"rackforge console\s+rack1-seed", t) else None)(
                rack.ssh("cat /dev/vcs1", check=False).stdout), 180, "the seed's tty1")
        assert "management 10.213.88.10" in screen and "roles: controller" in screen
        assert rack.ssh("systemctl is-active getty@tty1.service", check=False).stdout \
            .strip() != "active"
        rack.copy_password()
        run = rack.start_rack_up(PXE_NODES, rack.seed_nic())

        status = rack.wait_active(3, BRINGUP_TIMEOUT)
        assert run.wait(RACK_UP_EXIT_TIMEOUT) == 0, tail(run.output(), 60)
        log = run.output()
        print(log)
        assert password not in log
        assert re.search(r"^rack up: 2 of 2 nodes up \(2 active\)$", log, re.M), log
        bmcs = {n: rack.nodes[n]["bmc"] for n in PXE_NODES}
        for name, bmc in bmcs.items():
            # a progress line per change, active the last; the BMC told to boot the disk
            assert re.search(r"\(%s\) active$" % re.escape(bmc), log, re.M), log
            assert "(%s) boot device disk (persistent)" % bmc in log, log
            assert rack.rack.node(name)["boot"] == "disk"
            assert "rackforge installer: FAILED" not in rack.console(name)
            assert rack.installed_seconds(name), "no install line on %s's console" % name
        rows = {r["bmc"]: r for r in status["nodes"]}
        assert set(rows) == set(bmcs.values()) | {None}         # the seed has no BMC record
        assert {r["state"] for r in rows.values()} == {"active"}

        # node-02 power-cycled through its BMC boots its disk
        node = "node-02"
        mac = rack.nodes[node]["mac"].lower()
        boots = rack.boots()
        before = boots.get(mac)
        assert before is not None, "node-02 never booted from the network: %s" % boots
        since = rack.console_size(node)
        rack.bmc("power", "cycle", nodes=[node])
        assert rack.rack.node(node)["power"] == "on"
        rack.wait_console(node, banner_regex(__version__, "minimal") + r"[\s\S]*?login:",
                          BOOT_TIMEOUT, since=since)
        console = rack.console(node, since)
        assert "rackforge installer" not in console and "rackforge.mode=install" not in console
        after = rack.boots()[mac]
        assert after["count"] == before["count"] or after.get("decision") == "local", \
            (before, after)
        row = rack.wait_active(3, BOOT_TIMEOUT)
        assert {r["bmc"]: r["state"] for r in row["nodes"]}[bmcs[node]] == "active"

        # a machine nobody enrolled network-boots: discovered, with its inventory; no join
        stranger_mac = rack.nodes[STRANGER]["mac"].lower()
        since = rack.console_size(STRANGER)
        rack.bmc("bmc", "boot-device", "pxe", nodes=[STRANGER])
        rack.bmc("power", "on", nodes=[STRANGER])
        line = rack.wait_console(STRANGER, r"discovered: recorded as node (\S+);",
                                 BOOT_TIMEOUT, since=since)
        shown = json.loads(rack.ssh("rackforge node show %s --json" % stranger_mac).stdout)
        assert shown["id"] == line.group(1) and shown["state"] == "discovered", shown
        host = shown["inventory"]["host"]
        assert stranger_mac.lower() in [i["mac"].lower() for i in host["interfaces"]], host
        assert not shown.get("role"), shown
        assert rack.boots()[stranger_mac]["decision"] == "discover"
        # its live system went idle after the report: still discovered, three active
        rows = rack.rack_status()["nodes"]
        assert sorted(r["state"] for r in rows) == ["active"] * 3 + ["discovered"], rows
        rack.bmc("power", "off", nodes=[STRANGER])
        for log_file in (rack.workdir / "state" / "virt").rglob("*.log"):
            assert password not in log_file.read_text(errors="replace")
        assert processes_naming(password) == []

    assert processes_naming(str(tmp_path)) == []           # no QEMU, BMC or ssh left
    seed.disk.unlink()                                      # 1-2 GiB; the rack is gone
