"""Property-based tests of the TFTP request gate and of the server's packet loop.

Whatever arrives, ``parse_request`` and ``open_in_root`` return or raise
``Refused``, nothing else; nothing outside the root is ever opened (every file
outside it holds ``SECRET``); and the live server on loopback keeps serving
after a burst of random datagrams.  Bounded: a few hundred examples each.
"""

import os
import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rackforge.pxe import tftp_request as rq
from rackforge.pxe.tftp import TftpBindFailed, TftpRootMissing, TftpServer

SETTINGS = settings(max_examples=300, deadline=500, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

PARTS = ["..", ".", "", "sub", "ipxe.efi", "x.cfg", "link-in", "link-out", "link-sibling",
         "link-sibling-file", "loop", "fifo", "root-private", "secret", "etc", "passwd",
         "..%2f", "%2e%2e", "\0", "\\", "/", "~", "\u00e9", "\udcff", " ", "a" * 120]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("tftp")
    top = base / "root"
    (top / "sub").mkdir(parents=True)
    (top / "ipxe.efi").write_bytes(b"EFI" * 1000)
    (top / "sub" / "x.cfg").write_bytes(b"cfg")
    private = base / "root-private"
    private.mkdir()
    (private / "secret").write_bytes(b"SECRET")
    (base / "secret").write_bytes(b"SECRET")
    (top / "link-in").symlink_to("sub/x.cfg")
    (top / "sub" / "link-up").symlink_to("../ipxe.efi")
    (top / "link-out").symlink_to("/etc/passwd")
    (top / "link-sibling").symlink_to("../root-private")
    (top / "link-sibling-file").symlink_to(private / "secret")
    (top / "loop").symlink_to("loop")
    os.mkfifo(top / "fifo")
    return top


names = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(PARTS), max_size=12).map(
        lambda parts: "/".join(parts)),
    st.lists(st.sampled_from(PARTS), max_size=12).map(
        lambda parts: "\\".join(parts)),
)


def encode(name):
    return name.encode("utf-8", "surrogateescape") if isinstance(name, str) else name


datagrams = st.one_of(
    st.binary(max_size=1200),
    st.builds(
        lambda op, name, mode, opts: struct.pack("!H", op) + b"\0".join(
            [encode(name), mode, *opts]) + b"\0",
        st.sampled_from([0, 1, 1, 1, 2, 3, 4, 5, 6, 9]),
        st.one_of(names, st.binary(max_size=300)),
        st.sampled_from([b"octet", b"OCTET", b"netascii", b"mail", b"", b"\xff"]),
        st.lists(st.sampled_from([b"blksize", b"tsize", b"1468", b"0", b"-1", b"99999999999",
                                  b"", b"\xff", b"windowsize"]), max_size=6),
    ),
)


def assert_inside(root, path):
    real_root = os.path.realpath(root)
    assert os.path.commonpath([real_root, os.path.realpath(path)]) == real_root


@SETTINGS
@given(datagrams)
def test_parse_request_returns_or_refuses(datagram):
    try:
        req = rq.parse_request(datagram)
    except rq.Refused as refusal:
        assert refusal.code in (0, 1, 2, 4) and "\n" not in refusal.reason
        return
    assert req.mode in rq.MODES and req.filename
    assert len(req.filename.encode()) <= rq.MAX_NAME


@SETTINGS
@given(names)
def test_open_in_root_never_leaves_the_root(root, name):
    try:
        fileobj, path, size = rq.open_in_root(root, name)
    except rq.Refused as refusal:
        assert refusal.code in (1, 2) and "\n" not in refusal.reason
        return
    with fileobj:
        data = fileobj.read()
    assert_inside(root, path)
    assert b"SECRET" not in data and len(data) == size
    assert ".." not in name.replace("\\", "/").split("/")


@SETTINGS
@given(datagrams)
def test_request_to_file_pipeline(root, datagram):
    """The server's gate end to end: parse, then open, then negotiate."""
    try:
        req = rq.parse_request(datagram)
        fileobj, path, size = rq.open_in_root(root, req.filename)
    except rq.Refused:
        return
    with fileobj:
        assert b"SECRET" not in fileobj.read()
    assert_inside(root, path)
    opts = rq.negotiate(req.options, size, 1468)
    assert set(opts) <= {"blksize", "tsize"}
    assert 8 <= int(opts.get("blksize", 512)) <= 1468


def fetch(port, name, blksize=None, timeout=2.0):
    """A minimal TFTP client for the test: the file's bytes, or the error code."""
    options = [b"blksize", str(blksize).encode()] if blksize else []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(struct.pack("!H", 1) + b"\0".join([name.encode(), b"octet", *options])
                    + b"\0", ("127.0.0.1", port))
        data, size = b"", blksize or 512
        while True:
            pkt, peer = sock.recvfrom(70000)
            op, num = struct.unpack("!HH", pkt[:4])
            if op == rq.ERROR:
                return num
            if op == rq.OACK:
                sock.sendto(struct.pack("!HH", rq.ACK, 0), peer)
                continue
            data += pkt[4:]
            sock.sendto(struct.pack("!HH", rq.ACK, num), peer)
            if len(pkt) - 4 < size:
                return data


@pytest.fixture
def server(root):
    srv = TftpServer(root, "127.0.0.1", port=0, timeout=0.5, retries=1)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@settings(max_examples=150, deadline=500, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(burst=st.lists(datagrams, min_size=1, max_size=5))
def test_server_survives_random_datagrams(server, burst):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as barrier:
        for datagram in burst:
            sock.sendto(datagram, ("127.0.0.1", server.port))
            # Garbage gets no answer, so do not wait for one: a refused request from
            # another socket comes back after every reply to the datagrams before it.
            barrier.settimeout(2)
            barrier.sendto(b"\0\1no-such-file\0octet\0", ("127.0.0.1", server.port))
            barrier.recvfrom(100)
            sock.setblocking(False)
            try:
                _, peer = sock.recvfrom(70000)
            except BlockingIOError:
                continue
            # and some to whatever transfer answered, from the right TID
            sock.sendto(datagram[:7], peer)
    assert server._thread.is_alive()


def test_server_still_serves_after_fuzzing(server, root):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in (b"", b"\0", b"\0\4\0", b"\0\1\0\0", b"\0\1\xff\0octet\0",
                         b"\0\3\0\1xx", b"\0\6blksize\0", b"\0\5"):
            sock.sendto(datagram, ("127.0.0.1", server.port))
    assert fetch(server.port, "ipxe.efi") == b"EFI" * 1000
    assert fetch(server.port, "sub/x.cfg", blksize=1468) == b"cfg"
    assert fetch(server.port, "../root-private/secret") == rq.ACCESS_VIOLATION
    assert server._thread.is_alive()
    assert server.stats()["transfers"] == 2


def test_start_refuses_a_bound_port_with_one_line(root):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        srv = TftpServer(root, "127.0.0.1", port=taken.getsockname()[1])
        with pytest.raises(TftpBindFailed) as exc:
            srv.start()
    assert "address already in use" in str(exc.value) and "\n" not in str(exc.value)
    srv.stop()          # never started: a no-op


def test_start_refuses_a_missing_root(tmp_path):
    with pytest.raises(TftpRootMissing):
        TftpServer(tmp_path / "nope", "127.0.0.1", port=0).start()


def test_stop_is_idempotent_and_ends_transfers(root):
    srv = TftpServer(root, "127.0.0.1", port=0)
    srv.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(b"\0\1ipxe.efi\0octet\0", ("127.0.0.1", srv.port))
        sock.recvfrom(1000)             # block 1: the transfer is active
        assert srv.stats()["active"] == 1
    srv.stop()
    srv.stop()
    assert srv.stats() == {"transfers": 0, "refused": 0, "bytes": 512, "failed": 1,
                           "resent": 0, "evicted": 0, "active": 0}


def test_oack_carries_only_the_requested_options(server):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(b"\0\1ipxe.efi\0octet\0tsize\x000\0", ("127.0.0.1", server.port))
        reply, _ = sock.recvfrom(1000)
    assert reply == b"\0\6tsize\x003000\0"
