"""Validation of the management network spec: good specs parse, bad ones name the field."""

import pytest

from rackforge.errors import ConfigError
from rackforge.firstboot import netspec
from rackforge.firstboot.netspec import NetworkSpecError, parse

FULL = {"address": "10.0.0.5/24", "gateway": "10.0.0.1",
        "bond": {"name": "bond0", "mode": "802.3ad", "members": ["eno1", "eno2"]},
        "vlan": {"id": 100, "link": "bond0"},
        "bridge": {"name": "br-mgmt", "ports": ["bond0.100"]}}


def test_full_stack():
    spec = parse(FULL)
    assert spec.interface == "br-mgmt"
    assert spec.bond == netspec.Bond("bond0", "802.3ad", ["eno1", "eno2"], 100)
    assert spec.vlan == netspec.Vlan(100, "bond0", "bond0.100")
    assert spec.created() == ["bond0", "bond0.100", "br-mgmt"]
    assert spec.nics() == ["eno1", "eno2"]
    assert spec.check == netspec.Check()


def test_defaults_fill_the_stack_bottom_up():
    spec = parse({"address": "dhcp", "bond": {"members": ["eth0", "eth1"]},
                  "vlan": {"id": 7}, "bridge": {}})
    assert (spec.bond.name, spec.bond.mode) == ("bond0", "active-backup")
    assert spec.vlan.link == "bond0" and spec.vlan.name == "bond0.7"
    assert spec.bridge.ports == ["bond0.7"] and spec.interface == "br-mgmt"
    assert spec.dhcp and spec.gateway is None


def test_plain_nic_by_mac_and_check_options():
    spec = parse({"interface": "MAC:52:54:00:AA:BB:CC", "address": "192.168.1.9/24",
                  "check": {"peer": "192.168.7.1", "port": 443, "timeout": 5}})
    assert spec.interface == "mac:52:54:00:aa:bb:cc"
    assert spec.nics() == ["mac:52:54:00:aa:bb:cc"]
    assert spec.check == netspec.Check(peer="192.168.7.1", port=443, timeout=5.0)
    assert not parse({"interface": "eth0", "address": "dhcp", "check": False}).check.enabled


def test_vlan_on_a_nic_named_by_mac_gets_a_name():
    spec = parse({"address": "dhcp", "vlan": {"id": 20, "link": "mac:52:54:00:aa:bb:cc"}})
    assert spec.vlan.name == "vlan20" and spec.nics() == ["mac:52:54:00:aa:bb:cc"]


def with_(**changes):
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in FULL.items()}
    for key, value in changes.items():
        if "__" in key:
            outer, inner = key.split("__")
            data[outer][inner] = value
        elif value is None:
            data.pop(key)
        else:
            data[key] = value
    return data


BAD = [
    (with_(address=None), "'address' is missing"),
    (with_(address="10.0.0.5"), "'address' needs a prefix length"),
    (with_(address="10.0.0.300/24"), "'address' is not an IPv4 address"),
    (with_(address="10.0.0.0/24", gateway=None), "'address' is the network"),
    (with_(gateway="10.9.0.1"), "'gateway' 10.9.0.1 is not another host in 10.0.0.0/24"),
    (with_(gateway="10.0.0.5"), "'gateway' 10.0.0.5 is not another host"),
    (with_(gateway="gw"), "'gateway' is not an IPv4 address"),
    (with_(address="dhcp"), "'gateway' is set with address: dhcp"),
    (with_(mtu=100), "'mtu' must be a whole number from 576 to 9216"),
    (with_(mtu=True), "'mtu' must be a whole number"),
    (with_(bond__mode="lacp"), "'bond.mode' is not a bonding mode"),
    (with_(bond__members=[]), "'bond.members' must be a non-empty list"),
    (with_(bond__members=["eno1", "eno1"]), "'bond.members' lists an interface twice"),
    (with_(bond__members=["eno1", "bond0"]), "'bond.members' contains the bond itself"),
    (with_(bond__members=["eno1", "mac:zz"]), "'bond.members[1]' is not a MAC address"),
    (with_(bond__name="a-very-long-bond-name"), "'bond.name' is not an interface name"),
    (with_(bond__miimon=-1), "'bond.miimon' must be a whole number"),
    (with_(vlan__id=4095), "'vlan.id' must be a whole number from 1 to 4094"),
    (with_(vlan__id="100"), "'vlan.id' must be a whole number"),
    (with_(vlan__link="eno1"), "'vlan.link' is a member of bond0"),
    (with_(bridge__ports=["bond0"]), "'bridge.ports' contains bond0, which carries bond0.100"),
    (with_(bridge__ports=["eno3"]), "'bridge.ports' does not contain bond0.100"),
    (with_(bridge__name="bond0.100"), "'bridge.name' clashes with another interface"),
    (with_(interface="bond0"), "'interface' is bond0 but the top of the bond/vlan/bridge "
                               "stack is br-mgmt"),
    (with_(bridge__stp=True), "'bridge.stp' is not a known key"),
    (with_(dns="10.0.0.2"), "'dns' is not a known key"),
    (with_(check={"peer": "x"}), "'check.peer' is not an IPv4 address"),
    (with_(check={"timeout": 0}), "'check.timeout' must be seconds"),
    (with_(check="yes"), "'check' must be a mapping"),
    ({"address": "dhcp"}, "'interface' is missing"),
    ({"address": "dhcp", "interface": "mac:52:54:00:aa:bb:cc", "bond": {"members": ["x"]}},
     "'interface' is not an interface name"),
    ([], "must be a mapping"),
]


@pytest.mark.parametrize("data,expected", BAD, ids=[b[1][:40] for b in BAD])
def test_bad_specs_say_which_field_and_what_to_do(data, expected):
    with pytest.raises(NetworkSpecError) as err:
        parse(data)
    msg = str(err.value)
    assert expected in msg
    assert msg.startswith("management network: ") and "\n" not in msg
    assert ";" in msg     # the part after it says what to do
    assert isinstance(err.value, ConfigError) and err.value.exit_code == 2


def test_bridge_over_a_bond_must_use_the_bond():
    data = {"address": "dhcp", "bond": {"members": ["eth0", "eth1"]},
            "bridge": {"ports": ["eth2"]}}
    with pytest.raises(NetworkSpecError, match="'bridge.ports' does not contain bond0"):
        parse(data)
    with pytest.raises(NetworkSpecError, match="'bridge.ports' contains a member of bond0"):
        parse({"address": "dhcp", "bond": {"members": ["eth0", "eth1"]},
               "bridge": {"ports": ["bond0", "eth1"]}})


def test_a_wrong_value_is_quoted_short_and_can_be_dropped():
    with pytest.raises(NetworkSpecError) as err:
        parse(with_(bond__mode=["lacp"] * 50))
    assert "'bond.mode' is not a bonding mode (got ['lacp', 'lacp', 'lacp', 'lacp', 'lac...)" \
        in str(err.value)
    hidden = str(netspec.without_values(err.value))
    assert hidden.startswith("management network: 'bond.mode' is not a bonding mode; use one")
    assert "lacp'" not in hidden


def test_an_unknown_key_that_is_not_a_plain_word_is_not_shown():
    with pytest.raises(NetworkSpecError) as err:
        parse(with_(**{"abcdef.0123456789abcdef": 1}))
    assert "'(an unknown key)' is not a known key" in str(err.value)
    assert err.value.kwargs["key"] == "abcdef.0123456789abcdef"
