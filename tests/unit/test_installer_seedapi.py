"""A PXE node's installer asks the seed for its answer file: the real join service over
HTTPS on loopback, the install API on the in-memory registry, the CA pinned."""

from types import SimpleNamespace

import pytest
from bringupsim import World, fake_identity

from rackforge import kernelargs
from rackforge.cluster import ca, joinserver
from rackforge.installer import run, seedapi, sources
from test_bringup_installapi import ADDRESS, enrolled


@pytest.fixture
def world(tmp_path, monkeypatch):
    return World(tmp_path, monkeypatch)


def machine(address=ADDRESS, extra_nic=True):
    """The inventory of the enrolled machine: its MAC, one NIC more, its DMI serial."""
    mac, serial = fake_identity(address)
    nics = [SimpleNamespace(name="eno1", mac=mac.upper(), kind="physical"),
            SimpleNamespace(name="br0", mac="52:54:00:00:00:01", kind="bridge")]
    if extra_nic:
        nics.append(SimpleNamespace(name="eno2", mac="52:54:00:99:99:99", kind="physical"))
    return SimpleNamespace(interfaces=nics,
                           system_vendor=SimpleNamespace(serial_number=serial))


def args_of(server, node, pin):
    line = kernelargs.format(mode="install", node=node.id, join="https://127.0.0.1:%d"
                             % server.port, ca=pin)
    return kernelargs.parse(line)


def test_the_answer_comes_from_the_pinned_seed_and_the_report_moves_the_node(world, tmp_path):
    node = enrolled(world)
    with joinserver.JoinServer(world.join, "127.0.0.1", 0, cert_dir=tmp_path / "srv",
                               install=world.install) as server:
        found = seedapi.fetch(args_of(server, node, world.authority.pin), inventory=machine())
        assert found.source.startswith("the seed (https://127.0.0.1:")
        answers = run.answers_of(found)
        assert answers.hostname == node.name and answers.mode == "join"
        assert answers.cluster.ca_sha256 == world.authority.pin
        assert answers.cluster.token not in found.source
        found.report("installed", "")
        assert world.registry.get_node(node.id).state == "installed"


def test_a_wrong_pin_sends_nothing_and_an_unenrolled_machine_is_refused_at_once(world,
                                                                                tmp_path):
    node = enrolled(world)
    with joinserver.JoinServer(world.join, "127.0.0.1", 0, cert_dir=tmp_path / "srv",
                               install=world.install) as server:
        with pytest.raises(ca.CAPinMismatch):
            seedapi.fetch(args_of(server, node, "sha256:" + "0" * 64), inventory=machine())
        assert world.registry.get_node(node.id).state == "installing"
        stranger = machine("10.0.0.99")
        with pytest.raises(seedapi.SeedRefused, match="enroll it with 'rackforge rack up'"):
            seedapi.fetch(args_of(server, node, world.authority.pin), inventory=stranger,
                          patience=0)


def test_a_seed_that_does_not_answer_is_asked_again_then_said_in_one_line():
    slept = []
    now = [0.0]

    def sleep(s):
        slept.append(s)
        now[0] += s
    args = {"join": "https://127.0.0.1:9", "ca": "sha256:" + "a" * 64, "node": "n1"}
    with pytest.raises(seedapi.SeedUnavailable, match="did not answer the install request "
                       "for 60 s"):
        seedapi.fetch(args, inventory=machine(), patience=60, timeout=1,
                      clock=lambda: now[0], sleep=sleep)
    assert slept[:3] == [2.0, 4.0, 8.0] and sum(slept) <= 60


def test_the_seed_is_the_last_source_and_only_for_an_install_boot_with_a_node():
    asked = []
    seed = lambda args: asked.append(args) or sources.Found("x", "the seed")  # noqa: E731
    none = lambda argv, **kw: SimpleNamespace(returncode=2, stdout="", stderr="")  # noqa
    line = "rackforge.mode=install rackforge.join=https://10.0.0.1:9443 rackforge.ca=sha256:ab"
    assert sources.find(line, run=none, medium="/nonexistent", seed=seed) is None
    found = sources.find(line + " rackforge.node=n7", run=none, medium="/nonexistent",
                         seed=seed)
    assert found.source == "the seed" and asked[0]["node"] == "n7"
