"""Stand-ins for etcd members on loopback, for the client's failover tests.

- :class:`Gateway`: etcd's v3 JSON gateway (``/v3/kv/range``, ``/v3/kv/txn``)
  over HTTP, backed by :class:`rackforge.kvstore.MemoryKV` (the same revision
  semantics as the registry's in-memory store).  ``lose_next`` makes it lose
  the answer to the next transaction, after applying it or before, the way
  a member that stalls or dies mid-request does.
- :func:`hung_socket`: a member that accepts connections and never says a
  word (a hung process: the kernel completes the handshake from the backlog).
- :func:`closed_port`: a port where nothing listens (a refused connection).
"""

import base64
import json
import socket
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from rackforge.kvstore import Compare, MemoryKV


def _d(text):
    return base64.b64decode(text or "")


def _e(data):
    return base64.b64encode(data).decode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self, status, data):
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        gw = self.server.gateway
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        gw.requests.append(self.path)
        if gw.status is not None:
            self._answer(gw.status, {"error": "etcdserver: %s" % gw.reason, "code": 9})
            return
        kv = gw.kv
        if self.path == "/v3/kv/range":
            key = _d(body["key"]).decode()
            if "range_end" in body:
                end = _d(body["range_end"]).decode()
                found = [e for e in kv.get_prefix("") if key <= e.key < end]
            else:
                found = [e for e in [kv.get(key)] if e is not None]
            self._answer(200, {"kvs": [{"key": _e(e.key.encode()), "value": _e(e.value),
                                        "mod_revision": str(e.mod_revision),
                                        "create_revision": str(e.create_revision)}
                                       for e in found]})
        elif self.path == "/v3/kv/txn":
            lose, gw.lose_next = gw.lose_next, None
            if lose == "before":
                gw.released.wait(30)            # hangs, applies nothing
                return
            compares = [Compare(_d(c["key"]).decode(), int(c.get("mod_revision", 0)))
                        for c in body["compare"]]
            puts = [(_d(op["request_put"]["key"]).decode(), _d(op["request_put"]["value"]))
                    for op in body["success"] if "request_put" in op]
            deletes = [_d(op["request_delete_range"]["key"]).decode()
                       for op in body["success"] if "request_delete_range" in op]
            ok = kv.txn(compares, puts, deletes)
            gw.applied += ok
            if lose == "after":
                gw.released.wait(30)            # applied; the answer never comes
                return
            self._answer(200, {"succeeded": ok})
        else:
            self._answer(404, {"error": "no such path"})


class Gateway:
    """One etcd-like member on ``127.0.0.1:<port>``; ``kv`` may be shared between members."""

    def __init__(self, kv=None):
        self.kv = kv or MemoryKV()
        self.requests = []
        self.applied = 0
        self.lose_next = None       # "before" | "after" the next transaction is applied
        self.status = None          # answer every request with this HTTP status
        self.reason = ""
        self.released = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.gateway = self
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def hung_socket():
    """A URL whose listener accepts (from the backlog) and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    try:
        yield "http://127.0.0.1:%d" % s.getsockname()[1]
    finally:
        s.close()


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return "http://127.0.0.1:%d" % port
