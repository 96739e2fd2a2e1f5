"""rackforge's TFTP server against real clients (tftp-hpa, curl), in a network namespace.

The server runs in its own process inside a namespace the test creates, bound
to the namespace's loopback; every client runs inside it too.  The real iPXE
binaries are fetched and compared by sha256; then a list of escape attempts,
each refused with a TFTP error and exactly one log line.  Afterwards the
namespace and the server process must be gone.
"""

import hashlib
import os
import shutil
import signal
import struct
import subprocess
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from netns import namespaces, wait_until

pytestmark = pytest.mark.integration

IPXE = [Path("/usr/lib/ipxe") / name for name in ("undionly.kpxe", "ipxe.efi", "snponly.efi")]
ADDR = "127.0.0.1"

SERVER = """
import logging, signal, sys, threading
from rackforge.pxe.tftp import TftpServer
logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(levelname)s %(name)s %(message)s")
srv = TftpServer(sys.argv[1], sys.argv[2], port=0, timeout=2, retries=2)
srv.start()
print(srv.port, flush=True)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: done.set())
done.wait()
srv.stop()
"""

# Send one datagram, print the first reply in hex (or "timeout").
RAW = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(bytes.fromhex(sys.argv[1]), (sys.argv[2], int(sys.argv[3])))
try:
    print(s.recvfrom(70000)[0].hex())
except socket.timeout:
    print("timeout")
"""


def wait_for(condition, what, timeout=15):
    return wait_until(condition, timeout, what, interval=0.02)


class Served:
    """The namespace, the server process and its log, with client helpers."""

    def __init__(self, netns, port, log):
        self.netns, self.port, self.log = netns, port, log

    def run(self, *cmd, timeout=60):
        return subprocess.run(["ip", "netns", "exec", self.netns, *cmd], capture_output=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def tftp_hpa(self, command, *args):
        return self.run("tftp", ADDR, str(self.port), "-m", "binary", "-c", command, *args)

    def curl(self, name, out, *args):
        return self.run("curl", "-sS", "--max-time", "30", "-o", str(out),
                        "tftp://%s:%d/%s" % (ADDR, self.port, name), *args)

    def raw(self, datagram):
        """The server's first reply to one datagram: (opcode, code or block)."""
        res = self.run(sys.executable, "-c", RAW, datagram.hex(), ADDR, str(self.port))
        reply = res.stdout.decode().strip()
        assert reply != "timeout", "no reply to %r" % datagram[:40]
        return struct.unpack("!HH", bytes.fromhex(reply)[:4])

    def lines(self, word):
        return [line for line in self.log.read_text().splitlines() if word in line]


@contextmanager
def served(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    for tool in ("tftp", "curl", "ip"):
        if shutil.which(tool) is None:
            pytest.skip("%s missing: run make setup-test" % tool)
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    for src in IPXE:
        shutil.copy(src, root / src.name)
    private = tmp_path / "root-private"
    private.mkdir()
    (private / "secret").write_text("SECRET\n")
    (root / "passwd-link").symlink_to("/etc/passwd")
    (root / "private-link").symlink_to("../root-private")
    log = tmp_path / "server.log"
    netns = "rf-tftp-%s" % uuid.uuid4().hex[:8]
    proc = None
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        with open(log, "wb") as logfile:
            proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", SERVER,
                                     str(root), ADDR], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=logfile, text=True)
        port = proc.stdout.readline().strip()     # printed once bound
        assert port.isdigit(), "server did not start: %s" % log.read_text()
        yield Served(netns, int(port), log)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
    assert proc.returncode == 0, "server exited with %s" % proc.returncode
    assert netns not in namespaces()
    assert "stopped" in log.read_text()


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_real_clients_fetch_the_ipxe_binaries(tmp_path):
    out = tmp_path / "out"
    with served(tmp_path) as srv:
        out.mkdir()
        fetched = 0
        for src in IPXE:
            for how in ("tftp-hpa", "curl", "curl-blksize"):
                dest = out / ("%s.%s" % (src.name, how))
                if how == "tftp-hpa":     # tftp-hpa's client has no blksize option
                    res = srv.tftp_hpa("get", src.name, str(dest))
                elif how == "curl":
                    res = srv.curl(src.name, dest)
                else:
                    res = srv.curl(src.name, dest, "--tftp-blksize", "1468")
                assert res.returncode == 0, res.stderr
                assert sha256(dest) == sha256(src), "%s via %s" % (src.name, how)
                fetched += 1
        wait_for(lambda: len(srv.lines(" sent ")) == fetched, "%d transfers" % fetched)
        assert not srv.lines("refused")


def rrq(name, mode=b"octet", opcode=1):
    name = name.encode() if isinstance(name, str) else name
    return struct.pack("!H", opcode) + name + b"\0" + mode + b"\0"


# (what, how, argument, expected TFTP error code or None if only the log is checked)
ESCAPES = [
    ("dot-dot", "tftp-hpa", "../etc/passwd", 2),
    ("absolute", "tftp-hpa", "/etc/passwd", 1),          # ROOT/etc/passwd: not there
    ("encoded dot-dot", "curl", "..%2f..%2fetc%2fpasswd", None),
    ("symlink out", "raw", rrq("passwd-link"), 2),
    ("symlink to sibling", "raw", rrq("private-link/secret"), 2),
    ("sibling by name", "raw", rrq("../root-private/secret"), 2),
    ("up and out", "raw", rrq("sub/../../root-private/secret"), 2),
    ("backslashes", "raw", rrq("..\\..\\etc\\passwd"), 2),
    ("NUL in name", "raw", b"\0\1ipxe.efi\0../../etc/passwd\0octet\0", 4),
    ("long name", "raw", rrq("a" * 300), 2),
    ("non-UTF-8 name", "raw", rrq(b"ipxe\xff.efi"), 2),
    ("directory", "raw", rrq("sub"), 2),
    ("mode mail", "raw", rrq("ipxe.efi", b"mail"), 4),
    ("raw WRQ", "raw", rrq("ipxe.efi", opcode=2), 2),
    ("upload", "tftp-hpa-put", "uploaded.bin", 2),
]


def test_escape_attempts_are_refused(tmp_path):
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"x" * 1000)
    with served(tmp_path) as srv:
        for count, (what, how, arg, code) in enumerate(ESCAPES, start=1):
            if how == "raw":
                assert srv.raw(arg) == (5, code), what
            elif how == "tftp-hpa":
                res = srv.tftp_hpa("get", arg, str(tmp_path / "got"))
                assert ("Error code %d" % code).encode() in res.stdout + res.stderr, what
            elif how == "tftp-hpa-put":
                res = srv.tftp_hpa("put", str(upload), arg)
                assert ("Error code %d" % code).encode() in res.stdout + res.stderr, what
            else:
                res = srv.curl(arg, tmp_path / "got")
                assert res.returncode != 0, what
            wait_for(lambda: len(srv.lines("refused")) >= count, "refusal of %s" % what)
            assert len(srv.lines("refused")) == count, "more than one log line for %s" % what
        # a good transfer after them all: its log line comes after any late refusal's
        assert srv.curl("ipxe.efi", tmp_path / "ok.efi").returncode == 0
        wait_for(lambda: srv.lines(" sent "), "the good transfer")
        assert len(srv.lines("refused")) == len(ESCAPES)
        assert sha256(tmp_path / "ok.efi") == sha256(IPXE[1])
    assert not (tmp_path / "root" / "uploaded.bin").exists()
    assert not (tmp_path / "got").exists() or b"root:" not in (tmp_path / "got").read_bytes()
