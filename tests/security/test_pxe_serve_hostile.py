"""``rackforge pxe serve`` as systemd runs it (1,024 open files) against idle connections.

The probe: with 1,024 open files, about 1,100 idle connections to the boot
HTTP port made the status writer fail with "Too many open files" and the
whole service abort, taking DHCP and TFTP down with it.  Replayed here in a
network namespace the test creates: the attacker holds 1,100 connections
from 70 addresses of a client namespace; meanwhile an honest client fetches
its scripts and loader, dnsmasq keeps running and the status file keeps
being written.
"""

import os
import subprocess
import sys
import time

import pytest
from netns import CREATED, RANGE, SERVER, HTTP_PORT, ip, namespaces, rack_network, wait_until

pytestmark = pytest.mark.integration

ATTACK = r"""
import socket, sys, time
server, port, first, addresses, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], \
    int(sys.argv[4]), int(sys.argv[5])
base, last = first.rsplit(".", 1)
socks, failed = [], 0
for i in range(count):
    s = socket.socket()
    s.bind(("%s.%d" % (base, int(last) + i % addresses), 0))
    s.settimeout(3)         # one lost SYN is retried after 1 s
    try:
        s.connect((server, port))
    except OSError:
        s.close()
        failed += 1
        if failed == 10:
            break
        continue
    socks.append(s)
    time.sleep(0.0005)
print(len(socks), flush=True)
sys.stdin.read()        # hold them until the test closes our stdin
"""


@pytest.fixture
def bundle(tmp_path):
    d = tmp_path / "bundle"
    d.mkdir()
    for name in ("vmlinuz", "initrd", "rootfs.squashfs"):
        (d / name).write_bytes(os.urandom(65536))
    (d / "boot.ipxe.j2").write_text("#!ipxe\nkernel {{ base_url }}/vmlinuz\nboot\n")
    return d


def curl(netns, url, source, *args):
    res = subprocess.run(["ip", "netns", "exec", netns, "curl", "-sf", "--noproxy", "*",
                          "--interface", source, "-m", "5", *args, url], capture_output=True,
                         timeout=30)
    return res.returncode, res.stdout


def test_serve_with_1024_files_keeps_dhcp_tftp_and_http_up(tmp_path, bundle):
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    with rack_network(tmp_path) as net:
        net.start_serve("--bundle", bundle, "--mode", "full", "--range", ",".join(RANGE),
                        files=1024)
        dnsmasq = net.status()["dhcp"]["pid"]
        client, ifname = net.add_client("52:54:00:aa:00:09")
        subnet = SERVER.rsplit(".", 1)[0]
        for i in range(71):          # 70 addresses for the attacker, .230 for the honest one
            ip("-n", client, "addr", "add", "%s.%d/24" % (subnet, 160 + i if i < 70 else 230),
               "dev", ifname)
        attacker = subprocess.Popen(
            ["ip", "netns", "exec", client, sys.executable, "-c", ATTACK, SERVER,
             str(HTTP_PORT), subnet + ".160", "70", "1100"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            held = int(attacker.stdout.readline())
            assert held > 1000
            since = time.time()
            honest = subnet + ".230"
            code, chain = curl(client, net.base_url + "/boot.ipxe", honest)
            assert code == 0 and b"/ipxe/node" in chain
            code, script = curl(client, net.base_url + "/ipxe/node?mac=52-54-00-aa-00-09"
                                "&platform=efi", honest)
            assert code == 0 and b"vmlinuz" in script
            code, loader = curl(client, "tftp://%s/snponly.efi" % SERVER, honest)
            assert code == 0 and loader == open("/usr/lib/ipxe/snponly.efi", "rb").read()
            # the status writer ran (it is every 5 s) while the connections were held
            wait_until(lambda: net.status()["updated"] > since + 1, 20, "a status update")
            status = net.status()
            assert status["serving"] and status["dhcp"]["pid"] == dnsmasq
            assert status["http"]["open"] <= status["http"]["max_connections"]
            assert net.serve.poll() is None, "pxe serve exited"
        finally:
            attacker.stdin.close()
            attacker.wait(timeout=30)
        assert curl(client, net.base_url + "/boot.ipxe", honest)[0] == 0
        net.stop_serve()
        assert net.serve.returncode == 0
        log = net.log.read_text()
        assert "Traceback" not in log and "Too many open files" not in log
    assert not set(CREATED) & namespaces()
