"""The node registry's rules, on the in-memory store (the same code runs on etcd)."""

import threading

import pytest

from rackforge import registry
from rackforge.registry import Node


@pytest.fixture
def reg():
    return registry.MemoryRegistry()


def test_create_then_find_by_name_id_and_mac(reg):
    node = reg.create_node(Node(name="r1n1", macs=["52-54-00-AA-00-01"], state="enrolled"))
    assert node.macs == ["52:54:00:aa:00:01"]
    assert reg.find_node("r1n1").id == node.id
    assert reg.find_node(node.id).name == "r1n1"
    assert reg.find_node("52:54:00:aa:00:01").name == "r1n1"
    assert reg.node_by_mac("52:54:00:AA:00:01").id == node.id
    assert reg.node_by_mac("52:54:00:aa:00:02") is None


def test_duplicate_mac_or_name_is_refused_and_writes_nothing(reg):
    reg.create_node(Node(name="a", macs=["52:54:00:00:00:01"]))
    with pytest.raises(registry.NodeExists, match="MAC 52:54:00:00:00:01 .* node a"):
        reg.create_node(Node(name="b", macs=["52:54:00:00:00:02", "52:54:00:00:00:01"]))
    with pytest.raises(registry.NodeExists, match="name a"):
        reg.create_node(Node(name="a", macs=["52:54:00:00:00:03"]))
    assert [n.name for n in reg.list_nodes()] == ["a"]
    assert reg.node_by_mac("52:54:00:00:00:02") is None


def test_update_moves_the_indexes(reg):
    node = reg.create_node(Node(name="a", macs=["52:54:00:00:00:01"]))

    def change(n):
        n.name = "b"
        n.macs = ["52:54:00:00:00:09"]
    reg.update_node(node.id, change)
    assert reg.find_node("b").state == "enrolled"
    assert reg.node_by_mac("52:54:00:00:00:01") is None
    assert reg.node_by_mac("52:54:00:00:00:09").name == "b"
    with pytest.raises(registry.NodeNotFound):
        reg.find_node("a")


def test_update_to_a_taken_mac_is_refused(reg):
    reg.create_node(Node(name="a", macs=["52:54:00:00:00:01"]))
    b = reg.create_node(Node(name="b", macs=["52:54:00:00:00:02"]))
    with pytest.raises(registry.NodeExists, match="node a"):
        reg.update_node(b.id, lambda n: n.macs.append("52:54:00:00:00:01"))
    assert reg.find_node("b").macs == ["52:54:00:00:00:02"]


def test_concurrent_updates_all_land(reg):
    node = reg.create_node(Node(name="a", boot={"n": 0}))

    def bump():
        for _ in range(50):
            reg.update_node(node.id, lambda n: n.boot.update(n=n.boot["n"] + 1))
    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert reg.get_node(node.id).boot["n"] == 200


def test_delete_frees_name_and_macs(reg):
    node = reg.create_node(Node(name="a", macs=["52:54:00:00:00:01"]))
    reg.delete_node(node.id)
    assert reg.list_nodes() == []
    reg.create_node(Node(name="a", macs=["52:54:00:00:00:01"]))


def test_record_boot_counts(reg):
    reg.record_boot("52:54:00:00:00:01", decision="discover")
    rec = reg.record_boot("52-54-00-00-00-01", decision="install")
    assert rec["count"] == 2 and rec["decision"] == "install"
    assert [b["mac"] for b in reg.list_boots()] == ["52:54:00:00:00:01"]


@pytest.mark.parametrize("bad", ["52:54:00:00:00", "zz:54:00:00:00:01", "", "52:54:00:00:00:01:02"])
def test_bad_mac_is_one_clear_error(bad):
    with pytest.raises(registry.InvalidNode, match="MAC address .* six hex pairs"):
        Node(macs=[bad])


def test_bad_name_and_state():
    with pytest.raises(registry.InvalidNode, match="node name"):
        Node(name="Bad_Name")
    with pytest.raises(registry.InvalidNode, match="node state"):
        Node(state="exploded")
