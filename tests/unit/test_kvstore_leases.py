"""Leases and watches of the in-memory store: the semantics the node agent relies on, as
etcd has them (the same cases run against a real etcd in test_registry_etcd.py)."""

import threading

import pytest
from fakeclock import Clock

from rackforge.kvstore import Compare, MemoryKV


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def kv(clock):
    return MemoryKV(clock=clock)


def test_a_key_under_a_lease_goes_when_it_expires_unless_kept_alive(kv, clock):
    lease = kv.lease_grant(10)
    assert kv.txn([], [("/hb/n1", b"alive", lease), ("/plain", b"x")])
    clock.now += 9
    assert kv.lease_keepalive(lease) == 10
    clock.now += 9
    assert kv.get("/hb/n1").value == b"alive"
    clock.now += 2
    assert kv.get("/hb/n1") is None and kv.get("/plain").value == b"x"
    assert kv.lease_keepalive(lease) == 0


def test_revoke_deletes_at_once_and_a_dead_lease_cannot_be_written(kv):
    lease = kv.lease_grant(30)
    kv.txn([], [("/tasks/t1/claim", b"n1", lease)])
    kv.lease_revoke(lease)
    assert kv.get("/tasks/t1/claim") is None
    with pytest.raises(Exception, match="lease"):
        kv.txn([], [("/x", b"y", lease)])


def test_watch_sees_puts_and_deletes_after_a_revision(kv):
    start = kv.revision()
    kv.txn([], [("/a/1", b"one")])
    kv.txn([], [("/b/1", b"other prefix")])
    kv.txn([Compare("/a/1", kv.get("/a/1").mod_revision)], (), ["/a/1"])
    events, rev = kv.watch("/a/", start, timeout=0.1)
    assert [(e.type, e.key) for e in events] == [("PUT", "/a/1"), ("DELETE", "/a/1")]
    assert rev == kv.revision()
    assert kv.watch("/a/", rev, timeout=0.05) == ([], rev)


def test_watch_wakes_when_a_change_comes(kv):
    start = kv.revision()

    def later():
        kv.txn([], [("/a/2", b"two")])
    timer = threading.Timer(0.1, later)
    timer.start()
    events, _ = kv.watch("/a/", start, timeout=5)
    timer.join()
    assert [e.key for e in events] == ["/a/2"]


def test_an_expiring_lease_is_seen_by_a_watch(kv, clock):
    lease = kv.lease_grant(5)
    kv.txn([], [("/health/n1/mariadb", b"ok", lease)])
    start = kv.revision()
    clock.now += 6
    events, _ = kv.watch("/health/", start, timeout=0.2)
    assert [(e.type, e.key) for e in events] == [("DELETE", "/health/n1/mariadb")]
