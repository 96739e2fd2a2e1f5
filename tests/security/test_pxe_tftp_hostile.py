"""The TFTP server against spoofed and garbage datagrams (issue "Hardening", medium).

The probe: 256 spoofable read requests filled every transfer slot and locked
PXE clients out for about 20 s per round; each bad datagram wrote a log line;
a 17-byte request was answered with 2 KB (121x).  Replayed against the real
server on loopback with its production timeouts; "spoofed" requests come
from sockets on other loopback addresses that never answer.  No root needed.
"""

import logging
import socket
import struct
import time

import pytest

from rackforge.pxe import tftp_request as rq
from rackforge.pxe.tftp import TftpServer

FILE = b"EFI" * 20000


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "ipxe.efi").write_bytes(FILE)
    srv = TftpServer(root, "127.0.0.1", port=0)         # the service's timeouts
    srv.start()
    yield srv
    srv.stop()


def rrq(name=b"ipxe.efi", *options):
    return b"\0\1" + name + b"\0octet\0" + b"".join(o + b"\0" for o in options)


def fetch(port, source="127.0.9.1", timeout=2.0):
    """Download ipxe.efi as a PXE ROM does (blksize, tsize); the bytes, or the error code."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.sendto(rrq(b"ipxe.efi", b"blksize", b"1468", b"tsize", b"0"), ("127.0.0.1", port))
        data, expected = b"", 1
        while True:
            pkt, peer = sock.recvfrom(70000)
            opcode, num = struct.unpack("!HH", pkt[:4])
            if opcode == rq.ERROR:
                return num
            if opcode == rq.OACK:
                sock.sendto(struct.pack("!HH", rq.ACK, 0), peer)
                continue
            if num == expected:
                data += pkt[4:]
                expected += 1
            sock.sendto(struct.pack("!HH", rq.ACK, num), peer)
            if len(pkt) - 4 < 1468:
                return data


def spoof(port, count, first=1):
    """``count`` requests from addresses that never answer (the sockets stay open to count
    what the server sends them)."""
    socks = []
    for i in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.%d.%d" % (14 + (first + i) // 250, (first + i) % 250 + 1), 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        s.sendto(rrq(), ("127.0.0.1", port))
        socks.append(s)
    return socks


def drain(sock):
    sock.setblocking(False)
    got = 0
    try:
        while True:
            got += len(sock.recv(70000))
    except BlockingIOError:
        return got


def wait_for(condition, timeout=30):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in %ss" % timeout
        time.sleep(0.02)


def test_spoofed_requests_do_not_lock_out_a_pxe_client(server):
    socks = spoof(server.port, 256)
    try:
        wait_for(lambda: server.stats()["active"] == 256)
        start = time.monotonic()
        assert fetch(server.port) == FILE
        assert time.monotonic() - start < 1.0
        assert server.stats()["evicted"] >= 1
    finally:
        for s in socks:
            s.close()


def test_a_request_that_is_never_answered_costs_one_packet(server):
    """The server resent DATA block 1 three times: 17 bytes in, 2 KB out."""
    (sock,) = spoof(server.port, 1)
    with sock:
        start = time.monotonic()
        wait_for(lambda: server.stats()["active"] == 1)
        wait_for(lambda: server.stats()["active"] == 0)     # the transfer gave up
        assert time.monotonic() - start < 5
        sent = drain(sock)
    assert sent == 4 + 512 and sent / len(rrq()) < 31


def test_a_repeated_request_is_answered_again_but_not_more(server):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.8.1", 0))
        sock.settimeout(2)
        for _ in range(10):        # a client that lost our first packet asks again
            sock.sendto(rrq(), ("127.0.0.1", server.port))
        first, peer = sock.recvfrom(70000)
        wait_for(lambda: server.stats()["active"] == 0)
        sent = len(first) + drain(sock)
    assert first[:4] == b"\0\3\0\1" and sent <= 2 * 516


def test_garbage_gets_no_answer_and_refusals_are_short(server):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.7.1", 0))
        sock.settimeout(2)
        for garbage in (b"", b"\0", b"\0\1x", b"\0\4\0\1", b"\0\3\0\1data", b"\0\6blksize\0",
                        b"\0\1" + b"a" * 2000 + b"\0octet\0", b"\0\x63xx\0octet\0"):
            sock.sendto(garbage, ("127.0.0.1", server.port))
        sock.sendto(rrq(b"missing.efi"), ("127.0.0.1", server.port))
        reply, _ = sock.recvfrom(70000)       # the first answer is to the last datagram
    assert struct.unpack("!HH", reply[:4]) == (rq.ERROR, rq.FILE_NOT_FOUND)
    assert len(reply) <= 24 and b"missing" not in reply
    assert server.stats()["refused"] == 9


def test_one_address_holds_at_most_its_share(server):
    socks = []
    try:
        for _ in range(TftpServer.max_per_client + 1):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.6.1", 0))
            s.settimeout(2)
            s.sendto(rrq(), ("127.0.0.1", server.port))
            socks.append(s)
        replies = [struct.unpack("!HH", s.recvfrom(70000)[0][:4]) for s in socks]
        assert replies.count((rq.DATA, 1)) == TftpServer.max_per_client
        assert replies[-1] == (rq.ERROR, rq.NOT_DEFINED)
        assert fetch(server.port, source="127.0.6.2") == FILE
    finally:
        for s in socks:
            s.close()


def test_a_flood_of_garbage_is_a_few_log_lines(server, caplog):
    with caplog.at_level(logging.INFO, logger="rackforge.pxe.tftp"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i in range(500):
                sock.sendto(b"\0\1bad%d" % i, ("127.0.0.1", server.port))
                if i % 50 == 49:                      # not faster than the socket buffers
                    sock.settimeout(2)
                    sock.sendto(rrq(b"missing.efi"), ("127.0.0.1", server.port))
                    assert sock.recvfrom(100)[0][:4] == b"\0\5\0\1"
    assert server.stats()["refused"] == 510
    lines = [r for r in caplog.records if "refused" in r.getMessage()]
    assert 1 <= len(lines) <= 25
