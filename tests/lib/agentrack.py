"""A recorded rack for the node agent's unit tests: three controllers and a compute node in
an in-memory registry, each with its own key and certificate, and the cluster record."""

import json

import lifecycle

from rackforge import keys, registry
from rackforge.cluster import ca, roles


def make(tmp_path, count=4, vip="10.0.0.100"):
    """``(registry, {name: (node, private key)})``: the first three are controllers."""
    reg = registry.MemoryRegistry()
    election = roles.RoleElection(reg.kv)
    authority = ca.CertificateAuthority.init(tmp_path / "ca")
    nodes = {}
    for i in range(1, count + 1):
        add(reg, election, authority, nodes, "n%d" % i, "10.0.0.%d" % (10 + i))
    record = {"name": "rack1"}
    if vip:
        record["vip"] = vip
    reg.kv.txn([], [(keys.CLUSTER, json.dumps(record).encode())])
    reg.authority = authority
    return reg, nodes


def add(reg, election, authority, nodes, name, address):
    key_pem = ca.new_key_pem()
    node = lifecycle.create(reg, "active", name=name, boot={"addresses": [address]})
    cert, _ = ca.certify_here(authority, name, [address], ca.NODE, key_pem=key_pem)
    reg.kv.txn([], [(keys.NODE_CERTS + node.id, cert)])
    roles.record_role(reg, node.id, election.decide(node.id))
    nodes[name] = (node, ca.load_key(key_pem))
    return node
