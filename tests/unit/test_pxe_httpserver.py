"""The bounded HTTP server on loopback: caps, shares, timeouts, accept back-off, bad heads.

Clients come from distinct loopback addresses (127.0.x.y) where a test needs
several.  Timeouts are set small so each case waits well under a second; no
case sleeps: each waits on a socket or a condition.
"""

import errno
import logging
import socket
import time
from http import HTTPStatus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rackforge.pxe.httpserver import BadRequest, HttpServer, Limits, Response, parse_head


def hello(request):
    if request.target == "/slow":
        return lambda: Response(200, [("Content-Length", "4")], b"slow")
    if request.target == "/boom":
        raise RuntimeError("boom")
    return Response(200, [("Content-Length", "5")], b"hello")


@pytest.fixture
def make_server():
    servers = []

    def make(app=hello, **limits):
        srv = HttpServer("127.0.0.1", 0, app, Limits(**limits))
        srv.start()
        servers.append(srv)
        return srv
    yield make
    for srv in servers:
        srv.stop()


def connect(srv, source="127.0.0.1"):
    s = socket.create_connection(srv.server_address, timeout=5, source_address=(source, 0))
    return s


def read_all(s):
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def ask(srv, target="/", source="127.0.0.1", method="GET"):
    with connect(srv, source) as s:
        s.sendall(b"%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                  % (method.encode(), target.encode()))
        return read_all(s)


def status(data):
    return int(data.split(b" ", 2)[1]) if data else None


def wait_for(condition, timeout=5):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in %ss" % timeout
        time.sleep(0.01)


def test_answers_and_keeps_alive(make_server):
    srv = make_server()
    with connect(srv) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /slow HTTP/1.1\r\n\r\n"
                  b"HEAD / HTTP/1.1\r\nConnection: close\r\n\r\n")
        data = read_all(s)
    assert data.count(b"HTTP/1.1 200 OK") == 3
    assert data.endswith(b"\r\n\r\n")               # HEAD: no body
    assert b"hello" in data and b"slow" in data


def test_idle_connections_do_not_stop_an_honest_client(make_server):
    srv = make_server(per_client=4, max_connections=64)
    idle = [connect(srv, "127.0.5.%d" % (i // 4 + 1)) for i in range(200)]
    try:
        start = time.monotonic()
        assert status(ask(srv, source="127.0.6.1")) == 200
        assert time.monotonic() - start < 1.0
        wait_for(lambda: srv.stats()["open"] <= 64)
        stats = srv.stats()
        assert stats["refused_client"] + stats["evicted"] >= 200 - 64
    finally:
        for s in idle:
            s.close()


def test_a_client_past_its_share_gets_503(make_server):
    srv = make_server(per_client=3)
    held = [connect(srv) for _ in range(3)]
    wait_for(lambda: srv.stats()["open"] == 3)
    try:
        assert status(read_all(connect(srv))) == 503
        assert status(ask(srv, source="127.0.0.2")) == 200
    finally:
        for s in held:
            s.close()


def test_full_server_closes_the_longest_idle(make_server):
    srv = make_server(max_connections=4)
    held = [connect(srv, "127.0.7.%d" % i) for i in range(1, 5)]
    wait_for(lambda: srv.stats()["open"] == 4)
    try:
        assert status(ask(srv, source="127.0.7.9")) == 200
        assert held[0].recv(10) == b""           # the oldest was closed to make room
        assert srv.stats()["evicted"] >= 1
    finally:
        for s in held:
            s.close()


def test_half_a_head_is_cut_off(make_server):
    srv = make_server(head_timeout=0.3, idle_timeout=0.3)
    with connect(srv) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost")
        start = time.monotonic()
        assert s.recv(10) == b""
        assert 0.2 < time.monotonic() - start < 3
    with connect(srv) as s:                  # a kept-alive connection left idle, too
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert read_all(s).count(b"200 OK") == 1


@pytest.mark.parametrize("head, expected", [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 100 + b"\r\n", 431),
    (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 405),
    (b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 400),
    (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\n\r\n", 505), (b"GET http://x/ HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400), (b"\xff\xfe\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400)])
def test_bad_heads_get_one_answer_and_a_close(make_server, head, expected):
    srv = make_server()
    with connect(srv) as s:
        s.sendall(head)
        data = read_all(s)
    assert status(data) == expected and data.count(b"HTTP/1.1") == 1
    assert b"Connection: close" in data


def test_accept_backs_off_when_out_of_file_descriptors(make_server):
    srv = make_server()
    real, calls = srv._listen, []

    class Exhausted:
        """The listening socket while the process has no file descriptor left."""
        def fileno(self):
            return real.fileno()

        def accept(self):
            calls.append(time.monotonic())
            if len(calls) <= 3:
                raise OSError(errno.EMFILE, "Too many open files")
            return real.accept()

        def __getattr__(self, name):
            return getattr(real, name)
    srv._listen = Exhausted()
    assert status(ask(srv)) == 200
    # three failures, each followed by a pause (50, 100, 200 ms), not a spin
    assert len(calls) <= 6 and calls[3] - calls[0] >= 0.3
    assert srv.stats()["accept_paused"] == 3


def test_an_app_error_is_a_500_and_one_line(make_server, caplog):
    srv = make_server()
    with caplog.at_level(logging.INFO, logger="rackforge.pxe.http"):
        assert status(ask(srv, "/boom")) == 500
        assert status(ask(srv)) == 200
    lines = [r for r in caplog.records if "boom" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None


def test_a_crashed_loop_is_restarted(make_server, monkeypatch, caplog):
    srv = make_server()
    failures = []
    real = srv._expire

    def expire_once(now):
        if not failures:
            failures.append(now)
            raise RuntimeError("a bug")
        real(now)
    monkeypatch.setattr(srv, "_expire", expire_once)
    wait_for(lambda: srv.stats()["loop_restarts"] == 1)
    assert status(ask(srv)) == 200
    assert any("HTTP loop failed (RuntimeError: a bug)" in r.getMessage()
               for r in caplog.records)


def test_an_aborted_download_is_one_line(make_server, tmp_path, caplog):
    big = tmp_path / "big"
    big.write_bytes(b"x" * (32 << 20))

    def app(request):
        f = open(big, "rb")
        return Response(200, [("Content-Length", str(32 << 20))], file=f, length=32 << 20,
                        log="big")
    srv = make_server(app)
    with caplog.at_level(logging.INFO, logger="rackforge.pxe.http"):
        s = connect(srv)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # RST
        s.close()
        wait_for(lambda: srv.stats()["aborted"] == 1 and srv.stats()["open"] == 0)
    lines = [r for r in caplog.records if "went away" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert "big" in lines[0].getMessage() and "Traceback" not in caplog.text


# -- the parser, fuzzed -------------------------------------------------------------

HEAD_PARTS = st.lists(st.sampled_from([
    b"GET", b"HEAD", b"POST", b" ", b"/", b"/boot.ipxe", b"?mac=", b"HTTP/1.1", b"HTTP/1.0",
    b"\r\n", b":", b"Host", b"Content-Length", b"0", b"5", b"-1", b"Range", b"bytes=0-",
    b"Connection", b"close", b"\x00", b"\xff", b"\t", b"\n", b"\r", b"Transfer-Encoding"]),
    max_size=30).map(b"".join)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.one_of(HEAD_PARTS, st.binary(max_size=300)))
def test_parse_head_returns_a_request_or_bad_request(data):
    try:
        request = parse_head(data)
    except BadRequest as e:
        assert HTTPStatus(e.status).value in (400, 405, 431, 505)
        return
    assert request.method in ("GET", "HEAD") and request.target.startswith("/")
    assert request.version in ("HTTP/1.0", "HTTP/1.1")
    assert "transfer-encoding" not in request.headers
    assert request.headers.get("content-length", "0") == "0"


@pytest.fixture(scope="module")
def live():
    srv = HttpServer("127.0.0.1", 0, hello, Limits(head_timeout=0.5, idle_timeout=0.5))
    srv.start()
    yield srv
    srv.stop()


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(HEAD_PARTS, st.binary(max_size=200)))
def test_the_live_server_answers_anything_and_keeps_serving(live, data):
    with connect(live) as s:
        s.sendall(data + b"\r\n\r\n")
        answer = read_all(s)         # the server closes at once, or after 0.5 s idle
    assert answer == b"" or answer.startswith(b"HTTP/1.1 ")
    assert status(ask(live)) == 200
