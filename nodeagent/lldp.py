"""LLDP neighbours of this node's NICs, from lldpd (in the image): which switch and port
each cable goes to, the first thing to check when a node is cut off.

``lldpctl -f json0`` is lldpd's stable JSON (every value a list of objects, the
same shape whatever the count); :func:`parse` turns it into one record per
neighbour, :func:`by_nic` adds the NICs that heard nobody, so the console shows
every NIC.  Recorded output: ``tests/fixtures/lldp/``.
"""

import json
import logging
import os
import subprocess
from pathlib import Path

from rackforge import errors

LOG = logging.getLogger(__name__)
LLDPCTL = "lldpctl"
TIMEOUT = 10


class LldpUnavailable(errors.RackforgeError):
    message = "LLDP neighbours: {detail}"
    retryable = True


def _value(items, key="value"):
    """The first ``value`` of a json0 list (``[{"value": ...}]``), or None."""
    for item in items or []:
        if isinstance(item, dict) and item.get(key) not in (None, ""):
            return item[key]
    return None


def _values(items):
    return [i["value"] for i in items or [] if isinstance(i, dict) and i.get("value")]


def parse(doc):
    """``[{"nic", "via", "age", "chassis", "chassis_id", "port", "port_id",
    "port_descr", "mgmt", "vlans", "ttl"}]`` of ``lldpctl -f json0``'s document."""
    out = []
    for block in (doc or {}).get("lldp") or []:
        for iface in (block or {}).get("interface") or []:
            chassis = ((iface.get("chassis") or [{}])[0]) or {}
            port = ((iface.get("port") or [{}])[0]) or {}
            chassis_id = (chassis.get("id") or [{}])[0] or {}
            port_id = (port.get("id") or [{}])[0] or {}
            out.append({
                "nic": iface.get("name"),
                "via": iface.get("via"),
                "age": iface.get("age"),
                "chassis": _value(chassis.get("name")),
                "chassis_id": chassis_id.get("value"),
                "port": port_id.get("value"),
                "port_id_type": port_id.get("type"),
                "port_descr": _value(port.get("descr")),
                "ttl": _value(port.get("ttl")),
                "mgmt": _values(chassis.get("mgmt-ip")),
                "vlans": [v.get("vlan-id") for v in iface.get("vlan") or []
                          if isinstance(v, dict) and v.get("vlan-id")],
            })
    return out


def nics(sys_class_net=Path("/sys/class/net")):
    """This node's physical NICs (a ``device`` link in sysfs), sorted."""
    try:
        names = os.listdir(sys_class_net)
    except OSError:
        return []
    return sorted(n for n in names if (sys_class_net / n / "device").exists())


def by_nic(neighbours, nic_names):
    """``{nic: [neighbours]}`` for every NIC (those that heard nobody: ``[]``), plus the
    links a neighbour was heard on that are not physical NICs (a bond's member)."""
    table = {name: [] for name in nic_names}
    for n in neighbours:
        table.setdefault(n["nic"], []).append(n)
    return table


def query(run=subprocess.run):
    """``GET /v1/lldp``: ``{"nics": {nic: [neighbour, ...]}}``."""
    try:
        res = run([LLDPCTL, "-f", "json0"], capture_output=True, text=True, timeout=TIMEOUT)
    except FileNotFoundError:
        raise LldpUnavailable(detail="lldpctl is not installed (the lldpd package)") \
            from None
    except subprocess.TimeoutExpired:
        raise LldpUnavailable(detail="lldpctl gave no answer within %d s; is lldpd "
                                     "running? ('systemctl status lldpd')" % TIMEOUT) from None
    if res.returncode != 0:
        last = (res.stderr or "").strip().splitlines()[-1:] or ["exit %d" % res.returncode]
        raise LldpUnavailable(detail="lldpctl failed: %s; is lldpd running? ('systemctl "
                                     "status lldpd')" % last[0][:200])
    try:
        doc = json.loads(res.stdout or "{}")
    except ValueError:
        raise LldpUnavailable(detail="lldpctl's answer is not JSON") from None
    return {"nics": by_nic(parse(doc), nics())}


def lines(answer):
    """The console's lines: one per NIC and one per neighbour under it."""
    out = []
    for nic, found in sorted((answer or {}).get("nics", {}).items()):
        if not found:
            out.append("%s: no LLDP neighbour heard" % nic)
            continue
        out.append("%s:" % nic)
        for n in found:
            port = n.get("port_descr") or n.get("port") or "?"
            words = ["  %s port %s" % (n.get("chassis") or n.get("chassis_id") or "?", port)]
            if n.get("port_descr") and n.get("port") and n["port"] != n["port_descr"]:
                words.append("(%s %s)" % (n.get("port_id_type") or "id", n["port"]))
            if n.get("mgmt"):
                words.append("mgmt %s" % n["mgmt"][0])
            if n.get("vlans"):
                words.append("VLAN %s" % ",".join(n["vlans"]))
            out.append(" ".join(words))
    return out or ["no NIC found"]
