"""Role election: which nodes become controllers, which compute, which also storage.

The policy comes from the profile: the first ``cluster.controllers`` nodes
(N, 3 by default, odd so that etcd and Galera keep a quorum) to ask become
``controller``, the rest ``compute``; with ``cluster.converged`` (hci) the
controllers are compute nodes too, so three nodes (or one, aio) are a whole
cloud; every node with eligible data disks (:mod:`rackforge.firstboot.storage`)
also gets ``storage``.

The decision is an etcd transaction, not a lock (PITFALLS.md, Cluster)::

    /rackforge/roles/controllers    {"members": [node ids, in the order they won]}
    /rackforge/roles/nodes/<node>   {"node", "role", "storage", "pinned", "slot", "decided"}

A node's decision and, for a controller, its place in ``members`` are
written together, under compare-and-set on both keys: of any number of
simultaneous askers at most N ever land in ``members``.  A node that asks
again gets the decision already stored (the election is idempotent, and
sticky: a later pin or disk change does not move a decided node).  Compute
decisions do not write ``members``, so once the controllers are chosen the
other nodes no longer contend with each other: each asker retries at most
about N times.

A role pinned in the bootstrap file (``role: controller`` or ``role:
compute``) wins when the policy allows it.  Pinning ``controller`` when N
controllers already exist is **refused** (:class:`ControllerPinRefused`,
nothing written), not silently demoted: the operator asked for a
controller on that machine, and only they can say which node should give
up its place or whether the profile should have more.
"""

import json
import logging
import re
import time
from dataclasses import dataclass

from rackforge import errors, keys
from rackforge.kvstore import Compare
from rackforge.record import JsonRecord

LOG = logging.getLogger(__name__)

CONTROLLERS_KEY = keys.CONTROLLERS
NODE_ROLES = keys.NODE_ROLES
DEFAULT_CONTROLLERS = 3
MAX_CONTROLLERS = 7
PINNABLE = ("controller", "compute")
CAS_ATTEMPTS = 64
_NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")


class RoleError(errors.RackforgeError):
    exit_code = 2


class BadControllerCount(errors.ConfigError):
    message = ("cluster.controllers is {count}: it must be odd, from 1 to {max} (etcd and "
               "Galera need a majority); set 1, 3, 5 or 7 in the profile")


class BadPin(errors.ConfigError):
    message = ("node {node}: role '{role}' in the bootstrap file is not one of "
               "controller, compute; fix or remove 'role'")


class ControllerPinRefused(RoleError):
    message = ("node {node} is pinned 'controller' but the cluster already has its "
               "{count} controllers ({members}); remove 'role: controller' from its bootstrap "
               "file (or give the profile more controllers) and run firstboot again")


class ElectionContended(RoleError):
    message = ("node {node}: the role election changed under {attempts} attempts; "
               "run firstboot again (something rewrites {key} in a loop)")
    retryable = True


@dataclass(frozen=True)
class RolePolicy:
    """How roles are given; ``controllers`` must be odd."""
    controllers: int = DEFAULT_CONTROLLERS
    converged: bool = False         # controllers run compute too

    def __post_init__(self):
        n = self.controllers
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CONTROLLERS \
                or n % 2 == 0:
            raise BadControllerCount(count=n, max=MAX_CONTROLLERS)

    @classmethod
    def from_profile(cls, profile):
        cluster = getattr(profile, "cluster", None) or {}
        return cls(controllers=cluster.get("controllers", DEFAULT_CONTROLLERS),
                   converged=bool(cluster.get("converged", False)))


@dataclass
class Decision(JsonRecord):
    node: str
    role: str                   # controller | compute
    storage: bool = False
    pinned: str = None
    slot: int = None            # a controller's place in the members list, from 0
    decided: float = 0.0
    compute: bool = False       # a controller of a converged rack runs compute too

    @property
    def roles(self):
        return [self.role] + (["compute"] if self.compute and self.role != "compute"
                              else []) + (["storage"] if self.storage else [])


def _members(entry):
    return list(json.loads(entry.value)["members"]) if entry is not None else []


class RoleElection:
    """Decide roles on a :class:`rackforge.kvstore.KVStore` under ``policy``."""

    def __init__(self, kv, policy=None, clock=time.time):
        self.kv = kv
        self.policy = policy or RolePolicy()
        self.clock = clock

    def current(self, node):
        entry = self.kv.get(NODE_ROLES + node)
        return Decision.from_value(entry.value) if entry is not None else None

    def controllers(self):
        return _members(self.kv.get(CONTROLLERS_KEY))

    def decisions(self):
        return [Decision.from_value(e.value) for e in self.kv.get_prefix(NODE_ROLES)]

    def plan(self, node, pin=None, storage=False):
        """``(decision, compares, puts)`` deciding ``node``'s role, for a caller that
        writes them in a transaction of its own (the join service: token, node and
        role in one).  A node already decided: its decision and empty lists.

        :raises BadPin, ControllerPinRefused: nothing to write.
        """
        if not _NODE_RE.match(str(node)):
            raise RoleError("node id '%s' cannot be a registry key; use the registry id"
                            % node)
        if pin is not None and pin not in PINNABLE:
            raise BadPin(node=node, role=pin)
        node_key = NODE_ROLES + node
        known = self.kv.get(node_key)
        if known is not None:
            decision = Decision.from_value(known.value)
            if pin and pin != decision.role:
                LOG.warning("node %s is pinned %s but was decided %s; keeping %s",
                            node, pin, decision.role, decision.role)
            return decision, [], []
        entry = self.kv.get(CONTROLLERS_KEY)
        members = _members(entry)
        decision = Decision(node=node, role="compute", storage=bool(storage), pinned=pin,
                            decided=self.clock())
        puts = []
        if pin != "compute" and len(members) < self.policy.controllers:
            decision.role, decision.slot = "controller", len(members)
            decision.compute = self.policy.converged
            puts.append((CONTROLLERS_KEY, json.dumps({"members": members + [node]}).encode()))
        elif pin == "controller":
            raise ControllerPinRefused(node=node, count=len(members),
                                       members=", ".join(members))
        puts.append((node_key, decision.to_json()))
        compares = [Compare(node_key, 0),
                    Compare(CONTROLLERS_KEY, entry.mod_revision if entry else 0)]
        return decision, compares, puts

    def decide(self, node, pin=None, storage=False):
        """The role of ``node`` (its registry id), deciding it if it is new.

        :param pin: ``controller``, ``compute`` or None (from the bootstrap file).
        :param storage: the node has eligible data disks.
        :raises BadPin, ControllerPinRefused: nothing written.
        """
        for _ in range(CAS_ATTEMPTS):
            decision, compares, puts = self.plan(node, pin, storage)
            if not puts:
                return decision
            if self.kv.txn(compares, puts):
                LOG.info("node %s: role %s", node, "+".join(decision.roles))
                return decision
        raise ElectionContended(node=node, attempts=CAS_ATTEMPTS, key=CONTROLLERS_KEY)

    def mark_storage(self, node, storage=True):
        """Record that ``node`` has (or no longer has) data disks in its decision.

        Disks are chosen after the role (the storage step), so the flag is
        set on the stored decision, by compare-and-set; the role itself never
        changes here.  :returns: the updated decision, or None if undecided.
        """
        node_key = NODE_ROLES + node
        for _ in range(CAS_ATTEMPTS):
            known = self.kv.get(node_key)
            if known is None:
                return None
            decision = Decision.from_value(known.value)
            if decision.storage == bool(storage):
                return decision
            decision.storage = bool(storage)
            if self.kv.txn([Compare(node_key, known.mod_revision)],
                           [(node_key, decision.to_json())]):
                return decision
        raise ElectionContended(node=node, attempts=CAS_ATTEMPTS, key=node_key)

    def release(self, node):
        """Forget ``node``'s decision and free its controller place (node removal).

        :returns: the decision that was removed, or None.
        """
        node_key = NODE_ROLES + node
        for _ in range(CAS_ATTEMPTS):
            known = self.kv.get(node_key)
            if known is None:
                return None
            entry = self.kv.get(CONTROLLERS_KEY)
            members = _members(entry)
            puts = []
            if node in members:
                members.remove(node)
                puts.append((CONTROLLERS_KEY, json.dumps({"members": members}).encode()))
            compares = [Compare(node_key, known.mod_revision),
                        Compare(CONTROLLERS_KEY, entry.mod_revision if entry else 0)]
            if self.kv.txn(compares, puts, [node_key]):
                return Decision.from_value(known.value)
        raise ElectionContended(node=node, attempts=CAS_ATTEMPTS, key=CONTROLLERS_KEY)


def record_role(registry, node_id, decision):
    """Write the decision into the node's registry record (``role``: ``controller,storage``)."""
    text = ",".join(decision.roles)
    return registry.update_node(node_id, lambda n: setattr(n, "role", text))
