"""The join service on 127.0.0.1 against a real etcd on loopback.

Each joining node connects from its own loopback address (127.0.0.1x), as
machines on the management network do.  Five nodes join with one token
(three controllers exactly), a wrong token is refused and writes nothing, a
wrong pin stops the client before it sends a request body, a node joining
again after a crash (same key) stays one node, and a client tries the next
controller when one is down.  The hostile cases are in tests/security/.
"""

import threading

import pytest
from etcd import etcd_server

from rackforge import registry
from rackforge.cluster import ca, join, joinclient, joinserver, roles, tokens
from rackforge.etcdkv import EtcdKV

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def etcd_url(tmp_path_factory):
    with etcd_server(tmp_path_factory.mktemp("etcd")) as url:
        yield url


@pytest.fixture
def seed(etcd_url, tmp_path):
    kv = EtcdKV(etcd_url)
    kv.txn([], (), [e.key for e in kv.get_prefix("/rackforge/")])
    reg = registry.NodeRegistry(kv)
    authority = ca.CertificateAuthority.init(tmp_path / "ca", cluster="t")
    service = join.JoinService(reg, authority, etcd_endpoints=[etcd_url])
    with joinserver.JoinServer(service, "127.0.0.1", 0, cert_dir=tmp_path / "srv") as server:
        yield reg, authority, server
    kv.txn([], (), [e.key for e in kv.get_prefix("/rackforge/")])


def snapshot(kv):
    return [(e.key, e.value, e.mod_revision) for e in kv.get_prefix("/rackforge/")]


def inventory(i):
    return {"interfaces": [{"name": "eth0", "mac": "52:54:00:00:00:%02x" % i,
                            "kind": "physical"}]}


KEYS = {}


def address(i):
    return "127.0.0.%d" % (10 + i)


def do_join(server, token, pin, i, endpoints=None, **kw):
    """Node ``i`` joins from its own address with its own key (the same key again
    when it joins again, as a node resuming after a power cut does)."""
    key = KEYS.setdefault(i, ca.new_key_pem())
    csr, _ = ca.make_csr("node%d" % i, key)
    return joinclient.join(endpoints or [server.endpoint], token, pin, "node%d" % i, csr,
                           inventory=inventory(i), source=address(i), **kw)


def test_five_joins_one_token_three_controllers(seed):
    reg, authority, server = seed
    token, _ = tokens.TokenStore(reg.kv).create(uses=5)
    answers, failures = {}, []
    barrier = threading.Barrier(5)

    def worker(i):
        barrier.wait()
        try:
            answers[i] = do_join(server, token, authority.pin, i)
        except Exception as exc:         # noqa: BLE001 - reported below
            failures.append(exc)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(1, 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert failures == []
    assert sorted(a["role"] for a in answers.values()) == ["compute"] * 2 + ["controller"] * 3
    assert len({a["node_id"] for a in answers.values()}) == 5
    for i, a in answers.items():
        assert authority.verify(a["certificate"].encode())
        assert a["ca"] == authority.cert_pem.decode() and a["etcd_endpoints"]
        node = reg.get_node(a["node_id"])
        assert node.name == "node%d" % i and node.role == a["role"]
        assert node.boot["addresses"] == [address(i)] == [a["address"]]
        assert "key" not in a and "PRIVATE" not in str(a)
        assert node.macs == ["52:54:00:00:00:%02x" % i]
    assert len(roles.RoleElection(reg.kv).controllers()) == 3
    # the sixth node: the token is used up, nothing is written
    before = snapshot(reg.kv)
    with pytest.raises(join.JoinRefused, match="used"):
        do_join(server, token, authority.pin, 6)
    assert snapshot(reg.kv) == before


def test_wrong_token_refused_registry_unchanged(seed):
    reg, authority, server = seed
    token, _ = tokens.TokenStore(reg.kv).create()
    do_join(server, token, authority.pin, 1)
    before = snapshot(reg.kv)
    wrong = token.split(".")[0] + ".0000000000000000"
    with pytest.raises(join.JoinRefused) as e:
        do_join(server, wrong, authority.pin, 2)
    msg = str(e.value)
    assert "\n" not in msg and "refused" in msg and "0000000000000000" not in msg
    with pytest.raises(join.JoinRefused):
        do_join(server, "zzzzzz.0123456789abcdef", authority.pin, 3)
    assert snapshot(reg.kv) == before


def test_wrong_pin_refused_before_any_body(seed, tmp_path):
    reg, authority, server = seed
    token, _ = tokens.TokenStore(reg.kv).create()
    other = ca.CertificateAuthority.init(tmp_path / "other", cluster="evil")
    before = snapshot(reg.kv)
    posts = server.posts
    with pytest.raises(ca.CAPinMismatch):
        do_join(server, token, other.pin, 1)
    assert server.posts == posts          # no POST reached the server: the token never left
    assert snapshot(reg.kv) == before


def test_rejoin_after_crash_is_the_same_node(seed):
    reg, authority, server = seed
    token, _ = tokens.TokenStore(reg.kv).create(uses=2)
    first = do_join(server, token, authority.pin, 1, storage=True)
    # the node lost power before it stored the answer, and joins again
    second = do_join(server, token, authority.pin, 1, storage=True)
    assert second["node_id"] == first["node_id"] and second["role"] == first["role"]
    assert second["roles"] == ["controller", "storage"]
    assert [n.name for n in reg.list_nodes()] == ["node1"]
    assert tokens.TokenStore(reg.kv).get(token.split(".")[0]).used == 1
    # the one use left is still there for another node
    assert do_join(server, token, authority.pin, 2)["node_id"] != first["node_id"]


def test_a_silent_connection_does_not_hold_up_other_joins(seed):
    """A client that connects and never speaks TLS (a node that lost power mid-connect)."""
    import socket

    reg, authority, server = seed
    token, _ = tokens.TokenStore(reg.kv).create(uses=1)
    with socket.create_connection((server.host, server.port)) as silent:
        answer = do_join(server, token, authority.pin, 1, timeout=5)
        assert answer["role"] == "controller"
        silent.settimeout(joinserver.HANDSHAKE_TIMEOUT + 5)
        # the server gives up on it: the handshake times out and the socket is closed
        assert silent.recv(1) == b""


def test_the_client_goes_on_to_the_next_controller(seed, tmp_path):
    """A controller that is down (refused) or hung (accepts, never answers) costs its
    share; the join goes through the next one."""
    from gateway import closed_port, hung_socket

    reg, authority, server = seed
    token, _ = tokens.TokenStore(reg.kv).create()
    with hung_socket() as hung:
        endpoints = [closed_port().replace("http:", "https:"), hung.replace("http:", "https:"),
                     server.endpoint]
        answer = do_join(server, token, authority.pin, 1, endpoints=endpoints, timeout=3)
    assert answer["name"] == "node1"


def test_a_refusal_is_final_and_not_tried_elsewhere(seed):
    reg, authority, server = seed
    token, _ = tokens.TokenStore(reg.kv).create()
    posts = server.posts
    with pytest.raises(join.JoinRefused, match="refused"):
        do_join(server, token.split(".")[0] + ".0000000000000000", authority.pin, 1,
                endpoints=[server.endpoint, server.endpoint])
    assert server.posts == posts + 1
