"""The live appliance on a discovery boot reports the machine to the seed: the real join
service over HTTPS on loopback with the discovery API on the in-memory registry, the CA
pinned; its unit, its console line and banner; first boot never joins on such a boot."""

import configparser
from pathlib import Path

import pytest
from bringupsim import World, fake_identity

from rackforge import kernelargs, paths
from rackforge.cluster import ca, joinserver
from rackforge.firstboot import bootstrap, cli, discover
from rackforge.firstboot import inventory as inventory_mod

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "elements" / "rackforge-firstboot" / "static" / "usr" / "lib" / "systemd" / \
    "system"
ADDRESS = "10.0.0.31"


@pytest.fixture
def world(tmp_path, monkeypatch):
    return World(tmp_path, monkeypatch)


@pytest.fixture
def server(world, tmp_path):
    with joinserver.JoinServer(world.join, "127.0.0.1", 0, cert_dir=tmp_path / "srv",
                               install=world.install, discover=world.discover) as srv:
        yield srv


def machine(address=ADDRESS):
    """A real :class:`Inventory` of the machine: two NICs, a bridge, one disk."""
    mac, serial = fake_identity(address)
    inv = inventory_mod
    return inv.Inventory(
        cpu=inv.CPU(model="Xeon", count=4, architecture="x86_64"),
        memory=inv.Memory(total_bytes=8 << 30),
        disks=[inv.BlockDevice(name="sda", path="/dev/sda", size=100 << 30)],
        interfaces=[inv.NetworkInterface(name="eno1", mac=mac.upper()),
                    inv.NetworkInterface(name="eno2", mac="52:54:00:99:99:01"),
                    inv.NetworkInterface(name="br0", mac="52:54:00:99:99:02", kind="bridge")],
        system_vendor=inv.SystemVendor(manufacturer="Fake", serial_number=serial),
        bmc=inv.BMC(), boot_mode="uefi")


def cmdline(server, pin, mode="discover"):
    return "BOOT_IMAGE=/vmlinuz quiet " + kernelargs.format(
        mode=mode, seed="127.0.0.1", server="http://127.0.0.1:8080", cluster="rack1",
        join="https://127.0.0.1:%d" % server.port, ca=pin)


def banner():
    return (paths.issue_dir() / cli.BANNER).read_text()


def test_the_machine_is_recorded_through_the_pinned_seed(world, server, capsys):
    line = cmdline(server, world.authority.pin)
    assert cli.cmd_firstboot_discover(None, cmdline=line, inventory=machine()) == 0
    node, = world.registry.list_nodes()
    assert node.state == "discovered"
    assert node.macs == sorted([fake_identity(ADDRESS)[0], "52:54:00:99:99:01"])
    assert node.inventory["host"]["disks"][0]["name"] == "sda"
    assert node.inventory["host"]["system_vendor"]["serial_number"] == "FAKE0031"
    out = capsys.readouterr().out
    said = "discovered: recorded as node %s; enroll its BMC with 'rackforge rack up' to " \
        "install it" % node.id
    assert "rackforge-discover: " + said in out and said in banner()
    # rebooted into discovery: the same node, nothing recorded twice
    assert discover.run(cmdline=line, inventory=machine()) == (node.id, "discovered")
    assert len(world.registry.list_nodes()) == 1


def test_a_wrong_pin_sends_nothing(world, server, capsys, monkeypatch):
    asked = []
    monkeypatch.setattr(world.discover, "handle", lambda *a: asked.append(a) or {})
    line = cmdline(server, "sha256:" + "0" * 64)
    with pytest.raises(ca.CAPinMismatch):
        discover.run(cmdline=line, inventory=machine())
    assert cli.cmd_firstboot_discover(None, cmdline=line, inventory=machine()) == 2
    assert asked == [] and world.registry.list_nodes() == []
    assert "not recorded: the CA presented by" in banner()
    assert "does not match the pinned" in capsys.readouterr().out


def test_an_enrolled_machine_is_told_its_node_and_nothing_is_written(world, server, capsys):
    from test_bringup_installapi import enrolled
    node = enrolled(world, ADDRESS, state="enrolled")
    assert cli.cmd_firstboot_discover(None, cmdline=cmdline(server, world.authority.pin),
                                      inventory=machine()) == 0
    assert world.registry.list_nodes() == [world.registry.get_node(node.id)]
    assert "the seed knows this machine as node %s (enrolled)" % node.id in banner()


def test_without_join_and_ca_on_the_command_line_nothing_is_sent(capsys):
    line = kernelargs.format(mode="discover", seed="10.0.0.1")
    with pytest.raises(discover.NotRecorded):
        discover.run(cmdline=line, inventory=machine())
    assert cli.cmd_firstboot_discover(None, cmdline=line, inventory=machine()) == 0
    assert "not recorded: this discovery boot's kernel command line has no " \
        "rackforge.join" in banner()


def test_not_a_discovery_boot_does_nothing(world, server, capsys):
    line = cmdline(server, world.authority.pin, mode="install")
    assert discover.run(cmdline=line, inventory=machine()) is None
    assert cli.cmd_firstboot_discover(None, cmdline="quiet", inventory=machine()) == 0
    assert world.registry.list_nodes() == []


def test_a_silent_seed_is_asked_again_then_the_unit_restarts_the_command(capsys):
    now, slept = [0.0], []

    def sleep(s):
        slept.append(s)
        now[0] += s
    line = kernelargs.format(mode="discover", join="https://127.0.0.1:9", ca="sha256:" + "a" * 64)
    assert cli.cmd_firstboot_discover(None, cmdline=line, inventory=machine(), patience=60,
                                      timeout=1, clock=lambda: now[0], sleep=sleep) == 1
    assert slept[:3] == [2.0, 4.0, 8.0] and sum(slept) <= 60
    out = capsys.readouterr().out
    assert "rackforge-discover: the seed does not record this machine yet" in out
    assert "did not record this machine in 60 s" in banner()


def test_a_full_discovery_is_asked_again(world, server, monkeypatch):
    monkeypatch.setattr(world.discover, "limit", 0)
    now = [0.0]

    def sleep(s):
        now[0] += s
    with pytest.raises(discover.DiscoverUnavailable, match="discovery full"):
        discover.run(cmdline=cmdline(server, world.authority.pin), inventory=machine(),
                     patience=10, clock=lambda: now[0], sleep=sleep)
    assert world.registry.list_nodes() == []


def test_first_boot_never_joins_on_a_discovery_boot_even_with_a_bootstrap_file(
        tmp_path, monkeypatch, capsys):
    from rackforge.firstboot import agent
    proc = tmp_path / "cmdline"
    proc.write_text("quiet rackforge.mode=discover rackforge.seed=10.0.0.1\n")
    monkeypatch.setattr(bootstrap, "CMDLINE", str(proc))
    monkeypatch.setenv("RACKFORGE_STATE", str(tmp_path / "state"))
    where = tmp_path / "bootstrap.yaml"
    where.write_text("join: {endpoint: 'https://10.0.0.1:9443', token: abcdef.0123456789abcdef,"
                     " ca_sha256: 'sha256:%s'}\n" % ("ab" * 32))
    monkeypatch.setenv("RACKFORGE_BOOTSTRAP", str(where))
    monkeypatch.setattr(agent, "run", lambda *a, **kw: pytest.fail("first boot joined"))
    assert cli.cmd_firstboot_run(None) == 0
    out = capsys.readouterr().out
    assert "a discovery boot (rackforge.mode=discover) never joins" in out
    assert not (paths.issue_dir() / cli.BANNER).exists()      # discovery's banner
    assert bootstrap.boot_mode() == "discover"


def unit(name):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNITS / name)
    return parser


def test_the_discovery_unit_runs_only_on_a_discovery_boot_and_is_enabled():
    u = unit("rackforge-discover.service")
    assert u["Unit"]["ConditionKernelCommandLine"] == "rackforge.mode=discover"
    assert u["Service"]["ExecStart"] == "/usr/bin/rackforge firstboot discover"
    assert u["Service"]["Restart"] == "on-failure"
    assert u["Service"]["RestartPreventExitStatus"] == "2"
    assert u["Install"]["WantedBy"] == "multi-user.target"
    hook = REPO / "elements" / "rackforge-firstboot" / "install.d" / "70-rackforge-firstboot"
    assert "systemctl enable rackforge-discover.service" in hook.read_text()
    # first boot's unit still starts there (its agent stops at once on a discovery boot)
    assert unit("rackforge-firstboot.service")["Unit"]["ConditionKernelCommandLine"] == \
        "!rackforge.mode=install"


def test_the_command_is_registered():
    from rackforge import cli as main_cli
    with pytest.raises(SystemExit) as done:
        main_cli.main(["firstboot", "discover", "--help"])
    assert done.value.code == 0
