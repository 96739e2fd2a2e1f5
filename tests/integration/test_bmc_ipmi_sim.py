"""The BMC commands against OpenIPMI's ipmi_sim, an independent IPMI implementation.

Every simulator listens on 127.0.0.x only.  Power and boot device are checked
in the files ipmi_sim's chassis-control script writes (what the BMC really
did), and power state once more with ipmitool.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from bmcsim import free_udp_port, ipmi_sim, needs_ipmi_sim
from etcd import etcd_server
from harness import rackforge

pytestmark = pytest.mark.integration

PASSWORD = "Sim-Pw-4471"


@pytest.fixture(autouse=True)
def _tools():
    needs_ipmi_sim()


@pytest.fixture
def pwfile(tmp_path):
    f = tmp_path / "bmc.pw"
    f.write_text(PASSWORD + "\n")
    f.chmod(0o600)
    return f


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ, RACKFORGE_CLUSTER_KEY_FILE=str(tmp_path / "cluster.key"))
    e.pop("RACKFORGE_BMC_PASSWORD", None)
    return e


def bmc_cli(env, pwfile, *args, timeout=120):
    res = rackforge(*args, "--user", "admin", "--password-file", pwfile, env=env,
                    timeout=timeout)
    assert PASSWORD not in res.stdout + res.stderr
    return res


def ipmitool_power(sim, pwfile):
    out = subprocess.run(["ipmitool", "-I", "lanplus", "-C", "3", "-H", sim.host, "-p",
                          str(sim.port), "-U", "admin", "-f", str(pwfile), "power", "status"],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def test_power_on_off_cycle_reset_status(tmp_path, env, pwfile):
    with ipmi_sim(tmp_path / "sim") as sim:
        res = bmc_cli(env, pwfile, "power", "status", "--bmc", sim.address, "--json")
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["results"][0]["value"] == "off"

        res = bmc_cli(env, pwfile, "power", "on", "--bmc", sim.address)
        assert res.returncode == 0, res.stdout + res.stderr
        assert sim.power == "on" and ipmitool_power(sim, pwfile) == "Chassis Power is on"

        res = bmc_cli(env, pwfile, "power", "cycle", "--bmc", sim.address)
        assert res.returncode == 0, res.stdout
        assert sim.history[-2:] == ["power 0", "power 1"] and sim.power == "on"

        res = bmc_cli(env, pwfile, "power", "reset", "--bmc", sim.address)
        assert res.returncode == 0 and sim.history[-1] == "reset"

        res = bmc_cli(env, pwfile, "power", "off", "--bmc", sim.address)
        assert res.returncode == 0 and sim.power == "off"
        assert ipmitool_power(sim, pwfile) == "Chassis Power is off"


@pytest.mark.parametrize("device,flags,expected", [
    ("pxe", ["--uefi"], "pxe"), ("disk", ["--persistent"], "default"),
    ("cdrom", [], "cdrom"), ("bios", [], "bios")])
def test_boot_device(tmp_path, env, pwfile, device, flags, expected):
    with ipmi_sim(tmp_path / "sim") as sim:
        res = bmc_cli(env, pwfile, "bmc", "boot-device", device, *flags, "--bmc", sim.address)
        assert res.returncode == 0, res.stdout + res.stderr
        # ipmi_sim's names: IPMI "force hard disk" is its "default"
        assert sim.boot == expected


def test_inventory_reads_the_fru(tmp_path, env, pwfile):
    with ipmi_sim(tmp_path / "sim", serial="SN-77", macs=["52:54:00:aa:00:77"]) as sim:
        res = bmc_cli(env, pwfile, "bmc", "inventory", "--bmc", sim.address, "--json")
        assert res.returncode == 0, res.stderr
        inv = json.loads(res.stdout)["results"][0]["value"]
        assert (inv["vendor"], inv["product"], inv["serial"]) == \
            ("Rackforge Labs", "SimServer 9", "SN-77")
        assert inv["macs"] == ["52:54:00:aa:00:77"]
        assert inv["guid"]


def test_wrong_password_is_one_line_and_not_retried(tmp_path, env, pwfile):
    with ipmi_sim(tmp_path / "a") as good, \
            ipmi_sim(tmp_path / "b", password="Another-Pw-1") as bad:
        res = bmc_cli(env, pwfile, "power", "on", "--bmc", good.address, "--bmc", bad.address,
                      "--json")
        assert res.returncode == 1
        r_good, r_bad = json.loads(res.stdout)["results"]
        assert r_good["ok"] and good.power == "on"
        assert not r_bad["ok"] and r_bad["attempts"] == 1 and bad.power == "off"
        assert r_bad["error"].startswith("BMC %s refused user 'admin'" % bad.address)
        assert "Another-Pw-1" not in res.stdout + res.stderr


def test_silent_bmc_times_out_while_the_others_succeed(tmp_path, env, pwfile):
    silent = "127.0.0.1:%d" % free_udp_port()
    with ipmi_sim(tmp_path / "a") as a, ipmi_sim(tmp_path / "b") as b:
        start = time.monotonic()
        res = bmc_cli(env, pwfile, "power", "on", "--bmc", a.address, "--bmc", silent,
                      "--bmc", b.address, "--timeout", "12")
        took = time.monotonic() - start
        assert res.returncode == 1
        lines = {line.split()[0]: line for line in res.stdout.splitlines()[1:-1]}
        assert " ok " in lines[a.address] and " ok " in lines[b.address]
        assert "FAILED" in lines[silent]
        assert "does not answer" in lines[silent] or "did not finish" in lines[silent]
        assert a.power == "on" and b.power == "on"
        assert took < 40


def test_discover_finds_only_the_simulators(tmp_path, env):
    port = free_udp_port()
    with ipmi_sim(tmp_path / "a", host="127.0.0.2", port=port), \
            ipmi_sim(tmp_path / "b", host="127.0.0.4", port=port):
        res = rackforge("bmc", "discover", "--range", "127.0.0.1-127.0.0.5", "--port", port,
                        "--json", env=env, timeout=60)
        assert res.returncode == 0, res.stderr
        found = [r["address"] for r in json.loads(res.stdout) if r["answered"]]
        assert found == ["127.0.0.2", "127.0.0.4"]
        assert all(r["ipmi"] for r in json.loads(res.stdout))


def test_no_password_in_any_process_list_or_log(tmp_path, env, pwfile):
    """While the command runs, no /proc/*/cmdline or environ holds the password."""
    with ipmi_sim(tmp_path / "sim") as sim:
        log = tmp_path / "run.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "rackforge", "power", "cycle", "--bmc", sim.address,
                 "--user", "admin", "--password-file", str(pwfile)],
                env=env, stdout=out, stderr=subprocess.STDOUT)
        seen = []
        try:
            while proc.poll() is None:
                for pid in os.listdir("/proc"):
                    if not pid.isdigit():
                        continue
                    for name in ("cmdline", "environ"):
                        try:
                            with open("/proc/%s/%s" % (pid, name), "rb") as f:
                                if PASSWORD.encode() in f.read():
                                    seen.append((pid, name))
                        except OSError:
                            pass
        finally:
            proc.wait(timeout=120)
        assert proc.returncode == 0, log.read_text()
        assert seen == []
        assert PASSWORD not in log.read_text()


def test_enroll_registers_nodes_then_power_by_name(tmp_path, env, pwfile):
    with etcd_server(tmp_path) as url, \
            ipmi_sim(tmp_path / "a", serial="RACK-A1", macs=["52:54:00:aa:0a:01"]) as a, \
            ipmi_sim(tmp_path / "b", serial="RACK-B2", macs=["52:54:00:aa:0b:02"]) as b:
        env = dict(env, RACKFORGE_ETCD=url)
        res = bmc_cli(env, pwfile, "bmc", "enroll", a.address, b.address)
        assert res.returncode == 0, res.stdout + res.stderr
        from rackforge import registry
        nodes = {n.name: n for n in registry.connect(url).list_nodes()}
        assert set(nodes) == {"node-rack-a1", "node-rack-b2"}
        node = nodes["node-rack-a1"]
        assert node.state == "enrolled" and node.macs == ["52:54:00:aa:0a:01"]
        assert node.bmc["port"] == a.port and node.bmc["driver"] == "ipmi"
        assert PASSWORD not in json.dumps(node.bmc)
        assert node.inventory["serial"] == "RACK-A1"

        res = rackforge("power", "on", "node-rack-b2", env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert b.power == "on" and a.power == "off"
        res = rackforge("bmc", "boot-device", "pxe", "--all", env=env)
        assert res.returncode == 0 and a.boot == "pxe" and b.boot == "pxe"
        res = rackforge("power", "status", "--all", "--json", env=env)
        values = {r["target"]: r["value"] for r in json.loads(res.stdout)["results"]}
        assert values == {"node-rack-a1": "off", "node-rack-b2": "on"}


def test_console_capture(tmp_path, env, pwfile):
    """SOL: ipmi_sim relays a TCP "serial port" that this test writes to."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(20)
    stop = threading.Event()

    def serial_port():
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        with conn:
            while not stop.is_set():
                conn.sendall(b"login: rackforge-node\r\n")
                stop.wait(0.2)

    t = threading.Thread(target=serial_port, daemon=True)
    t.start()
    try:
        with ipmi_sim(tmp_path / "sim", sol="127.0.0.1:%d" % srv.getsockname()[1]) as sim:
            log = tmp_path / "console.log"
            res = bmc_cli(env, pwfile, "console", "--bmc", sim.address, "--capture", "4",
                          "--log", log)
            assert res.returncode == 0, res.stderr
            assert b"login: rackforge-node" in log.read_bytes()
    finally:
        stop.set()
        srv.close()
