"""The management network as systemd-networkd files: what comes back on every boot."""

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


def test_written_atomically_into_its_directory(tmp_path):
    spec = netspec.parse({"interface": "eno1", "address": "10.0.0.5/24"})
    paths = persist.write(spec, tmp_path / "network")
    assert [p.split("/")[-1] for p in paths] == ["10-rackforge-eno1.network"]
    assert (tmp_path / "network").stat().st_mode & 0o777 == 0o755


def test_in_subnet():
    spec = netspec.parse({"interface": "eno1", "address": "10.0.0.5/24"})
    assert persist.in_subnet("10.0.0.100", spec) and not persist.in_subnet("10.0.1.100", spec)
