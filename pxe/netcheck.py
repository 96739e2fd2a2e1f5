"""Which interface the boot services may serve on, checked before anything starts.

A DHCP server on the wrong network breaks other machines (TESTBED.md), so the
rules are strict: the interface must be named, exist, carry an IPv4 address,
not be loopback, and not carry the default route unless the operator says so;
a DHCP range must lie inside the interface's subnet.  Each refusal is one
line naming the problem and the way out.
"""

import ipaddress
import socket
from dataclasses import dataclass

from rackforge import errors


class InterfaceRefused(errors.ConfigError):
    message = "refusing to serve on {interface}: {why}"


@dataclass(frozen=True)
class ServeInterface:
    """The interface the services bind to, and its IPv4 network."""
    name: str
    index: int
    address: ipaddress.IPv4Interface

    @property
    def ip(self):
        return str(self.address.ip)

    @property
    def network(self):
        return self.address.network


def check_interface(name, allow_default_route=False, iproute=None):
    """Return the :class:`ServeInterface` for ``name`` or raise InterfaceRefused."""
    if not name:
        raise InterfaceRefused(interface="(none)",
                               why="name the interface with --interface; rackforge never "
                                   "picks one by itself")
    if iproute is None:
        from pyroute2 import IPRoute
        with IPRoute() as ipr:
            return check_interface(name, allow_default_route, ipr)
    found = iproute.link_lookup(ifname=name)
    if not found:
        raise InterfaceRefused(interface=name, why="no such interface here; 'ip link' lists "
                                                   "the interfaces")
    index = found[0]
    if name == "lo" or _is_loopback(iproute, index):
        raise InterfaceRefused(interface=name, why="it is a loopback interface; name the "
                                                   "interface of the rack's network")
    addrs = [ipaddress.IPv4Interface("%s/%d" % (a.get_attr("IFA_ADDRESS"), a["prefixlen"]))
             for a in iproute.get_addr(index=index, family=socket.AF_INET)]
    if not addrs:
        raise InterfaceRefused(interface=name, why="it has no IPv4 address; give it the seed's "
                                                   "address on the rack network first")
    if not allow_default_route:
        for route in iproute.get_default_routes(family=socket.AF_INET):
            if route.get_attr("RTA_OIF") == index:
                raise InterfaceRefused(
                    interface=name,
                    why="it carries the default route, so it is probably not a private rack "
                        "network; pass --allow-default-route if it really is")
    return ServeInterface(name, index, addrs[0])


def _is_loopback(iproute, index):
    link = iproute.get_links(index)[0]
    return bool(link["flags"] & 0x8)    # IFF_LOOPBACK


def check_range(iface, first, last):
    """``first``, ``last`` (strings) must be ordered addresses in ``iface``'s subnet."""
    try:
        lo, hi = ipaddress.IPv4Address(first), ipaddress.IPv4Address(last)
    except ValueError as e:
        raise errors.ConfigError("--range %s,%s: %s; give two IPv4 addresses like "
                                 "10.0.0.100,10.0.0.199" % (first, last, e)) from None
    net = iface.network
    for addr in (lo, hi):
        if addr not in net or addr in (net.network_address, net.broadcast_address):
            raise errors.ConfigError(
                "--range %s,%s: %s is outside %s's subnet %s; pick a range inside it"
                % (first, last, addr, iface.name, net))
    if lo > hi:
        raise errors.ConfigError("--range %s,%s: the first address is after the last; "
                                 "swap them" % (first, last))
    if lo <= iface.address.ip <= hi:
        raise errors.ConfigError("--range %s,%s: it contains this server's own address %s; "
                                 "leave it out of the range" % (first, last, iface.ip))
    return lo, hi
