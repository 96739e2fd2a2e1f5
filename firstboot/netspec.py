"""The management network spec: schema, validation and one-line errors.

The spec comes from the bootstrap file's ``management`` mapping or the
profile.  Example (every key but ``address`` is optional)::

    interface: br-mgmt          # the link that gets the address; defaults to
                                # the top of the stack (bridge > vlan > bond)
    address: 10.0.0.5/24        # or "dhcp"
    gateway: 10.0.0.1           # static only: sets the default route
    mtu: 9000                   # on the bond members, bond, vlan and bridge
    bond: {name: bond0, mode: active-backup, members: [eno1, "mac:b8:ce:f6:3a:10:21"],
           miimon: 100}
    vlan: {id: 100, link: bond0, name: bond0.100}   # name defaults to LINK.ID
    bridge: {name: br-mgmt, ports: [bond0.100]}
    check: {peer: 10.0.0.1, port: 22, timeout: 30}  # or "check: false"

The stack is built bottom-up: bond over physical NICs, VLAN over the bond (or
a NIC), bridge over the VLAN (or the bond, or NICs).  A physical NIC may be
named by its kernel name or as ``mac:ADDRESS`` (resolved when applied), so a
bootstrap file does not depend on how this hardware's NICs are named.
"""

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Optional

from rackforge.errors import ConfigError

BOND_MODES = {"balance-rr": 0, "active-backup": 1, "balance-xor": 2, "broadcast": 3,
              "802.3ad": 4, "balance-tlb": 5, "balance-alb": 6}
IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}\Z")
MAC = re.compile(r"^mac:([0-9a-f]{2}:){5}[0-9a-f]{2}\Z")
DEFAULT_CHECK_TIMEOUT = 30
DEFAULT_CHECK_PORT = 22
TOP_KEYS = {"interface", "address", "gateway", "mtu", "bond", "vlan", "bridge", "check"}


class NetworkSpecError(ConfigError):
    """A field of the management network spec is wrong.

    ``got`` is the value as written (`` (got 'x')``), or "" where none is shown:
    :func:`without_values` drops it for a file that may hold a secret.  ``key``
    is the field's real dotted key (``field`` hides a key that is not a plain word).
    """
    message = "management network: '{field}' {problem}{got}; {fix}"


def without_values(exc):
    """``exc`` again, without the value it quotes from the spec."""
    return NetworkSpecError(**dict(exc.kwargs, got=""))


@dataclass
class Bond:
    name: str
    mode: str
    members: list
    miimon: int = 100


@dataclass
class Vlan:
    id: int
    link: str
    name: str


@dataclass
class Bridge:
    name: str
    ports: list


@dataclass
class Check:
    peer: Optional[str] = None      # defaults to the gateway
    port: int = DEFAULT_CHECK_PORT  # TCP probe when the peer is not on the link
    timeout: float = DEFAULT_CHECK_TIMEOUT
    enabled: bool = True


@dataclass
class NetworkSpec:
    interface: str
    address: str                    # "dhcp" or an interface address "10.0.0.5/24"
    gateway: Optional[str] = None
    mtu: Optional[int] = None
    bond: Optional[Bond] = None
    vlan: Optional[Vlan] = None
    bridge: Optional[Bridge] = None
    check: Check = field(default_factory=Check)

    @property
    def dhcp(self):
        return self.address == "dhcp"

    def created(self):
        """Names of the links this spec creates, bottom-up."""
        return [x.name for x in (self.bond, self.vlan, self.bridge) if x is not None]

    def nics(self):
        """The physical NICs (names or ``mac:`` references) the spec uses."""
        created = set(self.created())
        refs = list(self.bond.members) if self.bond else []
        if self.vlan and self.vlan.link not in created:
            refs.append(self.vlan.link)
        if self.bridge:
            refs += [p for p in self.bridge.ports if p not in created]
        if not created:
            refs.append(self.interface)
        return list(dict.fromkeys(refs))


_UNSET = object()


def _bad(field_, problem, fix, value=_UNSET, key=None):
    got = "" if value is _UNSET else " (got %s)" % _short(repr(value))
    return NetworkSpecError(field=field_, problem=problem, fix=fix, got=got, key=key or field_)


def _short(text, width=40):
    return text if len(text) <= width else text[:width - 3] + "..."


def _mapping(value, name, keys):
    if not isinstance(value, dict):
        raise _bad(name, "must be a mapping", "write it as {%s}" % ", ".join(sorted(keys)))
    unknown = sorted(set(map(str, value)) - keys)
    if unknown:
        # only a plain word is shown: a misplaced secret can be a key too
        shown = unknown[0] if re.fullmatch(r"[a-z_]{1,32}", unknown[0]) else "(an unknown key)"
        raise _bad("%s.%s" % (name, shown) if name else shown, "is not a known key",
                   "use only %s" % ", ".join(sorted(keys)),
                   key="%s.%s" % (name, unknown[0]) if name else unknown[0])
    return value


def _ifname(value, name, mac_ok=False):
    if isinstance(value, str) and mac_ok and value.lower().startswith("mac:"):
        if MAC.match(value.lower()):
            return value.lower()
        raise _bad(name, "is not a MAC address", "write it as mac:aa:bb:cc:dd:ee:ff")
    if not isinstance(value, str) or not IFNAME.match(value) or value in (".", ".."):
        raise _bad(name, "is not an interface name",
                   "use 1-15 letters, digits, '.', '-' or '_'%s"
                   % (", or mac:ADDRESS" if mac_ok else ""), value)
    return value


def _int(value, name, low, high):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(name, "must be a whole number from %d to %d" % (low, high),
                   "fix the number", value)
    return value


def _ip(value, name):
    try:
        return ipaddress.IPv4Address(value)
    except (ipaddress.AddressValueError, ValueError, TypeError):
        raise _bad(name, "is not an IPv4 address", "write it like 10.0.0.1", value) from None


def _names(value, name, mac_ok):
    if not isinstance(value, list) or not value:
        raise _bad(name, "must be a non-empty list of interfaces", "list at least one")
    names = [_ifname(v, "%s[%d]" % (name, i), mac_ok) for i, v in enumerate(value)]
    if len(set(names)) != len(names):
        raise _bad(name, "lists an interface twice", "list each interface once")
    return names


def parse(data):
    """A validated :class:`NetworkSpec` from *data*; raises :class:`NetworkSpecError`."""
    data = _mapping(data, "", TOP_KEYS)
    bond = vlan = bridge = None
    created = []
    if data.get("bond") is not None:
        b = _mapping(data["bond"], "bond", {"name", "mode", "members", "miimon"})
        mode = b.get("mode", "active-backup")
        if not isinstance(mode, str) or mode not in BOND_MODES:
            raise _bad("bond.mode", "is not a bonding mode",
                       "use one of %s" % ", ".join(BOND_MODES), mode)
        bond = Bond(name=_ifname(b.get("name", "bond0"), "bond.name"), mode=mode,
                    members=_names(b.get("members"), "bond.members", mac_ok=True),
                    miimon=_int(b.get("miimon", 100), "bond.miimon", 0, 10000))
        if bond.name in bond.members:
            raise _bad("bond.members", "contains the bond itself", "list the physical NICs")
        created.append(bond.name)
    if data.get("vlan") is not None:
        v = _mapping(data["vlan"], "vlan", {"id", "link", "name"})
        vid = _int(v.get("id"), "vlan.id", 1, 4094)
        default_link = bond.name if bond else None
        link = _ifname(v.get("link", default_link), "vlan.link", mac_ok=True)
        if bond and link in bond.members:
            raise _bad("vlan.link", "is a member of %s" % bond.name,
                       "put the VLAN on %s instead" % bond.name)
        name = _ifname(v.get("name") or ("%s.%d" % (link, vid) if not link.startswith("mac:")
                                         else "vlan%d" % vid), "vlan.name")
        if name in created or name == link:
            raise _bad("vlan.name", "clashes with another interface (%s)" % name,
                       "choose another name")
        vlan = Vlan(id=vid, link=link, name=name)
        created.append(name)
    if data.get("bridge") is not None:
        br = _mapping(data["bridge"], "bridge", {"name", "ports"})
        default_ports = created[-1:] or None
        bridge = Bridge(name=_ifname(br.get("name", "br-mgmt"), "bridge.name"),
                        ports=_names(br.get("ports", default_ports), "bridge.ports",
                                     mac_ok=True))
        if bridge.name in created or bridge.name in bridge.ports:
            raise _bad("bridge.name", "clashes with another interface (%s)" % bridge.name,
                       "choose another name")
        if bond and set(bond.members) & set(bridge.ports):
            raise _bad("bridge.ports", "contains a member of %s" % bond.name,
                       "add %s to the bridge instead" % bond.name)
        if vlan and vlan.link in bridge.ports:
            raise _bad("bridge.ports", "contains %s, which carries %s" % (vlan.link, vlan.name),
                       "add %s to the bridge instead" % vlan.name)
        created.append(bridge.name)
    top = created[-1] if created else None
    if data.get("interface") is None and top is None:
        raise _bad("interface", "is missing", "name the NIC that carries the management address")
    interface = _ifname(data.get("interface", top), "interface", mac_ok=not created)
    if top is not None and interface != top:
        raise _bad("interface", "is %s but the top of the bond/vlan/bridge stack is %s"
                   % (interface, top), "set interface: %s or leave it out" % top)
    _check_unused(bond, vlan, bridge)

    address = data.get("address")
    if address is None:
        raise _bad("address", "is missing", "write an address like 10.0.0.5/24, or dhcp")
    gateway = data.get("gateway")
    if address != "dhcp":
        if not isinstance(address, str) or "/" not in address:
            raise _bad("address", "needs a prefix length",
                       "write it like 10.0.0.5/24, or dhcp", address)
        try:
            iface = ipaddress.IPv4Interface(address)
        except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError):
            raise _bad("address", "is not an IPv4 address with prefix",
                       "write it like 10.0.0.5/24, or dhcp", address) from None
        if iface.ip in (iface.network.network_address, iface.network.broadcast_address) \
                and iface.network.prefixlen < 31:
            raise _bad("address", "is the network or broadcast address of %s" % iface.network,
                       "pick a host address")
        if gateway is not None:
            gw = _ip(gateway, "gateway")
            if gw not in iface.network or gw == iface.ip:
                raise _bad("gateway", "%s is not another host in %s" % (gw, iface.network),
                           "use a gateway inside the management subnet")
            gateway = str(gw)
        address = str(iface)
    elif gateway is not None:
        raise _bad("gateway", "is set with address: dhcp", "drop it: DHCP gives the gateway")
    mtu = data.get("mtu")
    if mtu is not None:
        mtu = _int(mtu, "mtu", 576, 9216)
    return NetworkSpec(interface=interface, address=address, gateway=gateway, mtu=mtu,
                       bond=bond, vlan=vlan, bridge=bridge, check=_parse_check(data))


def _check_unused(bond, vlan, bridge):
    """Every created link below the top must be used by the link above it."""
    if bond and vlan is None and bridge and bond.name not in bridge.ports:
        raise _bad("bridge.ports", "does not contain %s" % bond.name,
                   "add %s to the ports or drop the bond" % bond.name)
    if bond and vlan and vlan.link != bond.name:
        raise _bad("vlan.link", "is %s, so %s would be unused" % (vlan.link, bond.name),
                   "set vlan.link: %s" % bond.name)
    if vlan and bridge and vlan.name not in bridge.ports:
        raise _bad("bridge.ports", "does not contain %s" % vlan.name,
                   "add %s to the ports or drop the vlan" % vlan.name)


def _parse_check(data):
    value = data.get("check", True)
    if value is False:
        return Check(enabled=False)
    if value is True or value is None:
        return Check()
    c = _mapping(value, "check", {"peer", "port", "timeout"})
    timeout = c.get("timeout", DEFAULT_CHECK_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not 0 < timeout <= 600:
        raise _bad("check.timeout", "must be seconds between 0 and 600", "fix the number",
                   timeout)
    peer = str(_ip(c["peer"], "check.peer")) if c.get("peer") is not None else None
    return Check(peer=peer, port=_int(c.get("port", DEFAULT_CHECK_PORT), "check.port", 1, 65535),
                 timeout=float(timeout))


def to_mapping(spec):
    """The mapping :func:`parse` reads back into ``spec`` (for a file, or the console)."""
    out = {"interface": spec.interface, "address": spec.address}
    if spec.gateway:
        out["gateway"] = spec.gateway
    if spec.mtu:
        out["mtu"] = spec.mtu
    if spec.bond:
        out["bond"] = {"name": spec.bond.name, "mode": spec.bond.mode,
                       "members": list(spec.bond.members), "miimon": spec.bond.miimon}
    if spec.vlan:
        out["vlan"] = {"id": spec.vlan.id, "link": spec.vlan.link, "name": spec.vlan.name}
    if spec.bridge:
        out["bridge"] = {"name": spec.bridge.name, "ports": list(spec.bridge.ports)}
    c = spec.check
    if not c.enabled:
        out["check"] = False
    elif c != Check():
        out["check"] = dict({"port": c.port, "timeout": c.timeout},
                            **({"peer": c.peer} if c.peer else {}))
    return out
