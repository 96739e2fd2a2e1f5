"""A private rack network for the boot tests, served by ``rackforge pxe serve``.

Everything lives in network namespaces the test creates and deletes: the
seed's namespace holds a bridge (the rack network) with the seed's address,
an etcd on its loopback and ``rackforge pxe serve``; guests attach through tap
devices on that bridge, test clients through veth pairs in namespaces of
their own.  In proxy mode a "site" namespace on the same bridge plays the
site's own DHCP server (a plain dnsmasq handing out addresses, nothing else).
No packet can reach the host's networks.
"""

import json
import os
import resource
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from etcd import etcd_server

from rackforge.proc import stop_process

SUBNET = "10.213.77"
SERVER = SUBNET + ".1"
SITE_DHCP = SUBNET + ".2"
HTTP_PORT = 8080
RANGE = (SUBNET + ".100", SUBNET + ".150")


def ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def namespaces():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


# every namespace the helpers here made, so tests can check they are all gone
CREATED = []


def wait_until(condition, timeout, what, interval=0.2):
    """Poll ``condition()`` until it returns a true value; raise after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %ds waiting for %s" % (timeout, what))
        time.sleep(interval)


@contextmanager
def namespace(prefix):
    name = "%s-%s" % (prefix, uuid.uuid4().hex[:8])
    ip("netns", "add", name)
    CREATED.append(name)
    try:
        ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "pids", name], capture_output=True)
        ip("netns", "del", name, check=False)


@dataclass
class RackNetwork:
    netns: str
    workdir: Path
    etcd: str
    base_url: str = "http://%s:%d" % (SERVER, HTTP_PORT)
    taps: list = field(default_factory=list)
    clients: list = field(default_factory=list)
    serve: subprocess.Popen = None
    stack: ExitStack = None     # closes what the network's helpers opened, with it

    @property
    def state_dir(self):
        return self.workdir / "state"

    @property
    def log(self):
        return self.workdir / "serve.log"

    def rackforge(self, *args, timeout=60):
        """``rackforge ARGS`` inside the seed's namespace, with the test's state and etcd."""
        return subprocess.run(self.rackforge_cmd(*args), env=self.env(), capture_output=True,
                              text=True, timeout=timeout)

    def rackforge_cmd(self, *args):
        return ["ip", "netns", "exec", self.netns, sys.executable, "-m", "rackforge",
                *map(str, args)]

    def env(self):
        return dict(os.environ, RACKFORGE_STATE=str(self.state_dir), RACKFORGE_ETCD=self.etcd)

    def status(self):
        path = self.state_dir / "pxe" / "status.json"
        return json.loads(path.read_text()) if path.exists() else None

    def add_tap(self):
        name = "tap%d" % len(self.taps)
        ip("-n", self.netns, "tuntap", "add", "dev", name, "mode", "tap")
        ip("-n", self.netns, "link", "set", name, "master", "br0", "up")
        self.taps.append(name)
        return name

    def add_client(self, mac):
        """A namespace with one veth on the rack bridge; returns (netns, ifname)."""
        ns = self.stack.enter_context(namespace("rf-cli"))
        peer = "rfv%d" % len(self.clients)
        ip("link", "add", "eth0", "netns", ns, "address", mac, "type", "veth",
           "peer", "name", peer, "netns", self.netns)
        ip("-n", self.netns, "link", "set", peer, "master", "br0", "up")
        ip("-n", ns, "link", "set", "eth0", "up")
        wait_until(lambda: _forwarding(self.netns, peer), 30, "bridge port %s forwarding" % peer)
        self.clients.append(ns)
        return ns, "eth0"

    def start_serve(self, *args, files=None):
        """Start ``pxe serve`` on br0; ``files``: its open-file limit (soft and hard), as a
        systemd unit's ``LimitNOFILE=`` would set it."""
        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))
        self.serve = subprocess.Popen(
            self.rackforge_cmd("pxe", "serve", "--interface", "br0", *args),
            env=self.env(), stdin=subprocess.DEVNULL, stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT, preexec_fn=limit if files else None)

        def serving():
            if self.serve.poll() is not None:
                raise AssertionError("pxe serve exited with %d:\n%s"
                                     % (self.serve.returncode, self.log.read_text()[-3000:]))
            status = self.status()
            return status and status["serving"] and status["pid"] == self.serve.pid
        wait_until(serving, 60, "rackforge pxe serve to start")

    def stop_serve(self):
        if self.serve is not None:
            stop_process(self.serve)


def _forwarding(netns, port):
    res = ip("-n", netns, "-j", "-d", "link", "show", port, check=False)
    try:
        info = json.loads(res.stdout)[0]
    except (ValueError, IndexError):
        return False
    state = info.get("linkinfo", {}).get("info_slave_data", {}).get("state")
    return state == "forwarding"


@contextmanager
def rack_network(workdir, site_dhcp=False):
    """The seed's namespace with bridge, address and etcd; ``start_serve`` starts serving."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        ns = stack.enter_context(namespace("rf-pxe"))
        ip("-n", ns, "link", "add", "br0", "type", "bridge", "forward_delay", "0")
        ip("-n", ns, "addr", "add", SERVER + "/24", "dev", "br0")
        ip("-n", ns, "link", "set", "br0", "up")
        url = stack.enter_context(etcd_server(workdir, netns=ns))
        net = RackNetwork(ns, workdir, url, stack=stack)
        stack.callback(net.stop_serve)
        if site_dhcp:
            stack.enter_context(_site_dhcp(net))
        yield net


@contextmanager
def _site_dhcp(net):
    """The site's own DHCP server: addresses only, no boot information."""
    ns, ifname = net.add_client("52:54:00:77:77:02")
    ip("-n", ns, "addr", "add", SITE_DHCP + "/24", "dev", ifname)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
         "--port=0", "--interface=" + ifname, "--bind-interfaces",
         "--dhcp-range=%s,%s,255.255.255.0,1h" % RANGE,
         "--dhcp-leasefile=%s" % (net.workdir / "site.leases"), "--pid-file=",
         "--log-dhcp", "--log-facility=%s" % (net.workdir / "site-dhcp.log")],
        stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        stop_process(proc)
