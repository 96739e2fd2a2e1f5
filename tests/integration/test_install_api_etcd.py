"""The install API on the join service, against a real etcd on loopback, over HTTPS.

An enrolled node moved to ``installing`` asks ``/v1/install`` as its installer would
(pinned to the CA), reports ``installed``, then joins from its own loopback address with
the token it was given, through the real join client: ``installed -> joining``.  The
same token from another identity is refused and writes nothing; a second
``/v1/install`` call revokes the first token.  Not part of the unit run (real etcd).
"""

import http.client
import json
import ssl

import lifecycle
import pytest
from etcd import etcd_server

from rackforge import keys, registry
from rackforge.bringup import installapi
from rackforge.cluster import ca, join, joinclient, joinserver, tokens
from rackforge.etcdkv import EtcdKV

pytestmark = pytest.mark.integration

MAC, SERIAL = "52:54:00:00:00:31", "FAKE0031"


@pytest.fixture(scope="module")
def etcd_url(tmp_path_factory):
    with etcd_server(tmp_path_factory.mktemp("etcd")) as url:
        yield url


@pytest.fixture
def rack(etcd_url, tmp_path):
    kv = EtcdKV(etcd_url)
    kv.txn([], (), [e.key for e in kv.get_prefix("/rackforge/")])
    reg = registry.NodeRegistry(kv)
    authority = ca.CertificateAuthority.init(tmp_path / "ca", cluster="t")
    service = join.JoinService(reg, authority, etcd_endpoints=[etcd_url])
    install = installapi.InstallService(reg, authority.pin, service.join_endpoints)
    with joinserver.JoinServer(service, "127.0.0.1", 0, cert_dir=tmp_path / "srv",
                               install=install) as server:
        kv.txn([], [(keys.CLUSTER, json.dumps({"join_endpoints": [server.endpoint],
                                               "ca_sha256": authority.pin}).encode())])
        node = lifecycle.create(reg, "installing", name="r1n31", macs=[MAC],
                                bmc={"driver": "ipmi", "address": "10.0.0.31", "port": 623},
                                inventory={"serial": SERIAL, "macs": [MAC]})
        yield reg, authority, server, node
    kv.txn([], (), [e.key for e in kv.get_prefix("/rackforge/")])


def post(server, authority, path, body):
    context = ssl.create_default_context(cadata=authority.cert_pem.decode())
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=10)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def join_with(server, authority, token, name="r1n31", mac=MAC, serial=SERIAL,
              source="127.0.0.31"):
    csr, _ = ca.make_csr(name)
    inventory = {"interfaces": [{"name": "eth0", "mac": mac, "kind": "physical"}],
                 "system_vendor": {"serial_number": serial}}
    return joinclient.join([server.endpoint], token, authority.pin, name, csr,
                           inventory=inventory, source=source)


def snapshot(kv):
    return [(e.key, e.value, e.mod_revision) for e in kv.get_prefix("/rackforge/")]


def test_install_report_and_join_with_the_bound_token(rack):
    reg, authority, server, node = rack
    status, got = post(server, authority, "/v1/install",
                       {"node": node.id, "macs": [MAC], "serial": SERIAL})
    assert status == 200 and got["answer"]["hostname"] == "r1n31"
    token = got["answer"]["cluster"]["join"]["token"]
    assert got["answer"]["cluster"]["join"]["ca_sha256"] == authority.pin
    status, _ = post(server, authority, "/v1/install/report",
                     {"node": node.id, "report": got["report"], "result": "installed"})
    assert status == 200 and reg.get_node(node.id).state == "installed"
    before = snapshot(reg.kv)
    with pytest.raises(join.JoinRefused):
        join_with(server, authority, token, name="thief", mac="52:54:00:00:00:99",
                  source="127.0.0.32")
    assert snapshot(reg.kv) == before
    answer = join_with(server, authority, token)
    assert answer["node_id"] == node.id and reg.get_node(node.id).state == "joining"
    assert token.split(".")[1].encode() not in b"".join(
        e.value for e in reg.kv.get_prefix("/rackforge/"))


def test_a_second_call_revokes_the_first_token(rack):
    reg, authority, server, node = rack
    body = {"node": node.id, "macs": [MAC], "serial": SERIAL}
    first = post(server, authority, "/v1/install", body)[1]["answer"]["cluster"]["join"]
    second = post(server, authority, "/v1/install", body)[1]
    assert [e.key for e in reg.kv.get_prefix(keys.TOKENS)] == [
        keys.TOKENS + second["answer"]["cluster"]["join"]["token"].split(".")[0]]
    with pytest.raises(tokens.TokenNotFound):
        tokens.TokenStore(reg.kv).get(first["token"].split(".")[0])


def test_wrong_macs_are_403_and_nothing_is_written(rack):
    reg, authority, server, node = rack
    before = snapshot(reg.kv)
    status, got = post(server, authority, "/v1/install",
                       {"node": node.id, "macs": ["52:54:00:00:00:98"], "serial": SERIAL})
    assert status == 403 and got == {"error": str(installapi.InstallRefused())}
    assert snapshot(reg.kv) == before
