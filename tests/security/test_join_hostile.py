"""The join service against a hostile provisioning network (real etcd and HTTPS, loopback).

Each case is a probe that once succeeded (issue "Hardening"), replayed
against the real service: a token holder taking over a node, getting a
certificate for the join endpoint's address, reusing a spent token under a
look-alike name, leaving half-written state behind a refused join, and
requests that used to close the connection without an answer.
"""

import http.client
import json
import ssl
import time

import pytest
from etcd import etcd_server

from rackforge import keys, registry
from rackforge.cluster import ca, join, joinclient, joinserver, tokens
from rackforge.etcdkv import EtcdKV

pytestmark = pytest.mark.integration

SERVER = "127.0.0.1"


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
    with joinserver.JoinServer(service, SERVER, 0, cert_dir=tmp_path / "srv") as server:
        kv.txn([], [(keys.CLUSTER, json.dumps({"join_endpoints": [server.endpoint]}).encode())])
        yield reg, authority, server
    kv.txn([], (), [e.key for e in kv.get_prefix("/rackforge/")])


def snapshot(kv):
    return [(e.key, e.value, e.mod_revision) for e in kv.get_prefix("/rackforge/")]


def inventory(mac):
    return {"interfaces": [{"name": "eth0", "mac": mac, "kind": "physical"}]}


def join_as(server, token, pin, name, source, mac, key_pem=None, **kw):
    csr, key_pem = ca.make_csr(name, key_pem)
    return joinclient.join([server.endpoint], token, pin, name, csr, inventory=inventory(mac),
                           source=source, **kw), key_pem


def raw_post(server, authority, body, headers=None, source="127.0.0.40"):
    """A hand-made POST /join; returns (status, decoded answer)."""
    context = ssl.create_default_context(cadata=authority.cert_pem.decode())
    conn = http.client.HTTPSConnection(server.host, server.port, context=context, timeout=10,
                                       source_address=(source, 0))
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json", "Content-Length": str(len(data))}
    hdrs.update(headers or {})
    try:
        conn.putrequest("POST", "/join")
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.endheaders()
        conn.send(data)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def good_body(name="probe", key_pem=None):
    csr, _ = ca.make_csr(name, key_pem)
    return {"name": name, "csr": csr.decode(), "inventory": inventory("52:54:00:66:00:01")}


# -- severe 1: a token admits a new node only --------------------------------------------
@pytest.mark.parametrize("how", ["name", "mac", "address"])
def test_a_token_cannot_take_over_a_registered_node(rack, how):
    reg, authority, server = rack
    store = tokens.TokenStore(reg.kv)
    victim, _ = join_as(server, store.create()[0], authority.pin, "ctl1", "127.0.0.11",
                        "52:54:00:00:00:01")
    assert victim["role"] == "controller"
    token, _ = store.create()
    before = snapshot(reg.kv)
    name, source, mac = "thief", "127.0.0.12", "52:54:00:00:00:02"
    if how == "name":
        name = "ctl1"
    elif how == "mac":
        mac = "52:54:00:00:00:01"
    else:
        source = "127.0.0.11"
    with pytest.raises(join.JoinRefused, match="belongs to node ctl1 already"):
        join_as(server, token, authority.pin, name, source, mac)
    assert snapshot(reg.kv) == before            # nothing written, no use spent


def test_the_same_node_resuming_is_proved_by_its_key(rack):
    reg, authority, server = rack
    token, _ = tokens.TokenStore(reg.kv).create()
    first, key = join_as(server, token, authority.pin, "n1", "127.0.0.13", "52:54:00:00:00:03")
    again, _ = join_as(server, token, authority.pin, "n1", "127.0.0.13", "52:54:00:00:00:03",
                       key_pem=key)
    assert again["node_id"] == first["node_id"]
    assert tokens.TokenStore(reg.kv).get(token.split(".")[0]).used == 1


# -- severe 2: certificates carry what the cluster decided ----------------------------
def test_a_joiner_cannot_get_a_certificate_for_the_join_endpoints_address(rack):
    reg, authority, server = rack
    token, _ = tokens.TokenStore(reg.kv).create()
    before = snapshot(reg.kv)
    body = dict(good_body("mallory"), addresses=[SERVER])
    status, answer = raw_post(server, authority, body,
                              {"Authorization": "Bearer " + token}, source="127.0.0.41")
    assert status == 400 and "address this request comes from" in answer["error"]
    # ... nor by connecting from it
    status, answer = raw_post(server, authority, good_body("mallory"),
                              {"Authorization": "Bearer " + token}, source=SERVER)
    assert status == 409 and "join endpoint" in answer["error"]
    assert snapshot(reg.kv) == before


def test_a_node_certificate_is_for_its_name_and_address_and_is_no_join_service(rack):
    from cryptography import x509

    reg, authority, server = rack
    token, _ = tokens.TokenStore(reg.kv).create(uses=4)
    answers = [join_as(server, token, authority.pin, "n%d" % i, "127.0.0.%d" % (20 + i),
                       "52:54:00:00:01:%02x" % i)[0] for i in range(1, 5)]
    for i, a in enumerate(answers, 1):
        cert = x509.load_pem_x509_certificate(a["certificate"].encode())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["n%d" % i]
        assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == [
            "127.0.0.%d" % (20 + i)]
        assert not ca.has_usage(a["certificate"].encode(), ca.JOIN_SERVICE)
        assert ca.has_usage(a["certificate"].encode(),
                            ca.CONTROLLER if a["role"] == "controller" else ca.NODE)
    assert [a["role"] for a in answers].count("controller") == 3


def test_the_client_refuses_an_endpoint_whose_certificate_is_not_a_join_services(
        rack, tmp_path):
    """A token holder with a valid node certificate serves 'joins' on the network: the
    honest client checks the usage and never sends it the token."""
    import socket
    import threading

    reg, authority, server = rack
    cert, key = ca.certify_here(authority, "evil", ["127.0.0.50"], ca.CONTROLLER)
    (tmp_path / "evil.crt").write_bytes(cert + authority.cert_pem)
    (tmp_path / "evil.key").write_bytes(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "evil.crt", tmp_path / "evil.key")
    listener = socket.create_server(("127.0.0.50", 0))
    port = listener.getsockname()[1]
    received = []

    def serve():
        for _ in range(2):          # GET /ca, then the checked connection
            conn, _ = listener.accept()
            try:
                tls = context.wrap_socket(conn, server_side=True)
                data = tls.recv(65536)
                received.append(data)
                if data.startswith(b"GET /ca"):
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"
                                % len(authority.cert_pem) + authority.cert_pem)
                tls.close()
            except (OSError, ssl.SSLError):
                pass
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    token, _ = tokens.TokenStore(reg.kv).create()
    csr, _ = ca.make_csr("victim")
    with pytest.raises(join.JoinError, match="not issued to a join service"):
        joinclient.join_one("https://127.0.0.50:%d" % port, token, authority.pin, "victim",
                            csr, timeout=5)
    t.join(timeout=10)
    listener.close()
    assert not any(token.encode() in r for r in received)


# -- severe 3: a spent token under a look-alike name ----------------------------------
@pytest.mark.parametrize("name", ["n1\n", "n1 ", " n1", "N1", "n\u04281", "n1\x00"])
def test_a_used_up_token_is_not_accepted_again_under_a_look_alike_name(rack, name):
    reg, authority, server = rack
    token, _ = tokens.TokenStore(reg.kv).create(uses=1)
    join_as(server, token, authority.pin, "n1", "127.0.0.14", "52:54:00:00:00:04")
    before = snapshot(reg.kv)
    csr, _ = ca.make_csr("n1")
    body = {"name": name, "csr": csr.decode(), "inventory": inventory("52:54:00:00:00:05")}
    status, answer = raw_post(server, authority, body, {"Authorization": "Bearer " + token})
    assert status == 400 and "'name' must be a node name" in answer["error"]
    assert snapshot(reg.kv) == before


# -- medium: validate first, refuse with a line, write nothing ------------------------
@pytest.mark.parametrize("body, status, words", [
    ({"name": "p1", "csr": 5}, 400, "'csr' must be"),
    ({"name": "p1", "csr": "x", "inventory": []}, 400, "'inventory' must be an object"),
    ({"name": "p1", "csr": "x", "addresses": "10.0.0.1"}, 400, "'addresses' must be a list"),
    ({"name": "p1", "csr": "x", "storage": "yes"}, 400, "'storage' must be true or false"),
    ({"name": "p1", "csr": "x", "role": "boss"}, 400, "'role' must be one of"),
    ({"name": "p1", "csr": "x", "colour": 1}, 400, "unknown field 'colour'"),
    ({"name": "p1"}, 400, "'csr' must be"),
    ({"name": "p1", "csr": "-----BEGIN CERTIFICATE REQUEST-----\nAA\n"}, 400,
     "not a PEM certificate request"),
    (["a list"], 400, "must be a JSON object"),
    (b"[" * 5000 + b"]" * 5000, 400, "not JSON of at most"),
    (b"{not json", 400, "not JSON"),
])
def test_every_bad_request_gets_a_4xx_line_and_spends_nothing(rack, body, status, words):
    reg, authority, server = rack
    token, _ = tokens.TokenStore(reg.kv).create()
    before = snapshot(reg.kv)
    got, answer = raw_post(server, authority, body, {"Authorization": "Bearer " + token})
    assert got == status and words in answer["error"] and "\n" not in answer["error"]
    assert snapshot(reg.kv) == before


def test_a_weak_csr_key_spends_nothing(rack):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    reg, authority, server = rack
    token, _ = tokens.TokenStore(reg.kv).create()
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    before = snapshot(reg.kv)
    status, answer = raw_post(server, authority, good_body("weak", weak),
                              {"Authorization": "Bearer " + token})
    assert status == 400 and "1024 bits" in answer["error"]
    assert snapshot(reg.kv) == before


@pytest.mark.parametrize("headers, status, words", [
    ({}, 403, "not in the form ID.SECRET"),
    ({"Authorization": "Bearer zzzzzz.0000000000000000"}, 403, "unknown token or wrong"),
    ({"Content-Length": "12abc"}, 400, "Content-Length must be a number"),
    ({"Content-Length": str(10 << 20)}, 400, "1 byte to 256 KiB"),
])
def test_headers_are_checked_before_the_body_is_read(rack, headers, status, words):
    reg, authority, server = rack
    token, _ = tokens.TokenStore(reg.kv).create()
    hdrs = {"Authorization": "Bearer " + token}
    hdrs.update(headers)
    if not headers:
        hdrs = {}
    start = time.monotonic()
    got, answer = raw_post(server, authority, b"{}", hdrs)
    assert got == status and words in answer["error"]
    assert time.monotonic() - start < 5        # answered without waiting for a body


def test_a_client_guessing_tokens_is_turned_away(rack):
    reg, authority, server = rack
    token, _ = tokens.TokenStore(reg.kv).create()
    for i in range(joinserver.REFUSALS_ALLOWED):
        got, _ = raw_post(server, authority, good_body("g"),
                          {"Authorization": "Bearer zzzzzz.%016d" % i}, source="127.0.0.60")
        assert got == 403
    got, answer = raw_post(server, authority, good_body("g"),
                           {"Authorization": "Bearer " + token}, source="127.0.0.60")
    assert got == 429 and "too many refused join tokens from 127.0.0.60" in answer["error"]
    # another address is not affected, and the valid token is still unspent
    got, _ = raw_post(server, authority, good_body("h"),
                      {"Authorization": "Bearer " + token}, source="127.0.0.61")
    assert got == 200
