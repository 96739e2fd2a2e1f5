"""The management network applied with pyroute2 inside network namespaces.

Each test creates a "node" namespace and a "gateway" namespace joined by two
veth pairs (node eth0/eth1 <-> gateway p0/p1, bridged on the gateway side,
which holds 10.77.0.1, on VLAN 100 when the stack uses a VLAN).  The node
starts with an installer-like address on eth0 and a default route, so a
rollback has something to restore.  The code under test runs inside the node
namespace (``ip netns exec``); the host's own interfaces are never touched.

This kernel may lack bonding or 802.1q: those stacks are skipped with the
reason, and the bridge-only stack still exercises apply, check and rollback.
"""

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

pytestmark = pytest.mark.integration

GW = "10.77.0.1"
PRIOR_ADDR = "192.168.250.5/24"
PRIOR_GW = "192.168.250.1"


def ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def namespaces():
    out = ip("netns", "list").stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.fixture(scope="module", autouse=True)
def needs_root_and_ip():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 'ip' is not installed")


@pytest.fixture(scope="module")
def kernel():
    """Which link kinds this kernel can create (bonding, 8021q may be absent)."""
    name = "rf-net-probe-%s" % uuid.uuid4().hex[:6]
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        return {
            "bond": ip("-n", name, "link", "add", "b0", "type", "bond",
                       check=False).returncode == 0,
            "vlan": ip("-n", name, "link", "add", "link", "v0", "name", "v0.5", "type",
                       "vlan", "id", "5", check=False).returncode == 0,
        }
    finally:
        ip("netns", "del", name, check=False)
        assert name not in namespaces()


class Rack:
    def __init__(self, vlan):
        tag = uuid.uuid4().hex[:8]
        self.node, self.gw = "rf-net-%s" % tag, "rf-net-%s-gw" % tag
        self.vlan = vlan

    def create(self):
        ip("netns", "add", self.node)
        ip("netns", "add", self.gw)
        for n in (self.node, self.gw):
            ip("-n", n, "link", "set", "lo", "up")
        ip("-n", self.gw, "link", "add", "gbr", "type", "bridge")
        for i in range(2):
            ip("-n", self.node, "link", "add", "eth%d" % i, "type", "veth",
               "peer", "name", "p%d" % i, "netns", self.gw)
            ip("-n", self.gw, "link", "set", "p%d" % i, "master", "gbr", "up")
        ip("-n", self.gw, "link", "set", "gbr", "up")
        top = "gbr"
        if self.vlan:
            ip("-n", self.gw, "link", "add", "link", "gbr", "name", "gbr.100", "type", "vlan",
               "id", "100")
            ip("-n", self.gw, "link", "set", "gbr.100", "up")
            top = "gbr.100"
        ip("-n", self.gw, "addr", "add", GW + "/24", "dev", top)
        # what the installer left: an address and a default route on eth0, eth1 down
        ip("-n", self.node, "link", "set", "eth0", "up")
        ip("-n", self.node, "addr", "add", PRIOR_ADDR, "dev", "eth0")
        ip("-n", self.node, "route", "add", "default", "via", PRIOR_GW, "dev", "eth0")

    def destroy(self):
        for n in (self.node, self.gw):
            ip("netns", "del", n, check=False)

    def apply(self, spec, tmp_path):
        path = tmp_path / "spec.json"
        path.write_text(json.dumps(spec))
        return subprocess.run(["ip", "netns", "exec", self.node, sys.executable, "-m",
                               "rackforge.firstboot.network", "apply", str(path)],
                              capture_output=True, text=True, timeout=120)

    def state(self):
        """`ip -j` link, address and route view of the node, without volatile fields."""
        links = json.loads(ip("-j", "-n", self.node, "link").stdout)
        addrs = json.loads(ip("-j", "-n", self.node, "addr").stdout)
        routes = json.loads(ip("-j", "-n", self.node, "route", "show", "table", "main").stdout)
        return {
            "links": sorted((li["ifname"], tuple(sorted(li["flags"])), li["mtu"],
                             li.get("master"), li.get("address")) for li in links),
            "addrs": sorted((a["ifname"], x["family"], x["local"], x["prefixlen"],
                             x.get("scope"), x.get("broadcast"))
                            for a in addrs for x in a["addr_info"]),
            "routes": sorted(json.dumps(r, sort_keys=True) for r in routes),
        }

    def reachable(self, addr=GW):
        """An independent check: a TCP connect from the node gets the peer's refusal."""
        code = ("import socket\ntry:\n socket.create_connection((%r, 9), timeout=5)\n"
                "except ConnectionRefusedError:\n pass\n" % addr)
        return subprocess.run(["ip", "netns", "exec", self.node, sys.executable, "-c", code],
                              capture_output=True, timeout=30).returncode == 0

    def mac(self, ifname):
        return json.loads(ip("-j", "-n", self.node, "link", "show", ifname).stdout)[0]["address"]


@pytest.fixture
def rack_factory():
    racks = []

    def make(vlan=False):
        rack = Rack(vlan)
        racks.append(rack)
        rack.create()
        return rack
    try:
        yield make
    finally:
        for rack in racks:
            rack.destroy()
        left = namespaces() & {n for r in racks for n in (r.node, r.gw)}
        assert not left, "namespaces left behind: %s" % left


STACKS = {
    "bond+vlan+bridge": ({"bond", "vlan"}, {
        "bond": {"name": "bond0", "mode": "active-backup", "members": ["eth0", "eth1"]},
        "vlan": {"id": 100, "link": "bond0"},
        "bridge": {"name": "br-mgmt", "ports": ["bond0.100"]}}),
    "vlan+bridge": ({"vlan"}, {
        "vlan": {"id": 100, "link": "eth0"},
        "bridge": {"name": "br-mgmt", "ports": ["eth0.100"]}}),
    "bridge": (set(), {"bridge": {"name": "br-mgmt", "ports": ["eth0", "eth1"]}}),
}


def stack(name, kernel):
    needs, spec = STACKS[name]
    missing = sorted(k for k in needs if not kernel[k])
    if missing:
        pytest.skip("this kernel cannot create %s links (module %s missing)"
                    % ("/".join(missing), "/".join("bonding" if k == "bond" else "8021q"
                                                   for k in missing)))
    return json.loads(json.dumps(spec))


@pytest.mark.parametrize("name", list(STACKS))
def test_stack_applies_and_reaches_gateway(name, kernel, rack_factory, tmp_path):
    spec = stack(name, kernel)
    rack = rack_factory(vlan="vlan" in spec)
    assert not rack.reachable()
    spec.update({"address": "10.77.0.5/24", "gateway": GW, "check": {"timeout": 20}})
    res = rack.apply(spec, tmp_path)
    assert res.returncode == 0, res.stderr
    state = rack.state()
    assert ("br-mgmt", "inet", "10.77.0.5", 24, "global", "10.77.0.255") in state["addrs"]
    assert not any(a[0] == "eth0" and a[1] == "inet" for a in state["addrs"])
    default = [json.loads(r) for r in state["routes"] if json.loads(r)["dst"] == "default"]
    assert [(r["gateway"], r["dev"]) for r in default] == [(GW, "br-mgmt")]
    masters = {li[0]: li[3] for li in state["links"]}
    if "bond" in spec:
        assert masters["eth0"] == masters["eth1"] == "bond0"
        assert masters["bond0.100"] == "br-mgmt"
    elif "vlan" in spec:
        assert masters["eth0.100"] == "br-mgmt"
    else:
        assert masters["eth0"] == masters["eth1"] == "br-mgmt"
    assert rack.reachable()


def test_address_on_nic_named_by_mac(rack_factory, tmp_path):
    rack = rack_factory()
    spec = {"interface": "mac:" + rack.mac("eth1"), "address": "10.77.0.6/24",
            "check": {"peer": GW, "timeout": 20}}
    res = rack.apply(spec, tmp_path)
    assert res.returncode == 0, res.stderr
    assert ("eth1", "inet", "10.77.0.6", 24, "global", "10.77.0.255") in rack.state()["addrs"]
    assert rack.reachable()


def richest_stack(kernel):
    for name in STACKS:
        if STACKS[name][0] <= {k for k, ok in kernel.items() if ok}:
            return name


def test_unreachable_gateway_rolls_back_exactly(kernel, rack_factory, tmp_path):
    spec = stack(richest_stack(kernel), kernel)
    rack = rack_factory(vlan="vlan" in spec)
    before = rack.state()
    assert any(a[:4] == ("eth0", "inet", "192.168.250.5", 24) for a in before["addrs"])
    assert any(json.loads(r).get("gateway") == PRIOR_GW for r in before["routes"])
    spec.update({"address": "10.77.0.5/24", "gateway": "10.77.0.99", "check": {"timeout": 3}})
    res = rack.apply(spec, tmp_path)
    assert res.returncode != 0
    line = res.stderr.strip()
    assert "\n" not in line and "rolled back" in line and "10.77.0.99" in line, line
    assert rack.state() == before


def test_kernel_refusal_mid_apply_rolls_back(rack_factory, tmp_path):
    """The bridge is made and eth0 enslaved before the kernel refuses lo as a port."""
    rack = rack_factory()
    before = rack.state()
    spec = {"bridge": {"name": "br-mgmt", "ports": ["eth0", "lo"]},
            "address": "10.77.0.5/24", "gateway": GW}
    res = rack.apply(spec, tmp_path)
    assert res.returncode != 0
    assert "rolled back" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert rack.state() == before


def test_unknown_interface_changes_nothing(rack_factory, tmp_path):
    rack = rack_factory()
    before = rack.state()
    res = rack.apply({"bridge": {"name": "br-mgmt", "ports": ["eth7"]},
                      "address": "10.77.0.5/24"}, tmp_path)
    assert res.returncode == 2
    assert "eth7 does not exist" in res.stderr and "eth0" in res.stderr, res.stderr
    assert rack.state() == before
