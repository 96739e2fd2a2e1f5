"""A real etcd (Debian's etcd-server) for tests, on loopback or inside a namespace."""

import shutil
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from rackforge.proc import stop_process


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _healthy(url, netns):
    if netns:
        res = subprocess.run(["ip", "netns", "exec", netns, "curl", "-sf", "--noproxy", "*",
                              "-m", "2", url + "/health"], capture_output=True)
        return b'"true"' in res.stdout
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as r:
            return b'"true"' in r.read()
    except OSError:
        return False


def _wait_healthy(url, proc, log, netns=None, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("etcd exited with %d: %s" % (proc.returncode,
                                                            Path(log).read_text()[-2000:]))
        if _healthy(url, netns):
            return
        # etcd answers within a second of starting; poll again on the next tick
        proc_wait = min(0.2, max(0.0, deadline - time.monotonic()))
        try:
            proc.wait(timeout=proc_wait)
        except subprocess.TimeoutExpired:
            pass
    raise RuntimeError("etcd at %s not healthy within %ds" % (url, timeout))


@contextmanager
def etcd_server(workdir, host="127.0.0.1", netns=None, port=None):
    """Yields the client URL of a one-member etcd; stops it and removes its data on exit.

    With ``netns`` the server runs inside that namespace (the caller picks a
    ``host`` address that exists there, loopback by default).
    """
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (apt-get install etcd-server)")
    workdir = Path(workdir)
    data = workdir / "etcd-data"
    client_port = port or free_port()
    peer_port = free_port()
    url = "http://%s:%d" % (host, client_port)
    cmd = ["etcd", "--name", "test", "--data-dir", str(data),
           "--listen-client-urls", url, "--advertise-client-urls", url,
           "--listen-peer-urls", "http://%s:%d" % (host, peer_port),
           "--initial-advertise-peer-urls", "http://%s:%d" % (host, peer_port),
           "--initial-cluster", "test=http://%s:%d" % (host, peer_port),
           "--log-level", "warn"]
    if netns:
        cmd = ["ip", "netns", "exec", netns] + cmd
    log = workdir / "etcd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        _wait_healthy(url, proc, log, netns)
        yield url
    finally:
        stop_process(proc, timeout=15)
        shutil.rmtree(data, ignore_errors=True)
