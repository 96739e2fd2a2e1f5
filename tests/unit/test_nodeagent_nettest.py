"""The console's network test: its targets from the agent's view, ping's recorded output,
a DNS query answered (and not) by a server on loopback, the lines."""

import socket
import struct
import subprocess
import threading

from rackforge.nodeagent import nettest
from rackforge.nodeagent.view import Peer, View

# iputils-ping 20240905 (Debian 13), 'ping -n -q -c 2 -W 1 10.0.0.1'
PING_OK = """PING 10.0.0.1 (10.0.0.1) 56(84) bytes of data.

--- 10.0.0.1 ping statistics ---
2 packets transmitted, 2 received, 0% packet loss, time 1002ms
rtt min/avg/max/mdev = 0.291/0.342/0.394/0.051 ms
"""
PING_LOST = """PING 10.0.0.9 (10.0.0.9) 56(84) bytes of data.

--- 10.0.0.9 ping statistics ---
2 packets transmitted, 0 received, 100% packet loss, time 1030ms

"""


def view():
    nodes = [Peer("n1", "node1", "10.0.0.11"), Peer("n2", "node2", "10.0.0.12"),
             Peer("n3", "node3", "10.0.0.13")]
    return View(node_id="n2", name="node2", address="10.0.0.12", roles={"controller"},
                state="active", cluster={"vip": "10.0.0.100"}, controllers=nodes, nodes=nodes)


def test_the_targets_gateway_vip_peers_and_name_servers(tmp_path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# generated\nsearch rack.example\nnameserver 10.0.0.53\n"
                      "nameserver not-an-address\nnameserver fd00::53\n")
    assert nettest.targets(view(), "10.0.0.1", nettest.nameservers(resolv)) == [
        ("ping", "gateway", "10.0.0.1"), ("ping", "VIP", "10.0.0.100"),
        ("ping", "peer node1", "10.0.0.11"), ("ping", "peer node3", "10.0.0.13"),
        ("dns", "DNS", "10.0.0.53"), ("dns", "DNS", "fd00::53")]
    assert nettest.targets(None, None, []) == []
    assert nettest.nameservers(tmp_path / "missing") == []


def fake_ping(returncode, stdout):
    def run(argv, **kw):
        assert argv[:6] == ["ping", "-n", "-q", "-c", "2", "-W"]
        return subprocess.CompletedProcess(argv, returncode, stdout, "")
    return run


def test_ping_says_the_round_trip_or_no_answer():
    assert nettest.ping("10.0.0.1", run=fake_ping(0, PING_OK)) == (True, "0.342 ms")
    assert nettest.ping("10.0.0.9", run=fake_ping(1, PING_LOST)) == (False, "no answer to ping")


def dns_server(answer):
    """A UDP server on loopback that answers one query with rcode ``answer`` (None: never)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))

    def serve():
        data, peer = sock.recvfrom(512)
        if answer is not None:
            ident, flags = struct.unpack(">HH", data[:4])
            sock.sendto(struct.pack(">HH", ident, 0x8180 | answer) + data[4:], peer)
    threading.Thread(target=serve, daemon=True).start()
    return sock


def test_a_dns_query_answered_refused_and_unanswered(monkeypatch):
    for rcode, expected in ((0, True), (3, True), (5, False)):
        server = dns_server(rcode)
        monkeypatch.setattr(socket.socket, "sendto", _to_port(server.getsockname()[1]))
        ok, detail = nettest.dns_query("127.0.0.1", timeout=5)
        assert ok is expected, detail
        server.close()
    server = dns_server(None)
    monkeypatch.setattr(socket.socket, "sendto", _to_port(server.getsockname()[1]))
    assert nettest.dns_query("127.0.0.1", timeout=0.3) == (False, "no DNS answer within 0.3 s")
    server.close()


_real_sendto = socket.socket.sendto


def _to_port(port):
    """The client's datagram to port 53 goes to the test's server instead."""
    def sendto(self, data, address):
        if address[1] == 53:
            address = (address[0], port)
        return _real_sendto(self, data, address)
    return sendto


def test_all_at_once_and_the_lines():
    found = nettest.targets(view(), "10.0.0.1", ["10.0.0.53"])
    results = nettest.run_tests(
        found, probe_ping=lambda a: (a != "10.0.0.13", "0.3 ms" if a != "10.0.0.13"
                                     else "no answer to ping"),
        probe_dns=lambda a: (True, "answers (1.0 ms)"))
    assert [r["target"] for r in results] == ["gateway", "VIP", "peer node1", "peer node3",
                                              "DNS"]
    out = nettest.lines({"results": results})
    assert out[3] == "FAIL peer node3               10.0.0.13       no answer to ping"
    assert out[0].startswith("ok   gateway") and out[-1] == "1 of 5 do not answer"
    assert nettest.lines({"results": []})[0].startswith("nothing to test")
