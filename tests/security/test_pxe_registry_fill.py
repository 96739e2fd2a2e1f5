"""Filling the node registry from the boot network (issue "Hardening", severe 4), replayed.

The probe: ``GET /ipxe/node?mac=ANY&platform=<64 KB>`` wrote a record to etcd on
every request, unauthenticated.  Here the boot HTTP server runs on loopback
against a real etcd, and clients on distinct loopback addresses (127.0.x.y)
play one attacker or many.  Nothing needs root.
"""

import http.client
import urllib.parse

import pytest
from etcd import etcd_server

from rackforge import keys, registry
from rackforge.etcdkv import EtcdKV
from rackforge.pxe import bootrecords
from rackforge.pxe.bootscript import ScriptRenderer
from rackforge.pxe.http import BootHttpServer


@pytest.fixture(scope="module")
def etcd_url(tmp_path_factory):
    with etcd_server(tmp_path_factory.mktemp("etcd")) as url:
        yield url


@pytest.fixture
def served(etcd_url, tmp_path):
    kv = EtcdKV(etcd_url)
    clear(kv)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name in ("vmlinuz", "initrd", "rootfs.squashfs"):
        (bundle / name).write_bytes(b"x")
    (bundle / "boot.ipxe.j2").write_text("#!ipxe\nkernel {{ kernel_args }}\n")
    hostsdir = tmp_path / "hosts"
    hostsdir.mkdir()
    hosts = bootrecords.KnownHosts(hostsdir)
    reg = registry.NodeRegistry(kv)
    srv = BootHttpServer("127.0.0.1", 0, str(bundle), ScriptRenderer(bundle / "boot.ipxe.j2"),
                         reg, seed="127.0.0.1", cluster="t", on_boot=hosts.add)
    srv.start()
    srv.kv, srv.hostsdir = kv, hostsdir
    yield srv
    srv.stop()
    clear(kv)


def clear(kv):
    found = [e.key for e in kv.get_prefix("/rackforge/")]
    for i in range(0, len(found), 100):      # etcd takes at most 128 operations a transaction
        kv.txn([], (), found[i:i + 100])


def ask(srv, mac, platform="efi", source="127.0.0.1"):
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10,
                                      source_address=(source, 0))
    try:
        conn.request("GET", "/ipxe/node?" + urllib.parse.urlencode(
            {"mac": mac, "platform": platform}))
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def boot_bytes(kv):
    entries = kv.get_prefix(keys.BOOTS)
    return len(entries), sum(len(e.key) + len(e.value) for e in entries)


def test_a_64k_platform_writes_nothing(served):
    for i in range(20):
        status = ask(served, "52:54:00:12:34:%02x" % i, platform="A" * 60000,
                     source="127.0.3.%d" % (i + 1))
        assert status in (400, 414, 431)
    assert boot_bytes(served.kv) == (0, 0)
    assert list(served.hostsdir.iterdir()) == []


@pytest.mark.parametrize("mac", ["ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "00:00:00:00:00:00",
                                 "../../../etc/passwd", "52:54:00:12:34:56,set:x"])
def test_garbage_macs_write_nothing(served, mac):
    assert ask(served, mac) == 400
    assert boot_bytes(served.kv) == (0, 0)
    assert list(served.hostsdir.iterdir()) == []


def test_one_client_cannot_write_in_a_loop(served):
    statuses = [ask(served, "52:54:00:12:34:56") for _ in range(40)]
    assert statuses.count(200) == 10 and statuses.count(429) == 30
    (record,) = [b for b in registry.NodeRegistry(served.kv).list_boots()]
    assert record["count"] == 10


def test_many_addresses_many_macs_stay_bounded(served):
    cap = bootrecords.MAX_UNKNOWN
    for i in range(cap + 60):
        assert ask(served, "52:54:01:00:%02x:%02x" % divmod(i, 256),
                   source="127.1.%d.%d" % divmod(i + 1, 256)) == 200
    count, size = boot_bytes(served.kv)
    assert count == cap and size < cap * 256
    assert len(list(served.hostsdir.iterdir())) == cap
    # a node the operator knows still boots and is recorded, at the bound
    registry.NodeRegistry(served.kv).create_node(registry.Node(name="n1",
                                                               macs=["52:54:00:99:00:01"]))
    assert ask(served, "52:54:00:99:00:01", source="127.2.0.1") == 200
    assert boot_bytes(served.kv)[0] == cap + 1
    assert (served.hostsdir / "52-54-00-99-00-01").exists()
