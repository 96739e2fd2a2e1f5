"""``GET /v1/status`` of the local API: this node and its cluster, for the console on tty1.

``node``: name, id, state, roles and why it got them (the role election's
decision), management address, BMC address (as enrolled, else as first boot
found it in band), rackforge version, profile, uptime.  ``cluster``: the
document of ``rackforge cluster status --json`` (etcd, nodes, every node's
services, VIP and its holder, Galera, RabbitMQ, Ceph, OpenStack, one line per
problem).  ``unhealthy``: this node's services that are not ok, each with its
last error line.  The cluster part needs the registry; without it the node
part still answers from what the agent knows, and ``cluster`` says why not.
"""

import time
from pathlib import Path

from rackforge import __version__
from rackforge.kvstore import RegistryRejected, RegistryUnavailable


def reasons(decision):
    """Why this node has its roles: one short line per role."""
    if decision is None:
        return ["no role yet: the election has not decided for this node"]
    lines = []
    if decision.pinned:
        lines.append("%s: pinned by the operator" % decision.role)
    elif decision.role == "controller":
        lines.append("controller: slot %d of the controllers (elected in join order)"
                     % ((decision.slot or 0) + 1))
    else:
        lines.append("compute: the controllers' slots were full when it joined")
    if decision.compute and decision.role != "compute":
        lines.append("compute too: the rack is converged")
    if decision.storage:
        lines.append("storage: it has disks for Ceph")
    return lines


def uptime(proc=Path("/proc/uptime")):
    try:
        return float(proc.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def document(registry, node_id, profile_name, address, quota, proc_uptime=Path("/proc/uptime"),
             clock=time.time):
    """The status document (a dict, JSON-ready)."""
    from rackforge.cluster import roles as roles_mod
    from rackforge.cluster import status as status_mod
    from rackforge.nodeagent import health

    doc = {"node": {"id": node_id, "version": __version__, "profile": profile_name,
                    "address": address, "uptime_s": uptime(proc_uptime)},
           "at": clock()}
    try:
        node = registry.get_node(node_id)
        decision = roles_mod.RoleElection(registry.kv).current(node_id)
        mine = (health.read_all(registry.kv).get(node_id)) or {}
        cluster = status_mod.collect(registry, quota).to_dict()
    except (RegistryUnavailable, RegistryRejected) as exc:
        doc["cluster"] = {"error": "the registry does not answer: %s" % exc}
        return doc
    bmc = (node.bmc or {}).get("address") or \
        ((node.inventory or {}).get("bmc") or {}).get("address")
    doc["node"].update(name=node.name, state=node.state, bmc=bmc or None,
                       roles=decision.roles if decision else [],
                       reasons=reasons(decision))
    doc["unhealthy"] = {name: {"state": rec.get("state"), "error": rec.get("error") or ""}
                        for name, rec in sorted(mine.items())
                        if rec.get("state") != health.OK}
    doc["cluster"] = cluster
    return doc
