"""The boot side of ``rack up``: an install boot's kernel command line (never the token),
and the boot services as a unit reading its arguments from a root-only file."""

import configparser
import http.client
import json
import os
import stat
from pathlib import Path

import lifecycle
import pytest

from rackforge import kernelargs, keys, registry, systemd
from rackforge.bringup import bootsvc
from rackforge.cluster import tokens
from rackforge.pxe import bootscript
from rackforge.pxe.http import BootHttpServer

REPO = Path(__file__).resolve().parents[2]
PIN = "sha256:" + "ab" * 32
TEMPLATE = ("#!ipxe\nkernel {{ base_url }}/vmlinuz {{ console }} {{ kernel_args }}\n"
            "initrd {{ base_url }}/initrd\nboot\n")


@pytest.fixture
def server(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name in ("vmlinuz", "initrd", "rootfs.squashfs"):
        (bundle / name).write_bytes(b"x")
    (bundle / "boot.ipxe.j2").write_text(TEMPLATE)
    reg = registry.MemoryRegistry()
    reg.kv.txn([], [(keys.CLUSTER, json.dumps({
        "name": "rack1", "ca_sha256": PIN,
        "join_endpoints": ["https://10.0.0.2:9443", "https://10.0.0.1:9443"]}).encode())])
    srv = BootHttpServer("127.0.0.1", 0, str(bundle),
                         bootscript.ScriptRenderer(bundle / "boot.ipxe.j2"), reg,
                         seed="10.0.0.1", cluster="rack1")
    srv.start()
    yield srv
    srv.stop()


def script(server, mac):
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    conn.request("GET", "/ipxe/node?mac=%s&platform=efi" % mac)
    body = conn.getresponse().read().decode()
    conn.close()
    return body


def test_an_install_boot_carries_mode_node_join_and_ca_and_never_the_token(server):
    node = lifecycle.create(server.registry, "installing", name="n1",
                            macs=["52:54:00:00:00:05"])
    token, _ = tokens.TokenStore(server.registry.kv).create(
        bound={"node": node.id, "name": "n1", "macs": ["52:54:00:00:00:05"]})
    line = next(w for w in script(server, "52:54:00:00:00:05").splitlines()
                if w.startswith("kernel"))
    args = kernelargs.parse(line)
    assert args["mode"] == "install" and args["node"] == node.id
    assert args["join"] == "https://10.0.0.1:9443"          # the seed's own endpoint
    assert args["ca"] == PIN
    assert token not in line and token.split(".")[1] not in line
    assert not tokens.TOKEN_RE.search(line.replace(" ", "\n")) and "token" not in line


@pytest.mark.parametrize("state", [None, "enrolled", "discovered", "failed"])
def test_a_discovery_boot_carries_join_and_ca_and_never_a_token(server, state):
    """The live appliance reports the machine to the discovery API with them."""
    if state is not None:
        lifecycle.create(server.registry, state, name="n2", macs=["52:54:00:00:00:06"])
    tokens.TokenStore(server.registry.kv).create()
    line = next(w for w in script(server, "52:54:00:00:00:06").splitlines()
                if w.startswith("kernel"))
    args = kernelargs.parse(line)
    assert args["mode"] == "discover" and args["join"] == "https://10.0.0.1:9443"
    assert args["ca"] == PIN and ("node" in args) == (state is not None)
    assert not tokens.TOKEN_RE.search(line.replace(" ", "\n")) and "token" not in line


@pytest.mark.parametrize("state", ["installed", "active"])
def test_a_local_boot_carries_no_kernel_arguments(server, state):
    lifecycle.create(server.registry, state, name="n3", macs=["52:54:00:00:00:07"])
    body = script(server, "52:54:00:00:00:07")
    assert "rackforge." not in body and "kernel " not in body


def test_without_a_cluster_record_the_install_boot_has_no_join_or_ca():
    reg = registry.MemoryRegistry()
    assert bootscript.install_args(reg.kv, "10.0.0.1") == (None, None)
    line = bootscript.kernel_args(bootscript.Decision("install", "n1", "installing"),
                                  "10.0.0.1", "http://10.0.0.1:8080", "rack1", "id-1")
    assert "rackforge.join" not in line and "rackforge.mode=install" in line


# -- the unit and its arguments ---------------------------------------------------------------
@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setenv("RACKFORGE_CONFIG", str(tmp_path / "etc"))
    return tmp_path / "etc"


class Systemctl:
    def __init__(self, active=False):
        self.calls, self.active = [], active

    def __call__(self, *args):
        self.calls.append(args)
        if args[0] == "is-active" and not self.active:
            raise systemd.SystemctlFailed(args="is-active", unit=args[-1], detail="inactive")
        if args[0] in ("start", "restart"):
            self.active = True


def test_the_arguments_go_to_a_root_only_file_before_the_unit_is_touched(config):
    words = bootsvc.arguments("eno2", "/srv/pxe", "full", "10.0.0.100,10.0.0.150",
                              cluster="rack1")
    ctl = Systemctl()
    seen = []
    ctl_calls = ctl.__call__

    def checked(*args):
        seen.append(bootsvc.recorded())              # the file exists at every call
        return ctl_calls(*args)
    assert bootsvc.ensure(words, systemctl=checked) == "started"
    path = config / "pxe.env"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text().splitlines()[-1] == (
        "RACKFORGE_PXE_ARGS=--interface eno2 --bundle /srv/pxe --mode full --range "
        "10.0.0.100,10.0.0.150 --cluster rack1")
    assert seen and all(s == words for s in seen)
    assert ctl.calls == [("enable", bootsvc.UNIT), ("is-active", "--quiet", bootsvc.UNIT),
                         ("start", bootsvc.UNIT)]
    # again, the same: nothing restarted (nodes booting from it are not cut off)
    ctl.calls.clear()
    assert bootsvc.ensure(words, systemctl=ctl) == "running"
    assert ("restart", bootsvc.UNIT) not in ctl.calls
    # changed: restarted; and no arguments at all: what was recorded
    assert bootsvc.ensure(words[:-2], systemctl=ctl) == "restarted"
    assert bootsvc.ensure(None, systemctl=ctl) == "running"


def test_nothing_recorded_and_nothing_given_is_one_line(config):
    with pytest.raises(bootsvc.BootServicesError, match="give --interface IF and --bundle"):
        bootsvc.ensure(None, systemctl=Systemctl())


@pytest.mark.parametrize("bad", ["eno 2", "eno2\nX=1", "$(reboot)", "a'b", ""])
def test_a_value_that_is_not_one_word_is_refused(bad):
    with pytest.raises(bootsvc.BootServicesError, match="cannot be passed"):
        bootsvc.arguments(bad, "/srv/pxe")


def test_waiting_for_the_services_is_bounded():
    now = [0.0]
    with pytest.raises(bootsvc.BootServicesDown, match="journalctl -u rackforge-pxe"):
        bootsvc.wait_serving(lambda: None, seconds=3, clock=lambda: now[0],
                             sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert bootsvc.wait_serving(lambda: {"serving": True})["serving"]


def test_a_failed_unit_ends_the_wait_at_once():
    now = [0.0]
    with pytest.raises(bootsvc.BootServicesDown, match="its unit failed"):
        bootsvc.wait_serving(lambda: None, seconds=300, clock=lambda: now[0],
                             sleep=lambda s: now.__setitem__(0, now[0] + s),
                             failed=lambda: now[0] >= 2)
    assert now[0] == 2


def test_the_unit_reads_the_file_and_ships_disabled():
    element = REPO / "elements" / "rackforge-bringup"
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.read(element / "static/usr/lib/systemd/system" / bootsvc.UNIT)
    service = unit["Service"]
    assert service["EnvironmentFile"] == "/etc/rackforge/pxe.env"
    assert service["ExecStart"] == "/usr/bin/rackforge pxe serve $%s" % bootsvc.VARIABLE
    assert unit["Unit"]["Documentation"] and unit["Unit"]["ConditionPathExists"]
    assert service["NoNewPrivileges"] == "yes"
    hook = (element / "install.d/70-rackforge-bringup-pxe").read_text()
    assert "systemctl disable %s" % bootsvc.UNIT in hook
    assert os.access(element / "install.d/70-rackforge-bringup-pxe", os.X_OK)


def test_allowing_the_default_route_reaches_pxe_serve_too():
    words = bootsvc.arguments("eno1", "/srv/pxe", allow_default_route=True)
    assert "--allow-default-route" in words
    assert "--allow-default-route" not in bootsvc.arguments("eno1", "/srv/pxe")
