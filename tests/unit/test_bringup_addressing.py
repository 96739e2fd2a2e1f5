"""The static address a node installed over PXE keeps: the controller's network as
netlink reports it (recorded messages), the answer's fields, the DHCP reservations."""

import ipaddress
import json

import pytest

from rackforge import keys
from rackforge.bringup import addressing
from rackforge.kvstore import MemoryKV


class Msg(dict):
    """A pyroute2 netlink message as far as local_network reads one."""

    def __init__(self, attrs, **fields):
        super().__init__(fields)
        self.attrs = attrs

    def get_attr(self, name):
        return self.attrs.get(name)


class RecordedIPRoute:
    """What ``ip addr`` / ``ip route`` showed on a controller: br-mgmt (index 3) with
    10.0.1.11/24 and the default route through 10.0.1.1; eno2 (4) with 192.168.7.5/16."""

    addrs = [Msg({"IFA_ADDRESS": "10.0.1.11"}, index=3, prefixlen=24),
             Msg({"IFA_ADDRESS": "192.168.7.5"}, index=4, prefixlen=16)]
    routes = [Msg({"RTA_OIF": 3, "RTA_GATEWAY": "10.0.1.1"})]

    def get_addr(self, family=None, address=None):
        return [a for a in self.addrs if address is None or a.get_attr("IFA_ADDRESS") == address]

    def get_default_routes(self, family=None):
        return self.routes


def test_the_controllers_network_and_its_gateway():
    ipr = RecordedIPRoute()
    assert addressing.local_network("10.0.1.11", ipr) == addressing.LocalNetwork(
        ipaddress.IPv4Interface("10.0.1.11/24"), ipaddress.IPv4Address("10.0.1.1"))
    # the default route is on another link: this network has no gateway
    assert addressing.local_network("192.168.7.5", ipr) == addressing.LocalNetwork(
        ipaddress.IPv4Interface("192.168.7.5/16"), None)
    assert addressing.local_network("10.9.9.9", ipr) is None      # not an address of ours


NET = addressing.LocalNetwork(ipaddress.IPv4Interface("10.0.1.11/24"),
                              ipaddress.IPv4Address("10.0.1.1"))


@pytest.mark.parametrize("peer, network, expected", [
    ("10.0.1.57", NET, {"address": "10.0.1.57/24", "gateway": "10.0.1.1"}),
    ("10.0.1.57", addressing.LocalNetwork(NET.address), {"address": "10.0.1.57/24"}),
    ("10.0.2.57", NET, None),            # routed from another network: keeps DHCP
    ("10.0.1.11", NET, None),            # our own address (a loop through NAT)
    ("10.0.1.255", NET, None), ("10.0.1.0", NET, None),
    ("fe80::1", NET, None), ("", NET, None), (None, NET, None),
    ("10.0.1.57", None, None),           # this controller's network is not known
])
def test_static_fields_for_a_caller(peer, network, expected):
    assert addressing.static_for(peer, network) == expected


def install_record(kv, node, **fields):
    kv.txn([], [(keys.BRINGUP_INSTALL + node, json.dumps(fields).encode())])


def test_reservations_one_mac_per_address_the_latest_call_wins():
    kv = MemoryKV()
    install_record(kv, "a", mac="52:54:00:00:00:01", address="10.0.1.31", issued=10)
    install_record(kv, "b", mac="52-54-00-00-00-02", address="10.0.1.32", issued=11)
    install_record(kv, "c", mac="52:54:00:00:00:03", address="10.0.1.31", issued=12)
    install_record(kv, "d", mac="52:54:00:00:00:04", issued=13)          # kept DHCP
    install_record(kv, "e", mac="not a mac", address="10.0.1.35", issued=14)
    install_record(kv, "f", mac="52:54:00:00:00:06", address="10.0.9.9", issued=15)
    kv.txn([], [(keys.BRINGUP_INSTALL + "g", b"{not json")])
    assert addressing.reservations(kv, ipaddress.IPv4Network("10.0.1.0/24")) == {
        "52:54:00:00:00:02": "10.0.1.32", "52:54:00:00:00:03": "10.0.1.31"}
    assert addressing.reservations(kv)["52:54:00:00:00:06"] == "10.0.9.9"
