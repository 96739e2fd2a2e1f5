"""The node agent's local API: what the console on tty1 reads, on a unix socket only root
opens.  The console holds no etcd credential of its own; the agent answers from its own.

- The socket is ``/run/rackforge-nodeagent/api.sock``: mode 0600 in a 0700
  directory (the unit's ``RuntimeDirectory``), and each connection's peer is
  checked (``SO_PEERCRED``): uid 0 or refused.
- HTTP/1.1 with JSON bodies, so that ``curl --unix-socket`` works for a person too.
  ``GET /v1/status``: this node (name, roles and why, state, address, BMC, version,
  profile, uptime) and the cluster at a glance (``cluster status``'s document).
- A handler that fails answers 503 with one line (``{"error": ...}``): the registry
  may be away while the node is not, and the console says so instead of dying.

:class:`Client` is the other end (the console's).
"""

import http.client
import http.server
import json
import logging
import os
import socket
import socketserver
import struct
import threading
from pathlib import Path

from rackforge import errors

LOG = logging.getLogger(__name__)
SOCKET = Path("/run/rackforge-nodeagent/api.sock")
MAX_BODY = 64 * 1024


class LocalApiError(errors.RackforgeError):
    message = "the node agent's local API ({path}): {detail}"
    retryable = True


def peer_uid(sock):
    """The uid of the process at the other end of a unix socket."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "rackforge-nodeagent"

    def address_string(self):
        return "local"

    def log_message(self, fmt, *args):        # the journal, not stderr; no bodies
        LOG.debug("local API: " + fmt, *args)

    def _answer(self, code, body):
        data = json.dumps(body, sort_keys=True).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method):
        if peer_uid(self.connection) not in self.server.allowed_uids:
            self._answer(403, {"error": "root only"})
            return
        handler = self.server.routes.get((method, self.path.split("?")[0]))
        if handler is None:
            self._answer(404, {"error": "no %s %s" % (method, self.path)})
            return
        body = None
        if method == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._answer(413, {"error": "a body of %d bytes is too large" % length})
                return
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self._answer(400, {"error": "the body is not JSON"})
                return
        try:
            result = handler(body) if method == "POST" else handler()
        except errors.RackforgeError as exc:
            self._answer(503 if exc.retryable else 400, {"error": str(exc)})
            return
        except Exception as exc:            # noqa: BLE001 - one line; the agent goes on
            LOG.exception("local API %s %s failed", method, self.path)
            self._answer(503, {"error": "%s: %s" % (type(exc).__name__, str(exc)[:200])})
            return
        self._answer(200, result)

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class LocalApi:
    """Serves ``routes`` ({(method, path): callable}) on ``path`` in a thread of its own.
    ``allowed_uids``: who may ask (root; tests add their own uid)."""

    def __init__(self, routes, path=SOCKET, allowed_uids=(0,)):
        self.routes = dict(routes)
        self.path = Path(path)
        self.allowed_uids = set(allowed_uids)
        self.server = None

    def start(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        try:
            self.path.unlink()          # the last agent's, if it was killed
        except FileNotFoundError:
            pass
        old = os.umask(0o177)           # the socket is born 0600: no moment open to others
        try:
            self.server = _Server(str(self.path), _Handler)
        finally:
            os.umask(old)
        self.server.routes = self.routes
        self.server.allowed_uids = self.allowed_uids
        threading.Thread(target=self.server.serve_forever, name="local-api",
                         daemon=True).start()
        return self

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = str(path)

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


class Client:
    """The console's end: ``get(path)`` and ``post(path, body)`` return the JSON answer or
    raise :class:`LocalApiError` with the agent's one line."""

    def __init__(self, path=SOCKET, timeout=10):
        self.path = Path(path)
        self.timeout = timeout

    def request(self, method, path, body=None, timeout=None):
        conn = _UnixConnection(self.path, timeout or self.timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data,
                         headers={"Content-Type": "application/json"} if data else {})
            res = conn.getresponse()
            raw = res.read()
        except FileNotFoundError:
            raise LocalApiError(path=self.path, detail="no socket: is rackforge-nodeagent "
                                "running? ('systemctl status rackforge-nodeagent')") from None
        except (OSError, http.client.HTTPException) as exc:
            raise LocalApiError(path=self.path, detail=str(exc) or type(exc).__name__) \
                from None
        finally:
            conn.close()
        try:
            answer = json.loads(raw or b"null")
        except ValueError:
            raise LocalApiError(path=self.path, detail="an answer that is not JSON") from None
        if res.status != 200:
            raise LocalApiError(path=self.path, detail=(answer or {}).get("error")
                                or "HTTP %d" % res.status)
        return answer

    def get(self, path, timeout=None):
        return self.request("GET", path, timeout=timeout)

    def post(self, path, body, timeout=None):
        return self.request("POST", path, body, timeout=timeout)
