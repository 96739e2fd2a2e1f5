"""A private network for the PXE boot test: namespace, bridge, tap, DHCP, HTTP.

Everything lives in a network namespace the test creates and deletes; the
DHCP server (dnsmasq) binds only to the bridge inside it, so no packet can
reach the host's networks.
"""

import subprocess
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

SUBNET = "10.213.77"
SERVER = SUBNET + ".1"
HTTP_PORT = 8080


def _ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def namespaces():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@contextmanager
def pxe_network(workdir, http_root):
    """Yields (netns name, tap name, boot URL base).  Removes it all on exit."""
    name = "rf-pxe-%s" % uuid.uuid4().hex[:8]
    workdir = Path(workdir)
    procs = []
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "add", "br0", "type", "bridge")
        _ip("-n", name, "addr", "add", SERVER + "/24", "dev", "br0")
        _ip("-n", name, "link", "set", "br0", "up")
        _ip("-n", name, "tuntap", "add", "dev", "tap0", "mode", "tap")
        _ip("-n", name, "link", "set", "tap0", "master", "br0", "up")
        base_url = "http://%s:%d" % (SERVER, HTTP_PORT)
        dnsmasq = ["ip", "netns", "exec", name, "dnsmasq", "--keep-in-foreground",
                   "--conf-file=/dev/null", "--port=0", "--interface=br0",
                   "--bind-interfaces", "--except-interface=lo",
                   "--dhcp-range=%s.100,%s.150,255.255.255.0,1h" % (SUBNET, SUBNET),
                   "--dhcp-leasefile=%s" % (workdir / "leases"),
                   "--pid-file=%s" % (workdir / "dnsmasq.pid"),
                   "--dhcp-match=set:ipxe,175",
                   "--dhcp-boot=tag:ipxe,%s/boot.ipxe" % base_url,
                   "--log-dhcp", "--log-facility=%s" % (workdir / "dnsmasq.log")]
        procs.append(subprocess.Popen(dnsmasq, stdin=subprocess.DEVNULL))
        http = ["ip", "netns", "exec", name, "python3", "-m", "http.server", str(HTTP_PORT),
                "--bind", SERVER, "--directory", str(http_root)]
        procs.append(subprocess.Popen(http, stdin=subprocess.DEVNULL,
                                      stdout=open(workdir / "http.log", "wb"),
                                      stderr=subprocess.STDOUT))
        _wait_http(name, base_url + "/", procs[-1])
        yield name, "tap0", base_url
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # deleting the namespace removes the bridge and the tap with it
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _wait_http(netns, url, proc, timeout=30):
    """Wait until the server answers (it binds a moment after it starts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("HTTP server exited with %d" % proc.returncode)
        res = subprocess.run(["ip", "netns", "exec", netns, "curl", "-sf", "-o", "/dev/null",
                              "--noproxy", "*",
                              "--retry-connrefused", "--retry", "3", "--retry-delay", "1",
                              url], capture_output=True)
        if res.returncode == 0:
            return
    raise RuntimeError("HTTP server at %s did not answer within %ds" % (url, timeout))
