"""HTTP boot: the iPXE scripts and the large files of the PXE bundle.

Only these paths exist:

``/boot.ipxe``
    the chain script DHCP hands to iPXE clients; it asks for ``/ipxe/node``;
``/ipxe/node?mac=..&platform=..``
    the per-node script, decided from the node registry (``bootscript``) in a
    worker thread; garbage is a 400 and a client past its rate (10 at once,
    then one every 6 s) a 429, both before the registry is read; what is
    recorded is bounded by ``bootrecords``;
``/bundle/<name>``
    ``vmlinuz``, ``initrd`` and ``rootfs.squashfs`` from the bundle directory,
    with ``Content-Length`` and single ``Range`` requests so an interrupted
    download resumes; the body goes out with ``sendfile``.

Anything else is a 404: no directory listings, no path taken from the
request is ever opened.  The connections, their timeouts and caps are
``httpserver``'s; this module only says what each path answers.
"""

import logging
import os
import re
import urllib.parse
from http import HTTPStatus

from rackforge import bundle, errors
from rackforge.pxe import bootrecords, bootscript, limits
from rackforge.pxe.httpserver import (HttpBindFailed, HttpServer, Limits, Response,
                                      error_response)

__all__ = ["BootHttpServer", "HttpBindFailed", "Limits", "parse_range"]

LOG = logging.getLogger("rackforge.pxe.http")
BUNDLE_FILES = bundle.SERVED
# at most 19 digits: a larger number is no offset in any file, and int() of
# thousands of digits is slow (Python refuses past 4,300)
_RANGE_RE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")
NODE_BURST, NODE_RATE = 10, 1 / 6.0   # per client address: 10 scripts at once, then 10 a minute


class TooFast(errors.RackforgeError):
    message = "{client} asked for boot scripts too often; wait and retry"


class BootHttpServer:
    """The boot paths above on ``address:port`` (0: a free port, see ``server_address``).

    ``on_boot(mac)`` is called for each MAC whose boot was recorded, before
    its script goes out (dnsmasq's hosts in full mode).  ``start()`` serves in
    background threads, ``stop()`` ends them; ``stats()`` is the server's
    counts; ``requests`` the requests answered.
    """

    def __init__(self, address, port, bundle_dir, renderer, registry, seed, cluster,
                 public_url=None, on_boot=None, recorder=None, http_limits=None):
        self.bundle_dir = bundle_dir
        self.renderer = renderer
        self.registry = registry
        self.seed = seed
        self.cluster = cluster
        self.files = {name: os.path.join(bundle_dir, name) for name in BUNDLE_FILES}
        self.on_boot = on_boot
        self.recorder = recorder or bootrecords.BootRecorder(registry)
        self.node_rate = limits.RateLimiter(NODE_BURST, NODE_RATE)
        self._log = limits.LogLimiter(LOG)
        self.server = HttpServer(address, port, self.route, http_limits, name="pxe-http")
        self.server_address = self.server.server_address
        self.base_url = public_url or "http://%s:%d" % (address, self.server_address[1])
        self._chain = renderer.chain(self.base_url, seed).encode()

    def start(self):
        self.server.start()

    def stop(self):
        self.server.stop()

    def stats(self):
        return self.server.stats()

    @property
    def requests(self):
        return self.server.counts["requests"]

    # -- the paths ----------------------------------------------------------------
    def route(self, request):
        """The :class:`Response` for ``request``, or a job for a worker (``/ipxe/node``)."""
        url = urllib.parse.urlsplit(request.target)
        if url.path == "/boot.ipxe":
            return text_response(self._chain)
        if url.path == "/ipxe/node":
            query = urllib.parse.parse_qs(url.query, max_num_fields=8)
            mac, platform = query.get("mac", [""])[0], query.get("platform", [""])[0]
            try:
                mac, platform = bootrecords.check_boot(mac, platform)
            except bootrecords.BadBoot as e:
                return error_response(HTTPStatus.BAD_REQUEST, str(e))
            if not self.node_rate.allow(request.client):
                self._log.log("rate", logging.WARNING, "%s: too many boot script requests;"
                              " answered 429", request.client)
                return error_response(HTTPStatus.TOO_MANY_REQUESTS,
                                      str(TooFast(client=request.client)))
            return lambda: text_response(self.node_script(mac, platform).encode())
        if url.path.startswith("/bundle/"):
            path = self.files.get(url.path[len("/bundle/"):])
            if path:
                return self.file_response(path, request)
        self._log.log("404", logging.INFO, "%s asked for %s: not served", request.client,
                      ascii(url.path[:80]))
        return error_response(HTTPStatus.NOT_FOUND, "not served here")

    def node_script(self, mac, platform):
        """The script for ``mac`` (checked by ``check_boot``); records the boot."""
        join = ca = None
        try:
            node = self.registry.node_by_mac(mac)
            decision = bootscript.decide(node)
            if decision.kind in bootscript.ASKS_THE_SEED:
                join, ca = bootscript.install_args(self.registry.kv, self.seed)
            recorded = self.recorder.record(mac, decision.kind, platform,
                                            node.name if node else None)
        except errors.RackforgeError as e:
            self._log.log("registry", logging.ERROR, "boot of %s: %s", mac, e)
            return self.renderer.retry(self.base_url, "node registry unavailable")
        if recorded and self.on_boot:
            try:
                self.on_boot(mac)
            except (OSError, errors.RackforgeError) as e:
                self._log.log("on_boot", logging.ERROR, "boot of %s: DHCP hosts entry not"
                              " written: %s", mac, e)
        LOG.info("boot of %s (%s): %s%s", mac, platform or "?", decision.kind,
                 " for node %s (%s)" % (node.name, node.state) if node else " (unknown MAC)")
        return self.renderer.for_node(decision, self.base_url, self.base_url + "/bundle",
                                      self.seed, self.cluster, node.id if node else None,
                                      join, ca)

    def file_response(self, path, request):
        try:
            f = open(path, "rb")
        except OSError:
            return error_response(HTTPStatus.NOT_FOUND, "not in this bundle")
        size = os.fstat(f.fileno()).st_size
        span = parse_range(request.headers.get("range"), size)
        if span == "unsatisfiable":
            f.close()
            return Response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                            [("Content-Range", "bytes */%d" % size), ("Content-Length", "0")])
        start, end = span or (0, size - 1)
        length = end - start + 1
        headers = [("Content-Type", "application/octet-stream"), ("Accept-Ranges", "bytes"),
                   ("Content-Length", str(length))]
        if span:
            headers.append(("Content-Range", "bytes %d-%d/%d" % (start, end, size)))
        name = os.path.basename(path)
        if length == 0:
            f.close()
            f = None
        elif request.method == "GET":
            LOG.info("%s fetches %s (%d bytes from %d)", request.client, name, length, start)
        return Response(HTTPStatus.PARTIAL_CONTENT if span else HTTPStatus.OK, headers,
                        file=f, offset=start, length=length,
                        log="%s (%d bytes from %d)" % (name, length, start))


def text_response(body):
    headers = [("Content-Type", "text/plain; charset=utf-8"),
               ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
    return Response(HTTPStatus.OK, headers, body)


def parse_range(header, size):
    """``(start, end)`` inclusive for a single byte range, None for the whole file,
    or ``"unsatisfiable"`` (RFC 9110 14.1.2).  Several ranges, and numbers of
    more than 19 digits, are answered with the whole file."""
    if not header:
        return None
    m = _RANGE_RE.fullmatch(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.groups()
    if not first:                      # bytes=-N: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    start = int(first)
    if start >= size or (last and int(last) < start):
        return "unsatisfiable"
    end = min(int(last), size - 1) if last else size - 1
    return start, end
