"""``rackforge virt rack``: QEMU guests behind simulated IPMI BMCs, driven by the real CLI.

No image is needed: a guest that is powered on runs its firmware (SeaBIOS and
QEMU's iPXE ROM) against an empty rack network and an empty disk, which is
enough to see what the BMC did to it.  The BMCs listen on 127.0.0.1:6230+.
"""

import os
import signal
import time

import pytest
from netns import wait_until
from virtrack import assert_rack_gone, processes_naming, qemu_cmdline, virt_rack

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _root():
    if os.geteuid() != 0:
        pytest.skip("the virtual rack needs root")


def _results(res):
    """TARGET -> (RESULT, DETAIL) from the per-target table."""
    rows = {}
    for line in res.stdout.splitlines()[1:]:
        parts = line.split(None, 2)
        if len(parts) >= 2 and ":" in parts[0]:
            rows[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return rows


def _boot_indexes(cmdline):
    """{"net": N, "disk": M} from a QEMU command line."""
    found = {}
    for arg in cmdline:
        if arg.startswith("virtio-net-pci,"):
            found["net"] = int(arg.rsplit("bootindex=", 1)[1].split(",")[0])
        if arg.startswith("virtio-blk-pci,"):
            found["disk"] = int(arg.rsplit("bootindex=", 1)[1].split(",")[0])
    return found


def test_power_and_boot_device_act_on_the_guest(tmp_path):
    with virt_rack(tmp_path, 2) as rack:
        first, second = rack.bmcs()
        res = rack.bmc("power", "status")
        assert res.returncode == 0, res.stdout + res.stderr
        assert {k: v[1] for k, v in _results(res).items()} == {first: "off", second: "off"}
        nodes = rack.state / "virt" / "nodes"
        assert processes_naming("%s/qemu.pid" % (nodes / "node-01")) == []

        res = rack.bmc("power", "on", bmcs=[first])
        assert res.returncode == 0, res.stdout + res.stderr
        node = rack.node("node-01")
        assert node["power"] == "on" and node["boot"] == "pxe"
        cmd = qemu_cmdline(node["qemu_pid"])
        assert "qemu-system-x86_64" in cmd and "tcg" in cmd
        assert "virtio-net-pci,netdev=net0,mac=52:54:00:5a:00:01,bootindex=1" in cmd
        assert _boot_indexes(cmd) == {"net": 1, "disk": 2}
        assert rack.node("node-02")["power"] == "off"
        # network first: the NIC's iPXE ROM runs (it finds no DHCP server here)
        console = nodes / "node-01" / "console.log"
        wait_until(lambda: "iPXE" in console.read_text(errors="replace"), 120,
                   "iPXE on node-01's serial console")

        res = rack.bmc("power", "off", bmcs=[first])
        assert res.returncode == 0, res.stdout + res.stderr
        assert rack.node("node-01")["power"] == "off"
        assert processes_naming("%s/qemu.pid" % (nodes / "node-01")) == []

        # disk first for the next start
        res = rack.bmc("bmc", "boot-device", "disk", bmcs=[first])
        assert res.returncode == 0, res.stdout + res.stderr
        assert rack.node("node-01")["boot"] == "disk"
        assert rack.bmc("power", "on", bmcs=[first]).returncode == 0
        pid = rack.node("node-01")["qemu_pid"]
        assert _boot_indexes(qemu_cmdline(pid)) == {"net": 2, "disk": 1}

        # back to pxe: a reset restarts the guest with the new order
        assert rack.bmc("bmc", "boot-device", "pxe", bmcs=[first]).returncode == 0
        res = rack.bmc("power", "reset", bmcs=[first])
        assert res.returncode == 0, res.stdout + res.stderr
        node = rack.node("node-01")
        assert node["power"] == "on" and node["qemu_pid"] != pid
        assert _boot_indexes(qemu_cmdline(node["qemu_pid"])) == {"net": 1, "disk": 2}

        # the password shows in no process's command line
        assert processes_naming(rack.password) == []
        for log in (rack.state / "virt").rglob("*.log"):
            assert rack.password not in log.read_text(errors="replace")


def test_a_silent_bmc_times_out_while_the_other_answers(tmp_path):
    with virt_rack(tmp_path, 2) as rack:
        first, second = rack.bmcs()
        silent = rack.info["nodes"][1]["bmc_pid"]
        os.kill(silent, signal.SIGSTOP)
        try:
            assert rack.node("node-02")["bmc_state"] == "stopped"
            started = time.monotonic()
            res = rack.bmc("power", "on", "--timeout", "8", "--attempts", "2")
            took = time.monotonic() - started
        finally:
            os.kill(silent, signal.SIGCONT)
        assert res.returncode != 0
        rows = _results(res)
        assert rows[first] == ("ok", "on")
        assert rows[second][0] != "ok"
        dead = [line for line in res.stdout.splitlines() + res.stderr.splitlines()
                if second in line]
        assert len(dead) == 1, res.stdout + res.stderr
        assert "Traceback" not in res.stderr
        assert took < 40
        assert rack.node("node-01")["power"] == "on"
        assert rack.node("node-02")["power"] == "off"


def test_down_removes_everything(tmp_path):
    with virt_rack(tmp_path, 1, check_clean=False) as rack:
        assert rack.bmc("power", "on").returncode == 0
        qemu = rack.node("node-01")["qemu_pid"]
        info = rack.info
        res = rack.cli("virt", "rack", "down")
        assert res.returncode == 0, res.stdout + res.stderr
        assert_rack_gone(rack.state, info)
        assert not os.path.exists("/proc/%d" % qemu)
        res = rack.cli("virt", "rack", "status")
        assert res.returncode == 1 and "no virtual rack" in res.stderr


def test_up_twice_is_refused_in_one_line(tmp_path):
    with virt_rack(tmp_path, 1) as rack:
        res = rack.cli("virt", "rack", "up", "1")
        assert res.returncode != 0
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "already up" in lines[0], res.stderr


def test_a_busy_bmc_port_is_refused_in_one_line(tmp_path):
    import socket

    from harness import rackforge
    from netns import namespaces

    before = {n for n in namespaces() if n.startswith("rf-virt-")}
    env = dict(os.environ, RACKFORGE_STATE=str(tmp_path / "state"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 6231))
        res = rackforge("virt", "rack", "up", "2", env=env, timeout=60)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "6231" in lines[0] and "in use" in lines[0], res.stderr
    assert {n for n in namespaces() if n.startswith("rf-virt-")} == before
    assert not (tmp_path / "state" / "virt" / "rack.json").exists()
