"""``rackforge rack up`` and ``rack status`` through the command line, on the fake driver
and the in-memory registry; the arguments they take."""

import ipaddress
import json

import pytest
from bringupsim import PASSWORD, World

from rackforge import cli, keys
from rackforge.bmc import credentials, drivers
from rackforge.bmc import errors as bmc_errors
from rackforge.bringup import addressing
from rackforge.bringup import cli as rack_cli
from rackforge.bringup import targets


@pytest.fixture
def world(tmp_path, monkeypatch):
    w = World(tmp_path, monkeypatch)
    monkeypatch.setattr(drivers, "get_driver", lambda name: w.fake)
    monkeypatch.setattr("rackforge.registry.connect", lambda endpoint=None, **kw: w.registry)
    monkeypatch.setenv(credentials.DEFAULT_PASSWORD_ENV, PASSWORD)
    return w


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert PASSWORD not in out + err
    return rc, out, err


def test_rack_up_enrolls_installs_and_powers_on_then_status_shows_each_node(world, capsys):
    rc, out, err = run(capsys, "rack", "up", "10.0.0.11-12", "--user", "admin", "--driver",
                       "fake", "--no-pxe", "--no-wait", "--disk-match", "serial=S3Z*,min_gib=100")
    assert rc == 0, out + err
    assert "node-fake0011 (10.0.0.11:623) booting" in out
    assert "rack up: 0 of 2 nodes up (2 booting)" in out and "still on their way" in out
    for a in ("10.0.0.11", "10.0.0.12"):
        assert world.node(a).state == "installing" and world.fake.rack.power[a] == "on"
    rc, out, _ = run(capsys, "rack", "status")
    lines = out.splitlines()
    assert rc == 0 and lines[0].split()[:4] == ["NODE", "BMC", "STATE", "ADDRESS"]
    assert lines[1].split()[:3] == ["node-fake0011", "10.0.0.11:623", "booting"]
    assert lines[-1] == "2 nodes: 2 booting"
    rc, out, _ = run(capsys, "rack", "status", "--json")
    found = json.loads(out)
    assert found["totals"] == {"booting": 2} and found["nodes"][0]["error"] is None
    # the install answer carries the disk settings of this run, and its lease as static
    world.install.network = lambda: addressing.LocalNetwork(
        ipaddress.IPv4Interface("10.0.1.1/24"))
    world.machine("10.0.0.11").step()
    assert world.machines["10.0.0.11"].answer["disk"] == {
        "match": {"serial": "S3Z*", "min_gib": 100}, "wipe": "never"}
    rc, out, _ = run(capsys, "rack", "status")
    row = next(line for line in out.splitlines() if line.startswith("node-fake0011"))
    assert row.split()[2:4] == ["installing", "10.0.1.11"]


def test_rack_up_refuses_before_anything_without_a_cluster_record(world, capsys):
    world.kv.txn([], (), [keys.CLUSTER])
    rc, out, err = run(capsys, "rack", "up", "10.0.0.11", "--user", "admin", "--driver",
                       "fake", "--no-pxe")
    assert rc == 2 and err.count("\n") == 1 and "first boot is done" in err
    assert world.registry.list_nodes() == [] and world.fake.rack.calls == []


def test_new_bmcs_need_a_user_and_a_password_source(world, capsys, monkeypatch):
    rc, _, err = run(capsys, "rack", "up", "10.0.0.11", "--driver", "fake", "--no-pxe")
    assert rc == 2 and "give --user" in err
    monkeypatch.delenv(credentials.DEFAULT_PASSWORD_ENV)
    rc, _, err = run(capsys, "rack", "up", "10.0.0.11", "--user", "a", "--driver", "fake",
                     "--no-pxe")
    assert rc == 2 and "--password-file" in err
    assert world.registry.list_nodes() == []


def test_there_is_no_password_option(capsys):
    with pytest.raises(SystemExit):
        cli.main(["rack", "up", "10.0.0.1", "--password", "x"])


def test_boot_services_need_both_interface_and_bundle(world, capsys):
    rc, _, err = run(capsys, "rack", "up", "10.0.0.11", "--interface", "eno2")
    assert rc == 2 and "--interface IF and --bundle DIR" in err


@pytest.mark.parametrize("text, expected", [
    ("10.0.0.10", [("10.0.0.10", None)]),
    ("10.0.0.10:6230", [("10.0.0.10", 6230)]),
    ("10.0.0.10-10.0.0.12", [("10.0.0.10", None), ("10.0.0.11", None), ("10.0.0.12", None)]),
    ("10.0.0.10-11:6230", [("10.0.0.10", 6230), ("10.0.0.11", 6230)]),
    ("127.0.0.1:6230-6232", [("127.0.0.1", 6230), ("127.0.0.1", 6231), ("127.0.0.1", 6232)]),
    ("bmc-1.rack1.example", [("bmc-1.rack1.example", None)]),
    ("[fe80::1]:623", [("fe80::1", 623)]),
])
def test_addresses_ranges_and_port_ranges(text, expected):
    assert targets.parse_one(text, "BMC argument 1") == expected


@pytest.mark.parametrize("text", ["hunter2!pass", "10.0.0.20-10.0.0.10", "10.0.0.1:0-5",
                                  "10.0.0.1:70000", "10.0.0.1:6240-6230", "a b"])
def test_a_bad_argument_is_refused_by_position_never_echoed(text):
    with pytest.raises(bmc_errors.BMCConfigError) as err:
        targets.expand(["10.0.0.1", text])
    assert "argument 2" in str(err.value) and text not in str(err.value)


def test_duplicates_go_and_the_count_is_bounded():
    assert targets.expand(["10.0.0.1", "10.0.0.1-2"]) == [("10.0.0.1", None),
                                                          ("10.0.0.2", None)]
    with pytest.raises(bmc_errors.BMCConfigError, match="more than 1024"):
        targets.expand(["10.0.0.1-10.0.3.255", "10.0.4.1-10.0.4.10"])


def test_disk_and_deadline_options():
    assert rack_cli.parse_disk("size=largest", "never") == {"match": {"size": "largest"},
                                                            "wipe": "never"}
    assert rack_cli.parse_disk("wwn=0x5*, max_gib=2000.5", "force") == {
        "match": {"wwn": "0x5*", "max_gib": 2000.5}, "wipe": "force"}
    for bad in ("size=biggest", "colour=red", "min_gib=-1", "serial", ""):
        with pytest.raises(rack_cli.BringupOptionError):
            rack_cli.parse_disk(bad, "never")
    assert rack_cli.parse_duration("90m") == 5400 and rack_cli.parse_duration("120") == 120
    for bad in ("5s", "25h", "soon"):
        with pytest.raises(rack_cli.BringupOptionError):
            rack_cli.parse_duration(bad)
