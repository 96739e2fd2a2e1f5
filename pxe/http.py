"""HTTP boot: the iPXE scripts and the large files of the PXE bundle.

Only these paths exist:

``/boot.ipxe``
    the chain script DHCP hands to iPXE clients; it asks for ``/ipxe/node``;
``/ipxe/node?mac=..&platform=..``
    the per-node script, decided from the node registry (``bootscript``);
``/bundle/<name>``
    ``vmlinuz``, ``initrd`` and ``rootfs.squashfs`` from the bundle directory,
    with ``Content-Length`` and single ``Range`` requests so an interrupted
    download resumes; the body goes out with ``sendfile``.

Anything else is a 404: no directory listings, no path taken from the
request is ever opened.
"""

import logging
import os
import re
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from rackforge import bundle, errors
from rackforge.pxe import bootrecords, bootscript, limits

LOG = logging.getLogger("rackforge.pxe.http")
BUNDLE_FILES = bundle.SERVED
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)\Z")
NODE_BURST, NODE_RATE = 10, 1 / 6.0   # per client address: 10 scripts at once, then 10 a minute


class HttpBindFailed(errors.RackforgeError):
    message = "cannot serve HTTP on {address}:{port}: {detail}; free the port or pick --http-port"


class TooFast(errors.RackforgeError):
    message = "{client} asked for boot scripts too often; wait and retry"


class BootHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, port, bundle_dir, renderer, registry, seed, cluster,
                 public_url=None, on_boot=None, recorder=None):
        self.bundle_dir = bundle_dir
        self.renderer = renderer
        self.registry = registry
        self.seed = seed
        self.cluster = cluster
        self.files = {name: os.path.join(bundle_dir, name) for name in BUNDLE_FILES}
        self.requests = 0
        self.on_boot = on_boot      # called with each recorded MAC, before its script goes out
        self.recorder = recorder or bootrecords.BootRecorder(registry)
        self.node_rate = limits.RateLimiter(NODE_BURST, NODE_RATE)
        self._lock = threading.Lock()
        try:
            super().__init__((address, port), BootRequestHandler)
        except OSError as e:
            raise HttpBindFailed(address=address, port=port, detail=e.strerror) from e
        self.base_url = public_url or "http://%s:%d" % (address, self.server_address[1])
        self._thread = None

    def start(self):
        # a short poll keeps stop() quick; the loop itself wakes on each request
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="pxe-http", daemon=True)
        self._thread.start()

    def stop(self):
        if self._thread:
            self.shutdown()
            self._thread.join()
        self.server_close()

    def count(self):
        with self._lock:
            self.requests += 1

    def node_script(self, mac, platform, client):
        """The per-node script for ``mac``, or None for a request that is refused.

        Garbage (a bad MAC or platform) and a client over its rate are refused
        before the registry is read; the boot is recorded within
        :class:`rackforge.pxe.bootrecords.BootRecorder`'s bounds, and the MAC added
        to dnsmasq's hosts (``on_boot``) only when its boot was recorded.
        """
        mac, platform = bootrecords.check_boot(mac, platform)
        if not self.node_rate.allow(client):
            raise TooFast(client=client)
        try:
            node = self.registry.node_by_mac(mac)
            decision = bootscript.decide(node)
            recorded = self.recorder.record(mac, decision.kind, platform,
                                            node.name if node else None)
        except errors.RackforgeError as e:
            LOG.error("boot of %s: %s", mac, e)
            return self.renderer.retry(self.base_url, "node registry unavailable")
        if recorded and self.on_boot:
            self.on_boot(mac)
        LOG.info("boot of %s (%s): %s%s", mac, platform or "?", decision.kind,
                 " for node %s (%s)" % (node.name, node.state) if node else " (unknown MAC)")
        return self.renderer.for_node(decision, self.base_url, self.base_url + "/bundle",
                                      self.seed, self.cluster, node.id if node else None)


class BootRequestHandler(BaseHTTPRequestHandler):
    server_version = "rackforge-boot"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        LOG.debug("%s %s", self.client_address[0], fmt % args)

    def do_HEAD(self):
        self._handle(head=True)

    def do_GET(self):
        self._handle(head=False)

    def _handle(self, head):
        self.server.count()
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/boot.ipxe":
            return self._text(self.server.renderer.chain(self.server.base_url, self.server.seed),
                              head)
        if url.path == "/ipxe/node":
            query = urllib.parse.parse_qs(url.query, max_num_fields=8)
            mac, platform = query.get("mac", [""])[0], query.get("platform", [""])[0]
            try:
                script = self.server.node_script(mac, platform, self.client_address[0])
            except TooFast as e:
                return self._error(HTTPStatus.TOO_MANY_REQUESTS, str(e))
            except bootrecords.BadBoot as e:
                return self._error(HTTPStatus.BAD_REQUEST, str(e))
            return self._text(script, head)
        if url.path.startswith("/bundle/"):
            path = self.server.files.get(url.path[len("/bundle/"):])
            if path:
                return self._file(path, head)
        LOG.info("%s asked for %s: not served", self.client_address[0], url.path[:200])
        return self._error(HTTPStatus.NOT_FOUND, "not served here")

    def _text(self, text, head):
        body = text.encode()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _error(self, status, text):
        body = (text + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _file(self, path, head):
        try:
            f = open(path, "rb")
        except OSError:
            return self._error(HTTPStatus.NOT_FOUND, "not in this bundle")
        with f:
            size = os.fstat(f.fileno()).st_size
            span = parse_range(self.headers.get("Range"), size)
            if span == "unsatisfiable":
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", "bytes */%d" % size)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, end = span or (0, size - 1)
            length = max(0, end - start + 1)
            self.send_response(HTTPStatus.PARTIAL_CONTENT if span else HTTPStatus.OK)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(length))
            if span:
                self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
            self.end_headers()
            if head or length == 0:
                return
            LOG.info("%s fetches %s (%d bytes from %d)", self.client_address[0],
                     os.path.basename(path), length, start)
            self.wfile.flush()
            self.connection.sendfile(f, offset=start, count=length)


def parse_range(header, size):
    """``(start, end)`` inclusive for a single byte range, None for the whole file,
    or ``"unsatisfiable"``.  Several ranges are answered with the whole file."""
    if not header:
        return None
    m = _RANGE_RE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.groups()
    if not first:                      # bytes=-N: the last N bytes
        n = int(last)
        if n == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        return "unsatisfiable"
    return start, end
