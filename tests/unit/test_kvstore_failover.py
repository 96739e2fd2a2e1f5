"""The etcd client fails over on what it should, and only on that.

Members are stand-ins on loopback (``tests/lib/gateway.py``): a gateway
speaking etcd's JSON API over a shared in-memory store, a hung socket that
accepts and never answers, and a closed port.
"""

import time

import pytest
from gateway import Gateway, closed_port, hung_socket

from rackforge.etcdkv import EtcdKV
from rackforge.kvstore import Compare, MemoryKV, RegistryRejected, RegistryUnavailable

TIMEOUT = 2


def test_a_hung_member_first_and_a_live_one_second_succeeds_within_the_timeout():
    with hung_socket() as hung, Gateway() as live:
        live.kv.txn([], [("/k", b"v")])
        kv = EtcdKV([hung, live.url], timeout=TIMEOUT)
        start = time.monotonic()
        assert kv.get("/k").value == b"v"
        took = time.monotonic() - start
        assert took < TIMEOUT
        # the next call starts at the member that answered
        start = time.monotonic()
        assert kv.get("/k").value == b"v"
        assert time.monotonic() - start < 0.5
        assert kv.endpoint == live.url


def test_a_refused_member_is_skipped():
    with Gateway() as live:
        kv = EtcdKV([closed_port(), live.url], timeout=TIMEOUT)
        assert kv.txn([Compare("/a", 0)], [("/a", b"1")]) is True
        assert live.kv.get("/a").value == b"1"


def test_every_member_down_is_one_line_with_each_cause():
    with hung_socket() as hung:
        refused = closed_port()
        kv = EtcdKV([hung, refused], timeout=1)
        with pytest.raises(RegistryUnavailable) as err:
            kv.get("/k")
    line = str(err.value)
    assert "\n" not in line
    assert hung in line and "no answer within" in line
    assert refused in line and "refused" in line.lower()


def test_a_4xx_answer_is_fatal_and_not_tried_elsewhere():
    store = MemoryKV()
    with Gateway(store) as first, Gateway(store) as second:
        first.status, first.reason = 400, "permission denied"
        kv = EtcdKV([first.url, second.url], timeout=TIMEOUT)
        with pytest.raises(RegistryRejected, match="HTTP 400 etcdserver: permission denied"):
            kv.get("/k")
        assert second.requests == []
    assert not RegistryRejected.retryable and RegistryUnavailable.retryable


def test_a_5xx_answer_goes_on_to_the_next_member():
    store = MemoryKV()
    store.txn([], [("/k", b"v")])
    with Gateway(store) as first, Gateway(store) as second:
        first.status, first.reason = 503, "no leader"
        kv = EtcdKV([first.url, second.url], timeout=TIMEOUT)
        assert kv.get("/k").value == b"v"
        assert second.requests == ["/v3/kv/range"]


@pytest.mark.parametrize("lost", ["after", "before"])
def test_a_transaction_whose_answer_was_lost_applies_exactly_once(lost):
    """A create (compare: the key must not exist) whose answer is lost: sent again
    blindly it would fail its compare and look like someone else's node."""
    store = MemoryKV()
    with Gateway(store) as first, Gateway(store) as second:
        first.lose_next = lost
        kv = EtcdKV([first.url, second.url], timeout=TIMEOUT)
        assert kv.txn([Compare("/node", 0)], [("/node", b"mine")]) is True
        assert store.get("/node").value == b"mine"
        assert first.applied + second.applied == 1
        # "before": read back, the compare still held, so it was sent again (to the
        # second member); "after": read back, it was there, so it was not sent again
        assert second.requests.count("/v3/kv/txn") == (1 if lost == "before" else 0)


def test_a_lost_answer_to_a_transaction_that_lost_its_race_reports_false():
    store = MemoryKV()
    store.txn([], [("/counter", b"1")])
    rev = store.get("/counter").mod_revision
    with Gateway(store) as first, Gateway(store) as second:
        first.lose_next = "before"
        kv = EtcdKV([first.url, second.url], timeout=TIMEOUT)
        # another writer moves the key while our answer is lost
        store.txn([], [("/counter", b"2")])
        assert kv.txn([Compare("/counter", rev)], [("/counter", b"mine")]) is False
        assert store.get("/counter").value == b"2"


def test_new_endpoints_are_used_from_the_next_call_and_a_bad_one_is_refused():
    """etcd's members changed (the node agent follows them): the one this client knew
    is gone, the new list answers."""
    from rackforge import errors

    with Gateway() as live:
        live.kv.txn([], [("/k", b"v")])
        gone = closed_port()
        kv = EtcdKV([gone], timeout=1)
        with pytest.raises(RegistryUnavailable):
            kv.get("/k")
        kv.set_endpoints([live.url])
        assert kv.get("/k").value == b"v" and kv.endpoint == live.url
        with pytest.raises(errors.ConfigError, match="not a URL"):
            kv.set_endpoints(["10.0.0.1:2379"])
        with pytest.raises(errors.ConfigError, match="no etcd endpoint"):
            kv.set_endpoints([])
        assert kv.endpoints == [live.url]
