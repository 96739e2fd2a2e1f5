"""dnsmasq configuration (checked by dnsmasq itself) and the range rules."""

import ipaddress
import shutil
import subprocess

import pytest

from rackforge import errors
from rackforge.pxe import dnsmasq, netcheck
from rackforge.pxe.bootrecords import KnownHosts

IFACE = netcheck.ServeInterface("br0", 5, ipaddress.IPv4Interface("10.1.0.1/24"))


def render(mode, rng=None):
    return dnsmasq.render_config(IFACE, mode, "http://10.1.0.1:8080/boot.ipxe", "/tmp/leases",
                                 "undionly.kpxe", "snponly.efi", rng, hostsdir="/tmp/hosts")


def test_proxy_mode_only_adds_boot_information():
    conf = render("proxy")
    assert "dhcp-range=10.1.0.0,proxy" in conf
    assert "interface=br0" in conf and "bind-interfaces" in conf and "port=0" in conf
    assert 'pxe-service=tag:ipxe,x86PC,"rackforge iPXE",http://10.1.0.1:8080/boot.ipxe' in conf
    assert "pxe-service=tag:!ipxe,X86-64_EFI,\"rackforge\",snponly.efi,10.1.0.1" in conf
    assert "enable-tftp" not in conf


def test_full_mode_answers_pxe_clients_only_with_a_range():
    conf = render("full", ("10.1.0.100", "10.1.0.150"))
    assert "dhcp-range=10.1.0.100,10.1.0.150,255.255.255.0,1h" in conf
    assert "dhcp-ignore=tag:!pxe,tag:!ipxe,tag:!known" in conf
    assert "dhcp-hostsdir=/tmp/hosts" in conf
    assert "dhcp-boot=tag:!ipxe,tag:bios,undionly.kpxe,rackforge,10.1.0.1" in conf
    with pytest.raises(errors.ConfigError, match="--range"):
        render("full")


@pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq not installed")
@pytest.mark.parametrize("mode, rng", [("proxy", None), ("full", ("10.1.0.100", "10.1.0.150"))])
def test_dnsmasq_accepts_the_config(tmp_path, mode, rng):
    path = tmp_path / "d.conf"
    (tmp_path / "hosts").mkdir()
    KnownHosts(tmp_path / "hosts").add("52:54:00:00:00:01")
    path.write_text(render(mode, rng).replace("/tmp/hosts", str(tmp_path / "hosts")))
    res = subprocess.run(["dnsmasq", "--test", "--conf-file=%s" % path],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("first, last, match", [
    ("10.1.1.5", "10.1.1.9", "outside br0's subnet"),
    ("10.1.0.50", "10.1.0.10", "after the last"),
    ("10.1.0.0", "10.1.0.10", "outside"),
    ("10.1.0.1", "10.1.0.10", "own address"),
    ("10.1.0.x", "10.1.0.10", "IPv4 addresses")])
def test_bad_ranges(first, last, match):
    with pytest.raises(errors.ConfigError, match=match) as e:
        netcheck.check_range(IFACE, first, last)
    assert "\n" not in str(e.value)


def test_good_range():
    lo, hi = netcheck.check_range(IFACE, "10.1.0.100", "10.1.0.150")
    assert str(lo) == "10.1.0.100" and str(hi) == "10.1.0.150"
