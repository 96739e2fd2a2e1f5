"""``rackforge node remove``: a machine that never joined is forgotten in one transaction,
with the join token bound to it; a member is refused and nothing changes.  On the
in-memory registry with the real install, discovery and join services (bringupsim)."""

import lifecycle
import pytest
from bringupsim import World, fake_identity

from rackforge import cli, keys, registry, states
from rackforge.bringup import progress
from rackforge.cluster import cli as cluster_cli
from rackforge.cluster import removal, tokens


@pytest.fixture
def world(tmp_path, monkeypatch):
    w = World(tmp_path, monkeypatch)
    monkeypatch.setattr(cluster_cli, "_connect_registry", lambda args: w.registry)
    return w


def snapshot(world):
    return [(e.key, e.value) for e in world.kv.get_prefix("/")]


def keys_naming(world, node_id):
    """Every key outside the boot records whose name or value holds ``node_id``."""
    return [e.key for e in world.kv.get_prefix("/") if not e.key.startswith(keys.BOOTS)
            and (node_id in e.key or node_id.encode() in e.value)]


def discover(world, address):
    mac, serial = fake_identity(address)
    inventory = {"interfaces": [{"name": "eth0", "mac": mac, "kind": "physical"}]}
    got = world.discover.discover({"macs": [mac], "serial": serial, "inventory": inventory},
                                  "10.0.1.9")
    return world.registry.get_node(got["node"])


def installing(world, address):
    """An enrolled node moved to installing whose installer got its answer (and token)."""
    mac, serial = fake_identity(address)
    node = lifecycle.create(world.registry, "installing", name="n" + address.split(".")[3],
                            macs=[mac], bmc={"driver": "fake", "address": address, "port": 623},
                            inventory={"serial": serial, "macs": [mac]})
    progress.ProgressStore(world.kv).update(          # as rack up records it
        node.id, lambda p: None, create=lambda: progress.Progress(node=node.id))
    got = world.install.install({"node": node.id, "macs": [mac], "serial": serial},
                                "10.0.1.9")
    return node, got["answer"]["cluster"]["join"]["token"]


def test_a_discovered_machine_is_forgotten_and_discovered_anew_when_it_boots_again(world):
    node = discover(world, "10.0.0.31")
    gone = removal.remove(world.registry, node.name)
    assert gone.id == node.id and gone.state == "discovered"
    assert keys_naming(world, node.id) == []
    assert world.registry.node_by_mac(node.macs[0]) is None
    again = discover(world, "10.0.0.31")
    assert again.state == "discovered" and again.id != node.id


def test_an_installing_node_goes_with_its_records_and_its_bound_token(world):
    node, token = installing(world, "10.0.0.32")
    token_id = token.split(".")[0]
    assert tokens.TokenStore(world.kv).get(token_id) is not None
    assert world.kv.get(keys.BRINGUP_INSTALL + node.id) is not None
    assert world.kv.get(keys.BRINGUP_NODES + node.id) is not None
    removal.remove(world.registry, fake_identity("10.0.0.32")[0])      # by its MAC
    with pytest.raises(tokens.TokenNotFound):
        tokens.TokenStore(world.kv).get(token_id)
    assert keys_naming(world, node.id) == []
    with pytest.raises(registry.NodeNotFound):
        world.registry.get_node(node.id)


@pytest.mark.parametrize("state, fields, why", [
    ("active", {}, "state active"),
    ("joining", {}, "state joining"),
    ("maintenance", {}, "state maintenance"),
    ("failed", {"role": "compute"}, "role compute"),
])
def test_a_member_is_refused_and_nothing_changes(world, state, fields, why):
    node = lifecycle.create(world.registry, state, name="m1",
                            macs=["52:54:00:00:01:01"], **fields)
    before = snapshot(world)
    with pytest.raises(removal.NodeIsMember) as err:
        removal.remove(world.registry, "m1")
    assert why in str(err.value) and "nothing was removed" in str(err.value)
    assert snapshot(world) == before and world.registry.get_node(node.id).state == state


def test_a_node_that_moves_during_the_removal_is_looked_at_again(world, monkeypatch):
    node, _ = installing(world, "10.0.0.33")
    real, plans = removal.plan, []

    def plan(reg, n):
        got = real(reg, n)
        plans.append(n.state)
        if len(plans) == 1:          # its installer reports between the read and the write
            reg.transition(n.id, "installed", states.INSTALLER, frm="installing")
        return got
    monkeypatch.setattr(removal, "plan", plan)
    gone = removal.remove(world.registry, node.name)
    assert plans == ["installing", "installed"] and gone.state == "installed"
    assert keys_naming(world, node.id) == []


@pytest.mark.parametrize("between", ["check", "plan"])
def test_a_node_admitted_during_the_removal_is_refused(world, monkeypatch, between):
    node = lifecycle.create(world.registry, "installed", name="n34",
                            macs=["52:54:00:00:00:22"])
    real = getattr(removal, "member_reason" if between == "check" else "plan")
    moved = []

    def racing(*args):
        got = real(*args)
        if not moved:                # a join admits it right after this read
            moved.append(world.registry.transition(node.id, "joining", states.JOIN,
                                                   frm="installed"))
        return got
    monkeypatch.setattr(removal, "member_reason" if between == "check" else "plan", racing)
    with pytest.raises(removal.NodeIsMember, match="state joining"):
        removal.remove(world.registry, node.name)
    assert world.registry.get_node(node.id).state == "joining"
    assert world.registry.node_by_mac("52:54:00:00:00:22").id == node.id


def test_the_command_asks_for_yes_then_removes(world, capsys):
    node = discover(world, "10.0.0.35")
    before = snapshot(world)
    assert cli.main(["node", "remove", node.name]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "--yes" in err and node.name in err
    assert snapshot(world) == before
    assert cli.main(["node", "remove", node.name, "--yes"]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("removed node %s (%s, was discovered)" % (node.name, node.id))
    assert keys_naming(world, node.id) == []


def test_the_command_refuses_a_member_in_one_line(world, capsys):
    lifecycle.create(world.registry, "active", name="m2", macs=["52:54:00:00:01:02"])
    before = snapshot(world)
    assert cli.main(["node", "remove", "m2", "--yes"]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "member of the cluster (state active)" in err
    assert snapshot(world) == before
