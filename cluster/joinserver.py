"""The join service over HTTPS, with the limits a hostile provisioning network needs.

``JoinServer(service, host, port)`` serves :class:`.join.JoinService` with a
certificate of the join-service usage, made here (this controller holds the
CA).  Every request gets an answer (a 4xx or 5xx is ``{"error": one line}``)
and nothing it sends can exhaust the server:

- TLS handshakes run in each connection's thread with a timeout, so a silent
  client stalls only itself; idle connections are dropped after
  :data:`IDLE_TIMEOUT`;
- at most :data:`MAX_CONCURRENT` joins are worked on at once (503 beyond);
- the token (``Authorization: Bearer``) is checked before the body is read;
  the body is at most :data:`MAX_BODY` bytes of JSON, nesting bounded;
- a client address that keeps presenting refused tokens is turned away
  (429) for :data:`PENALTY` seconds: guessing tokens costs time.

Given an ``install`` handler (``bringup/installapi.py``) and a ``discover`` one
(``bringup/discoverapi.py``), each with ``PATHS``, ``MAX_BODY``, ``BadRequest``,
``handle(path, body, peer)``, ``status_of(error)`` and optionally ``COUNTED``,
the same server answers the install and discovery APIs under the same limits
(the throttle, the concurrent requests): the statuses in the handler's
``COUNTED`` (403 if it names none) count as refused tokens, its bodies are
capped at the handler's ``MAX_BODY``.
"""

import collections
import http.server
import json
import logging
import ssl
import tempfile
import threading
import time
from pathlib import Path

from rackforge import errors
from rackforge.cluster import ca as ca_mod
from rackforge.cluster import join, tokens
from rackforge.fileutil import atomic_write, make_dirs

LOG = logging.getLogger(__name__)
HANDSHAKE_TIMEOUT = 10
IDLE_TIMEOUT = 30
MAX_BODY = 256 * 1024
MAX_CONCURRENT = 32
MAX_DEPTH = 32
REFUSALS_ALLOWED = 10       # refused tokens per client address ...
REFUSAL_WINDOW = 60         # ... within this many seconds, then
PENALTY = 60                # ... this many seconds of 429
TRACKED_CLIENTS = 4096


class TooDeep(ValueError):
    pass


def _depth(value, limit, level=0):
    if level > limit:
        raise TooDeep("nested deeper than %d" % limit)
    if isinstance(value, dict):
        for v in value.values():
            _depth(v, limit, level + 1)
    elif isinstance(value, list):
        for v in value:
            _depth(v, limit, level + 1)


def decode_body(raw):
    """JSON with bounded nesting; raises :class:`join.BadJoinRequest`."""
    try:
        body = json.loads(raw)
        _depth(body, MAX_DEPTH)
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise join.BadJoinRequest(detail="the body is not JSON of at most %d levels (%s)"
                                  % (MAX_DEPTH, str(exc)[:80])) from None
    return body


class Throttle:
    """Refused tokens per client address; bounded memory (oldest clients forgotten)."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._seen = collections.OrderedDict()      # address -> deque of refusal times
        self._lock = threading.Lock()

    def blocked_for(self, address):
        """Seconds ``address`` must still wait (0: none)."""
        with self._lock:
            times = self._seen.get(address)
            if not times or len(times) < REFUSALS_ALLOWED or \
                    times[-1] - times[0] > REFUSAL_WINDOW:
                return 0
            return max(0, int(times[-1] + PENALTY - self.clock() + 0.999))

    def refused(self, address):
        with self._lock:
            times = self._seen.pop(address, None) or collections.deque(maxlen=REFUSALS_ALLOWED)
            times.append(self.clock())
            self._seen[address] = times
            while len(self._seen) > TRACKED_CLIENTS:
                self._seen.popitem(last=False)


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "rackforge-join"
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT             # a silent client is dropped, not waited for
    disable_nagle_algorithm = True     # headers and body are two sends: no 40 ms stall

    def log_message(self, fmt, *args):
        LOG.debug("join %s: " + fmt, self.client_address[0], *args)

    def _send(self, status, data, ctype="application/json", close=False):
        body = data if isinstance(data, bytes) else (json.dumps(data) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _refuse(self, status, exc, close=False):
        self._send(status, {"error": str(exc)}, close=close)

    def do_GET(self):
        if self.path == "/ca":
            self._send(200, self.server.service.authority.cert_pem, "application/x-pem-file")
        else:
            self._send(404, {"error": "no such path; use GET /ca or POST /join"})

    def do_POST(self):
        srv = self.server
        peer = self.client_address[0]
        api = next((a for a in srv.apis if self.path in a.PATHS), None)
        if self.path != "/join" and api is None:
            self._send(404, {"error": "no such path; use POST /join"}, close=True)
            return
        wait = srv.throttle.blocked_for(peer)
        if wait:
            self._send(429, {"error": "too many refused join tokens from %s; try again in %ds"
                             % (peer, wait)}, close=True)
            return
        if not srv.slots.acquire(timeout=5):
            self._refuse(503, join.JoinBusy(detail="%d joins in progress" % MAX_CONCURRENT),
                         close=True)
            return
        try:
            if api is not None:
                self._api(api, peer)
            else:
                self._join(srv, peer)
        except Exception as exc:    # noqa: BLE001 - every request gets an answer
            LOG.exception("%s from %s: unexpected error", self.path[:40], peer)
            self._refuse(500, errors.RackforgeError("internal error (%s); the detail is in "
                                                    "the join service's journal"
                                                    % exc.__class__.__name__), close=True)
        finally:
            srv.slots.release()

    def _body(self, limit, bad=join.BadJoinRequest):
        """The request body: ``Content-Length`` bytes, 1 to ``limit``; else ``bad``."""
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise bad(detail="Content-Length must be a number of bytes")
        if not 0 < int(length) <= limit:
            raise bad(detail="the body must be 1 byte to %d KiB of JSON" % (limit >> 10))
        return self.rfile.read(int(length))

    def _join(self, srv, peer):
        srv.posts += 1
        token = join.token_from_header(self.headers.get("Authorization"))
        try:
            if token is None:
                raise tokens.TokenMalformed(node="(unnamed)")
            srv.service.check_token(token)          # before the body is read
            body = decode_body(self._body(MAX_BODY))
            request = join.parse_request(body, peer, token=token)
            answer = srv.service.join(request)
        except errors.RackforgeError as exc:
            status = join.refusal_status(exc)
            if isinstance(exc, tokens.TokenError):
                srv.throttle.refused(peer)
                LOG.warning("join refused from %s: %s", peer, exc)
            self._refuse(status, exc, close=status != 503)
        else:
            self._send(200, answer)

    def _api(self, handler, peer):
        """The install or discovery API's answer (``handler`` serves ``self.path``)."""
        try:
            answer = handler.handle(self.path, self._body(handler.MAX_BODY, handler.BadRequest),
                                    peer)
        except errors.RackforgeError as exc:
            status = handler.status_of(exc)
            if status in getattr(handler, "COUNTED", (403,)):
                self.server.throttle.refused(peer)
            self._refuse(status, exc, close=status != 503)
        else:
            self._send(200, answer)


class _TLSServer(http.server.ThreadingHTTPServer):
    """HTTPS with the TLS handshake in each connection's own thread: wrapping the
    listening socket would run every handshake inside ``accept()``."""
    daemon_threads = True
    request_queue_size = 128           # 48 nodes joining at once must not see SYN drops

    def __init__(self, address, handler, context):
        self.ssl_context = context
        super().__init__(address, handler)

    def finish_request(self, request, client_address):
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            LOG.debug("join: TLS handshake with %s failed: %s", client_address[0], exc)
            return
        try:
            tls.settimeout(IDLE_TIMEOUT)
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()


class JoinServer:
    """The join service over HTTPS on ``host:port`` (port 0: any free port); with
    ``install`` and ``discover``, the install and discovery APIs too."""

    def __init__(self, service, host, port=join.DEFAULT_PORT, cert_dir=None, install=None,
                 discover=None):
        cert_pem, key_pem = ca_mod.certify_here(service.authority, "rackforge-join", [host],
                                                ca_mod.JOIN_SERVICE)
        self._tmp = None
        if cert_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="rackforge-join-")
            cert_dir = self._tmp.name
        cert_dir = Path(cert_dir)
        make_dirs(cert_dir, 0o700)
        atomic_write(cert_dir / "join.crt", cert_pem + service.authority.cert_pem)
        atomic_write(cert_dir / "join.key", key_pem, mode=0o600)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert_dir / "join.crt", cert_dir / "join.key")
        self.httpd = _TLSServer((host, port), _Handler, context)
        self.httpd.service = service
        self.httpd.apis = [api for api in (install, discover) if api is not None]
        self.httpd.posts = 0
        self.httpd.slots = threading.BoundedSemaphore(MAX_CONCURRENT)
        self.httpd.throttle = Throttle()
        self.host, self.port = host, self.httpd.server_address[1]
        self._thread = None

    @property
    def endpoint(self):
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "https://%s:%d" % (host, self.port)

    @property
    def posts(self):
        return self.httpd.posts

    def start(self):
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="join-server",
                                        kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(timeout=10)
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
