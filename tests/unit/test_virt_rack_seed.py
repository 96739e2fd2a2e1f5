"""The virtual rack as a seed's rack: BMCs on the rack's bridge (``--bmc-network``), a
node booting a ready disk (``--disk NODE=IMAGE``), and the identity a BMC reports (FRU:
serial and MAC, the guest's SMBIOS serial the same).  Pure parts and the BMC's FRU
through pyghmi's own parser; no QEMU, no namespace, no socket."""

import hashlib
import json
import shutil
import subprocess
import sys

import pytest
from pyghmi.ipmi import fru as pyghmi_fru

from rackforge import errors
from rackforge.bmc.ipmi import find_macs, read_fru_chunked
from rackforge.cli import build_parser
from rackforge.virt import bmc as vbmc
from rackforge.virt import cli as vcli
from rackforge.virt import guest as vguest
from rackforge.virt import rack

NS = "rf-virt-abc123"


@pytest.fixture(autouse=True)
def _keep_logging(monkeypatch):
    # rack.main() configures logging for its process; not for the test runner's
    monkeypatch.setattr(rack.logging, "basicConfig", lambda **kw: None)


def _arg_after(cmd, flag):
    return [cmd[i + 1] for i, a in enumerate(cmd) if a == flag]


# -- the plan ----------------------------------------------------------------------------
def test_bmc_network_puts_every_bmc_on_the_bridge_inside_the_namespace(tmp_path):
    nodes = rack.plan(3, NS, tmp_path, bmc_network=True)
    assert [(n.bmc_address, n.bmc_port) for n in nodes] == [
        ("10.213.88.1", 6230), ("10.213.88.1", 6231), ("10.213.88.1", 6232)]
    assert {n.bmc_netns for n in nodes} == {NS}
    assert rack.BRIDGE_ADDRESS == rack.BRIDGE_IP + "/24"


def test_by_default_the_bmcs_stay_on_the_hosts_loopback(tmp_path):
    nodes = rack.plan(2, NS, tmp_path)
    assert {(n.bmc_address, n.bmc_netns) for n in nodes} == {("127.0.0.1", "")}
    assert rack.rack_info(NS, nodes, 1, True)["bmc_netns"] is None


def test_every_node_has_a_serial_of_its_own(tmp_path):
    nodes = rack.plan(12, NS, tmp_path)
    assert [n.serial for n in nodes[:2]] == ["RFVIRT-01", "RFVIRT-02"]
    assert nodes[11].serial == "RFVIRT-12"
    assert len({n.serial for n in nodes}) == 12


def test_rack_json_says_where_the_bmcs_are(tmp_path):
    image = tmp_path / "seed.qcow2"
    image.write_bytes(b"x")
    specs = rack.plan(3, NS, tmp_path, bmc_network=True, disks={"node-01": str(image)})
    info = rack.rack_info(NS, specs, 42, True, [7, 8, 9])
    assert info["bmc_netns"] == NS
    assert [n["bmc"] for n in info["nodes"]] == ["10.213.88.1:6230", "10.213.88.1:6231",
                                                 "10.213.88.1:6232"]
    assert [n["serial"] for n in info["nodes"]] == ["RFVIRT-01", "RFVIRT-02", "RFVIRT-03"]
    assert [n["base_disk"] for n in info["nodes"]] == [str(image), None, None]
    assert json.loads(json.dumps(info)) == info
    # the status table shows the BMC where it is reached
    for n, state in zip(info["nodes"], ("up", "up", "up")):
        n.update(power="off", boot="disk", bmc_state=state)
    assert vcli.format_table(info)[1].split()[2] == "10.213.88.1:6230"


def test_new_fields_round_trip_and_old_node_json_still_loads(tmp_path):
    spec = rack.plan(1, NS, tmp_path, bmc_network=True)[0]
    spec.dir.mkdir(parents=True)
    assert vguest.GuestSpec.load(spec.save()) == spec
    old = {k: v for k, v in json.loads((spec.dir / "node.json").read_text()).items()
           if k not in ("serial", "base_disk", "bmc_netns")}
    (spec.dir / "node.json").write_text(json.dumps(old))
    loaded = vguest.GuestSpec.load(spec.dir / "node.json")
    assert (loaded.serial, loaded.base_disk, loaded.bmc_netns) == ("", "", "")


def test_the_bmc_process_runs_in_the_namespace_only_with_bmc_network(tmp_path):
    inside = rack.plan(1, NS, tmp_path, bmc_network=True)[0]
    cmd = rack.bmc_command(inside, tmp_path / "node.json")
    assert cmd == ["ip", "netns", "exec", NS, sys.executable, "-m", "rackforge.virt.bmc",
                   str(tmp_path / "node.json")]
    outside = rack.plan(1, NS, tmp_path)[0]
    assert rack.bmc_command(outside, "n.json") == [
        sys.executable, "-m", "rackforge.virt.bmc", "n.json"]


def test_port_check_is_for_the_hosts_loopback_only(tmp_path, monkeypatch):
    monkeypatch.setattr(rack, "port_free", lambda port, host=rack.BMC_ADDRESS: False)
    rack.check_ports(rack.plan(2, NS, tmp_path, bmc_network=True))     # a new namespace
    with pytest.raises(rack.VirtError) as e:
        rack.check_ports(rack.plan(2, NS, tmp_path))
    assert "6230, 6231" in str(e.value)


# -- --disk NODE=IMAGE ---------------------------------------------------------------------
def test_disk_options_name_a_node_and_a_readable_image(tmp_path):
    image = tmp_path / "seed.qcow2"
    image.write_bytes(b"x")
    assert rack.parse_disks(["node-01=%s" % image]) == {"node-01": str(image)}
    assert rack.parse_disks([]) == {}


@pytest.mark.parametrize("item, words", [
    ("node-01", "write --disk NODE=IMAGE"),
    ("=x", "write --disk NODE=IMAGE"),
    ("node-01=", "write --disk NODE=IMAGE"),
    ("node-01=/nonexistent/seed.qcow2", "not a readable image file"),
])
def test_bad_disk_options_are_one_line(item, words):
    with pytest.raises(rack.VirtError) as e:
        rack.parse_disks([item])
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_node_given_twice_or_not_in_the_rack_is_refused(tmp_path):
    image = tmp_path / "a.img"
    image.write_bytes(b"x")
    with pytest.raises(rack.VirtError) as e:
        rack.parse_disks(["node-01=%s" % image, "node-01=%s" % image])
    assert "given twice" in str(e.value)
    with pytest.raises(rack.VirtError) as e:
        rack.plan(2, NS, tmp_path, disks={"node-03": str(image)})
    assert "node-03" in str(e.value) and "node-01 to node-02" in str(e.value)


def test_disk_command_empty_or_an_overlay_over_the_image(tmp_path):
    empty = rack.plan(1, NS, tmp_path)[0]
    assert vguest.disk_command(empty) == ["qemu-img", "create", "-q", "-f", "qcow2",
                                          str(empty.disk), "8G"]
    seeded = rack.plan(1, NS, tmp_path, disks={"node-01": "/srv/seed.qcow2"})[0]
    assert vguest.disk_command(seeded, "qcow2") == [
        "qemu-img", "create", "-q", "-f", "qcow2", "-b", "/srv/seed.qcow2", "-F", "qcow2",
        str(seeded.disk)]
    assert seeded.disk != "/srv/seed.qcow2" and seeded.disk.parent == seeded.dir
    with pytest.raises(ValueError):
        vguest.disk_command(seeded)            # the backing format is always named


def test_prepare_asks_the_images_format_and_makes_the_overlay(tmp_path, monkeypatch):
    seeded = rack.plan(1, NS, tmp_path / "rack", disks={"node-01": "/srv/seed.raw"})[0]
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        if cmd[:2] == ["qemu-img", "info"]:
            return subprocess.CompletedProcess(cmd, 0, json.dumps({"format": "raw"}), "")
        return subprocess.CompletedProcess(cmd, 0, "", "")
    monkeypatch.setattr(vguest.subprocess, "run", run)
    vguest.prepare(seeded)
    assert calls == [["qemu-img", "info", "--output=json", "/srv/seed.raw"],
                     vguest.disk_command(seeded, "raw")]


def test_an_unreadable_image_is_one_line_before_any_bmc_starts(tmp_path, monkeypatch):
    seeded = rack.plan(2, NS, tmp_path / "rack", disks={"node-02": "/srv/seed.qcow2"})

    def run(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "qemu-img: Could not open "
                                           "'/srv/seed.qcow2': Permission denied\n")
    monkeypatch.setattr(vguest.subprocess, "run", run)
    with pytest.raises(rack.VirtError) as e:
        rack.prepare_disks(seeded)
    assert "Permission denied" in str(e.value) and "\n" not in str(e.value)
    assert not seeded[0].dir.exists()          # node-01 has no image: made at power-on


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is not installed")
def test_the_overlay_leaves_the_image_untouched(tmp_path):
    image = tmp_path / "seed.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
    before = hashlib.sha256(image.read_bytes()).hexdigest()
    spec = rack.plan(1, NS, tmp_path / "rack", disks=rack.parse_disks(["node-01=%s" % image]))[0]
    rack.prepare_disks([spec])
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(spec.disk)],
                                     check=True, capture_output=True, text=True).stdout)
    assert info["format"] == "qcow2" and info["backing-filename"] == str(image)
    assert info["backing-filename-format"] == "qcow2" and info["virtual-size"] == 16 << 20
    rack.prepare_disks([spec])                 # kept, not made again
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before


# -- the guest's identity ------------------------------------------------------------------
def test_the_guests_smbios_serial_is_its_bmcs(tmp_path):
    spec = rack.plan(2, NS, tmp_path)[1]
    cmd = vguest.qemu_command(spec, "network")
    assert _arg_after(cmd, "-smbios") == [
        "type=1,manufacturer=rackforge,product=virtual node,serial=RFVIRT-02"]
    assert "," not in spec.serial              # QEMU would read a comma as the next key
    spec.serial = ""
    assert "-smbios" not in vguest.qemu_command(spec, "network")


def test_fru_image_parses_with_pyghmi_and_names_the_serial_and_the_mac():
    image = vbmc.fru_image("RFVIRT-02", ["52:54:00:5a:00:02"])
    header, area = image[:8], image[8:]
    assert sum(header) % 256 == 0 and header[4] == 1
    assert len(area) % 8 == 0 and area[1] * 8 == len(area) and sum(area) % 256 == 0
    info = pyghmi_fru.FRU(rawdata=image).info
    assert info["Manufacturer"] == "rackforge" and info["Product name"] == "virtual node"
    assert info["Serial Number"] == "RFVIRT-02"
    assert find_macs(info) == ["52:54:00:5a:00:02"]
    with pytest.raises(ValueError):
        vbmc.fru_image("x" * 64, [])


class FakeSession:
    def __init__(self):
        self.sent = []

    def send_ipmi_response(self, data=(), code=0):
        self.sent.append((code, list(data)))


class ThroughTheBmc:
    """An ipmi command object whose raw commands the VirtBmc answers (no socket)."""

    def __init__(self, bmc):
        self.bmc = bmc

    def raw_command(self, netfn, command, data=()):
        session = FakeSession()
        self.bmc.handle_raw_request({"netfn": netfn, "command": command, "data": list(data)},
                                    session)
        (code, payload), = session.sent
        rsp = {"netfn": netfn + 1, "command": command, "code": code, "data": payload}
        if code:
            rsp["error"] = "completion code 0x%02x" % code
        return rsp


def _bmc(tmp_path, index=2):
    b = vbmc.VirtBmc.__new__(vbmc.VirtBmc)      # the request handling only
    b.spec = rack.plan(index, NS, tmp_path, bmc_network=True)[index - 1]
    b.fru = vbmc.fru_image(b.spec.serial, [b.spec.mac])

    class Off:
        def running(self):
            return False
    b.guest = Off()
    return b


def test_the_bmc_serves_its_fru_to_pyghmi_and_to_our_chunked_reader(tmp_path):
    b = _bmc(tmp_path)
    cmd = ThroughTheBmc(b)
    info = pyghmi_fru.FRU(ipmicmd=cmd, fruid=0).info
    assert info["Serial Number"] == "RFVIRT-02"
    assert find_macs(info) == ["52:54:00:5a:00:02"]
    assert read_fru_chunked(cmd, 0) == b.fru
    assert read_fru_chunked(cmd, 0, chunk=5) == b.fru


def test_fru_commands_refuse_what_a_bmc_refuses(tmp_path):
    image = vbmc.fru_image("RFVIRT-01", ["52:54:00:5a:00:01"])
    assert vbmc.fru_response(image, vbmc.CMD_FRU_AREA_INFO, [0]) == (
        0, [len(image) & 0xFF, len(image) >> 8, 0])
    assert vbmc.fru_response(image, vbmc.CMD_FRU_AREA_INFO, [1])[0] == vbmc.CC_NOT_PRESENT
    assert vbmc.fru_response(image, vbmc.CMD_READ_FRU, [])[0] == vbmc.CC_BAD_LENGTH
    assert vbmc.fru_response(image, vbmc.CMD_READ_FRU, [0, 0])[0] == vbmc.CC_BAD_LENGTH
    assert vbmc.fru_response(image, vbmc.CMD_READ_FRU, [0, 8, 0, 3]) == (
        0, [3] + list(image[8:11]))
    assert vbmc.fru_response(image, vbmc.CMD_READ_FRU, [0, 255, 0, 16]) == (0, [0])


def test_other_commands_still_reach_pyghmis_bmc(tmp_path):
    b = _bmc(tmp_path)
    session = FakeSession()
    b.handle_raw_request({"netfn": 0, "command": 1, "data": []}, session)   # chassis status
    assert session.sent == [(0, [0, 0, 0])]                                 # off
    session = FakeSession()
    b.handle_raw_request({"netfn": 0x0A, "command": 0x20, "data": []}, session)  # SDR info
    assert session.sent == [(0xC1, [])]


# -- up: the daemon's command line and asking the BMCs inside the namespace ---------------
def test_up_takes_bmc_network_and_disks():
    args = build_parser().parse_args(["virt", "rack", "up", "3", "--bmc-network", "--disk",
                                      "node-01=/srv/seed.qcow2", "--memory", "1536"])
    assert args.bmc_network and args.disk == ["node-01=/srv/seed.qcow2"]
    assert args.memory == 1536
    args = build_parser().parse_args(["virt", "rack", "up", "2"])
    assert not args.bmc_network and args.disk == []


def test_daemon_command_passes_bmc_network_and_disks_on():
    cmd = vcli.daemon_command(3, "bios", 1536, True, {"node-02": "/b.img", "node-01": "/a.img"})
    assert cmd == [sys.executable, "-m", "rackforge.virt.rack", "run", "3", "--firmware",
                   "bios", "--memory", "1536", "--bmc-network", "--disk", "node-01=/a.img",
                   "--disk", "node-02=/b.img"]
    assert "--bmc-network" not in vcli.daemon_command(2, "uefi", 1024)


def test_the_daemon_takes_what_up_passes(tmp_path, monkeypatch):
    image = tmp_path / "seed.qcow2"
    image.write_bytes(b"x")
    got = []
    monkeypatch.setattr(rack, "run", lambda *a: got.append(a) or 0)
    cmd = vcli.daemon_command(3, "bios", 1536, True, {"node-01": str(image)})
    assert rack.main(cmd[cmd.index("run"):]) == 0
    assert got == [(3, "bios", 1536, rack.BASE_PORT, True, {"node-01": str(image)})]


def test_probe_runs_inside_the_bmcs_namespace():
    info = {"bmc_netns": NS}
    assert vcli.probe_command(info, {"node-02", "node-01"}) == [
        "ip", "netns", "exec", NS, sys.executable, "-m", "rackforge.virt.rack", "probe",
        "--skip", "node-01", "--skip", "node-02"]


def _info(tmp_path, bmc_network=True):
    specs = rack.plan(2, NS, tmp_path, bmc_network=bmc_network)
    return rack.rack_info(NS, specs, 1, True, [11, 12])


def test_asking_bmcs_inside_the_namespace(tmp_path, monkeypatch):
    info = _info(tmp_path)
    seen = []

    def run(cmd, **kw):
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, '["node-02"]\n', "")
    monkeypatch.setattr(vcli.subprocess, "run", run)
    assert vcli._ask_bmcs(info, {"node-01"}) == ["node-02"]
    assert seen == [vcli.probe_command(info, {"node-01"})]

    def refused(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "node-02: BMC 10.213.88.1:6231 "
                                           "refused the login\n")
    monkeypatch.setattr(vcli.subprocess, "run", refused)
    with pytest.raises(rack.VirtError) as e:
        vcli._ask_bmcs(info, set())
    assert "inside namespace %s" % NS in str(e.value) and "refused the login" in str(e.value)

    def slow(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, kw.get("timeout"))
    monkeypatch.setattr(vcli.subprocess, "run", slow)
    assert vcli._ask_bmcs(info, set()) == []


def test_bmcs_on_loopback_are_asked_from_here(tmp_path, monkeypatch):
    info = _info(tmp_path, bmc_network=False)
    monkeypatch.setattr(vcli, "answering", lambda info, skip=(): ["node-01", "node-02"])
    monkeypatch.setattr(vcli.subprocess, "run", lambda *a, **k: pytest.fail("no subprocess"))
    assert vcli._ask_bmcs(info, set()) == ["node-01", "node-02"]


def test_answering_asks_only_bmcs_that_answer_and_reads_the_password_once(tmp_path,
                                                                          monkeypatch):
    info = _info(tmp_path)
    (tmp_path / "bmc-password").write_text("s3cret-pw\n")
    monkeypatch.setattr(vcli, "bmc_answers", lambda address: address.endswith(":6231"))
    asked = []

    class Power:
        def get_power_state(self, bmc):
            asked.append((bmc.address, bmc.port, bmc.username, bmc.password, bmc.node))
            return "off"

    class Driver:
        power = Power()
    monkeypatch.setattr("rackforge.bmc.drivers.get_driver", lambda name: Driver())
    assert vcli.answering(info) == ["node-02"]
    assert asked == [("10.213.88.1", 6231, "admin", "s3cret-pw", "node-02")]
    assert vcli.answering(info, skip={"node-02"}) == []


def test_probe_prints_json_or_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RACKFORGE_STATE", str(tmp_path / "state"))
    assert rack.main(["probe"]) == 1
    assert "no virtual rack is up" in capsys.readouterr().err
    rack.virt_dir().mkdir(parents=True)
    rack.rack_file().write_text(json.dumps(_info(tmp_path)))
    seen = []
    monkeypatch.setattr(vcli, "answering", lambda info, skip=(): seen.append(skip) or
                        ["node-02"])
    assert rack.main(["probe", "--skip", "node-01"]) == 0
    assert json.loads(capsys.readouterr().out) == ["node-02"] and seen == [{"node-01"}]

    def refuse(info, skip=()):
        raise errors.RackforgeError("node-01: the BMC refused the login")
    monkeypatch.setattr(vcli, "answering", refuse)
    assert rack.main(["probe"]) == 1
    out = capsys.readouterr()
    assert out.out == "" and out.err.strip() == "node-01: the BMC refused the login"


def test_the_daemon_refuses_a_bad_disk_before_building_anything(tmp_path, monkeypatch):
    monkeypatch.setenv("RACKFORGE_STATE", str(tmp_path / "state"))
    monkeypatch.setattr(rack, "run", lambda *a, **k: pytest.fail("the rack was built"))
    assert rack.main(["run", "2", "--disk", "node-01=/nonexistent.qcow2"]) == 1
    assert not rack.virt_dir().exists()


# -- the identity chain: BMC FRU -> enrolment -> the installer's own view -------------------
class PyghmiCommandThroughTheBmc(ThroughTheBmc):
    """What ``bmc/ipmi.py``'s inventory reader calls on a pyghmi Command, answered by the
    VirtBmc: FRU 0 as pyghmi's Command reads it; no LAN parameters and no SDR (as ours)."""

    def get_inventory_of_component(self, component):
        assert component == "System"
        return pyghmi_fru.FRU(ipmicmd=self, fruid=0).info

    def get_net_configuration(self):
        from pyghmi.exceptions import IpmiException
        raise IpmiException("Invalid command", 0xC1)

    def get_sensor_data(self):
        from pyghmi.exceptions import IpmiException
        raise IpmiException("Invalid command", 0xC1)


def test_what_rack_up_enrols_is_what_the_guests_installer_presents(tmp_path):
    from types import SimpleNamespace

    from rackforge.bmc import base
    from rackforge.bmc.cli import _node_name
    from rackforge.bmc.ipmi import IPMIInventory
    from rackforge.bringup import installapi
    from rackforge.registry import valid_name

    b = _bmc(tmp_path)
    bmc = base.BMC(address="10.213.88.1", port=6231, username="admin", password="pw")
    inv = IPMIInventory()._read(bmc, PyghmiCommandThroughTheBmc(b))
    assert (inv.vendor, inv.product, inv.serial) == ("rackforge", "virtual node", "RFVIRT-02")
    assert inv.macs == ["52:54:00:5a:00:02"] and inv.guid is None
    name = _node_name(inv, None)
    assert name == "node-rfvirt-02" and valid_name(name)
    node = SimpleNamespace(name=name, state="installing", bmc={"address": "10.213.88.1"},
                           inventory=inv.as_dict(), macs=inv.macs)
    # the guest's installer sends its NICs' MACs and its SMBIOS serial (QEMU's -smbios)
    smbios = dict(kv.split("=", 1) for kv in _arg_after(
        vguest.qemu_command(b.spec, "network"), "-smbios")[0].split(","))
    assert installapi.mismatch(node, {b.spec.mac}, smbios["serial"]) is None
    assert installapi.mismatch(node, {b.spec.mac}, "RFVIRT-03") is not None
