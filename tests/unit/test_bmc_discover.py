"""RMCP presence ping: range parsing, packets, and a pong from a local responder."""

import socket
import struct
import threading

import pytest

from rackforge.bmc import discover, errors


def test_parse_range():
    assert discover.parse_range("10.0.0.1-10.0.0.3") == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert discover.parse_range("10.0.0.9-10") == ["10.0.0.9", "10.0.0.10"]
    assert discover.parse_range("10.0.0.9") == ["10.0.0.9"]
    for bad in ("10.0.0.9-10.0.0.1", "x-y", "10.0.0.0-10.1.0.0"):
        with pytest.raises(errors.DiscoveryError):
            discover.parse_range(bad)


def pong(tag):
    return (struct.pack(">BBBBIBBBB", 6, 0, 0xFF, 6, 4542, 0x40, tag, 0, 16)
            + struct.pack(">IIBB6x", 4542, 0, 0x81, 0x80))


def test_ping_and_pong_packets():
    ping = discover.ping_packet(7)
    assert ping[:4] == b"\x06\x00\xff\x06" and ping[8] == 0x80 and len(ping) == 12
    assert discover.parse_pong(pong(7)) == {
        "ipmi": True, "asf_version": "1.0", "rmcp_security": True, "dash": False,
        "oem_iana": 4542}
    assert discover.parse_pong(b"junk") is None


def test_discover_finds_the_responder_only():
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def answer():
        data, addr = srv.recvfrom(64)
        srv.sendto(pong(data[9]), addr)
    t = threading.Thread(target=answer, daemon=True)
    t.start()
    try:
        found = discover.discover(["127.0.0.1", "127.0.0.2"], port=port, timeout=1.0)
    finally:
        srv.close()
    assert found["127.0.0.1"]["ipmi"] is True
    assert found["127.0.0.2"] is None
