"""The same commands through Redfish, against sushy-tools' emulator (fake systems).

The emulator's fake systems apply a power change 1 to 11 s after it is asked
for, like real hardware: the commands must wait for the state, not assume it.
"""

import json
import os

import pytest
from bmcsim import free_tcp_port, sushy_emulator
from harness import rackforge

pytestmark = pytest.mark.integration

PASSWORD = "Rf-Pw-5513"
SYSTEMS = [{"uuid": "11111111-2222-4333-8444-55555555550%d" % i, "name": "rf-%d" % i,
            "power_state": "Off", "nics": [{"mac": "52:54:00:bb:00:0%d" % i,
                                            "ip": "10.0.0.%d" % i}]} for i in (1, 2)]


@pytest.fixture
def env(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    pw.chmod(0o600)
    e = dict(os.environ, RACKFORGE_CLUSTER_KEY_FILE=str(tmp_path / "cluster.key"))
    e.pop("RACKFORGE_BMC_PASSWORD", None)
    return e, pw


def run(env, *args):
    e, pw = env
    res = rackforge(*args, "--driver", "redfish", "--user", "admin", "--password-file", pw,
                    "--json", env=e, timeout=180)
    assert PASSWORD not in res.stdout + res.stderr
    return res, (json.loads(res.stdout)["results"] if res.stdout.startswith("{") else None)


def test_power_boot_device_inventory(tmp_path, env):
    with sushy_emulator(tmp_path / "rf", SYSTEMS[:1]) as url:
        res, results = run(env, "power", "status", "--bmc", url)
        assert res.returncode == 0, res.stderr
        assert results[0]["value"] == "off"

        res, results = run(env, "power", "on", "--bmc", url)
        assert res.returncode == 0, res.stdout + res.stderr
        res, results = run(env, "power", "status", "--bmc", url)
        assert results[0]["value"] == "on"

        res, results = run(env, "bmc", "boot-device", "pxe", "--uefi", "--persistent",
                           "--bmc", url)
        assert res.returncode == 0, res.stdout
        from rackforge.bmc import base, redfish
        bmc = base.BMC(address=url, username="admin", password=PASSWORD, driver="redfish")
        assert redfish.RedfishDriver().management.get_boot_device(bmc) == {
            "device": "pxe", "persistent": True, "uefi": True}

        res, results = run(env, "bmc", "inventory", "--bmc", url)
        inv = results[0]["value"]
        assert inv["guid"] == SYSTEMS[0]["uuid"] and inv["macs"] == ["52:54:00:bb:00:01"]

        res, results = run(env, "power", "off", "--bmc", url)
        assert res.returncode == 0, res.stdout
        assert redfish.RedfishDriver().power.get_power_state(bmc) == "off"


def test_wrong_password_and_dead_endpoint_are_one_line_each(tmp_path, env):
    dead = "http://127.0.0.1:%d" % free_tcp_port()
    with sushy_emulator(tmp_path / "rf", SYSTEMS[:1], password="Other-Pw-2") as url:
        res, results = run(env, "power", "status", "--bmc", url, "--bmc", dead,
                           "--timeout", "10")
        assert res.returncode == 1
        bad, gone = results
        assert bad["attempts"] == 1 and "refused user 'admin'" in bad["error"]
        assert "does not answer" in gone["error"] or "did not finish" in gone["error"]
        assert "\n" not in bad["error"] + gone["error"]


def test_system_id_selects_the_system(tmp_path, env):
    from rackforge.bmc import base, redfish
    with sushy_emulator(tmp_path / "rf", SYSTEMS) as url:
        drv = redfish.RedfishDriver()
        bmc = base.BMC(address=url, username="admin", password=PASSWORD, driver="redfish",
                       options={"system_id": SYSTEMS[1]["uuid"]})
        assert drv.inventory.get_inventory(bmc).macs == ["52:54:00:bb:00:02"]
