"""The management network as systemd-networkd files: what comes back on every boot."""

import pytest

from rackforge.firstboot import netspec, persist


def test_a_plain_static_address():
    spec = netspec.parse({"interface": "eno1", "address": "10.0.0.5/24",
                          "gateway": "10.0.0.1", "mtu": 9000})
    assert persist.files(spec) == {"10-rackforge-eno1.network": (
        "# written by rackforge first boot: the management network\n"
        "[Match]\nName=eno1\n\n[Link]\nMTUBytes=9000\n\n"
        "[Network]\nLinkLocalAddressing=no\nIPv6AcceptRA=no\nAddress=10.0.0.5/24\n"
        "Gateway=10.0.0.1\n")}


def test_dhcp():
    spec = netspec.parse({"interface": "host0", "address": "dhcp"})
    assert "DHCP=ipv4" in persist.files(spec)["10-rackforge-host0.network"]


def test_bond_vlan_bridge_stack():
    spec = netspec.parse({
        "address": "10.0.0.5/24",
        "bond": {"name": "bond0", "mode": "802.3ad", "members": ["eno1", "mac:b8:ce:f6:3a:10:21"]},
        "vlan": {"id": 100, "link": "bond0"},
        "bridge": {"name": "br-mgmt", "ports": ["bond0.100"]}})
    got = persist.files(spec)
    assert sorted(got) == sorted([
        "10-rackforge-bond0.netdev", "10-rackforge-bond-eno1.network",
        "10-rackforge-bond-macb8cef63a1021.network", "10-rackforge-bond0.100.netdev",
        "10-rackforge-br-mgmt.netdev", "10-rackforge-bond0.network",
        "10-rackforge-bond0.100.network", "10-rackforge-br-mgmt.network"])
    assert "Kind=bond" in got["10-rackforge-bond0.netdev"] and \
        "Mode=802.3ad" in got["10-rackforge-bond0.netdev"]
    assert "PermanentMACAddress=b8:ce:f6:3a:10:21" in \
        got["10-rackforge-bond-macb8cef63a1021.network"]
    assert "VLAN=bond0.100" in got["10-rackforge-bond0.network"]
    assert "Bridge=br-mgmt" in got["10-rackforge-bond0.100.network"]
    assert "Address=10.0.0.5/24" in got["10-rackforge-br-mgmt.network"]


def test_written_atomically_into_its_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("RACKFORGE_CONFIG", str(tmp_path / "etc"))
    spec = netspec.parse({"interface": "eno1", "address": "10.0.0.5/24"})
    paths = persist.write(spec, tmp_path / "network")
    assert [p.split("/")[-1] for p in paths] == ["10-rackforge-eno1.network"]
    assert (tmp_path / "network").stat().st_mode & 0o777 == 0o755
    assert netspec.parse(persist.load()) == spec


def test_a_new_spec_removes_the_files_it_no_longer_makes(tmp_path, monkeypatch):
    monkeypatch.setenv("RACKFORGE_CONFIG", str(tmp_path / "etc"))
    assert persist.load() is None                       # first boot not done
    net = tmp_path / "network"
    net.mkdir()
    (net / "50-site.network").write_text("[Match]\nName=eno2\n")     # not ours: stays
    persist.write(netspec.parse({"interface": "eno1.100", "address": "10.0.0.5/24",
                                 "vlan": {"id": 100, "link": "eno1"}}), net)
    assert sorted(p.name for p in net.iterdir()) == [
        "10-rackforge-eno1.100.netdev", "10-rackforge-eno1.100.network",
        "10-rackforge-eno1.network", "50-site.network"]
    persist.write(netspec.parse({"interface": "eno1", "address": "dhcp"}), net)
    assert sorted(p.name for p in net.iterdir()) == ["10-rackforge-eno1.network",
                                                     "50-site.network"]
    assert persist.load() == {"interface": "eno1", "address": "dhcp"}


@pytest.mark.parametrize("mapping", [
    {"interface": "eno1", "address": "dhcp"},
    {"interface": "mac:52:54:00:12:34:56", "address": "10.0.0.5/24", "gateway": "10.0.0.1",
     "mtu": 9000, "check": False},
    {"interface": "br-mgmt", "address": "10.0.0.5/24", "check": {"peer": "10.0.0.9",
                                                                 "port": 443, "timeout": 5},
     "bond": {"name": "bond0", "mode": "802.3ad", "members": ["eno1", "eno2"]},
     "vlan": {"id": 100, "link": "bond0", "name": "bond0.100"},
     "bridge": {"name": "br-mgmt", "ports": ["bond0.100"]}},
])
def test_a_spec_as_a_mapping_reads_back_the_same(mapping):
    spec = netspec.parse(mapping)
    assert netspec.parse(netspec.to_mapping(spec)) == spec


def test_in_subnet():
    spec = netspec.parse({"interface": "eno1", "address": "10.0.0.5/24"})
    assert persist.in_subnet("10.0.0.100", spec) and not persist.in_subnet("10.0.1.100", spec)
