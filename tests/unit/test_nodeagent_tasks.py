"""Cluster tasks on the in-memory store: one claimant, take-over when its lease expires,
done recorded with the catalogue's version, the others wait."""

import pytest
from fakeclock import Clock

from rackforge import errors, keys
from rackforge.kvstore import MemoryKV
from rackforge.nodeagent import tasks


@pytest.fixture
def clock():
    return Clock(100.0)


@pytest.fixture
def kv(clock):
    return MemoryKV(clock=clock)


def runner(kv, node, clock, ttl=10):
    return tasks.Tasks(kv, node, kv.lease_grant(ttl), "v1", clock=clock)


def test_one_claimant_runs_it_the_others_wait_then_see_it_done(kv, clock):
    a, b = runner(kv, "a", clock), runner(kv, "b", clock)
    ran = []
    assert a.claim("galera-bootstrap") and not b.claim("galera-bootstrap")
    assert b.run("galera-bootstrap", ran.append, "b") == "waiting"
    assert b.claimant("galera-bootstrap") == "a"
    assert a.run("galera-bootstrap", lambda who: ran.append(who) or {"seed": who}, "a") == \
        "done"
    assert ran == ["a"]
    done = b.done("galera-bootstrap")
    assert (done.by, done.version, done.result) == ("a", "v1", {"seed": "a"})
    assert kv.get(keys.TASK_CLAIMS + "galera-bootstrap") is None
    assert b.run("galera-bootstrap", ran.append, "b") == "done" and ran == ["a"]


def test_a_dead_claimant_is_taken_over_when_its_lease_expires(kv, clock):
    a, b = runner(kv, "a", clock), runner(kv, "b", clock, ttl=60)
    assert a.claim("rabbitmq-users")            # ... and a loses power
    assert b.run("rabbitmq-users", lambda: {}) == "waiting"
    clock.now += 11                              # a's lease is gone, and its claim with it
    assert b.run("rabbitmq-users", lambda: {"by": "b"}) == "done"
    assert b.done("rabbitmq-users").by == "b"
    with pytest.raises(tasks.TaskFailed, match="claim was lost"):
        a.finish("rabbitmq-users")               # a, back from the dead, cannot finish it


def test_a_failing_task_lets_go_of_its_claim_and_is_tried_again(kv, clock):
    a, b = runner(kv, "a", clock), runner(kv, "b", clock)

    def fails():
        raise errors.RackforgeError("mariadb did not start")
    with pytest.raises(tasks.TaskFailed, match="galera-bootstrap failed on a: mariadb"):
        a.run("galera-bootstrap", fails)
    assert a.done("galera-bootstrap") is None and a.claimant("galera-bootstrap") is None
    assert b.run("galera-bootstrap", lambda: {}) == "done"


def test_a_task_done_for_an_older_secret_runs_again_once_for_the_new_one(kv, clock):
    a, b = runner(kv, "a", clock), runner(kv, "b", clock)
    ran = []
    assert a.run("galera-users", lambda: ran.append("a1") or {},
                 inputs={"mariadb-sst": 1}) == "done"
    assert b.run("galera-users", ran.append, inputs={"mariadb-sst": 1}) == "done"
    assert ran == ["a1"]                        # done for version 1: not again
    # the secret is rotated: one controller runs it again, for version 2
    assert b.claim("galera-users", {"mariadb-sst": 2})
    assert not a.claim("galera-users", {"mariadb-sst": 2})
    assert a.run("galera-users", ran.append, inputs={"mariadb-sst": 2}) == "waiting"
    assert b.run("galera-users", lambda: ran.append("b2") or {},
                 inputs={"mariadb-sst": 2}) == "done"
    assert ran == ["a1", "b2"]
    done = a.done("galera-users")
    assert (done.by, done.inputs) == ("b", {"mariadb-sst": 2})
    assert done.holds_for({"mariadb-sst": 2}) and not done.holds_for({"mariadb-sst": 1})
    assert a.run("galera-users", ran.append, inputs={"mariadb-sst": 2}) == "done"
    assert ran == ["a1", "b2"]


def test_a_rerun_cannot_finish_over_a_record_written_while_it_ran(kv, clock):
    a = runner(kv, "a", clock)
    assert a.run("rabbitmq-users", lambda: {}, inputs={"rabbitmq-openstack": 1}) == "done"
    assert a.claim("rabbitmq-users", {"rabbitmq-openstack": 2})
    # something rewrites the done record under the claim (an operator, a bug)
    kv.txn([], [(keys.TASKS + "rabbitmq-users", b'{"done": true, "by": "x"}')])
    with pytest.raises(tasks.TaskFailed, match="changed while it ran"):
        a.finish("rabbitmq-users", {}, {"rabbitmq-openstack": 2})
