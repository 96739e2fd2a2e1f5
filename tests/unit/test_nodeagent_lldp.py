"""LLDP neighbours from lldpd's recorded ``lldpctl -f json0`` (lldpd 1.0.16: a peer that
set its name and port description, and no peer at all), and lldpctl's failures."""

import json
import subprocess
from pathlib import Path

import pytest

from rackforge.nodeagent import lldp

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lldp"


def recorded(name):
    return json.loads((FIXTURES / name).read_text())


def test_a_neighbour_its_switch_port_and_management_address():
    n, = lldp.parse(recorded("lldpd-1.0.16-veth.json0.json"))
    assert n["nic"] == "eth0" and n["via"] == "LLDP"
    assert n["chassis"] == "switch-a7" and n["chassis_id"] == "3e:28:cf:88:3d:0f"
    assert n["port_descr"] == "rack7 port 12" and n["port_id_type"] == "mac"
    assert n["mgmt"] == ["10.0.0.1", "fe80::3c28:cfff:fe88:3d0f"] and n["ttl"] == "120"
    assert lldp.lines({"nics": lldp.by_nic([n], ["eth0", "eth1"])}) == [
        "eth0:", "  switch-a7 port rack7 port 12 (mac 3e:28:cf:88:3d:0f) mgmt 10.0.0.1",
        "eth1: no LLDP neighbour heard"]


def test_nobody_heard():
    assert lldp.parse(recorded("lldpd-1.0.16-none.json0.json")) == []
    assert lldp.lines({"nics": lldp.by_nic([], ["eno1"])}) == ["eno1: no LLDP neighbour heard"]
    assert lldp.lines({"nics": {}}) == ["no NIC found"]


def test_physical_nics_are_the_ones_with_a_device(tmp_path):
    for name, physical in (("eno1", True), ("lo", False), ("br0", False), ("eno2", True)):
        (tmp_path / name).mkdir()
        if physical:
            (tmp_path / name / "device").mkdir()
    assert lldp.nics(tmp_path) == ["eno1", "eno2"]


def fake_run(returncode=0, stdout="", stderr="", raises=None):
    def run(argv, **kw):
        assert argv == ["lldpctl", "-f", "json0"]
        if raises:
            raise raises
        return subprocess.CompletedProcess(argv, returncode, stdout, stderr)
    return run


def test_the_agents_answer(monkeypatch):
    monkeypatch.setattr(lldp, "nics", lambda: ["eth0"])
    text = (FIXTURES / "lldpd-1.0.16-veth.json0.json").read_text()
    got = lldp.query(run=fake_run(stdout=text))
    assert list(got["nics"]) == ["eth0"] and got["nics"]["eth0"][0]["chassis"] == "switch-a7"


@pytest.mark.parametrize("run, says", [
    (fake_run(raises=FileNotFoundError("lldpctl")), "lldpctl is not installed"),
    (fake_run(raises=subprocess.TimeoutExpired("lldpctl", 10)), "no answer within 10 s"),
    (fake_run(1, stderr="[lldpctl] unable to connect to socket /run/lldpd.socket\n"),
     "lldpctl failed: [lldpctl] unable to connect to socket /run/lldpd.socket; is lldpd "
     "running?"),
    (fake_run(stdout="{not json"), "not JSON"),
])
def test_lldpctl_failing_is_one_line(run, says):
    with pytest.raises(lldp.LldpUnavailable) as err:
        lldp.query(run=run)
    assert says in str(err.value) and "\n" not in str(err.value)
