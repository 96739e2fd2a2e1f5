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


class Members:
    """A connection that lists etcd's members and takes new endpoints."""

    def __init__(self, members):
        self.list, self.endpoints = members, None

    def members(self):
        return self.list

    def set_endpoints(self, urls):
        self.endpoints = urls


def member(name, ip, learner=False):
    return {"name": name, "clientURLs": ["https://%s:2379" % ip], "isLearner": learner}


def test_a_node_follows_etcd_s_members_so_the_seed_leaving_never_strands_it(tmp_path):
    """A compute node joined while the seed was etcd's only member: it knew the seed
    alone.  Once the other controllers are members, its client file, its node file and
    its live connections list them, so it reaches etcd after the seed left."""
    from rackforge.kvstore import read_client, write_client
    import json

    client, node = tmp_path / "client.json", tmp_path / "node.json"
    tls = {"ca_cert": "/ca.crt", "cert": "/n.crt", "key": "/n.key"}
    write_client(["https://10.0.0.11:2379"], tls, client)
    node.write_text(json.dumps({"node_id": "n4", "etcd_endpoints":
                                ["https://10.0.0.11:2379"]}))
    node.chmod(0o600)
    ask = Members([member("node1", "10.0.0.11"), member("node2", "10.0.0.12"),
                   member("node3", "10.0.0.13", learner=True), {"name": "",
                   "clientURLs": []}])                    # a learner, one not started
    other = Members([])
    urls = daemon.follow_members([ask, other], node, client)
    want = ["https://10.0.0.11:2379", "https://10.0.0.12:2379"]
    assert urls == want and read_client(client) == (want, tls)
    assert json.loads(node.read_text()) == {"node_id": "n4", "etcd_endpoints": want}
    assert node.stat().st_mode & 0o777 == 0o600
    assert ask.endpoints == other.endpoints == want
    # a controller's own member (the one it used first) stays first
    write_client(["https://10.0.0.12:2379"], tls, client)
    assert daemon.follow_members([ask], node, client) == want[::-1]
    # the same members in another order: nothing written
    ask.list.reverse()
    before = client.stat().st_mtime_ns
    assert daemon.follow_members([ask], node, client) is None
    assert client.stat().st_mtime_ns == before
    # the seed left: the others only
    ask.list = [member("node2", "10.0.0.12"), member("node3", "10.0.0.13")]
    assert daemon.follow_members([ask], node, client) == ["https://10.0.0.12:2379",
                                                          "https://10.0.0.13:2379"]
    # no answer about members (none listed): what it knew stays
    ask.list = []
    assert daemon.follow_members([ask], node, client) is None
    assert read_client(client)[0] == ["https://10.0.0.12:2379", "https://10.0.0.13:2379"]
