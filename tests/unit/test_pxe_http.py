"""The boot HTTP server on loopback: per-node decisions, ranges, nothing else served."""

import hashlib
import http.client
import socket

import lifecycle
import pytest

from rackforge import registry, states
from rackforge.pxe import bootscript
from rackforge.pxe.http import BootHttpServer, parse_range

TEMPLATE = ("#!ipxe\nkernel {{ base_url }}/vmlinuz fetch={{ base_url }}/rootfs.squashfs "
            "{{ console }} {{ kernel_args }}\ninitrd {{ base_url }}/initrd\nboot\n")


@pytest.fixture
def bundle(tmp_path):
    d = tmp_path / "bundle"
    d.mkdir()
    (d / "vmlinuz").write_bytes(bytes(range(256)) * 4000)
    (d / "initrd").write_bytes(b"initrd")
    (d / "rootfs.squashfs").write_bytes(b"")
    (d / "boot.ipxe.j2").write_text(TEMPLATE)
    (tmp_path / "secret").write_text("not for clients")
    return d


@pytest.fixture
def server(bundle):
    reg = registry.MemoryRegistry()
    srv = BootHttpServer("127.0.0.1", 0, str(bundle),
                         bootscript.ScriptRenderer(bundle / "boot.ipxe.j2"), reg,
                         seed="10.0.0.1", cluster="c1")
    srv.start()
    yield srv
    srv.stop()


def get(server, path, headers=None, method="GET"):
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp, body


def node_script(server, mac):
    resp, body = get(server, "/ipxe/node?mac=%s&platform=efi" % mac)
    assert resp.status == 200
    return body.decode()


def test_unknown_mac_gets_discovery_and_is_counted(server):
    script = node_script(server, "52-54-00-00-00-01")
    assert "rackforge.mode=discover" in script
    assert "rackforge.seed=10.0.0.1" in script and "rackforge.cluster=c1" in script
    assert "/bundle/vmlinuz" in script
    node_script(server, "52-54-00-00-00-01")
    boot, = server.registry.list_boots()
    assert boot["count"] == 2 and boot["decision"] == "discover" and boot["platform"] == "efi"


@pytest.mark.parametrize("state, kind", [
    ("discovered", "discover"), ("enrolled", "discover"), ("live", "discover"),
    ("installing", "install"), ("installed", "local"), ("joining", "local"),
    ("active", "local"), ("maintenance", "local"), ("failed", "discover")])
def test_known_node_boot_follows_its_state(server, state, kind):
    """Every state, one boot: a node that reboots in the middle of its join (joining)
    boots its disk, not the installer; only ``installing`` installs."""
    assert set(states.STATES) == {"discovered", "enrolled", "live", "installing", "installed",
                                  "joining", "active", "maintenance", "failed"}
    node = lifecycle.create(server.registry, state, name="n1", macs=["52:54:00:00:00:02"])
    script = node_script(server, "52-54-00-00-00-02")
    if kind == "local":
        assert "sanboot" in script and "exit" in script and "vmlinuz" not in script
    else:
        assert "rackforge.mode=%s" % kind in script
        assert "rackforge.node=%s" % node.id in script


def test_no_secret_on_the_kernel_command_line(server):
    lifecycle.create(server.registry, "installing", name="n1", macs=["52:54:00:00:00:03"],
                     bmc={"password": "s3cr3t-token"})
    assert "s3cr3t" not in node_script(server, "52:54:00:00:00:03")


def test_bad_mac_is_400(server):
    resp, _ = get(server, "/ipxe/node?mac=../../etc")
    assert resp.status == 400


def test_chain_script_asks_by_mac(server):
    resp, body = get(server, "/boot.ipxe")
    assert resp.status == 200
    assert b"/ipxe/node?mac=${mac:hexhyp}" in body


@pytest.mark.parametrize("path", ["/", "/bundle/", "/bundle/boot.ipxe.j2", "/bundle/../secret",
                                  "/bundle/%2e%2e/secret", "/secret", "//etc/passwd",
                                  "/bundle/vmlinuz/../../secret"])
def test_nothing_else_is_served(server, path):
    resp, body = get(server, path)
    assert resp.status == 404 and b"not for clients" not in body


def test_whole_file_and_ranges(server, bundle):
    data = (bundle / "vmlinuz").read_bytes()
    resp, body = get(server, "/bundle/vmlinuz")
    assert resp.status == 200 and int(resp.getheader("Content-Length")) == len(data)
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    resp, body = get(server, "/bundle/vmlinuz", {"Range": "bytes=1000-"})
    assert resp.status == 206 and body == data[1000:]
    assert resp.getheader("Content-Range") == "bytes 1000-%d/%d" % (len(data) - 1, len(data))
    resp, body = get(server, "/bundle/vmlinuz", {"Range": "bytes=-10"})
    assert body == data[-10:]
    resp, body = get(server, "/bundle/vmlinuz", {"Range": "bytes=%d-" % len(data)})
    assert resp.status == 416
    resp, body = get(server, "/bundle/vmlinuz", method="HEAD")
    assert resp.status == 200 and body == b"" and resp.getheader("Accept-Ranges") == "bytes"


def test_empty_file(server):
    resp, body = get(server, "/bundle/rootfs.squashfs")
    assert resp.status == 200 and body == b""


@pytest.mark.parametrize("header, expected", [
    (None, None), ("bytes=0-9", (0, 9)), ("bytes=5-", (5, 99)), ("bytes=-5", (95, 99)),
    ("bytes=90-200", (90, 99)), ("bytes=100-", "unsatisfiable"), ("bytes=9-3", "unsatisfiable"),
    ("bytes=-0", "unsatisfiable"), ("bytes=-500", (0, 99)), ("bytes=0-1,5-6", None),
    ("items=0-1", None), ("bytes=-", None), ("bytes=99999999999999999999-", None),
    ("bytes=9999999999999999999-", "unsatisfiable"), ("bytes=0-9999999999999999999", (0, 99)),
    ("bytes=" + "9" * 5000 + "-", None), ("bytes=-" + "9" * 5000, None)])
def test_parse_range(header, expected):
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=-1", "bytes=0-", "bytes=-100", "bytes=0-0"])
def test_no_range_of_an_empty_file(header):
    assert parse_range(header, 0) == "unsatisfiable"


def test_an_oversized_range_number_is_answered(server, bundle):
    """It used to crash the handler (int() of 5,000 digits): now the whole file."""
    data = (bundle / "vmlinuz").read_bytes()
    resp, body = get(server, "/bundle/vmlinuz", {"Range": "bytes=%s-" % ("9" * 5000)})
    assert resp.status == 200 and body == data
    resp, body = get(server, "/bundle/vmlinuz", {"Range": "bytes=%d-" % (10 ** 18)})
    assert resp.status == 416 and body == b""


def test_last_byte_of_an_empty_file_is_unsatisfiable(server):
    """It was a 206 with ``Content-Range: bytes 0--1/0``."""
    resp, body = get(server, "/bundle/rootfs.squashfs", {"Range": "bytes=-1"})
    assert resp.status == 416 and resp.getheader("Content-Range") == "bytes */0"


@pytest.mark.parametrize("path", ["/nope", "/bundle/vmlinuz", "/ipxe/node?mac=x"])
def test_head_sends_no_body(server, path):
    """HEAD on a 404 (or a 400) sent the error text after the head."""
    with socket.create_connection(server.server_address, timeout=10) as s:
        s.sendall(b"HEAD %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.endswith(b"\r\n\r\n") and data.count(b"HTTP/1.1") == 1
    assert int(data.split(b"Content-Length: ")[1].split(b"\r\n")[0]) > 0


def test_registry_down_gives_a_retry_script(bundle):
    class Down(registry.MemoryRegistry().__class__):
        def node_by_mac(self, mac):
            raise registry.RegistryUnavailable(endpoint="x", detail="refused")
    srv = BootHttpServer("127.0.0.1", 0, str(bundle),
                         bootscript.ScriptRenderer(bundle / "boot.ipxe.j2"),
                         Down(registry.MemoryRegistry().kv), seed="10.0.0.1", cluster="c1")
    srv.start()
    try:
        script = node_script(srv, "52:54:00:00:00:09")
    finally:
        srv.stop()
    assert "retrying" in script and "vmlinuz" not in script
