"""A small HTTP/1.1 server for a network that is not trusted: GET and HEAD, bounded in every way.

One thread runs an event loop (epoll) over every socket: it accepts, reads
request heads, and sends responses (bodies from files with non-blocking
``sendfile``).  An idle or half-open connection costs one file descriptor and
no thread.  Requests that wait on something else (the node registry) run in
a small pool of worker threads, never the loop.

Bounds (:class:`Limits`), whatever the network does:

- at most ``max_connections`` connections (fewer if the open-file limit has
  no room for them: :func:`connection_cap`), and ``per_client`` of them per
  client address.  When full, the connection idle for longest (no request in
  progress) is closed to make room; if none is idle, the newcomer gets a 503.
  Past its share a client gets a 503.  Both are one short write, then close;
- a request head must arrive whole within ``head_timeout`` seconds and fit in
  ``max_head`` bytes (431 otherwise); a kept-alive connection may idle
  ``idle_timeout`` seconds; a response that makes no progress for
  ``send_timeout`` seconds is abandoned;
- requests have no body: one with ``Content-Length`` > 0 or
  ``Transfer-Encoding`` is answered 400 and the connection closed;
- at most ``max_pending`` requests wait for a worker (503 past that);
- when ``accept`` fails for want of file descriptors (EMFILE, ENFILE) or
  memory, the loop stops accepting for a while (doubling from 50 ms to 1 s)
  and closes up to 8 of the longest-idle connections, instead of spinning;
- every log line a client can cause goes through a rate-limited log; a client
  that goes away mid-download is one line.

The application is a callable ``app(request)`` returning a :class:`Response`,
or a callable taking no argument that returns one, to be run by a worker.
It runs in the loop thread, so it must not block.  An exception from it is a
500 and one log line.  A crash of the loop itself is logged and the loop
restarted (the listening socket stays open).
"""

import errno
import logging
import os
import re
import resource
import selectors
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus

from rackforge import errors
from rackforge.pxe.limits import LogLimiter

LOG = logging.getLogger("rackforge.pxe.http")

_NO_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)
SEND_CHUNK = 1 << 20
FILES_RESERVED = 64         # open files kept for the rest of the process
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")     # a header name (RFC 9110)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class HttpBindFailed(errors.RackforgeError):
    message = "cannot serve HTTP on {address}:{port}: {detail}; free the port or pick --http-port"


class BadRequest(Exception):
    """A request answered with ``status`` and the connection closed."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status


@dataclass
class Limits:
    max_connections: int = 1024
    per_client: int = 16
    backlog: int = 128
    head_timeout: float = 10.0
    idle_timeout: float = 10.0
    send_timeout: float = 30.0
    max_head: int = 8192
    max_headers: int = 64
    max_requests: int = 100         # per connection
    workers: int = 8
    max_pending: int = 64


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: dict               # lower-case name -> value (latin-1); the last one wins
    client: str = ""

    @property
    def keep_alive(self):
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.1":
            return "close" not in tokens
        return "keep-alive" in tokens


@dataclass
class Response:
    """``body`` bytes, or ``file`` (an open binary file, closed by the server) from
    ``offset`` for ``length`` bytes.  ``log`` is a line for the end of the body."""

    status: int
    headers: list = field(default_factory=list)
    body: bytes = b""
    file: object = None
    offset: int = 0
    length: int = 0
    log: str = None


def connection_cap(wanted, reserved=FILES_RESERVED):
    """``wanted`` connections, or fewer if this process's open-file limit has no room
    for them: each may hold a socket and a file being sent."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return wanted
    return min(wanted, max(16, (soft - reserved) // 2))


def parse_head(data, max_headers=64):
    """The :class:`Request` in ``data`` (a whole head without its blank line), or BadRequest.

    Only GET and HEAD with an origin-form target (``/...``), HTTP/1.0 or 1.1,
    no control characters, no body.
    """
    lines = data.split(b"\r\n")
    try:
        method, target, version = lines[0].decode("ascii").split(" ")
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed request line") from None
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequest(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "HTTP/1.0 and 1.1 only")
    if not target.startswith("/") or not target.isprintable():
        raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed request target")
    if method not in ("GET", "HEAD"):
        raise BadRequest(HTTPStatus.METHOD_NOT_ALLOWED, "GET and HEAD only")
    if len(lines) - 1 > max_headers:
        raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "too many header fields")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep or not _TOKEN.fullmatch(name) or _CONTROL.search(value):
            raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed header field")
        headers[name.lower()] = value.strip("\t ")
    length = headers.get("content-length", "0")
    if "transfer-encoding" in headers or length != "0":
        raise BadRequest(HTTPStatus.BAD_REQUEST, "requests carry no body here")
    return Request(method, target, version, headers)


def render_head(status, headers, close):
    status = HTTPStatus(status)
    lines = ["HTTP/1.1 %d %s" % (status.value, status.phrase), "Server: rackforge-boot",
             "Date: " + formatdate(usegmt=True)]
    lines += ["%s: %s" % kv for kv in headers]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def error_response(status, text):
    body = (text + "\n").encode()
    return Response(status, [("Content-Type", "text/plain; charset=utf-8"),
                             ("Content-Length", str(len(body)))], body)


class _Conn:
    __slots__ = ("sock", "client", "buf", "out", "resp", "state", "deadline", "since",
                 "served", "close", "request")

    def __init__(self, sock, client, now, deadline):
        self.sock, self.client = sock, client
        self.buf, self.out = bytearray(), bytearray()
        self.resp = self.request = None
        self.state = "head"           # head -> (work ->) send -> head ... -> closed
        self.deadline, self.since = deadline, now
        self.served = 0
        self.close = False


class HttpServer:
    """Serve ``app`` on ``address:port`` (0: any free port) within ``limits``.

    ``start()`` runs the loop in a daemon thread; ``stop()`` closes everything
    and joins it.  ``stats()`` counts connections accepted, refused (full, per
    client), evicted and timed out, requests, and what is open now.
    """

    def __init__(self, address, port, app, limits=None, name="http"):
        self.app = app
        self.limits = limits or Limits()
        self.max_connections = connection_cap(self.limits.max_connections)
        self.name = name
        self._log = LogLimiter(LOG)
        try:
            self._listen = socket.create_server((address, port), backlog=self.limits.backlog)
        except OSError as e:
            raise HttpBindFailed(address=address, port=port, detail=e.strerror) from None
        self._listen.setblocking(False)
        self.server_address = self._listen.getsockname()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._done = []               # (conn, response) from workers
        self._done_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(self.limits.workers, thread_name_prefix=name + "-work")
        self._pending = 0
        self._conns = {}              # socket -> _Conn
        self._per_client = {}
        self._stop = threading.Event()
        self._thread = None
        self._paused_until = 0.0
        self._pause = 0.0
        self.counts = dict(accepted=0, refused_full=0, refused_client=0, evicted=0,
                           timed_out=0, aborted=0, requests=0, accept_paused=0, loop_restarts=0)

    # -- life cycle ---------------------------------------------------------------
    def start(self):
        self._thread = threading.Thread(target=self._supervise, name=self.name, daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._wake()
            self._thread.join()
            self._thread = None
        self._pool.shutdown(wait=True, cancel_futures=True)
        for conn in list(self._conns.values()):
            self._close(conn)
        self._listen.close()
        self._wake_r.close()
        self._wake_w.close()

    def stats(self):
        return dict(self.counts, open=len(self._conns), clients=len(self._per_client),
                    max_connections=self.max_connections,
                    log_left_out=self._log.suppressed())

    def _supervise(self):
        delay = 0.1
        while not self._stop.is_set():
            try:
                self._loop()
                return
            except Exception as e:   # a bug in the loop must not end HTTP boot for good
                LOG.error("HTTP loop failed (%s: %s); restarting in %.1fs, %d connections"
                          " dropped", type(e).__name__, e, delay, len(self._conns))
                LOG.debug("HTTP loop failure", exc_info=True)
                for conn in list(self._conns.values()):
                    self._close(conn)
                self.counts["loop_restarts"] += 1
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)

    # -- the loop -----------------------------------------------------------------
    def _loop(self):
        with selectors.DefaultSelector() as sel:
            self._sel = sel
            self._paused_until = 0.0
            sel.register(self._listen, selectors.EVENT_READ, "listen")
            sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            for conn in self._conns.values():
                self._watch(conn)
            next_scan = 0.0
            while not self._stop.is_set():
                for key, mask in sel.select(0.25):
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wake()
                    elif key.data.state == "head":
                        self._read(key.data)
                    elif key.data.state == "send":
                        self._send(key.data)
                now = time.monotonic()
                if self._paused_until and now >= self._paused_until:
                    self._paused_until = 0.0
                    sel.register(self._listen, selectors.EVENT_READ, "listen")
                if now >= next_scan:
                    self._expire(now)
                    next_scan = now + 0.25

    def _watch(self, conn):
        events = {"head": selectors.EVENT_READ, "send": selectors.EVENT_WRITE}.get(conn.state)
        try:
            key = self._sel.get_key(conn.sock)
        except KeyError:
            key = None
        if events is None:
            if key:
                self._sel.unregister(conn.sock)
        elif key is None:
            self._sel.register(conn.sock, events, conn)
        elif key.events != events:
            self._sel.modify(conn.sock, events, conn)

    def _accept(self):
        for _ in range(64):
            try:
                sock, addr = self._listen.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in _NO_FDS:
                    self._pause_accept(e)
                    return
                continue                  # ECONNABORTED and the like: that client is gone
            self._pause = 0.0
            self._admit(sock, addr[0])

    def _pause_accept(self, err):
        self._pause = min(max(self._pause * 2, 0.05), 1.0)
        self._paused_until = time.monotonic() + self._pause
        self._sel.unregister(self._listen)
        self.counts["accept_paused"] += 1
        for _ in range(8):
            if not self._evict_idle():
                break
        self._log.log("accept", logging.WARNING, "cannot accept HTTP connections: %s;"
                      " pausing %.2fs (%d open)", os.strerror(err.errno), self._pause,
                      len(self._conns))

    def _admit(self, sock, client):
        lim, now = self.limits, time.monotonic()
        if self._per_client.get(client, 0) >= lim.per_client:
            self.counts["refused_client"] += 1
            return self._refuse(sock, client, "more than %d connections from one address"
                                % lim.per_client)
        if len(self._conns) >= self.max_connections and not self._evict_idle():
            self.counts["refused_full"] += 1
            return self._refuse(sock, client, "%d connections open" % self.max_connections)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(sock, client, now, now + lim.head_timeout)
        self._conns[sock] = conn
        self._per_client[client] = self._per_client.get(client, 0) + 1
        self.counts["accepted"] += 1
        self._watch(conn)

    _BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nContent-Length: 5\r\n"
             b"Connection: close\r\n\r\nbusy\n")

    def _refuse(self, sock, client, why):
        try:
            sock.setblocking(False)
            sock.send(self._BUSY)
        except OSError:
            pass
        sock.close()
        self._log.log("refuse", logging.WARNING, "HTTP connection from %s refused: %s",
                      client, why)

    def _evict_idle(self):
        """Close the connection idle longest (waiting for a request head); False if none."""
        idle = [c for c in self._conns.values() if c.state == "head"]
        if not idle:
            return False
        self._close(min(idle, key=lambda c: c.since))
        self.counts["evicted"] += 1
        return True

    def _read(self, conn):
        try:
            data = conn.sock.recv(16384)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            return self._close(conn)
        conn.buf += data
        self._next_request(conn)

    def _next_request(self, conn):
        """Start the request whose head is in ``conn.buf``, if it is complete."""
        while conn.buf[:2] == b"\r\n":        # blank lines before a request are allowed
            del conn.buf[:2]
        end = conn.buf.find(b"\r\n\r\n", 0, self.limits.max_head + 4)
        if end < 0:
            if len(conn.buf) > self.limits.max_head:
                self._respond(conn, error_response(
                    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large"), True)
            elif conn.buf:
                conn.deadline = min(conn.deadline, conn.since + self.limits.head_timeout)
            return
        head = bytes(conn.buf[:end])
        del conn.buf[:end + 4]
        self.counts["requests"] += 1
        conn.served += 1
        try:
            request = parse_head(head, self.limits.max_headers)
        except BadRequest as e:
            return self._respond(conn, error_response(e.status, str(e)), True)
        request.client = conn.client
        conn.request = request
        close = not request.keep_alive or conn.served >= self.limits.max_requests
        try:
            result = self.app(request)
        except Exception as e:
            self._log.log("app", logging.ERROR, "%s %s from %s failed: %s: %s", request.method,
                          request.target[:80], conn.client, type(e).__name__, e)
            result = error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")
        if isinstance(result, Response):
            return self._respond(conn, result, close)
        if self._pending >= self.limits.max_pending:
            return self._respond(conn, error_response(HTTPStatus.SERVICE_UNAVAILABLE,
                                                      "busy; retry"), True)
        conn.state, conn.close = "work", close
        self._watch(conn)
        self._pending += 1
        self._pool.submit(self._work, conn, result)

    def _work(self, conn, job):
        try:
            response = job()
        except Exception as e:
            self._log.log("app", logging.ERROR, "%s from %s failed: %s: %s",
                          conn.request.target[:80], conn.client, type(e).__name__, e)
            response = error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")
        with self._done_lock:
            self._done.append((conn, response))
        self._wake()

    def _wake(self):
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass          # the pair's buffer is full: the loop wakes anyway

    def _drain_wake(self):
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        with self._done_lock:
            done, self._done = self._done, []
        for conn, response in done:
            self._pending -= 1
            if conn.sock in self._conns:
                self._respond(conn, response, conn.close)
            elif response.file is not None:
                response.file.close()

    def _respond(self, conn, resp, close):
        """Queue ``resp`` on ``conn`` (head only for HEAD) and start sending."""
        conn.close = close
        if conn.request is not None and conn.request.method == "HEAD" and resp.file is not None:
            resp.file.close()
            resp.file = None
        if resp.file is None:
            resp.length = 0
        conn.out += render_head(resp.status, resp.headers, close)
        if conn.request is None or conn.request.method != "HEAD":
            conn.out += resp.body
        conn.resp, conn.state = resp, "send"
        conn.since = time.monotonic()
        conn.deadline = conn.since + self.limits.send_timeout
        self._send(conn)

    def _send(self, conn):
        resp = conn.resp
        try:
            while conn.out:
                del conn.out[:conn.sock.send(conn.out)]
            while resp.length > 0:
                n = os.sendfile(conn.sock.fileno(), resp.file.fileno(), resp.offset,
                                min(resp.length, SEND_CHUNK))
                if n == 0:
                    raise EOFError("the file is shorter than it was")
                resp.offset += n
                resp.length -= n
        except (BlockingIOError, InterruptedError):
            conn.deadline = time.monotonic() + self.limits.send_timeout
            return self._watch(conn)
        except (OSError, EOFError) as e:
            self.counts["aborted"] += 1
            what = resp.log or (conn.request.target[:80] if conn.request else "a response")
            self._log.log("aborted", logging.INFO, "%s went away during %s (%d bytes left): %s",
                          conn.client, what, resp.length + len(conn.out),
                          os.strerror(e.errno) if getattr(e, "errno", None) else e)
            return self._close(conn)
        self._finish(conn)

    def _finish(self, conn):
        resp = conn.resp
        if resp.file is not None:
            resp.file.close()
            if resp.log:
                LOG.info("%s: sent %s", conn.client, resp.log)
        conn.resp = conn.request = None
        if conn.close:
            return self._close(conn)
        now = time.monotonic()
        conn.state, conn.since, conn.deadline = "head", now, now + self.limits.idle_timeout
        self._watch(conn)
        if conn.buf:
            self._next_request(conn)

    def _expire(self, now):
        for conn in [c for c in self._conns.values() if c.state != "work" and now >= c.deadline]:
            self.counts["timed_out"] += 1
            if conn.state == "send":
                self._log.log("slow", logging.INFO, "%s: no progress in %ds sending %s; closed",
                              conn.client, self.limits.send_timeout,
                              conn.resp.log or conn.request.target[:80]
                              if conn.request else "a response")
            self._close(conn)

    def _close(self, conn):
        if self._conns.pop(conn.sock, None) is None:
            return
        if conn.state == "send" and conn.resp is not None and conn.resp.file is not None:
            conn.resp.file.close()
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError, AttributeError):
            pass
        conn.sock.close()
        conn.state = "closed"
        left = self._per_client.get(conn.client, 1) - 1
        if left:
            self._per_client[conn.client] = left
        else:
            self._per_client.pop(conn.client, None)
