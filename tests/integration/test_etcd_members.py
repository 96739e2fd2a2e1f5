"""The controllers' etcd cluster, for real: TLS, a seed, and two controllers joining at once.

Three etcd 3.4 processes on 127.0.0.21-23 (loopback), each started from the
environment file :mod:`rackforge.cluster.etcd` writes (the same file
``rackforge-etcd.service`` reads), with certificates from a cluster CA.  The
seed starts a one-member cluster; two controllers join together as
learners (etcd admits one at a time, so one waits) and promote themselves.
Then: three voting members, a client without a CA certificate is refused,
a repeated join adds nothing, and the cluster keeps writing with one
member killed.
"""

import subprocess
import threading

import pytest

from rackforge import registry
from rackforge.cluster import ca, etcd, status
from rackforge.etcdkv import EtcdKV
from rackforge.kvstore import RegistryRejected, RegistryUnavailable
from rackforge.proc import stop_process

pytestmark = pytest.mark.integration

ADDRESSES = {"n1": "127.0.0.21", "n2": "127.0.0.22", "n3": "127.0.0.23"}


def env_from(path):
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


class Node:
    """One controller's files and its etcd process (what systemd would start)."""

    def __init__(self, name, tmp_path, authority):
        self.name, self.address = name, ADDRESSES[name]
        base = tmp_path / name
        self.layout = etcd.Layout(config_dir=base / "etc", data_dir=base / "data")
        # etcd checks a peer's certificate against the address it connects from, and
        # on loopback that is 127.0.0.1 whatever the 127.0.0.x dialled (on a real
        # network each node connects from its own address)
        cert, key = ca.certify_here(authority, name, [self.address, "127.0.0.1"],
                                    ca.CONTROLLER)
        self.pems = (authority.cert_pem, cert, key)
        pki = base / "pki"
        pki.mkdir(parents=True)
        for fname, data in zip(("ca.crt", "node.crt", "node.key"), self.pems):
            (pki / fname).write_bytes(data)
        self.tls = {"ca_cert": str(pki / "ca.crt"), "cert": str(pki / "node.crt"),
                    "key": str(pki / "node.key")}
        self.log = base / "etcd.log"
        self.proc = None
        self.starts = 0

    def start_unit(self):
        self.starts += 1
        if self.proc is not None and self.proc.poll() is None:
            return                               # systemctl start of a running unit
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(["etcd"], env=env_from(self.layout.env_file),
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)

    def starter(self):
        return etcd.Starter(self.layout, start_unit=self.start_unit)

    def kv(self, endpoints, timeout=5):
        return EtcdKV(endpoints, timeout=timeout, **self.tls)

    def stop(self, kill=False):
        if self.proc is not None:
            if kill:
                self.proc.kill()
                self.proc.wait()
            else:
                stop_process(self.proc, timeout=15)


@pytest.fixture
def nodes(tmp_path):
    authority = ca.CertificateAuthority.init(tmp_path / "ca", cluster="rack1")
    made = {n: Node(n, tmp_path, authority) for n in ADDRESSES}
    yield made
    for node in made.values():
        node.stop()


def seed(nodes):
    n1 = nodes["n1"]
    return etcd.start_seed("n1", n1.address, "rack1", n1.pems, n1.starter(),
                           lambda eps: registry.NodeRegistry(n1.kv(eps)))


def test_seed_and_two_simultaneous_controllers_form_three_voting_members(nodes):
    endpoints = seed(nodes)
    assert endpoints == ["https://127.0.0.21:2379"]
    env = env_from(nodes["n1"].layout.env_file)
    assert env["ETCD_CLIENT_CERT_AUTH"] == "true" and env["ETCD_INITIAL_CLUSTER_STATE"] == "new"
    assert (nodes["n1"].layout.config_dir / "server.key").stat().st_mode & 0o007 == 0

    results, errors = {}, []

    def join(name):
        node = nodes[name]
        try:
            results[name] = etcd.join_member(name, node.address, "rack1", node.pems,
                                             endpoints, node.kv(endpoints), node.starter())
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append("%s: %s" % (name, exc))

    threads = [threading.Thread(target=join, args=(n,)) for n in ("n2", "n3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert errors == []
    members = nodes["n1"].kv(endpoints).members()
    assert sorted(m["name"] for m in members) == ["n1", "n2", "n3"]
    assert not any(m.get("isLearner") for m in members)
    all_eps = [etcd.client_url(a) for a in ADDRESSES.values()]
    for name in ("n2", "n3"):
        # its own endpoint first, then the voting members it saw (the other joiner
        # only if that one was promoted first)
        assert results[name][0] == etcd.client_url(ADDRESSES[name])
        assert "https://127.0.0.21:2379" in results[name]
        assert set(results[name]) <= set(all_eps)
    env3 = env_from(nodes["n3"].layout.env_file)
    assert env3["ETCD_INITIAL_CLUSTER_STATE"] == "existing"
    assert "n1=https://127.0.0.21:2380" in env3["ETCD_INITIAL_CLUSTER"]

    # a write through one member is read through another
    reg2 = registry.NodeRegistry(nodes["n2"].kv(["https://127.0.0.22:2379"]))
    reg2.create_node(registry.Node(name="probe", macs=["52:54:00:aa:00:01"]))
    reg3 = registry.NodeRegistry(nodes["n3"].kv(["https://127.0.0.23:2379"]))
    assert reg3.find_node("probe").macs == ["52:54:00:aa:00:01"]

    # TLS is required: a client without a certificate from the CA is refused (etcd
    # answers with an alert or just closes the handshake: both end the call, with TLS
    # named in the line)
    anonymous = EtcdKV(["https://127.0.0.21:2379", "https://127.0.0.22:2379"], timeout=5,
                       ca_cert=nodes["n1"].tls["ca_cert"])
    # (.21 may close the handshake, and .22 be the one whose alert ends the call)
    with pytest.raises((RegistryRejected, RegistryUnavailable),
                       match=r"127\.0\.0\.2[12].*TLS"):
        anonymous.get("/rackforge/cluster")
    # a member whose certificate is not from the pinned CA is refused at once and for
    # good: no other member will think otherwise
    stranger = ca.CertificateAuthority.init(nodes["n1"].layout.config_dir.parent / "other")
    (nodes["n1"].layout.config_dir.parent / "other.crt").write_bytes(stranger.cert_pem)
    wrong_ca = EtcdKV(["https://127.0.0.21:2379", "https://127.0.0.22:2379"], timeout=5,
                      ca_cert=str(nodes["n1"].layout.config_dir.parent / "other.crt"),
                      cert=nodes["n1"].tls["cert"], key=nodes["n1"].tls["key"])
    with pytest.raises(RegistryRejected, match="127.0.0.21.*TLS.*certificate verify failed"):
        wrong_ca.get("/rackforge/cluster")

    # the join again (a power cut after it): nothing added, the unit started again
    again = etcd.join_member("n2", nodes["n2"].address, "rack1", nodes["n2"].pems, all_eps,
                             nodes["n2"].kv(all_eps), nodes["n2"].starter())
    assert again[0] == "https://127.0.0.22:2379" and sorted(again) == sorted(all_eps)
    assert len(nodes["n1"].kv(all_eps).members()) == 3

    # cluster status: three members, one leader, compaction and a quota configured
    reg_all = registry.NodeRegistry(nodes["n2"].kv(all_eps))
    found = status.collect(reg_all, etcd.QUOTA_BYTES)
    assert found.problems == [], found.problems
    assert sorted(m["name"] for m in found.members if m["reachable"]) == ["n1", "n2", "n3"]
    assert sum(m["leader"] for m in found.members) == 1
    assert env_from(nodes["n1"].layout.env_file)["ETCD_AUTO_COMPACTION_MODE"] == "periodic"
    # a back end near its quota is reported before etcd turns read-only
    small = status.collect(reg_all, quota=found.members[0]["db_bytes"])
    assert [p for p in small.problems if "MiB quota" in p and "defragment" in p]

    # one controller lost: the other two still have a quorum, and a client with all
    # three endpoints goes on to the next when the first refuses the connection
    nodes["n1"].stop(kill=True)
    # (the survivors elect a leader first: etcd's election timeout is 1 s)
    failover = registry.NodeRegistry(nodes["n2"].kv(all_eps, timeout=30))
    failover.create_node(registry.Node(name="after-loss", macs=["52:54:00:aa:00:02"]))
    assert reg3.find_node("after-loss").name == "after-loss"
    lost = status.collect(failover, etcd.QUOTA_BYTES)
    assert [p for p in lost.problems if "n1 does not answer" in p]
    assert not [p for p in lost.problems if "lost its quorum" in p]
