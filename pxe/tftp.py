"""Read-only TFTP server for the iPXE binaries, built on tftpy.

tftpy gives the protocol pieces: packet encoding and decoding, the transfer
context and the download state machine (``TftpStateExpectACK``: DATA, ACK,
OACK, resend).  Its ``TftpServer.listen`` loop and its request states are
replaced, because they do what a boot server must not:

- the first datagram goes through ``tftp_request`` (parser and path resolver),
  the only gate to the file system; tftpy's own RRQ/WRQ states never run, so
  its string-prefix root check and its upload path are unreachable;
- any exception while handling one packet ends that transfer only (tftpy's
  loop dies on a non-UTF-8 name or a short ACK);
- packets from a wrong address or port get error 5 and are dropped (tftpy
  logs them and then handles them anyway);
- an epoll selector maps a socket to its transfer in O(1), timeouts are
  scanned a few times a second and not after every packet, and the session
  sockets are non-blocking (tftpy polls before every ``recvfrom``);
- ``stop()`` wakes the loop at once instead of after the select timeout.

The boot network is not trusted, and a UDP source address can be forged:

- a transfer whose client has not answered yet (a spoofed request never is)
  is not resent by the server: only a repeated request resends its first
  packet (at most twice a second), and it ends after ``unanswered_timeout``
  (2 s); once the client answers, ``timeout`` and ``retries`` apply;
- when every slot (``max_transfers``) is taken, the oldest unanswered transfer
  makes room for the new request; one address holds ``max_per_client``
  transfers at most;
- garbage (malformed requests, stray DATA/ACK/OACK/ERROR) gets no answer; a
  well-formed request that is refused gets an error packet of at most 24
  bytes with a fixed text, nothing echoed;
- refusals and failed transfers are logged on ``rackforge.pxe.tftp`` through
  a rate-limited log (20 lines at once, then one a second, with the count of
  lines left out).

tftpy's own loggers are quieted to CRITICAL: they log several lines per
event, at warning level for normal things.
"""

import errno
import logging
import selectors
import socket
import struct
import threading
import time

from tftpy.TftpContexts import TftpContext
from tftpy.TftpPacketFactory import TftpPacketFactory
from tftpy.TftpPacketTypes import TftpPacketACK
from tftpy.TftpShared import TftpException, TftpTimeout
from tftpy.TftpStates import TftpStateExpectACK

from rackforge.errors import ConfigError, RackforgeError
from rackforge.pxe import tftp_request as rq
from rackforge.pxe.limits import LogLimiter

LOG = logging.getLogger("rackforge.pxe.tftp")

MAX_DATAGRAM = 65536


class TftpBindFailed(RackforgeError):
    message = "cannot serve TFTP on {host}:{port}: {reason}; {hint}"


class TftpRootMissing(ConfigError):
    message = "TFTP root {root} is not a directory; build the PXE bundle or fix --bundle"


_BIND_HINTS = {
    errno.EADDRINUSE: "another TFTP server (dnsmasq --enable-tftp, tftpd-hpa?) holds the port;"
                      " stop it or choose another port",
    errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE",
    errno.EADDRNOTAVAIL: "the address is not configured on any interface of this host",
}


_HEADER = struct.Struct("!HH")


class _ExpectACK(TftpStateExpectACK):
    """tftpy's download state with a lean ``sendDAT``: the same protocol, without
    per-block packet objects, log calls and clock reads (about a third of the
    server's CPU per block under the 64-client benchmark)."""

    def sendDAT(self):
        ctx = self.context
        blksize = ctx.blksize
        data = ctx.fileobj.read(blksize)
        packet = _HEADER.pack(rq.DATA, ctx.next_block) + data
        ctx.sock.sendto(packet, ctx.client)
        ctx.metrics.bytes += len(data)
        ctx.last_raw = packet
        return len(data) < blksize

    def sendOACK(self):
        super().sendOACK()
        self.context.last_raw = self.context.last_pkt.buffer

    def resendLast(self):
        ctx = self.context
        ctx.resends += 1
        ctx.sock.sendto(ctx.last_raw, ctx.client)


_ERROR_TEXT = {rq.NOT_DEFINED: b"refused", rq.FILE_NOT_FOUND: b"file not found",
               rq.ACCESS_VIOLATION: b"access violation", rq.ILLEGAL_OP: b"illegal operation",
               rq.BAD_OPTIONS: b"bad options", 5: b"unknown transfer id"}


def _error_packet(code):
    """A short error packet: a fixed text per code, nothing echoed from the request,
    at most 24 bytes (so a refused request is not an amplifier)."""
    return struct.pack("!HH", rq.ERROR, code) + _ERROR_TEXT.get(code, b"error") + b"\0"


class _Transfer(TftpContext):
    """One download: a tftpy context driven by ``TftpServer``'s loop."""

    factory = TftpPacketFactory()

    def __init__(self, server, client, name, fileobj, options):
        super().__init__(client[0], client[1], server.timeout, server.retries,
                         localip=server.session_ip, flock=False)
        self.sock.setblocking(False)
        self.client = client
        self.resends = 0
        self.tidport = client[1]
        self.fileobj = fileobj
        self.file_to_transfer = name
        self.options = dict(options)     # only what the client asked for (RFC 2347);
        # tftpy's own server also acknowledges blksize 512 when only tsize was asked
        self.accepted = bool(options)
        self.answered = False            # nothing from the client yet: maybe spoofed
        self.started = self.last_resend = time.monotonic()
        self.deadline = self.started + server.unanswered_timeout
        self.metrics.start_time = time.time()
        self.blksize = int(self.options.get("blksize", 512))
        self.last_raw = None
        self.state = _ExpectACK(self)

    def begin(self):
        """Send the OACK, or the first block when no option was accepted."""
        if self.accepted:
            self.next_block = 0          # the client ACKs the OACK with block 0
            self.state.sendOACK()
        else:
            self.next_block = 1
            self.pending_complete = self.state.sendDAT()

    def on_packet(self, data, addr):
        """Handle one datagram; return True when the transfer is over."""
        if addr != self.client:
            self.sock.sendto(_error_packet(5), addr)
            return False
        self.answered = True
        self.deadline = time.monotonic() + self.timeout
        if len(data) >= 4 and data[:2] == b"\0\4":     # ACK, the common case: no factory
            pkt = TftpPacketACK()
            pkt.blocknumber = _HEADER.unpack_from(data)[1]
        else:
            pkt = self.factory.parse(data)
        try:
            self.state = self.state.handle(pkt, *addr)
        except TftpTimeout:
            self.resend()           # duplicate ACKs past the timeout: resend at once
            return False
        self.retry_count = 0
        return self.state is None

    def resend(self):
        self.retry_count += 1
        self.deadline = time.monotonic() + self.timeout
        self.state.resendLast()


class TftpServer:
    """Serve the regular files under ``root`` read-only over TFTP on ``host:port``.

    ``start()`` binds (raising ``TftpBindFailed`` if it cannot) and serves in a
    daemon thread; ``stop()`` stops and joins.  ``port=0`` picks a free port,
    read back from ``port``.
    """

    max_transfers = 256          # dnsmasq's default of 50 is too few for a rack
    max_per_client = 8           # transfers at once from one address
    unanswered_timeout = 2.0     # seconds a transfer waits for its client's first packet
    scan_interval = 0.25         # seconds between timeout scans

    def __init__(self, root, host, port=69, blksize_max=1468, timeout=5, retries=3):
        self.root = root
        self.host = host
        self.port = port
        self.blksize_max = blksize_max
        self.timeout = timeout
        self.retries = retries
        self.session_ip = "" if host in ("", "0.0.0.0") else host
        self._sock = None
        self._thread = None
        self._wake = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._transfers = {}      # fd -> _Transfer
        self._clients = {}        # (ip, port) -> its active _Transfer
        self._per_ip = {}         # ip -> active transfers
        self._log = LogLimiter(LOG)
        self._stats = {"transfers": 0, "refused": 0, "bytes": 0, "failed": 0, "resent": 0,
                       "evicted": 0}

    # -- public API ---------------------------------------------------------

    def start(self):
        """Bind and serve in a background thread; return once bound."""
        if self._thread is not None:
            return
        try:
            self._root = rq.resolve_root(self.root)
        except OSError:
            raise TftpRootMissing(root=self.root) from None
        logging.getLogger("tftpy").setLevel(logging.CRITICAL)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, self.port))
        except OSError as err:
            sock.close()
            raise TftpBindFailed(host=self.host, port=self.port,
                                 reason=(err.strerror or str(err)).lower(),
                                 hint=_BIND_HINTS.get(err.errno, "check --interface")) from None
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._wake = socket.socketpair()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name="tftp-%d" % self.port,
                                        daemon=True)
        self._thread.start()
        LOG.info("serving %s read-only over TFTP on %s:%d", self._root, self.host, self.port)

    def stop(self):
        """Stop serving, end every transfer, join the thread.  Idempotent."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        try:
            self._wake[1].send(b"x")
        except OSError:
            pass
        thread.join()
        self._thread = None

    def stats(self):
        """Completed transfers, refused requests, payload bytes sent, active
        transfers (plus failed transfers and resent packets)."""
        with self._lock:
            out = dict(self._stats)
            out["bytes"] += sum(t.metrics.bytes for t in self._transfers.values())
            out["active"] = len(self._transfers)
        return out

    # -- the loop -----------------------------------------------------------

    def _serve(self):
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ, None)
        sel.register(self._wake[0], selectors.EVENT_READ, None)
        self._sel = sel
        next_scan = time.monotonic() + self.scan_interval
        try:
            while not self._stopping.is_set():
                try:
                    for key, _ in sel.select(max(0.0, next_scan - time.monotonic())):
                        if key.data is not None:
                            self._on_transfer(key.data)
                        elif key.fileobj is self._sock:
                            self._on_request()
                    now = time.monotonic()
                    if now >= next_scan:
                        self._scan_timeouts(now)
                        next_scan = now + self.scan_interval
                except Exception as err:     # a bug here must not end TFTP for good
                    self._log.log("loop", logging.ERROR, "TFTP loop error (%s: %s); serving"
                                  " goes on", type(err).__name__, err)
                    self._stopping.wait(0.1)
        finally:
            for transfer in list(self._transfers.values()):
                self._end(transfer, "server stopping", ok=False)
            sel.close()
            self._sock.close()
            for s in self._wake:
                s.close()
            LOG.info("TFTP server on %s:%d stopped", self.host, self.port)

    def _on_request(self):
        try:
            data, addr = self._sock.recvfrom(MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:      # e.g. ICMP port unreachable reported late
            LOG.debug("receive on the TFTP port failed: %s", err)
            return
        if addr in self._clients:
            self._again(self._clients[addr])
            return
        fileobj = None
        try:
            req = rq.parse_request(data)
            if self._per_ip.get(addr[0], 0) >= self.max_per_client:
                raise rq.Refused(rq.NOT_DEFINED, "%d transfers from %s already"
                                 % (self.max_per_client, addr[0]))
            if len(self._transfers) >= self.max_transfers and not self._evict_unanswered():
                raise rq.Refused(rq.NOT_DEFINED, "too many transfers (%d)" % self.max_transfers)
            fileobj, path, size = rq.open_in_root(self._root, req.filename)
            options = rq.negotiate(req.options, size, self.blksize_max)
            transfer = _Transfer(self, addr, req.filename, fileobj, options)
        except rq.Refused as refusal:
            if fileobj is not None:
                fileobj.close()
            self._refuse(addr, data, refusal)
            return
        except Exception as err:    # socket exhaustion and the like: refuse, keep serving
            if fileobj is not None:
                fileobj.close()
            self._refuse(addr, data, rq.Refused(rq.NOT_DEFINED, "server error: %s" % err))
            return
        with self._lock:
            self._transfers[transfer.sock.fileno()] = transfer
            self._clients[addr] = transfer
            self._per_ip[addr[0]] = self._per_ip.get(addr[0], 0) + 1
        self._sel.register(transfer.sock, selectors.EVENT_READ, transfer)
        try:
            transfer.begin()
        except Exception as err:
            self._end(transfer, "send failed: %s" % err, ok=False)

    def _again(self, transfer):
        """The client repeated its request: it lost our first packet, or a spoofer
        repeats it.  Unanswered transfers are resent only this way, at most twice
        a second: the server never sends more unasked than the first packet."""
        now = time.monotonic()
        if transfer.answered or now - transfer.last_resend < 0.5:
            return
        transfer.last_resend = now
        try:
            transfer.state.resendLast()
        except Exception as err:
            self._end(transfer, "resend failed: %s" % err, ok=False)

    def _evict_unanswered(self):
        """End the oldest transfer whose client never answered; False if there is none."""
        waiting = [t for t in self._transfers.values() if not t.answered]
        if not waiting:
            return False
        self._end(min(waiting, key=lambda t: t.started), "evicted: no answer from the client",
                  ok=False)
        with self._lock:
            self._stats["evicted"] += 1
        return True

    def _refuse(self, addr, data, refusal):
        with self._lock:
            self._stats["refused"] += 1
        self._log.log("refused", logging.WARNING, "refused request from %s:%d for %s: %s"
                      " (TFTP error %d%s)", addr[0], addr[1], rq.peek_name(data),
                      refusal.reason, refusal.code, "" if refusal.reply else ", not answered")
        if refusal.reply:
            # From a fresh port, as a transfer would (RFC 1350): clients that
            # ACK an error "to be nice" (tftp-hpa) then hit a closed port, not
            # the server's, which would log a second refusal.
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tid:
                    tid.bind((self.session_ip, 0))
                    tid.sendto(_error_packet(refusal.code), addr)
            except OSError:
                pass

    def _on_transfer(self, transfer):
        try:
            data, addr = transfer.sock.recvfrom(MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            self._end(transfer, "receive failed: %s" % err, ok=False)
            return
        try:
            done = transfer.on_packet(data, addr)
        except TftpException as err:
            self._end(transfer, str(err).splitlines()[0], ok=False)
        except Exception as err:    # a malformed packet must not stop the server
            self._end(transfer, "bad packet: %s" % (str(err) or type(err).__name__), ok=False)
        else:
            if done:
                self._end(transfer, None, ok=True)

    def _scan_timeouts(self, now):
        for transfer in list(self._transfers.values()):
            if now < transfer.deadline:
                continue
            if not transfer.answered:
                self._end(transfer, "no answer from the client in %.0fs"
                          % self.unanswered_timeout, ok=False)
                continue
            if transfer.retry_count >= transfer.retries:
                self._end(transfer, "timed out after %d retries" % transfer.retries, ok=False)
                continue
            try:
                transfer.resend()
            except Exception as err:
                self._end(transfer, "resend failed: %s" % err, ok=False)

    def _end(self, transfer, reason, ok):
        try:
            self._sel.unregister(transfer.sock)
        except (KeyError, ValueError):
            pass
        with self._lock:
            self._transfers.pop(transfer.sock.fileno(), None)
            self._clients.pop(transfer.client, None)
            left = self._per_ip.get(transfer.client[0], 1) - 1
            if left:
                self._per_ip[transfer.client[0]] = left
            else:
                self._per_ip.pop(transfer.client[0], None)
            self._stats["bytes"] += transfer.metrics.bytes
            self._stats["resent"] += transfer.resends
            self._stats["transfers" if ok else "failed"] += 1
        transfer.end()
        peer = "%s:%d" % transfer.client
        if ok:
            LOG.info("sent %s to %s (%d bytes)", rq.show(transfer.file_to_transfer), peer,
                     transfer.metrics.bytes)
        else:
            self._log.log("failed", logging.INFO, "transfer of %s to %s ended: %s",
                          rq.show(transfer.file_to_transfer), peer, reason)
