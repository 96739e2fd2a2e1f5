"""Apply the management network spec with pyroute2, check it, roll back on failure.

``apply(spec)`` works in the current network namespace:

1. resolve ``mac:`` references to NIC names and check the NICs exist;
2. snapshot every link it touches (state, master, MTU, MAC), their IPv4
   addresses, and the IPv4 main-table routes on them plus the default routes;
3. create the bond, VLAN and bridge, enslave members, set the address
   (static, or DHCP through ``dhclient``/``udhcpc`` when installed) and the
   default route;
4. check connectivity: the next hop (the peer if it is on the link, else the
   gateway) must answer ARP, and an off-link peer must answer a TCP connect
   (a refusal counts: the host answered), all within ``check.timeout``;
5. on any failure, restore the snapshot (delete the created links, put back
   states, addresses and routes) and raise one :class:`NetworkApplyFailed` line.

Interface naming: the appliance keeps systemd-udev's predictable names
(onboard ``eno1``, slot ``ens1f0np0``, PCI path ``enp1s0``), which follow the
firmware and PCI topology and so are stable across reboots of one machine;
nothing here renames links or writes ``.link`` files.  Because one image
boots on many kinds of hardware, a spec may name a NIC ``mac:ADDRESS``
instead; it is resolved here against the permanent MAC address.
"""

import argparse
import errno
import ipaddress
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from rackforge.errors import ConfigError, RackforgeError
from rackforge.firstboot import netspec

LOG = logging.getLogger(__name__)

IFF_UP = 0x1
NUD_REACHABLE = 0x02
RTPROT_KERNEL = 2
MAIN_TABLE = 254
PROBE_INTERVAL = 1.0        # resend an ARP-triggering datagram at most this often
POLL_INTERVAL = 0.1         # read the neighbour table this often while waiting
DHCP_TIMEOUT = 60


class UnknownInterface(ConfigError):
    message = ("management network: interface {name} does not exist on this node "
               "(present: {present}); fix the bootstrap file's management section")


class NetworkApplyFailed(RackforgeError):
    retryable = True
    message = ("management network on {interface}: {what}; rolled back to the previous "
               "configuration; {fix}")


@dataclass
class LinkState:
    name: str
    up: bool
    master: str | None
    mtu: int
    mac: str | None


@dataclass
class Snapshot:
    """What :func:`apply` may change, as it was before (absent links are ``None``)."""
    links: dict = field(default_factory=dict)       # name -> LinkState | None
    addresses: dict = field(default_factory=dict)   # name -> set of address tuples
    routes: set = field(default_factory=set)        # route tuples


# --- reading state --------------------------------------------------------

def _nla(msg, name):
    """Attribute ``name`` (``ifname``, ``gateway``, ...) of a netlink message, or None.

    ``_nla(msg, "ifname")`` only works from pyroute2 0.7.3 on; the appliance has
    Debian 12's 0.7.2, so the full name (``IFLA_IFNAME``) is asked for, which
    every version answers.
    """
    return msg.get_attr(msg.prefix + name.upper())


def _links(ipr):
    return {_nla(msg, "ifname"): msg for msg in ipr.get_links()}


def _link_state(msg, names_by_index):
    return LinkState(name=_nla(msg, "ifname"), up=bool(msg["flags"] & IFF_UP),
                     master=names_by_index.get(_nla(msg, "master")), mtu=_nla(msg, "mtu"),
                     mac=_nla(msg, "address"))


def _addresses(ipr, index):
    """IPv4 addresses of a link as (local, prefixlen, broadcast, scope, label) tuples."""
    found = set()
    for msg in ipr.get_addr(family=socket.AF_INET, index=index):
        found.add((_nla(msg, "local") or _nla(msg, "address"), msg["prefixlen"],
                   _nla(msg, "broadcast"), msg["scope"], _nla(msg, "label")))
    return found


def _routes(ipr, names, names_by_index):
    """Non-kernel IPv4 main-table routes on *names*, and every default route."""
    found = set()
    for msg in ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE):
        oif = names_by_index.get(_nla(msg, "oif"))
        if msg["proto"] == RTPROT_KERNEL:
            continue        # prefix routes come and go with their addresses
        if oif in names or msg["dst_len"] == 0:
            found.add((_nla(msg, "dst") or "0.0.0.0", msg["dst_len"], _nla(msg, "gateway"), oif,
                       _nla(msg, "priority"), msg["proto"], msg["scope"], msg["type"],
                       _nla(msg, "prefsrc")))
    return found


def take_snapshot(ipr, names):
    links = _links(ipr)
    by_index = {m["index"]: n for n, m in links.items()}
    snap = Snapshot()
    for name in names:
        msg = links.get(name)
        snap.links[name] = _link_state(msg, by_index) if msg else None
        snap.addresses[name] = _addresses(ipr, msg["index"]) if msg else set()
    snap.routes = _routes(ipr, set(names), by_index)
    return snap


# --- rollback -------------------------------------------------------------

def restore(ipr, snap):
    """Put every link, address and route in *snap* back; best effort, logs what fails."""
    problems = []

    def attempt(what, func, *args, **kwargs):
        try:
            func(*args, **kwargs)
        except NetlinkError as exc:
            problems.append("%s: %s" % (what, exc))

    links = _links(ipr)
    for name, state in reversed(list(snap.links.items())):
        if state is None and name in links:
            attempt("delete " + name, ipr.link, "del", index=links[name]["index"])
    links = _links(ipr)
    for name, state in snap.links.items():
        if state is None or name not in links:
            continue
        idx = links[name]["index"]
        master = links[state.master]["index"] if state.master in links else 0
        attempt("master of " + name, ipr.link, "set", index=idx, master=master)
        attempt("mtu of " + name, ipr.link, "set", index=idx, mtu=state.mtu)
        if state.mac and _nla(links[name], "address") != state.mac:
            attempt("mac of " + name, ipr.link, "set", index=idx, address=state.mac)
        attempt("state of " + name, ipr.link, "set", index=idx,
                state="up" if state.up else "down")
    links = _links(ipr)
    by_index = {m["index"]: n for n, m in links.items()}
    for name, wanted in snap.addresses.items():
        if name not in links:
            continue
        idx = links[name]["index"]
        current = _addresses(ipr, idx)
        for local, plen, *_ in current - wanted:
            attempt("address %s/%s" % (local, plen), ipr.addr, "del", index=idx,
                    address=local, prefixlen=plen)
        for local, plen, brd, scope, label in wanted - current:
            extra = {"broadcast": brd} if brd else {}
            attempt("address %s/%s" % (local, plen), ipr.addr, "add", index=idx,
                    address=local, prefixlen=plen, scope=scope, label=label, **extra)
    current = _routes(ipr, set(snap.links), by_index)
    for route in current - snap.routes:
        attempt("route %s/%s" % route[:2], ipr.route, "del", **_route_args(route, links))
    for route in snap.routes - current:
        attempt("route %s/%s" % route[:2], ipr.route, "add", **_route_args(route, links))
    for problem in problems:
        LOG.error("network rollback: %s", problem)
    return problems


def _route_args(route, links):
    dst, dst_len, gateway, oif, priority, proto, scope, rtype, prefsrc = route
    args = {"dst": "%s/%d" % (dst, dst_len), "table": MAIN_TABLE, "proto": proto,
            "scope": scope, "type": rtype}
    for key, value in (("gateway", gateway), ("priority", priority), ("prefsrc", prefsrc)):
        if value is not None:
            args[key] = value
    if oif in links:
        args["oif"] = links[oif]["index"]
    return args


# --- applying -------------------------------------------------------------

def resolve(ipr, spec):
    """*spec* with ``mac:`` references replaced by NIC names; every NIC must exist."""
    links = _links(ipr)
    by_mac = {}
    for name, msg in links.items():
        for mac in (_nla(msg, "perm_address"), _nla(msg, "address")):
            if mac:
                by_mac.setdefault("mac:" + mac.lower(), name)

    def name_of(ref):
        name = by_mac.get(ref, ref) if ref.startswith("mac:") else ref
        if name not in links:
            present = ", ".join(sorted(n for n in links if n != "lo")) or "none"
            raise UnknownInterface(name=ref, present=present)
        return name

    if spec.bond:
        spec.bond.members = [name_of(m) for m in spec.bond.members]
    created = set(spec.created())
    if spec.vlan and spec.vlan.link not in created:
        spec.vlan.link = name_of(spec.vlan.link)
    if spec.bridge:
        spec.bridge.ports = [p if p in created else name_of(p) for p in spec.bridge.ports]
    if not created:
        spec.interface = name_of(spec.interface)
    for name in created:
        if name in links:
            raise NetworkApplyFailed(interface=spec.interface,
                                     what="%s already exists, nothing was changed" % name,
                                     fix="delete it or choose another name")
    return spec


def _index(ipr, name):
    return ipr.link_lookup(ifname=name)[0]


def _enslave(ipr, port, master, mtu):
    idx = _index(ipr, port)
    ipr.link("set", index=idx, state="down")
    for local, plen, *_ in _addresses(ipr, idx):
        ipr.addr("del", index=idx, address=local, prefixlen=plen)
    if mtu:
        ipr.link("set", index=idx, mtu=mtu)
    ipr.link("set", index=idx, master=_index(ipr, master))
    ipr.link("set", index=idx, state="up")


def _build(ipr, spec, runner):
    mtu = spec.mtu
    if spec.bond:
        ipr.link("add", ifname=spec.bond.name, kind="bond",
                 bond_mode=netspec.BOND_MODES[spec.bond.mode], bond_miimon=spec.bond.miimon)
        for member in spec.bond.members:
            _enslave(ipr, member, spec.bond.name, mtu)
        _up(ipr, spec.bond.name, mtu)
    if spec.vlan:
        if spec.vlan.link not in spec.created():
            _up(ipr, spec.vlan.link, mtu)
        ipr.link("add", ifname=spec.vlan.name, kind="vlan",
                 link=_index(ipr, spec.vlan.link), vlan_id=spec.vlan.id)
        _up(ipr, spec.vlan.name, mtu)
    if spec.bridge:
        # STP off: the ports forward at once, so the check need not wait for it.
        ipr.link("add", ifname=spec.bridge.name, kind="bridge", br_stp_state=0)
        for port in spec.bridge.ports:
            _enslave(ipr, port, spec.bridge.name, mtu)
        _up(ipr, spec.bridge.name, mtu)
    idx = _index(ipr, spec.interface)
    _up(ipr, spec.interface, mtu)
    if spec.dhcp:
        dhcp(spec.interface, runner)
        return
    addr = ipaddress.IPv4Interface(spec.address)
    for local, plen, *_ in _addresses(ipr, idx):
        if (local, plen) != (str(addr.ip), addr.network.prefixlen):
            ipr.addr("del", index=idx, address=local, prefixlen=plen)
    if (str(addr.ip), addr.network.prefixlen) not in {a[:2] for a in _addresses(ipr, idx)}:
        ipr.addr("add", index=idx, address=str(addr.ip), prefixlen=addr.network.prefixlen,
                 broadcast=str(addr.network.broadcast_address))
    if spec.gateway:
        ipr.route("replace", dst="0.0.0.0/0", gateway=spec.gateway, oif=idx,
                  table=MAIN_TABLE)


def _up(ipr, name, mtu):
    idx = _index(ipr, name)
    if mtu:
        ipr.link("set", index=idx, mtu=mtu)
    ipr.link("set", index=idx, state="up")


def dhcp(ifname, runner=subprocess.run):
    """Get a lease with dhclient or udhcpc, whichever is installed."""
    if shutil.which("dhclient"):
        argv = ["dhclient", "-1", "-4", "-pf", "/run/dhclient.%s.pid" % ifname, ifname]
    elif shutil.which("udhcpc"):
        argv = ["udhcpc", "-i", ifname, "-n", "-q", "-t", "5", "-T", "3"]
    else:
        raise RuntimeError("no DHCP client (dhclient or udhcpc) is installed")
    res = runner(argv, capture_output=True, text=True, timeout=DHCP_TIMEOUT,
                 stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise RuntimeError("%s got no lease on %s" % (argv[0], ifname))


def stop_dhcp(ifname, runner=subprocess.run):
    """Stop a dhclient started by :func:`dhcp` (udhcpc -q has already exited)."""
    pidfile = "/run/dhclient.%s.pid" % ifname
    if shutil.which("dhclient") and os.path.exists(pidfile):
        runner(["dhclient", "-x", "-pf", pidfile, ifname], capture_output=True, text=True,
               timeout=DHCP_TIMEOUT, stdin=subprocess.DEVNULL)


# --- connectivity check ---------------------------------------------------

def _default_gateway(ipr, idx):
    for msg in ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE, oif=idx):
        if msg["dst_len"] == 0 and _nla(msg, "gateway"):
            return _nla(msg, "gateway")
    return None


def _on_link(ipr, idx, target):
    ip = ipaddress.IPv4Address(target)
    return any(ip in ipaddress.IPv4Network("%s/%d" % (a[0], a[1]), strict=False)
               for a in _addresses(ipr, idx))


def check(ipr, spec):
    """Raise RuntimeError unless the next hop (and an off-link peer) answers in time."""
    idx = _index(ipr, spec.interface)
    gateway = spec.gateway or _default_gateway(ipr, idx)
    target = spec.check.peer or gateway
    if target is None:
        LOG.warning("network: no gateway or check.peer, connectivity on %s not checked",
                    spec.interface)
        return
    deadline = time.monotonic() + spec.check.timeout
    on_link = _on_link(ipr, idx, target)
    hop = target if on_link else gateway
    if hop is None:
        raise RuntimeError("%s is not on the link and there is no gateway" % target)
    wait_neighbour(ipr, spec.interface, idx, hop, deadline)
    if not on_link:
        tcp_probe(target, spec.check.port, deadline)


def wait_neighbour(ipr, ifname, idx, hop, deadline):
    """Resolve *hop*'s MAC on the link: wait for its neighbour entry to turn REACHABLE.

    A datagram to the discard port makes the kernel send ARP requests; it is
    resent every PROBE_INTERVAL (the kernel gives up after three unanswered
    requests).  The neighbour table is read every POLL_INTERVAL until the
    entry is REACHABLE or the deadline passes.
    """
    try:
        ipr.neigh("del", dst=hop, ifindex=idx)     # a stale entry proves nothing
    except NetlinkError:
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        probe.setblocking(False)
        next_probe = 0.0
        while not _neighbour_state(ipr, idx, hop) & NUD_REACHABLE:
            now = time.monotonic()
            if now >= deadline:
                raise RuntimeError("no ARP answer from %s" % hop)
            if now >= next_probe:
                try:
                    probe.sendto(b"rackforge", (hop, 9))
                except OSError:
                    pass    # EHOSTUNREACH after a failed resolution: the next send retries
                next_probe = now + PROBE_INTERVAL
            time.sleep(min(POLL_INTERVAL, max(0.0, deadline - now)))


def _neighbour_state(ipr, idx, hop):
    for msg in ipr.get_neighbours(family=socket.AF_INET, ifindex=idx):
        if _nla(msg, "dst") == hop:
            return msg["state"]
    return 0


def address_in_use(ifname, address, timeout=3.0):
    """True if a machine answers ARP for ``address`` on ``ifname`` within ``timeout``."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return False
        try:
            wait_neighbour(ipr, ifname, found[0], address, time.monotonic() + timeout)
        except RuntimeError:
            return False
    return True


def tcp_probe(peer, port, deadline):
    """A TCP connect to *peer*; an answer of any kind (even a refusal) proves the path."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError("no answer from %s port %d" % (peer, port))
        try:
            with socket.create_connection((peer, port), timeout=remaining):
                return
        except ConnectionRefusedError:
            return
        except OSError as exc:
            if exc.errno not in (errno.EHOSTUNREACH, errno.ENETUNREACH, None,
                                 errno.ETIMEDOUT):
                raise RuntimeError("%s port %d: %s" % (peer, port, exc.strerror)) from None
            # unreachable: the neighbour entry failed; the next connect retries ARP


# --- entry point ----------------------------------------------------------

def apply(spec, runner=subprocess.run):
    """Apply *spec* (a dict or :class:`netspec.NetworkSpec`); roll back and raise on failure."""
    if isinstance(spec, dict):
        spec = netspec.parse(spec)
    with IPRoute() as ipr:
        spec = resolve(ipr, spec)
        touched = list(dict.fromkeys(spec.nics() + spec.created() + [spec.interface]))
        snap = take_snapshot(ipr, touched)
        try:
            _build(ipr, spec, runner)
            if spec.check.enabled:
                check(ipr, spec)
        except (NetlinkError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
            what = _describe(exc)
            LOG.info("network: %s; rolling back", what)
            if spec.dhcp:
                stop_dhcp(spec.interface, runner)
            problems = restore(ipr, snap)
            if problems:
                what += " (rollback incomplete: %s)" % problems[0]
            raise NetworkApplyFailed(interface=spec.interface, what=what,
                                     fix=_fix_for(spec, exc)) from exc
    LOG.info("network: %s configured with %s", spec.interface, spec.address)
    return spec


def _describe(exc):
    if isinstance(exc, NetlinkError):
        return "the kernel refused a change (%s)" % os.strerror(exc.code)
    return str(exc) or exc.__class__.__name__


def _fix_for(spec, exc):
    if isinstance(exc, NetlinkError) and exc.code == errno.EOPNOTSUPP:
        return "this kernel lacks bonding or 802.1q support; load the module or simplify"
    if isinstance(exc, NetlinkError):
        return "check the interfaces named in the management section"
    return "check the cabling, switch port, VLAN and gateway, then run firstboot again"


def main(argv=None):
    """``python -m rackforge.firstboot.network apply SPEC.json``: one line on failure."""
    parser = argparse.ArgumentParser(prog="rackforge.firstboot.network")
    parser.add_argument("action", choices=["apply"])
    parser.add_argument("spec", help="JSON file with the management network spec")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        with open(args.spec) as fh:
            spec = apply(json.load(fh))
    except RackforgeError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return exc.exit_code
    print("configured %s" % spec.interface)
    return 0


if __name__ == "__main__":
    sys.exit(main())
