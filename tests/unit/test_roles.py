"""Role election on the in-memory store (the same code runs on etcd; see
tests/integration/test_cluster_etcd.py for the races against a real one)."""

import json
import threading
from types import SimpleNamespace

import pytest

from rackforge import registry
from rackforge.cluster import roles
from rackforge.cluster.roles import RoleElection, RolePolicy
from rackforge.registry import Node


@pytest.fixture
def kv():
    return registry.MemoryRegistry().kv


def snapshot(kv):
    return [(e.key, e.value, e.mod_revision) for e in kv.get_prefix("/")]


def test_first_three_are_controllers_then_compute(kv):
    election = RoleElection(kv)
    got = [election.decide("n%d" % i).role for i in range(6)]
    assert got == ["controller"] * 3 + ["compute"] * 3
    assert election.controllers() == ["n0", "n1", "n2"]
    assert [election.current("n%d" % i).slot for i in range(4)] == [0, 1, 2, None]


def test_asking_again_gives_the_same_answer_and_writes_nothing(kv):
    election = RoleElection(kv)
    first = [election.decide("n%d" % i, storage=i % 2 == 0) for i in range(5)]
    before = snapshot(kv)
    again = [election.decide("n%d" % i, storage=False) for i in range(5)]
    assert again == first
    assert snapshot(kv) == before


def test_storage_is_added(kv):
    d = RoleElection(kv).decide("n0", storage=True)
    assert d.roles == ["controller", "storage"]
    assert RoleElection(kv).decide("n1").roles == ["controller"]


@pytest.mark.parametrize("count", [0, 2, 4, 8, 9, "3", True, None])
def test_even_or_silly_controller_counts_are_refused(count):
    with pytest.raises(roles.BadControllerCount) as e:
        RolePolicy(controllers=count)
    assert "\n" not in str(e.value) and "odd" in str(e.value)


def test_policy_from_profile():
    assert RolePolicy.from_profile(SimpleNamespace(cluster={"controllers": 5})).controllers == 5
    assert RolePolicy.from_profile(SimpleNamespace(cluster={})).controllers == 3
    with pytest.raises(roles.BadControllerCount):
        RolePolicy.from_profile(SimpleNamespace(cluster={"controllers": 2}))


def test_policy_of_the_real_profiles(real_profiles):
    assert RolePolicy.from_profile(real_profiles("hci")).controllers == 3
    assert RolePolicy.from_profile(real_profiles("aio")).controllers == 1


def test_single_controller_policy(kv):
    election = RoleElection(kv, RolePolicy(controllers=1))
    assert [election.decide(n).role for n in "abc"] == ["controller", "compute", "compute"]


def test_pinned_compute_does_not_take_a_controller_place(kv):
    election = RoleElection(kv)
    assert election.decide("big", pin="compute").role == "compute"
    assert [election.decide("n%d" % i).role for i in range(4)] == \
        ["controller"] * 3 + ["compute"]


def test_pinned_controller_wins_while_there_is_room(kv):
    election = RoleElection(kv)
    election.decide("n0")
    d = election.decide("pinned", pin="controller")
    assert d.role == "controller" and d.pinned == "controller" and d.slot == 1


def test_pinned_controller_is_refused_when_full_and_nothing_is_written(kv):
    election = RoleElection(kv)
    for i in range(3):
        election.decide("n%d" % i)
    before = snapshot(kv)
    with pytest.raises(roles.ControllerPinRefused) as e:
        election.decide("late", pin="controller")
    assert "node late" in str(e.value) and "n0, n1, n2" in str(e.value)
    assert "\n" not in str(e.value)
    assert snapshot(kv) == before
    assert election.current("late") is None


def test_bad_pin_and_bad_node_id(kv):
    with pytest.raises(roles.BadPin, match="node n1: role 'storage'"):
        RoleElection(kv).decide("n1", pin="storage")
    with pytest.raises(roles.RoleError, match="registry key"):
        RoleElection(kv).decide("../x")
    assert snapshot(kv) == []


def test_decided_node_keeps_its_role_when_pinned_later(kv):
    election = RoleElection(kv, RolePolicy(controllers=1))
    election.decide("a")
    assert election.decide("b", pin=None).role == "compute"
    assert election.decide("b", pin="controller").role == "compute"


def test_release_frees_a_controller_place(kv):
    election = RoleElection(kv)
    for i in range(4):
        election.decide("n%d" % i)
    assert election.release("n1").role == "controller"
    assert election.release("n1") is None
    assert election.controllers() == ["n0", "n2"]
    assert election.decide("n9").role == "controller"
    assert election.controllers() == ["n0", "n2", "n9"]


def test_lowered_policy_keeps_existing_controllers(kv):
    RoleElection(kv, RolePolicy(controllers=3)).decide("a")
    RoleElection(kv, RolePolicy(controllers=3)).decide("b")
    election = RoleElection(kv, RolePolicy(controllers=1))
    assert election.decide("c").role == "compute"
    assert election.decide("a").role == "controller"


def test_threads_racing_on_the_memory_store(kv):
    election, barrier, out = RoleElection(kv), threading.Barrier(24), {}

    def join(i):
        barrier.wait()
        out[i] = election.decide("n%02d" % i).role
    threads = [threading.Thread(target=join, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out.values()).count("controller") == 3
    assert len(election.controllers()) == 3
    stored = {d.node: d.role for d in election.decisions()}
    assert stored == {"n%02d" % i: r for i, r in out.items()}


def test_record_role_in_the_registry():
    reg = registry.MemoryRegistry()
    node = reg.create_node(Node(name="r1n1"))
    decision = RoleElection(reg.kv).decide(node.id, storage=True)
    roles.record_role(reg, node.id, decision)
    assert reg.get_node(node.id).role == "controller,storage"
    assert json.loads(reg.kv.get(roles.NODE_ROLES + node.id).value)["role"] == "controller"


def test_a_converged_rack_makes_its_controllers_compute_nodes_too(kv):
    election = RoleElection(kv, RolePolicy(controllers=1, converged=True))
    first, second = election.decide("a"), election.decide("b")
    assert first.roles == ["controller", "compute"] and second.roles == ["compute"]
    assert RoleElection(kv).current("a").roles == ["controller", "compute"]   # stored
    plain = RoleElection(registry.MemoryRegistry().kv, RolePolicy(controllers=1)).decide("a")
    assert plain.roles == ["controller"]
