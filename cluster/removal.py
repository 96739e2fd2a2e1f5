"""``rackforge node remove``: forget a machine that never joined the cluster.

A node that never joined (``discovered``, ``enrolled``, ``live``,
``installing``, ``installed``, or ``failed`` before any join) holds nothing in
the cluster but records, and they all go in **one transaction**, compared on
the node record's revision, so a node that moves meanwhile (its installer
reporting, a join admitting it) is never removed by half:

- the node record and its MAC and name indexes;
- its bring-up record (``rack up``'s steps) and its install record;
- the join token bound to it by the install API, so no install answer given
  before can still be redeemed.

Its network boot records stay: they are history, and the machine's next
network boot is a stranger's (discovery) again.

A **member** is refused: a node in ``joining``, ``active`` or
``maintenance``, or one holding a role or a certificate record (a join
admitted it).  A member leaves from its own side, with a factory reset
(``firstboot/factoryreset.py``: its records and its etcd member, before it
erases itself); removing a dead member from the cluster's side (etcd,
Galera, RabbitMQ, OVN's databases, Ceph) is not built; the refusal says so
and changes nothing.
"""

import json

from rackforge import errors, keys
from rackforge.cluster import tokens
from rackforge.kvstore import Compare

MEMBER_STATES = ("joining", "active", "maintenance")
CAS_ATTEMPTS = 10


class NodeIsMember(errors.RackforgeError):
    message = ("node {node} is a member of the cluster ({why}): a member leaves with a "
               "factory reset at its console ('rackforge firstboot factory-reset' there), "
               "which tells the cluster; nothing was removed")
    exit_code = 2


class RemoveContended(errors.RackforgeError):
    message = ("node {node} changed under {attempts} attempts to remove it; run 'rackforge "
               "node show {node}' and try again")
    retryable = True


def member_reason(kv, node):
    """Why ``node`` counts as a member of the cluster, or None when it never joined."""
    if node.state in MEMBER_STATES:
        return "state %s" % node.state
    if node.role:
        return "role %s" % node.role
    if kv.get(keys.NODE_CERTS + node.id) is not None:
        return "it holds a node certificate"
    if kv.get(keys.NODE_ROLES + node.id) is not None:
        return "it holds a role record"
    return None


def plan(registry, node):
    """``(compares, deletes)`` removing ``node`` and what is bound to it, compared on the
    node as it was read (``node.revision``): the record the member check looked at."""
    kv = registry.kv
    compares, _, deletes = registry.plan_delete(node)
    for key in (keys.BRINGUP_NODES + node.id, keys.BRINGUP_INSTALL + node.id):
        found = kv.get(key)
        if found is None:
            continue
        compares.append(Compare(key, found.mod_revision))
        deletes.append(key)
        if key.startswith(keys.BRINGUP_INSTALL):
            token = _token_of(found)
            if token:
                deletes.append(keys.TOKENS + token)
    return compares, deletes


def _token_of(entry):
    try:
        token = json.loads(entry.value).get("token")
    except (ValueError, AttributeError):
        return None
    return token if isinstance(token, str) and tokens.ID_RE.match(token) else None


def remove(registry, name_or_id):
    """Remove a node that never joined; :returns: the node as it was.

    :raises NodeIsMember: a member; nothing written.
    """
    from rackforge import registry as registry_mod
    for _ in range(CAS_ATTEMPTS):
        node = registry.find_node(name_or_id)
        why = member_reason(registry.kv, node)
        if why:
            raise NodeIsMember(node=node.name, why=why)
        compares, deletes = plan(registry, node)
        if registry.kv.txn(compares, (), deletes):
            return node
        try:                                    # moved under us: look again
            registry.find_node(node.id)
        except registry_mod.NodeNotFound:
            return node                         # someone else removed it
    raise RemoveContended(node=name_or_id, attempts=CAS_ATTEMPTS)
