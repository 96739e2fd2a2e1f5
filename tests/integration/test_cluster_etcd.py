"""Role election and join tokens against a real etcd on loopback, under contention.

Every joiner has its own etcd client (like separate nodes); threads and
processes start together on a barrier, so their reads and compare-and-set
transactions really interleave.
"""

import json
import multiprocessing
import threading

import lifecycle
import pytest
from etcd import etcd_server

from rackforge import registry
from rackforge.cluster import roles, tokens
from rackforge.cluster.roles import RoleElection, RolePolicy
from rackforge.etcdkv import EtcdKV

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def etcd_url(tmp_path_factory):
    with etcd_server(tmp_path_factory.mktemp("etcd")) as url:
        yield url


@pytest.fixture
def kv(etcd_url):
    kv = EtcdKV(etcd_url)
    yield kv
    kv.txn([], (), [e.key for e in kv.get_prefix("/rackforge/")])


def snapshot(kv):
    return [(e.key, e.value, e.mod_revision) for e in kv.get_prefix("/rackforge/")]


def race(count, work):
    """Run ``work(i)`` in ``count`` threads released together; returns {i: result}."""
    barrier, out = threading.Barrier(count), {}

    def run(i):
        barrier.wait()
        try:
            out[i] = work(i)
        except Exception as e:  # compared below
            out[i] = e
    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


@pytest.mark.parametrize("joiners,controllers", [(12, 3), (48, 3), (12, 5)])
def test_concurrent_joins_elect_exactly_n_controllers(kv, etcd_url, joiners, controllers):
    policy = RolePolicy(controllers=controllers)

    def join(i):
        election = RoleElection(EtcdKV(etcd_url), policy)
        return election.decide("node-%02d" % i, storage=i % 3 == 0)
    first = race(joiners, join)
    assert not [d for d in first.values() if isinstance(d, Exception)], first
    chosen = sorted(d.node for d in first.values() if d.role == "controller")
    assert len(chosen) == controllers
    election = RoleElection(kv, policy)
    assert sorted(election.controllers()) == chosen
    assert sorted(d.slot for d in first.values() if d.role == "controller") == \
        list(range(controllers))
    # everyone asks again, concurrently: the same answers, nothing written
    before = snapshot(kv)
    again = race(joiners, join)
    assert {i: (d.role, d.storage) for i, d in again.items()} == \
        {i: (d.role, d.storage) for i, d in first.items()}
    assert snapshot(kv) == before


def _process_join(url, i, barrier, queue):
    barrier.wait()
    d = RoleElection(EtcdKV(url), RolePolicy(3)).decide("proc-%02d" % i)
    queue.put((i, d.role))


def test_concurrent_joins_from_processes(kv, etcd_url):
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(12), ctx.Queue()
    procs = [ctx.Process(target=_process_join, args=(etcd_url, i, barrier, queue))
             for i in range(12)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert sorted(results.values()).count("controller") == 3
    assert len(RoleElection(kv).controllers()) == 3


def test_pinned_controller_refused_when_full_writes_nothing(kv):
    election = RoleElection(kv)
    for i in range(3):
        election.decide("n%d" % i)
    before = snapshot(kv)
    with pytest.raises(roles.ControllerPinRefused):
        election.decide("late", pin="controller")
    assert snapshot(kv) == before


def test_role_recorded_in_the_node_record(kv):
    reg = registry.NodeRegistry(kv)
    node = reg.create_node(registry.Node(name="r1n1"))
    roles.record_role(reg, node.id, RoleElection(kv).decide(node.id, storage=True))
    assert reg.find_node("r1n1").role == "controller,storage"


def test_token_use_limit_under_concurrency(kv, etcd_url):
    token, record = tokens.TokenStore(kv).create(uses=5)
    out = race(20, lambda i: tokens.TokenStore(EtcdKV(etcd_url)).redeem(token, "n%d" % i))
    ok = [r for r in out.values() if isinstance(r, tokens.TokenRecord)]
    refused = [r for r in out.values() if isinstance(r, tokens.TokenUsedUp)]
    assert (len(ok), len(refused)) == (5, 15), out
    stored = json.loads(kv.get(tokens.PREFIX + record.id).value)
    assert stored["used"] == 5 and len(set(stored["used_by"])) == 5
    assert token.split(".")[1] not in json.dumps(stored)


def test_same_node_retrying_concurrently_spends_one_use(kv, etcd_url):
    token, record = tokens.TokenStore(kv).create(uses=1)
    out = race(8, lambda i: tokens.TokenStore(EtcdKV(etcd_url)).redeem(token, "r1n5"))
    assert all(isinstance(r, tokens.TokenRecord) for r in out.values()), out
    assert tokens.TokenStore(kv).get(record.id).used_by == ["r1n5"]


def test_expired_wrong_and_used_up_tokens_write_nothing(kv):
    now = [1_700_000_000.0]
    store = tokens.TokenStore(kv, clock=lambda: now[0])
    token, _ = store.create(ttl=600, uses=1)
    store.redeem(token, "first")
    other, _ = store.create(ttl=600)
    before = snapshot(kv)
    with pytest.raises(tokens.TokenUsedUp):
        store.redeem(token, "second")
    with pytest.raises(tokens.TokenRefused):
        store.redeem(other.split(".")[0] + ".0000000000000000", "second")
    now[0] += 600
    with pytest.raises(tokens.TokenExpired):
        store.redeem(other, "second")
    assert snapshot(kv) == before


def test_cli_against_etcd(kv, etcd_url, tmp_path):
    """The operator's commands end to end: CA, token create/list, redeem, node list."""
    import os

    from harness import rackforge

    env = dict(os.environ, RACKFORGE_STATE=str(tmp_path / "state"), RACKFORGE_ETCD=etcd_url)
    assert rackforge("cluster", "ca", "init", env=env).returncode == 0
    res = rackforge("cluster", "token", "create", "--uses", "1", "--json",
                    "--endpoint", "https://127.0.0.1:9443", env=env)
    assert res.returncode == 0, res.stderr
    bundle = json.loads(res.stdout)
    tokens.TokenStore(kv).redeem(bundle["token"], "r1n1")
    res = rackforge("cluster", "token", "list", "--json", env=env)
    listed = json.loads(res.stdout)
    assert listed[0]["state"] == "used up" and bundle["token"][7:] not in res.stdout
    reg = registry.NodeRegistry(kv)
    node = lifecycle.create(reg, "active", name="r1n1")
    roles.record_role(reg, node.id, RoleElection(kv).decide(node.id))
    res = rackforge("node", "list", "--json", env=env)
    assert res.returncode == 0, res.stderr
    assert [(n["name"], n["role"], n["state"]) for n in json.loads(res.stdout)] == \
        [("r1n1", "controller", "active")]
    res = rackforge("node", "show", "r1n2", env=env)
    assert res.returncode == 2 and res.stderr.count("\n") == 1
