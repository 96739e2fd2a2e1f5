"""``rackforge pxe serve`` in a network namespace against real clients.

dnsmasq answers a real DHCP client (busybox udhcpc) that says it is a PXE
client, with the loader for its architecture; a client that is not PXE gets
nothing; the client then fetches the loader over rackforge's TFTP and its
scripts over HTTP, as firmware and iPXE would.  Bad arguments each give one
line.  Nothing is left behind.
"""

import json
import os
import signal
import subprocess
import sys

import pytest
from netns import CREATED, RANGE, SERVER, namespaces, rack_network, wait_until

pytestmark = pytest.mark.integration

UDHCPC_SCRIPT = """#!/bin/sh
[ "$1" = bound ] && env | grep -E '^(ip|siaddr|boot_file|serverid)=' > "$LEASE_OUT"
exit 0
"""


@pytest.fixture
def bundle(tmp_path):
    d = tmp_path / "bundle"
    d.mkdir()
    (d / "vmlinuz").write_bytes(os.urandom(2 * 1024 * 1024))
    (d / "initrd").write_bytes(os.urandom(4096))
    (d / "rootfs.squashfs").write_bytes(os.urandom(8192))
    (d / "boot.ipxe.j2").write_text(
        "#!ipxe\nkernel {{ base_url }}/vmlinuz {{ console }} {{ kernel_args }}\n"
        "initrd {{ base_url }}/initrd\nboot\n")
    return d


@pytest.fixture
def needs_root():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")


def dhcp(netns, ifname, workdir, arch=None):
    """One DHCP exchange with busybox udhcpc; the lease's fields, or None if unanswered."""
    script = workdir / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    out = workdir / ("lease-%s.env" % arch)
    cmd = ["ip", "netns", "exec", netns, "busybox", "udhcpc", "-i", ifname, "-f", "-q", "-n",
           "-t", "4", "-T", "1", "-s", str(script)]
    if arch is not None:
        cmd += ["-V", "PXEClient:Arch:%05d:UNDI:002001" % arch, "-x", "0x5d:%04x" % arch]
    subprocess.run(cmd, env=dict(os.environ, LEASE_OUT=str(out)), capture_output=True,
                   timeout=60)
    if not out.exists():
        return None
    return dict(line.split("=", 1) for line in out.read_text().split())


def curl(netns, url, *args):
    res = subprocess.run(["ip", "netns", "exec", netns, "curl", "-sf", "--noproxy", "*",
                          "-m", "20", *args, url], capture_output=True, timeout=60)
    assert res.returncode == 0, "curl %s: exit %d" % (url, res.returncode)
    return res.stdout


def test_full_dhcp_tftp_http_chain(needs_root, tmp_path, bundle):
    with rack_network(tmp_path) as net:
        net.start_serve("--bundle", bundle, "--mode", "full", "--range", ",".join(RANGE))
        client, ifname = net.add_client("52:54:00:aa:00:01")
        bios = dhcp(client, ifname, tmp_path, arch=0)
        uefi = dhcp(client, ifname, tmp_path, arch=7)
        plain = dhcp(client, ifname, tmp_path)
        assert bios and bios["boot_file"] == "undionly.kpxe" and bios["siaddr"] == SERVER
        assert uefi and uefi["boot_file"] == "snponly.efi"
        assert RANGE[0] <= bios["ip"] <= RANGE[1]
        assert plain is None, "a client that is not PXE must get no answer"

        # what firmware does next: the loader over TFTP, then iPXE's scripts over HTTP
        ip_args = ["ip", "-n", client, "addr", "add", bios["ip"] + "/24", "dev", ifname]
        subprocess.run(ip_args, check=True)
        loader = curl(client, "tftp://%s/%s" % (SERVER, uefi["boot_file"]), "--tftp-blksize",
                      "1468")
        assert loader == open("/usr/lib/ipxe/snponly.efi", "rb").read()
        chain = curl(client, net.base_url + "/boot.ipxe").decode()
        assert "/ipxe/node?mac=${mac:hexhyp}" in chain
        script = curl(client, net.base_url + "/ipxe/node?mac=52-54-00-aa-00-01&platform=efi")
        assert b"rackforge.mode=discover" in script
        kernel = curl(client, net.base_url + "/bundle/vmlinuz", "-r", "1048576-")
        assert kernel == (bundle / "vmlinuz").read_bytes()[1048576:]
        # having network-booted from us, its kernel's plain DHCP is answered now
        subprocess.run(ip_args[:4] + ["flush", "dev", ifname], check=True)
        assert dhcp(client, ifname, tmp_path)["ip"] == bios["ip"]

        res = net.rackforge("pxe", "status", "--json")
        assert res.returncode == 0, res.stderr
        status = json.loads(res.stdout)
        assert status["server"]["serving"] and status["server"]["mode"] == "full"
        boot, = status["boots"]
        assert boot["mac"] == "52:54:00:aa:00:01" and boot["decision"] == "discover"
        wait_until(lambda: net.status()["tftp"]["transfers"] >= 1, 30, "TFTP count in status")
        text = net.rackforge("pxe", "status").stdout
        assert "serving %s on br0" % bundle in text and "52:54:00:aa:00:01" in text

        dnsmasq_pid = net.status()["dhcp"]["pid"]
        net.stop_serve()
        assert net.serve.returncode == 0
        assert not pid_alive(dnsmasq_pid), "dnsmasq outlived rackforge pxe serve"
        assert not net.rackforge("pxe", "status", "--json").returncode == 0
    assert CREATED and not set(CREATED) & namespaces(), "a namespace was left behind"


def test_dnsmasq_is_restarted_when_it_dies(needs_root, tmp_path, bundle):
    with rack_network(tmp_path) as net:
        net.start_serve("--bundle", bundle)         # proxy mode, the default
        first = net.status()["dhcp"]["pid"]
        os.kill(first, signal.SIGKILL)
        status = wait_until(lambda: (lambda s: s if s["dhcp"]["restarts"] == 1
                                     and s["dhcp"]["pid"] not in (None, first) else None)(
                                         net.status()), 60, "dnsmasq restarted")
        assert pid_alive(status["dhcp"]["pid"])
        assert "dnsmasq on br0 exited" in net.log.read_text()


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


PUT_INSTALL_RECORD = """
import json, sys, time
from rackforge.etcdkv import EtcdKV
from rackforge import keys
kv = EtcdKV(sys.argv[1])
kv.txn([], [(keys.BRINGUP_INSTALL + "node-1", json.dumps(
    {"mac": sys.argv[2], "address": sys.argv[3], "issued": time.time()}).encode())])
"""


def test_an_address_the_install_api_made_static_is_reserved(needs_root, tmp_path, bundle):
    from pyroute2 import NetNS

    from rackforge.bringup import addressing
    with rack_network(tmp_path) as net:
        net.start_serve("--bundle", bundle, "--mode", "full", "--range", ",".join(RANGE))
        client, ifname = net.add_client("52:54:00:aa:00:02")
        lease = dhcp(client, ifname, tmp_path, arch=0)
        # what the install API answers a node calling from that lease, on this network
        with NetNS(net.netns) as ipr:
            here = addressing.local_network(SERVER, ipr)
        assert str(here.address) == SERVER + "/24" and here.gateway is None
        assert addressing.static_for(lease["ip"], here) == {"address": lease["ip"] + "/24"}
        # its install record names another address of the range: dnsmasq gives that one
        other = RANGE[1] if lease["ip"] != RANGE[1] else RANGE[0]
        subprocess.run(["ip", "netns", "exec", net.netns, sys.executable, "-c",
                        PUT_INSTALL_RECORD, net.etcd, "52:54:00:aa:00:02", other],
                       check=True, timeout=60)
        wait_until(lambda: "DHCP reservations: 52:54:00:aa:00:02=" + other
                   in net.log.read_text(), 30, "the reservation in pxe serve's log")
        assert dhcp(client, ifname, tmp_path)["ip"] == other     # a plain DHCP asks again
        # and a new machine never gets it while the range has others
        stranger, sif = net.add_client("52:54:00:aa:00:03")
        assert dhcp(stranger, sif, tmp_path, arch=0)["ip"] != other
