"""The node registry: every node of the rack, its MACs, BMC, role and boot state.

It lives in etcd under ``/rackforge/`` and is the single source of truth for
nodes (DESIGN.md).  Every write is a compare-and-set transaction, so two
writers (the PXE service recording a boot, an operator enrolling, a node
joining) never overwrite each other: a writer that lost the race re-reads and
applies its change again.

Keys (:mod:`rackforge.keys`): the node record under ``NODES``, the unique MAC
and name indexes (``MAC_INDEX``, ``NAME_INDEX`` -> node id) and the last
network boot of each MAC (``BOOTS``).
"""

import copy
import dataclasses
import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field

from rackforge import errors, keys, states
from rackforge.etcdkv import EtcdKV
from rackforge.kvstore import Compare, MemoryKV, RegistryUnavailable, read_client
from rackforge.record import JsonRecord

NODES, MAC_INDEX, NAME_INDEX, BOOTS = keys.NODES, keys.MAC_INDEX, keys.NAME_INDEX, keys.BOOTS

CAS_ATTEMPTS = 20

_MAC_RE = re.compile(r"^[0-9a-f]{2}([:-]?[0-9a-f]{2}){5}\Z")
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
PLATFORM_RE = re.compile(r"[a-z0-9-]{1,32}")

__all__ = ["Node", "NodeRegistry", "NodeExists", "NodeNotFound", "RegistryUnavailable",
           "ConcurrentUpdate", "connect", "MemoryRegistry", "normalize_mac"]


class NodeExists(errors.RackforgeError):
    message = "{what} is already registered to node {node}; remove or rename that node first"
    exit_code = 2


class NodeNotFound(errors.RackforgeError):
    message = "no node '{name}' in the registry; 'rackforge node list' shows the nodes"
    exit_code = 2


class ConcurrentUpdate(errors.RackforgeError):
    message = ("node {node} changed under {attempts} attempts to update it; "
               "something is writing it in a loop, check the other writers")
    retryable = True


class InvalidNode(errors.ConfigError):
    message = "{field} '{value}' is not valid: {why}"


def valid_name(name):
    """True if ``name`` is a node name as given: a full match, nothing stripped."""
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None


def valid_platform(platform):
    """True for an iPXE platform name as a boot record keeps it: 1 to 32 of [a-z0-9-]."""
    return isinstance(platform, str) and PLATFORM_RE.fullmatch(platform) is not None


def normalize_mac(mac):
    """``AA-BB-cc:dd...`` -> ``aa:bb:cc:dd:ee:ff``; raises InvalidNode."""
    text = str(mac).strip().lower()
    if not _MAC_RE.match(text):
        raise InvalidNode(field="MAC address", value=mac,
                          why="expected six hex pairs like 52:54:00:12:34:56")
    digits = re.sub(r"[^0-9a-f]", "", text)
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


@dataclass
class Node(JsonRecord):
    """One node.  ``revision`` is etcd's mod revision at read time (not stored)."""

    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    name: str = ""
    state: str = "enrolled"          # rackforge.states; changed only by NodeRegistry.transition
    macs: list = field(default_factory=list)
    bmc: dict = field(default_factory=dict)
    inventory: dict = field(default_factory=dict)
    role: str = None
    boot: dict = field(default_factory=dict)
    key: str = None                 # sha256 pin of the node's own public key (cluster.ca)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    revision: int = field(default=0, compare=False)

    _not_stored = ("revision",)

    def __post_init__(self):
        self.macs = sorted({normalize_mac(m) for m in self.macs})
        if not self.name:
            self.name = "node-" + self.id[:8]
        if not valid_name(self.name):
            raise InvalidNode(field="node name", value=self.name,
                              why="use lower-case letters, digits and '-', at most 63")
        if self.state not in states.STATES:
            raise InvalidNode(field="node state", value=self.state,
                              why="one of " + ", ".join(states.STATES))

    @classmethod
    def from_entry(cls, entry):
        node = cls.from_value(entry.value)
        node.revision = entry.mod_revision
        return node


class NodeRegistry:
    """Nodes on a :class:`rackforge.kvstore.KVStore` with compare-and-set writes."""

    def __init__(self, kv):
        self.kv = kv

    # -- reads -----------------------------------------------------------------
    def get_node(self, node_id):
        entry = self.kv.get(NODES + node_id)
        if entry is None:
            raise NodeNotFound(name=node_id)
        return Node.from_entry(entry)

    def find_node(self, name_or_id):
        """By name, by id, or by one of its MACs."""
        for index, key in ((NAME_INDEX, name_or_id), (NODES, name_or_id)):
            entry = self.kv.get(index + key)
            if entry is not None:
                return Node.from_entry(entry) if index == NODES else \
                    self.get_node(entry.value.decode())
        try:
            node = self.node_by_mac(name_or_id)
        except InvalidNode:
            node = None
        if node is None:
            raise NodeNotFound(name=name_or_id)
        return node

    def node_by_mac(self, mac):
        entry = self.kv.get(MAC_INDEX + normalize_mac(mac))
        if entry is None:
            return None
        try:
            return self.get_node(entry.value.decode())
        except NodeNotFound:
            return None     # index left by a writer that died: treat as unknown

    def list_nodes(self):
        return sorted((Node.from_entry(e) for e in self.kv.get_prefix(NODES)),
                      key=lambda n: n.name)

    # -- writes ----------------------------------------------------------------
    def create_node(self, node, by=states.OPERATOR):
        """Register ``node``; its id, name and every MAC must be free.

        :param by: the component creating it; it must be the one allowed to make
            a new node in ``node.state`` (:data:`rackforge.states.TRANSITIONS`).
        :raises states.InvalidTransition: nothing written.
        """
        node, compares, puts = self.plan_create(node, by)
        if not self.kv.txn(compares, puts):
            keys = self._index_keys(node)
            if self.kv.get(NODES + node.id) is not None:
                raise NodeExists(what="node id %s" % node.id, node=node.id)
            self._raise_conflict(node, keys)
        return self.get_node(node.id)

    def plan_create(self, node, by=states.OPERATOR):
        """``(node, compares, puts)`` that create ``node`` in one transaction, for a
        caller that writes more in the same one (the join service)."""
        states.check(node.name, None, node.state, by)
        node = copy.deepcopy(node)
        node.created = node.updated = time.time()
        keys = self._index_keys(node)
        compares = [Compare(NODES + node.id, 0)] + [Compare(k, 0) for k in keys]
        puts = [(NODES + node.id, node.to_json())] + [(k, node.id.encode()) for k in keys]
        return node, compares, puts

    def update_node(self, node_id, change, _move=None):
        """Apply ``change(node)`` (it mutates a fresh copy) with compare-and-set.

        On a lost race the node is read again and ``change`` runs again, so it
        must be a pure function of the node it is given.  ``change`` must not
        touch the state: that is :meth:`transition`'s.
        """
        for _ in range(CAS_ATTEMPTS):
            new, compares, puts, deletes = self._plan_update(node_id, change, _move)
            if self.kv.txn(compares, puts, deletes):
                return self.get_node(node_id)
            for key in (c.key for c in compares if c.mod_revision == 0):
                taken = self.kv.get(key)
                if taken is not None and taken.value.decode() != node_id:
                    self._raise_conflict(new, [key])
        raise ConcurrentUpdate(node=node_id, attempts=CAS_ATTEMPTS)

    def _plan_update(self, node_id, change, move=None):
        """``(new node, compares, puts, deletes)``: ``change`` (and ``move``) applied to
        the node as it is now, as one compare-and-set on it and its indexes."""
        entry = self.kv.get(NODES + node_id)
        if entry is None:
            raise NodeNotFound(name=node_id)
        old = Node.from_entry(entry)
        new = copy.deepcopy(old)
        change(new)
        if move is not None:
            move(old, new)
        elif new.state != old.state:
            raise states.InvalidTransition(
                node=old.name, frm=old.state, to=new.state, by="",
                why="a state changes only through NodeRegistry.transition")
        new.id, new.created, new.updated = old.id, old.created, time.time()
        new = Node(**{f.name: getattr(new, f.name) for f in dataclasses.fields(Node)})
        old_keys, new_keys = set(self._index_keys(old)), set(self._index_keys(new))
        added, removed = sorted(new_keys - old_keys), sorted(old_keys - new_keys)
        compares = [Compare(NODES + node_id, entry.mod_revision)]
        compares += [Compare(k, 0) for k in added]
        puts = [(NODES + node_id, new.to_json())] + [(k, node_id.encode()) for k in added]
        return new, compares, puts, removed

    @staticmethod
    def _mover(to, by, frm):
        def move(old, new):
            expected = (frm,) if isinstance(frm, str) else frm
            if expected is not None and old.state not in expected:
                raise states.InvalidTransition(
                    node=old.name, frm=old.state, to=to, by=" by %s" % by,
                    why="it was expected in %s" % " or ".join(expected))
            states.check(old.name, old.state, to, by)
            new.state = to
        return move

    def transition(self, node_id, to, by, frm=None, change=None):
        """Move node ``node_id`` to state ``to``, by compare-and-set from the state it is in.

        :param by: the component making the move (:mod:`rackforge.states`).
        :param frm: the state the caller saw (or a tuple of states): if the node
            has moved on since, nothing is written and the move is refused.
        :param change: further changes to the record in the same write.
        :raises states.InvalidTransition: nothing written.
        """
        return self.update_node(node_id, change or (lambda n: None),
                                _move=self._mover(to, by, frm))

    def plan_transition(self, node_id, to, by, frm=None, change=None):
        """:meth:`transition` as ``(node, compares, puts, deletes)``, for a caller that
        writes more in the same transaction (the join service admitting an installed
        node).  A lost race is the caller's to retry, planning again.

        :raises states.InvalidTransition, NodeNotFound: nothing to write.
        """
        return self._plan_update(node_id, change or (lambda n: None),
                                 self._mover(to, by, frm))

    def delete_node(self, node_id):
        for _ in range(CAS_ATTEMPTS):
            entry = self.kv.get(NODES + node_id)
            if entry is None:
                raise NodeNotFound(name=node_id)
            node = Node.from_entry(entry)
            if self.kv.txn(*self.plan_delete(node)):
                return node
        raise ConcurrentUpdate(node=node_id, attempts=CAS_ATTEMPTS)

    def plan_delete(self, node):
        """``(compares, puts, deletes)`` that delete ``node`` and its indexes in one
        transaction, compared on the revision it was read at, for a caller that
        deletes more in the same one (``node remove``)."""
        return ([Compare(NODES + node.id, node.revision)], [],
                [NODES + node.id] + self._index_keys(node))

    # -- network boots ---------------------------------------------------------
    def record_boot(self, mac, decision=None, platform=None, node=None):
        """Count a network boot of ``mac`` and keep its last details; returns the record.

        A record is bounded whatever the boot network sends: the MAC (normalised),
        ``decision`` one of :data:`rackforge.states.BOOT`'s values, ``platform`` at
        most 32 of ``[a-z0-9-]`` (iPXE's ``pcbios``, ``efi``), ``node`` a node name;
        the count and the time.  Anything else raises :class:`InvalidNode` and
        nothing is written.  Which boots are recorded at all is the PXE
        service's decision (``pxe/bootrecords.py``).
        """
        key = BOOTS + normalize_mac(mac)
        fields = {"decision": decision, "platform": platform or None, "node": node}
        for name, value, ok in (("boot decision", decision, decision is None
                                 or decision in set(states.BOOT.values())),
                                ("platform", platform, not platform or valid_platform(platform)),
                                ("node name", node, node is None or valid_name(node))):
            if not ok:
                raise InvalidNode(field=name, value=str(value)[:40], why="not a boot record's")
        for _ in range(CAS_ATTEMPTS):
            entry = self.kv.get(key)
            record = json.loads(entry.value) if entry else {"mac": key[len(BOOTS):],
                                                            "count": 0}
            record.update(fields, count=record["count"] + 1, time=time.time())
            if self.kv.txn([Compare(key, entry.mod_revision if entry else 0)],
                           [(key, json.dumps(record, sort_keys=True).encode())]):
                return record
        raise ConcurrentUpdate(node=mac, attempts=CAS_ATTEMPTS)

    def list_boots(self):
        return [json.loads(e.value) for e in self.kv.get_prefix(BOOTS)]

    # -- helpers ---------------------------------------------------------------
    @staticmethod
    def _index_keys(node):
        return [MAC_INDEX + m for m in node.macs] + [NAME_INDEX + node.name]

    def _raise_conflict(self, node, keys):
        """Name the index key of ``keys`` another node holds."""
        for key in keys:
            taken = self.kv.get(key)
            if taken is not None and taken.value.decode() != node.id:
                what = ("MAC %s" % key[len(MAC_INDEX):] if key.startswith(MAC_INDEX)
                        else "name %s" % key[len(NAME_INDEX):])
                owner = taken.value.decode()
                try:
                    owner = self.get_node(owner).name
                except NodeNotFound:
                    pass
                raise NodeExists(what=what, node=owner)
        raise ConcurrentUpdate(node=node.name, attempts=1)


def connect(endpoint=None, **tls):
    """The registry at ``endpoint`` (one URL or several), else ``$RACKFORGE_ETCD``, else
    this node's etcd client file (written at first boot, with its TLS files), else
    etcd's default on loopback."""
    endpoint = endpoint or os.environ.get("RACKFORGE_ETCD")
    if not endpoint:
        local = read_client()
        if local is not None:
            endpoint, found = local
            tls = dict(found, **tls)
    return NodeRegistry(EtcdKV(endpoint, **tls))


def MemoryRegistry():
    """A registry in memory, running the same code as the etcd one (for tests)."""
    return NodeRegistry(MemoryKV())
