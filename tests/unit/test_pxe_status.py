"""``pxe status`` reads the boot records from the registry as the node's other commands
reach it: on a cluster node, through its client file's TLS, not the bare URL the boot
server wrote in its status file (the virtual rack's seed showed no boots that way)."""

import json
from types import SimpleNamespace

import pytest

from rackforge import kvstore, registry
from rackforge.pxe import cli as pxe_cli
from rackforge.pxe import service

STATUS = {"serving": True, "etcd": "https://10.213.88.10:2379", "pid": 1}
TLS = {"ca_cert": "/etc/rackforge/etcd/ca.crt", "cert": "/x/node.crt", "key": "/x/node.key"}


@pytest.fixture
def reached(monkeypatch):
    """Each registry.connect call's (endpoint, tls), answered by a memory registry
    holding one boot record."""
    calls, reg = [], registry.MemoryRegistry()
    reg.record_boot("52:54:00:5a:00:02", decision="install", platform="pcbios")
    monkeypatch.setattr(registry, "connect", lambda endpoint=None, **tls: (
        calls.append((endpoint, tls)), reg)[1])
    monkeypatch.setattr(service, "read_status", lambda: dict(STATUS))
    monkeypatch.delenv("RACKFORGE_ETCD", raising=False)
    return calls


def status(capsys, etcd=None):
    rc = pxe_cli.cmd_status(SimpleNamespace(etcd=etcd, json=True))
    return rc, json.loads(capsys.readouterr().out)


def test_a_cluster_node_uses_its_client_file_not_the_servers_bare_url(
        reached, monkeypatch, capsys):
    monkeypatch.setattr(kvstore, "read_client", lambda path=None: (
        ["https://10.213.88.10:2379"], TLS))
    rc, out = status(capsys)
    assert rc == 0 and reached == [(None, {})]          # connect() reads the client file
    assert [b["mac"] for b in out["boots"]] == ["52:54:00:5a:00:02"]
    assert out["registry_error"] is None


def test_without_a_client_file_the_servers_endpoint_is_used(reached, monkeypatch, capsys):
    monkeypatch.setattr(kvstore, "read_client", lambda path=None: None)
    status(capsys)
    assert reached == [("https://10.213.88.10:2379", {})]


def test_etcd_given_wins(reached, monkeypatch, capsys):
    monkeypatch.setattr(kvstore, "read_client", lambda path=None: (["https://a:2379"], TLS))
    status(capsys, etcd="http://127.0.0.1:2379")
    assert reached == [("http://127.0.0.1:2379", {})]
