"""The management network, kept for every later boot: systemd-networkd's own files.

First boot sets the management address with pyroute2 (:mod:`.network`), checks
it and rolls it back on failure; that address would be gone after a reboot.
At hand-over the same spec is written as systemd-networkd configuration
(:func:`files`), and networkd is enabled, so the address (and the bond, VLAN
and bridge under it) comes back on every boot before the node agent starts.
Files sort before Debian's and systemd's own (``10-rackforge-*``), so they win
for the interfaces they name; interfaces they do not name are left alone.  Ours
that the new spec no longer makes (a VLAN dropped at the console) are removed.
The spec itself is kept beside them as ``<config>/management.json``
(:func:`load`): the console's network change (``nodeagent/netchange.py``)
starts from it and rolls back to it.
"""

import ipaddress
import json
import os
from pathlib import Path

from rackforge import paths
from rackforge.fileutil import atomic_write, make_dirs

PREFIX = "10-rackforge-"


def directory():
    return Path(os.environ.get("RACKFORGE_NETWORKD_DIR", "/etc/systemd/network"))


def _match(name):
    """A [Match] section for an interface given by name or as ``mac:ADDRESS``."""
    if name.startswith("mac:"):
        return "[Match]\nPermanentMACAddress=%s\n" % name[4:]
    return "[Match]\nName=%s\n" % name


def _link(mtu):
    return "\n[Link]\nMTUBytes=%d\n" % mtu if mtu else ""


def files(spec):
    """``{file name: text}`` of systemd-networkd files for the :class:`netspec.NetworkSpec`."""
    out = {}
    top = spec.interface
    if spec.bond:
        b = spec.bond
        out[PREFIX + "%s.netdev" % b.name] = (
            "[NetDev]\nName=%s\nKind=bond\n\n[Bond]\nMode=%s\nMIIMonitorSec=%dms\n"
            % (b.name, b.mode, b.miimon))
        for member in b.members:
            safe = member.replace(":", "")
            out[PREFIX + "bond-%s.network" % safe] = (
                _match(member) + _link(spec.mtu) + "\n[Network]\nBond=%s\n" % b.name)
    parent_of = {}
    if spec.vlan:
        v = spec.vlan
        out[PREFIX + "%s.netdev" % v.name] = (
            "[NetDev]\nName=%s\nKind=vlan\n\n[VLAN]\nId=%d\n" % (v.name, v.id))
        parent_of.setdefault(v.link, []).append("VLAN=%s" % v.name)
    if spec.bridge:
        br = spec.bridge
        out[PREFIX + "%s.netdev" % br.name] = (
            "[NetDev]\nName=%s\nKind=bridge\n\n[Bridge]\nSTP=no\n" % br.name)
        for port in br.ports:
            parent_of.setdefault(port, []).append("Bridge=%s" % br.name)
    for parent, lines in parent_of.items():
        if parent == top:
            continue
        out[PREFIX + "%s.network" % parent.replace(":", "")] = (
            _match(parent) + _link(spec.mtu) + "\n[Network]\n" + "\n".join(lines) + "\n"
            + "LinkLocalAddressing=no\n")
    network = ["[Network]", "LinkLocalAddressing=no", "IPv6AcceptRA=no"]
    if spec.dhcp:
        network.append("DHCP=ipv4")
    else:
        network.append("Address=%s" % spec.address)
        if spec.gateway:
            network.append("Gateway=%s" % spec.gateway)
    network += parent_of.get(top, [])
    out[PREFIX + "%s.network" % top.replace(":", "")] = (
        "# written by rackforge first boot: the management network\n" + _match(top)
        + _link(spec.mtu) + "\n" + "\n".join(network) + "\n")
    return out


def spec_file():
    return paths.config_dir() / "management.json"


def write(spec, where=None):
    """Write :func:`files` into ``where`` (networkd's directory), remove ours it no
    longer makes, keep the spec (:func:`spec_file`); returns the paths written."""
    from rackforge.firstboot import netspec
    where = Path(where or directory())
    make_dirs(where, 0o755)
    written = []
    wanted = files(spec)
    for name, text in sorted(wanted.items()):
        atomic_write(where / name, text, mode=0o644)
        written.append(str(where / name))
    for old in where.glob(PREFIX + "*"):
        if old.name not in wanted:
            old.unlink()
    make_dirs(spec_file().parent, 0o755)
    atomic_write(spec_file(), json.dumps(netspec.to_mapping(spec), indent=2) + "\n",
                 mode=0o644)
    return written


def load():
    """The management spec's mapping as last kept, or None (first boot not done)."""
    try:
        return json.loads(spec_file().read_text())
    except FileNotFoundError:
        return None


def in_subnet(address, spec):
    """True if ``address`` is in the management network of ``spec`` (static only)."""
    if spec is None or spec.dhcp:
        return True
    return ipaddress.ip_address(address) in ipaddress.ip_interface(spec.address).network
