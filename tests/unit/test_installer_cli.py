"""``rackforge installer validate`` end to end: answer files, recorded inventories, and this
machine's inventory and probes replaced by recorded ones."""

import copy
from pathlib import Path

import pytest
import yaml
from inventory_samples import load

from probes import recorded, no_real_commands  # noqa: F401 (autouse)
from rackforge import cli
from rackforge.firstboot import inventory, storage
from rackforge.installer import answer

SAMPLES = Path(__file__).parent / "samples"
TOKEN = "q7x2kd.9f3h1m0c8b7v6n5z"
SEED = answer.EXAMPLES / "seed.yaml"
JOIN = answer.EXAMPLES / "join.yaml"


@pytest.fixture(scope="module")
def dell_from_usb(tmp_path_factory):
    """The Dell (2 NVMe, 4 HDD) booted from its USB stick, as the installer sees it."""
    tmp = tmp_path_factory.mktemp("inventory")
    inv = inventory.collect(load(SAMPLES / "inventory" / "server-2nvme-4hdd", tmp))
    for disk in inv.disks:
        disk.system = disk.name == "sde"
    return inv


@pytest.fixture
def inventory_json(dell_from_usb, tmp_path):
    path = tmp_path / "inventory.json"
    path.write_text(dell_from_usb.to_json())
    return path


@pytest.fixture
def this_machine(dell_from_usb, monkeypatch):
    """``collect()`` and the probes of "this machine" replaced by recorded ones."""
    shapes = {}
    calls = []

    def run(argv, timeout=30):
        calls.append(argv)
        return recorded(shapes.get(argv[-1], "empty"), argv[0])
    monkeypatch.setattr(inventory, "collect", lambda sources=None: copy.deepcopy(dell_from_usb))
    monkeypatch.setattr(storage, "run_probe", run)
    return shapes, calls


def run(capsys, *argv):
    rc = cli.main(["installer", "validate"] + [str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def answer_file(tmp_path, base=SEED, **changes):
    data = yaml.safe_load(base.read_text())
    data.update(changes)
    path = tmp_path / "answer.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_seed_example_on_a_recorded_inventory(capsys, inventory_json):
    rc, out, err = run(capsys, SEED, "--inventory", inventory_json)
    assert (rc, err) == (0, "")
    assert "seed.yaml: valid (version 1, a new cluster)" in out
    assert "disk: wwn:eui.36344730528012340025384500000001 (nvme0n1, 1.7 TiB, SAMSUNG " \
           "MZQL21T9HCJR-00A07, serial S64GNE0R801234), picked by disk.match[0]" in out
    assert "not probed" in out and "left out: sde serial:4C530001230815116541: the boot " \
           "medium" in out
    assert "cluster: creates rack1, VIP 10.0.0.100" in out and "nothing was written" in out


def test_this_machine_empty_disk(capsys, this_machine):
    _, calls = this_machine
    rc, out, err = run(capsys, SEED)
    assert rc == 0, err
    assert "on this machine" in out and "empty (no partition table" in out
    assert calls == [["wipefs", "--no-act", "-J", "/dev/nvme0n1"],
                     ["blkid", "-p", "-o", "export", "/dev/nvme0n1"]]


def test_this_machine_disk_with_data_is_refused(capsys, this_machine):
    shapes, _ = this_machine
    shapes["/dev/nvme0n1"] = "gpt"
    rc, out, err = run(capsys, SEED)
    assert rc == 2 and out == ""
    [line] = err.splitlines()
    assert line.startswith("rackforge: error: %s:" % SEED)
    assert "disk.wipe: wwn:eui.36344730528012340025384500000001" in line
    assert "holds data (PMBR, gpt)" in line


def test_this_machine_disk_with_data_and_force(capsys, this_machine, tmp_path):
    shapes, _ = this_machine
    shapes["/dev/nvme0n1"] = "lvm"
    path = answer_file(tmp_path, disk={"match": {"serial": "S64GNE0R801234"},
                                       "wipe": "force"})
    rc, out, err = run(capsys, path)
    assert rc == 0, err
    assert "holds LVM2_member: would be wiped (disk.wipe: force)" in out


def test_ambiguous_match_exits_2_with_one_line(capsys, inventory_json, tmp_path):
    rc, out, err = run(capsys, answer_file(tmp_path, disk={"match": {"vendor": "ATA"}}),
                       "--inventory", inventory_json)
    assert rc == 2 and out == ""
    [line] = err.splitlines()
    assert "disk.match: ambiguous: 4 disks match (wwn:0x5000c500c1a2b3c0" in line


def test_every_problem_is_one_line_and_the_token_is_never_shown(capsys, tmp_path):
    path = answer_file(tmp_path, JOIN, hostname=TOKEN, colour=TOKEN, version=1,
                       disk={"match": {"size": "biggest", "serial": TOKEN}},
                       cluster={"join": {"endpoints": [TOKEN], "token": TOKEN,
                                         "ca_sha256": "x"}, "create": {"name": TOKEN}})
    rc, out, err = run(capsys, path)
    assert rc == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 7          # the token as a serial glob is no problem
    assert all(line.startswith("rackforge: error: %s:" % path) for line in lines)
    assert TOKEN not in err


def test_a_recorded_inventory_that_is_not_one(capsys, tmp_path):
    bad = tmp_path / "inv.json"
    bad.write_text('{"disks": []}')
    rc, _, err = run(capsys, SEED, "--inventory", bad)
    assert rc == 2 and "inv.json: not an inventory" in err and len(err.splitlines()) == 1
    bad.write_text("{")
    rc, _, err = run(capsys, SEED, "--inventory", bad)
    assert rc == 2 and "not JSON" in err


def test_a_missing_answer_file(capsys, tmp_path):
    rc, _, err = run(capsys, tmp_path / "nope.yaml")
    assert rc == 2 and "no such answer file" in err


def test_installer_needs_an_action(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["installer"])
    assert e.value.code == 2
