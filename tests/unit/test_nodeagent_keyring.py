"""The agent's secrets: generated once per cluster, sealed for the nodes of their reader
roles, granted to a reader that comes later, never in clear in etcd."""

import agentrack
import pytest

from rackforge import keys
from rackforge.cluster import roles
from rackforge.nodeagent import catalogue, hooks, keyring


@pytest.fixture
def rack(tmp_path):
    return agentrack.make(tmp_path, count=4)


def ring(reg, nodes, name):
    cat = catalogue.load(**hooks.names())
    node, key = nodes[name]
    return keyring.Keyring(reg.kv, node.id, key, cat.secrets)


def test_created_once_by_a_controller_read_by_its_readers_never_in_clear(rack):
    reg, nodes = rack
    first = ring(reg, nodes, "n1").reconcile()
    # no node has disks here: the storage role's readers are the controllers
    known = {"mariadb-sst": 3, "rabbitmq-cookie": 3, "rabbitmq-openstack": 4,
             "keepalived-auth": 3, "ceph-fsid": 4, "ceph-mon-key": 3, "ceph-admin-key": 3,
             "ceph-bootstrap-osd-key": 3, "ceph-glance-key": 3, "ceph-cinder-key": 4,
             "ceph-nova-key": 4, "ceph-libvirt-nova": 4, "ceph-libvirt-cinder": 4,
             "admin-password": 3, "nova-keystone": 4, "metadata-secret": 4,
             "keystone-fernet": 3, "horizon-secret": 3}
    made = dict(line.rsplit(" for ", 1) for line in first)
    assert {name.split()[-1]: int(count.split()[0]) for name, count in made.items()} == \
        {name: known.get(name, 3) for name in catalogue.load(**hooks.names()).secrets}
    assert ring(reg, nodes, "n2").reconcile() == []        # the same secrets, not again
    values = ring(reg, nodes, "n2").values(["mariadb-sst", "rabbitmq-cookie"])
    assert values == ring(reg, nodes, "n1").values(["mariadb-sst", "rabbitmq-cookie"])
    assert len(values["rabbitmq-cookie"]) == 32 and values["rabbitmq-cookie"].isupper()
    raw = b"".join(e.value for e in reg.kv.get_prefix(keys.SECRETS))
    for value in values.values():
        assert value.encode() not in raw
    # a compute node reads the broker password its services need, not the controllers'
    compute = ring(reg, nodes, "n4").values(["rabbitmq-openstack", "mariadb-sst"])
    assert list(compute) == ["rabbitmq-openstack"]


def test_a_compute_node_creates_nothing(rack):
    reg, nodes = rack
    assert ring(reg, nodes, "n4").reconcile() == []
    assert reg.kv.get_prefix(keys.SECRETS) == []


def test_a_controller_that_comes_later_is_granted_the_same_values(rack):
    reg, nodes = rack
    ring(reg, nodes, "n1").reconcile()
    before = ring(reg, nodes, "n1").values(["mariadb-sst"])
    # node 2's decision moves to controller after the secrets were made: a replacement
    late = agentrack.add(reg, roles.RoleElection(reg.kv, roles.RolePolicy(5)),
                         reg.authority, nodes, "n9", "10.0.0.99")
    assert roles.RoleElection(reg.kv).current(late.id).role == "controller"
    assert ring(reg, nodes, "n9").values(["mariadb-sst"]) == {}
    granted = ring(reg, nodes, "n2").reconcile()
    assert any("granted secret mariadb-sst to %s" % late.id in g for g in granted)
    assert ring(reg, nodes, "n9").values(["mariadb-sst"]) == before


def test_rotation_seals_a_new_value_for_the_readers_of_now(rack):
    reg, nodes = rack
    cat = catalogue.load(**hooks.names())
    ring(reg, nodes, "n1").reconcile()
    before = ring(reg, nodes, "n2").values(["rabbitmq-openstack"])
    info = keyring.rotate(reg.kv, cat.secrets, "rabbitmq-openstack")
    assert info["version"] == 2 and len(info["readers"]) == 4
    after = ring(reg, nodes, "n4").values(["rabbitmq-openstack"])
    assert after == ring(reg, nodes, "n1").values(["rabbitmq-openstack"])
    assert after != before and len(after["rabbitmq-openstack"]) >= 24
    values, versions = ring(reg, nodes, "n1").read(["rabbitmq-openstack", "mariadb-sst"])
    assert versions == {"rabbitmq-openstack": 2, "mariadb-sst": 1}
    assert values["rabbitmq-openstack"] == after["rabbitmq-openstack"]
    raw = b"".join(e.value for e in reg.kv.get_prefix(keys.SECRETS))
    assert after["rabbitmq-openstack"].encode() not in raw


def test_rotation_refuses_the_cookie_an_unknown_name_and_a_secret_not_made(rack):
    reg, nodes = rack
    cat = catalogue.load(**hooks.names())
    with pytest.raises(keyring.NotCreated, match="nothing to rotate"):
        keyring.rotate(reg.kv, cat.secrets, "mariadb-sst")
    ring(reg, nodes, "n1").reconcile()
    with pytest.raises(keyring.CannotRotate, match="every node of the broker stopped"):
        keyring.rotate(reg.kv, cat.secrets, "rabbitmq-cookie")
    with pytest.raises(keyring.UnknownSecret, match="the cluster's secrets are: "
                       "admin-password, ceph-admin-key, .*, keepalived-auth, .*mariadb-sst"):
        keyring.rotate(reg.kv, cat.secrets, "mariadb-root")
    assert ring(reg, nodes, "n1").read(["rabbitmq-cookie"])[1] == {"rabbitmq-cookie": 1}
