"""The static management address a node installed over PXE keeps.

A controller needs a static management address (etcd's peer URL, Galera's and
RabbitMQ's peers), and a node that ``rack up`` installs has nothing but the
lease it network-booted with.  So the install API (``installapi.py``) makes
that lease the node's static address: the address the node called from, with
the prefix and the gateway of the answering controller's own network, when
the caller is on that network.  A caller from elsewhere (routed, behind NAT)
keeps DHCP and can only be a compute node; the journal says so.

Who keeps the address from going to another machine:

- full DHCP (the seed's dnsmasq hands out the range): the boot services
  reserve it for the MAC that network-booted (``pxe/service.py`` reads the
  install records, :func:`reservations`);
- proxy DHCP (the site's server): the site's administrator; ``rack status``
  shows each node's address so they can reserve it.
"""

import ipaddress
import json
import socket
from dataclasses import dataclass
from typing import Optional

from rackforge import errors, keys
from rackforge.registry import normalize_mac


@dataclass(frozen=True)
class LocalNetwork:
    """The answering controller's address on its network, and that network's gateway."""
    address: ipaddress.IPv4Interface
    gateway: Optional[ipaddress.IPv4Address] = None


def local_network(address, iproute=None):
    """The :class:`LocalNetwork` of the interface that carries ``address`` here, or None."""
    if iproute is None:
        from pyroute2 import IPRoute
        with IPRoute() as ipr:
            return local_network(address, ipr)
    for a in iproute.get_addr(family=socket.AF_INET, address=str(address)):
        if a.get_attr("IFA_ADDRESS") != str(address):
            continue
        index = a["index"]
        gateway = None
        for route in iproute.get_default_routes(family=socket.AF_INET):
            if route.get_attr("RTA_OIF") == index and route.get_attr("RTA_GATEWAY"):
                gateway = ipaddress.IPv4Address(route.get_attr("RTA_GATEWAY"))
                break
        return LocalNetwork(ipaddress.IPv4Interface("%s/%d" % (address, a["prefixlen"])),
                            gateway)
    return None


def static_for(peer, network):
    """The answer file's static ``network`` fields for a node calling from ``peer``:
    ``{"address": "PEER/PREFIX"[, "gateway": GW]}``, or None (it keeps DHCP) when
    ``peer`` is not a host address of ``network``'s subnet."""
    if network is None or not peer:
        return None
    try:
        ip = ipaddress.IPv4Address(peer)
    except ValueError:                  # IPv6, or not an address at all
        return None
    net = network.address.network
    if ip not in net or ip == network.address.ip or (
            net.prefixlen < 31 and ip in (net.network_address, net.broadcast_address)):
        return None
    found = {"address": "%s/%d" % (ip, net.prefixlen)}
    if network.gateway is not None and network.gateway != ip:
        found["gateway"] = str(network.gateway)
    return found


def reservations(kv, network=None):
    """``{MAC: address}`` the install API gave nodes (install records with both), inside
    ``network`` when given; an address given twice stays with the latest call's MAC."""
    records = []
    for entry in kv.get_prefix(keys.BRINGUP_INSTALL):
        try:
            record = json.loads(entry.value)
            mac, ip = normalize_mac(record["mac"]), ipaddress.IPv4Address(record["address"])
            issued = float(record.get("issued") or 0)
        except (ValueError, TypeError, KeyError, AttributeError, errors.RackforgeError):
            continue
        if network is None or ip in network:
            records.append((issued, mac, str(ip)))
    holder = {}
    for _, mac, ip in sorted(records):
        holder[ip] = mac
    return {mac: ip for ip, mac in holder.items()}
