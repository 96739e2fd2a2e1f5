"""The agent's lease outlives a pass that blocks: the keeper renews it from a thread of
its own, so a live node's task claim never lapses to another controller."""

from types import SimpleNamespace

from fakeclock import Clock

from rackforge.kvstore import MemoryKV
from rackforge.nodeagent import daemon


class Ticks:
    """``stop`` for the keeper: each wait moves the clock on by its timeout, for N waits."""

    def __init__(self, clock, n):
        self.clock, self.left = clock, n

    def wait(self, timeout):
        self.clock.now += timeout
        self.left -= 1
        return self.left < 0


def held_claim():
    clock = Clock()
    kv = MemoryKV(clock=clock)
    lease = kv.lease_grant(daemon.LEASE_TTL)
    kv.txn([], [("/rackforge/tasks/galera-bootstrap/claim", b"n1", lease)])
    return clock, kv, SimpleNamespace(lease=lease)


def test_a_claim_outlives_a_pass_twenty_leases_long():
    clock, kv, agent = held_claim()
    daemon.LeaseKeeper(agent, kv, Ticks(clock, 60)).run()
    assert clock.now - 1000.0 >= 20 * daemon.LEASE_TTL
    assert kv.get("/rackforge/tasks/galera-bootstrap/claim").value == b"n1"


def test_without_renewal_the_claim_goes():
    clock, kv, agent = held_claim()
    clock.now += daemon.LEASE_TTL + 1
    assert kv.get("/rackforge/tasks/galera-bootstrap/claim") is None


def test_the_keeper_waits_for_the_loop_to_grant_a_lease():
    clock = Clock()
    kv = MemoryKV(clock=clock)
    daemon.LeaseKeeper(SimpleNamespace(lease=None), kv, Ticks(clock, 3)).run()
    assert clock.now > 1000.0
