"""The node registry against a real etcd on loopback: compare-and-set under contention."""

import threading

import pytest
from etcd import etcd_server

from rackforge import registry, states
from rackforge.registry import Node

pytestmark = pytest.mark.integration


@pytest.fixture
def reg(tmp_path):
    with etcd_server(tmp_path) as url:
        yield registry.connect(url)


def test_create_find_update_delete(reg):
    node = reg.create_node(Node(name="r1n1", macs=["52:54:00:aa:00:01"], state="enrolled"))
    assert reg.find_node("52:54:00:aa:00:01").id == node.id
    reg.transition(node.id, "installing", states.OPERATOR, frm="enrolled")
    assert reg.find_node("r1n1").state == "installing"
    with pytest.raises(registry.NodeExists):
        reg.create_node(Node(name="other", macs=["52:54:00:aa:00:01"]))
    reg.delete_node(node.id)
    assert reg.list_nodes() == []


def test_concurrent_writers_lose_nothing(reg):
    """Four writers increment one field; compare-and-set makes every increment land."""
    node = reg.create_node(Node(name="a", boot={"n": 0}))
    failures = []

    def bump():
        try:
            for _ in range(15):
                reg.update_node(node.id, lambda n: n.boot.update(n=n.boot["n"] + 1))
                reg.record_boot("52:54:00:00:00:01")
        except Exception as e:  # surfaced below
            failures.append(e)
    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert reg.get_node(node.id).boot["n"] == 60
    assert reg.list_boots()[0]["count"] == 60


def test_concurrent_creates_of_one_mac_register_it_once(reg):
    results = []

    def create(i):
        try:
            reg.create_node(Node(name="n%d" % i, macs=["52:54:00:00:00:99"]))
            results.append("ok")
        except registry.NodeExists:
            results.append("exists")
    threads = [threading.Thread(target=create, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["exists"] * 5 + ["ok"]
    assert len(reg.list_nodes()) == 1


def test_unreachable_etcd_is_one_line(tmp_path):
    from etcd import free_port
    reg = registry.connect("http://127.0.0.1:%d" % free_port())
    with pytest.raises(registry.RegistryUnavailable) as e:
        reg.list_nodes()
    assert "\n" not in str(e.value) and "does not answer" in str(e.value)


def test_a_hung_member_before_a_live_etcd_costs_less_than_the_timeout(tmp_path):
    """[hung endpoint, live endpoint]: the registry works, within the client's timeout."""
    import time

    from gateway import hung_socket

    from rackforge.etcdkv import EtcdKV

    with etcd_server(tmp_path) as url, hung_socket() as hung:
        reg = registry.NodeRegistry(EtcdKV([hung, url], timeout=6))
        start = time.monotonic()
        node = reg.create_node(Node(name="behind-a-hung-member", macs=["52:54:00:aa:00:09"]))
        assert time.monotonic() - start < 6
        assert reg.find_node("52:54:00:aa:00:09").id == node.id
        assert reg.kv.endpoint == url


def test_leases_and_watches_on_a_real_etcd(tmp_path):
    """The semantics tests/unit/test_kvstore_leases.py checks on the in-memory store."""
    from rackforge.etcdkv import EtcdKV

    with etcd_server(tmp_path) as url:
        kv = EtcdKV(url)
        lease = kv.lease_grant(30)
        assert kv.txn([], [("/hb/n1", b"alive", lease), ("/plain", b"x")])
        assert kv.get("/hb/n1").lease == lease
        assert 25 <= kv.lease_keepalive(lease) <= 30
        start = kv.revision()
        kv.txn([], [("/hb/n2", b"up")])
        kv.lease_revoke(lease)
        assert kv.get("/hb/n1") is None and kv.get("/plain").value == b"x"
        assert kv.lease_keepalive(lease) == 0
        events, rev = kv.watch("/hb/", start, timeout=3)
        assert [(e.type, e.key) for e in events][:1] == [("PUT", "/hb/n2")]
        seen = list(events)
        while len(seen) < 2:
            more, rev = kv.watch("/hb/", rev, timeout=3)
            assert more, "the revoke's delete was not seen"
            seen += more
        assert [(e.type, e.key) for e in seen] == [("PUT", "/hb/n2"), ("DELETE", "/hb/n1")]
        assert kv.watch("/hb/", rev, timeout=0.5) == ([], rev)
