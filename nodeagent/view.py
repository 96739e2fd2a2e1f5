"""What the agent knows at the start of a pass: this node, its roles, its peers, the cluster.

Built from etcd in a few reads (:func:`read`): the node's record, the role
decisions and the controllers in their order, every node's management
address, and the cluster record (name, VIP).  The templates see it as
:meth:`View.context`, plus the secrets each service declares.
"""

import hashlib
import json
from dataclasses import dataclass, field

from rackforge import keys
from rackforge.cluster import roles as roles_mod
from rackforge.nodeagent import cephconf


@dataclass
class Peer:
    id: str
    name: str
    address: str
    slot: int = None


@dataclass
class View:
    node_id: str
    name: str
    address: str
    roles: set
    state: str
    cluster: dict
    controllers: list                   # [Peer], in election order
    nodes: list                         # [Peer], every node with an address
    facts: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    mons: list = field(default_factory=list)    # [{name, address}]: Ceph monitors made
    disks: list = field(default_factory=list)   # this node's data disks (first boot's choice)

    @property
    def is_controller(self):
        return "controller" in self.roles

    @property
    def vip(self):
        return self.cluster.get("vip")

    @property
    def slot(self):
        for peer in self.controllers:
            if peer.id == self.node_id:
                return peer.slot
        return None

    def context(self, secrets=None):
        """The names the templates use."""
        cluster = dict(self.cluster, vrid=vrid(self.cluster.get("name", "rackforge"),
                                               self.cluster.get("vrid")))
        return {
            "node": {"id": self.node_id, "name": self.name, "address": self.address,
                     "roles": sorted(self.roles), "slot": self.slot,
                     "interface": self.facts.get("interface"),
                     "prefix": self.facts.get("prefix", 24),
                     "cpus": self.facts.get("cpus", 1),
                     "memory_mib": self.facts.get("memory_mib", 1024),
                     "kvm": self.facts.get("kvm", False),
                     "container": self.facts.get("container", "")},
            "cluster": cluster,
            "controllers": [vars(p) for p in self.controllers],
            "peers": [vars(p) for p in self.controllers if p.id != self.node_id],
            "nodes": [vars(p) for p in self.nodes],
            "settings": self.settings,
            "secrets": dict(secrets or {}),
            "ceph": cephconf.context(self),
        }


def vrid(cluster_name, chosen=None):
    """A VRRP router id (1-254) of the cluster: two racks on one layer-2 network do not
    fight over one VIP unless their names hash alike (then set ``vrid`` in the cluster
    record: ``chosen``, used when it is a valid id)."""
    if isinstance(chosen, int) and not isinstance(chosen, bool) and 1 <= chosen <= 254:
        return chosen
    return 1 + int(hashlib.sha256(cluster_name.encode()).hexdigest(), 16) % 254


def _address(node):
    addresses = (node.boot or {}).get("addresses") or []
    return addresses[0] if addresses else None


def read(registry, node_id, facts=None, settings=None):
    """The :class:`View` of node ``node_id`` from the registry."""
    kv = registry.kv
    node = registry.get_node(node_id)
    entry = kv.get(keys.CLUSTER)
    cluster = json.loads(entry.value) if entry else {}
    election = roles_mod.RoleElection(kv)
    decision = election.current(node_id)
    roles = set(decision.roles) if decision else set((node.role or "").split(",")) - {""}
    nodes = registry.list_nodes()
    by_id = {n.id: n for n in nodes}
    controllers = []
    for slot, member in enumerate(election.controllers()):
        n = by_id.get(member)
        if n is not None and _address(n):
            controllers.append(Peer(id=n.id, name=n.name, address=_address(n), slot=slot))
    peers = [Peer(id=n.id, name=n.name, address=_address(n)) for n in nodes if _address(n)]
    mons = []
    for entry in kv.get_prefix(keys.CEPH_MONS):
        try:
            mons.append(json.loads(entry.value))
        except ValueError:
            continue
    disks = ((node.boot or {}).get("storage") or {}).get("disks") or []
    return View(node_id=node_id, name=node.name, address=_address(node) or "127.0.0.1",
                roles=roles, state=node.state, cluster=cluster, controllers=controllers,
                nodes=peers, facts=dict(facts or {}), settings=dict(settings or {}),
                mons=sorted(mons, key=lambda m: m.get("name", "")), disks=list(disks))
