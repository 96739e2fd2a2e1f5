"""``rackforge pxe serve`` refuses bad arguments with one line and a non-zero exit.

Each case runs the real command inside a namespace made for it, where the
interface facts (no address, default route) are set up for real; nothing
starts, so nothing may be left running.
"""

import os
import subprocess

import pytest
from netns import CREATED, RANGE, SERVER, ip, namespaces, rack_network

pytestmark = pytest.mark.integration


@pytest.fixture
def net(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name in ("vmlinuz", "initrd", "rootfs.squashfs", "boot.ipxe.j2"):
        (bundle / name).write_text("x")
    with rack_network(tmp_path) as net:
        net.bundle = bundle
        # this kernel has no dummy links: veth pairs stand in for NICs
        ip("-n", net.netns, "link", "add", "bare0", "type", "veth", "peer", "name", "bare1")
        ip("-n", net.netns, "link", "set", "bare0", "up")
        ip("-n", net.netns, "link", "add", "wan0", "type", "veth", "peer", "name", "wan1")
        ip("-n", net.netns, "link", "set", "wan1", "up")
        ip("-n", net.netns, "addr", "add", "10.213.99.2/24", "dev", "wan0")
        ip("-n", net.netns, "link", "set", "wan0", "up")
        ip("-n", net.netns, "route", "add", "default", "via", "10.213.99.1")
        yield net
    assert not set(CREATED) & namespaces()


CASES = [
    (["--interface", ""], "name the interface with --interface"),
    (["--interface", "nosuch0"], "refusing to serve on nosuch0: no such interface"),
    (["--interface", "lo"], "refusing to serve on lo: it is a loopback interface"),
    (["--interface", "bare0"], "refusing to serve on bare0: it has no IPv4 address"),
    (["--interface", "wan0"], "refusing to serve on wan0: it carries the default route"),
    (["--interface", "br0", "--mode", "full"], "--mode full hands out addresses"),
    (["--interface", "br0", "--mode", "full", "--range", "10.213.78.10,10.213.78.20"],
     "outside br0's subnet 10.213.77.0/24"),
    (["--interface", "br0", "--mode", "full", "--range", "%s,%s" % (RANGE[1], RANGE[0])],
     "the first address is after the last"),
    (["--interface", "br0", "--mode", "full", "--range", "%s,%s" % (SERVER, RANGE[1])],
     "contains this server's own address"),
    (["--interface", "br0", "--bundle", "/nonexistent"],
     "/nonexistent is not a PXE bundle: vmlinuz, initrd, rootfs.squashfs, boot.ipxe.j2 missing"),
    (["--interface", "br0", "--etcd", "http://127.0.0.1:1"], "does not answer"),
    (["--interface", "br0", "--etcd", "etcd.example"], "is not a URL"),
]


@pytest.mark.parametrize("args, expected", CASES)
def test_bad_argument_is_one_line(net, args, expected):
    if "--bundle" not in args:
        args = args + ["--bundle", net.bundle]
    res = net.rackforge("pxe", "serve", *args)
    lines = res.stderr.strip().splitlines()
    assert res.returncode != 0
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("rackforge: error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in res.stderr
    # nothing was started: no dnsmasq, no server left in the namespace
    pids = subprocess.run(["ip", "netns", "pids", net.netns], capture_output=True,
                          text=True).stdout.split()
    cmds = [open("/proc/%s/cmdline" % p, "rb").read() for p in pids if os.path.exists(
        "/proc/%s/cmdline" % p)]
    assert not [c for c in cmds if b"dnsmasq" in c or b"pxe" in c]


def test_allow_default_route_lets_it_past_the_interface_check(net):
    """The override works, and the next check (range) still applies."""
    res = net.rackforge("pxe", "serve", "--interface", "wan0", "--allow-default-route",
                        "--bundle", net.bundle, "--mode", "full", "--range",
                        "10.213.77.10,10.213.77.20")
    assert res.returncode == 2 and "outside wan0's subnet 10.213.99.0/24" in res.stderr
