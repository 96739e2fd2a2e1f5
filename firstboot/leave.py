"""A node leaving its cluster, from its own side: the factory reset's ``leave`` phase.

**Who it is.**  :func:`identity` reads the node's id, name and client
certificate from ``node.json`` (hand-over wrote it) or, for a node whose first
boot stopped after its join, from the journal's ``join`` or ``seed`` result; a
node with evidence of a join (a node certificate, first boot complete) but no
readable identity raises :class:`Unidentified` (it could not tell the cluster).

**Where it stands** (:func:`standing`, read when the reset is planned and again
right before the leave): the cluster's name, how many other nodes are
registered, its etcd voting members and which of the others are healthy (their
status answers with a leader and no errors), and this node's own member.  The
etcd endpoints the leave talks to are the *other* voting members' (recorded
with the reset's intent): the node's own member goes first and would not
answer after.

**The leave** (:func:`leave`), every step idempotent so a resumed reset runs it
again safely:

1. the quorum checked again (:func:`quorum_refusal`): the voting members that
   stay must keep a quorum among those that answer now;
2. this node's etcd member removed (absent already: nothing to do);
3. its role decision released (its controller place freed);
4. in one transaction compared on the node record and the cluster record:
   the node record and its indexes, its bring-up and install records, its
   certificate, heartbeat, health and token-key records, and its join
   endpoint in the cluster record (the join service refuses a join from a
   listed endpoint's address, so the node could not join again).
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from rackforge import errors, keys, paths
from rackforge.kvstore import Compare, RegistryUnavailable


class Unidentified(errors.RackforgeError):
    message = ("this node joined a cluster ({why}) but its identity cannot be read "
               "({detail}): it cannot tell the cluster it leaves; reinstall it, and remove "
               "it on a controller; nothing was changed")
    exit_code = 2


class LastMember(errors.RackforgeError):
    message = ("this node is the only etcd voting member of cluster {cluster}, and {others} "
               "other node(s) are registered in it: a reset would end the cluster under "
               "them; reset them first; nothing was changed")
    exit_code = 2


class QuorumAtRisk(errors.RackforgeError):
    message = ("removing this node's etcd member would leave cluster {cluster} without a "
               "quorum: {healthy} of the {staying} voting member(s) that stay answer, "
               "{needed} must; bring them back first")
    retryable = True


class MembersNotReady(errors.RackforgeError):
    message = ("etcd refused to remove this node's member now: a member that stays has "
               "not been connected long enough, and cluster {cluster} would be without a "
               "quorum ({detail}); the reset goes on when it is tried again")
    retryable = True


class LeaveContended(errors.RackforgeError):
    message = ("the cluster's records of node {node} kept changing under {attempts} "
               "attempts to remove them; try again")
    retryable = True


@dataclass
class Identity:
    node_id: str
    name: str
    tls: dict = field(default_factory=dict)         # ca_cert, cert, key: paths
    etcd_endpoints: list = field(default_factory=list)
    join_endpoint: str = None                       # the join service it served, if any

    def to_dict(self):
        return dict(self.__dict__)


@dataclass
class Standing:
    cluster: str = None
    others: int = 0                 # other nodes registered
    voters: list = field(default_factory=list)      # etcd voting members (named)
    mine: dict = None               # this node's etcd member (voting or learner), or None
    healthy: list = field(default_factory=list)     # names of the voters that answer

    def other_urls(self, name):
        return [u for m in self.voters if m.get("name") != name
                for u in m.get("clientURLs") or []]


def _tls(data):
    return {k: data[k] for k in ("ca_cert", "cert", "key") if data.get(k)}


def _serving():
    """The join endpoint this node served (``join-server.json``), or None."""
    try:
        data = json.loads((paths.config_dir() / "join-server.json").read_text())
        host = data["listen"]
        return "https://%s:%d" % ("[%s]" % host if ":" in host else host, int(data["port"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def identity(base=None):
    """This node's :class:`Identity` in its cluster, or None when it never joined."""
    from rackforge.firstboot import journal
    base = Path(base or paths.state_dir())
    try:
        node = json.loads((base / "node.json").read_text())
    except (OSError, ValueError):
        node = {}
    if isinstance(node, dict) and node.get("node_id") and node.get("name"):
        return Identity(node["node_id"], node["name"], _tls(node),
                        list(node.get("etcd_endpoints") or []), _serving())
    try:
        records = journal.records(base)
    except errors.RackforgeError as exc:
        records, problem = {}, str(exc)
    else:
        problem = "no node.json and no join result in first boot's journal"
    for step in ("join", "seed"):
        rec = records.get(step) or {}
        res = rec.get("result") if rec.get("status") == journal.DONE else None
        if isinstance(res, dict) and res.get("node_id") and res.get("name"):
            return Identity(res["node_id"], res["name"], _tls(res),
                            list(res.get("etcd_endpoints") or []), _serving())
    if journal.done_marker(base).exists():
        raise Unidentified(why="first boot completed", detail=problem)
    if (base / "pki" / "node.crt").exists():
        raise Unidentified(why="it holds a node certificate", detail=problem)
    return None


def _healthy(kv, member):
    """True when one of ``member``'s client URLs answers with a leader and no errors."""
    for url in member.get("clientURLs") or []:
        try:
            status = kv.member_status(url)
        except RegistryUnavailable:
            continue
        if status.get("leader") and not status.get("errors"):
            return True
    return False


def standing(reg, ident):
    """Where ``ident`` stands in the cluster of ``reg`` (:class:`Standing`)."""
    entry = reg.kv.get(keys.CLUSTER)
    out = Standing(cluster=json.loads(entry.value).get("name") if entry else None)
    out.others = len([n for n in reg.list_nodes() if n.id != ident.node_id])
    members = reg.kv.members()
    out.mine = next((m for m in members if m.get("name") == ident.name), None)
    out.voters = [m for m in members if m.get("name") and not m.get("isLearner")]
    out.healthy = [m["name"] for m in out.voters if m["name"] != ident.name
                   and _healthy(reg.kv, m)]
    return out


def quorum_refusal(st, ident):
    """The error refusing this node's leave of etcd, or None."""
    if st.mine is None or st.mine.get("isLearner"):
        return None                         # no vote to take away
    staying = [m for m in st.voters if m.get("name") != ident.name]
    if not staying:
        return LastMember(cluster=st.cluster or "?", others=st.others) if st.others else None
    needed = len(staying) // 2 + 1
    if len(st.healthy) < needed:
        return QuorumAtRisk(cluster=st.cluster or "?", healthy=len(st.healthy),
                            staying=len(staying), needed=needed)
    return None


def leave(reg, ident):
    """Take ``ident`` out of the cluster of ``reg`` (the module's steps 1-4)."""
    from rackforge.cluster import roles
    st = standing(reg, ident)
    refused = quorum_refusal(st, ident)
    if refused:
        raise refused
    if st.mine is not None:
        try:
            reg.kv.member_remove(st.mine["ID"])
        except RegistryUnavailable as exc:
            # etcd's own check (strict reconfiguration): every member that stays must
            # have been connected for a while; one just (re)started has not
            if "unhealthy cluster" not in str(exc):
                raise
            raise MembersNotReady(cluster=st.cluster or "?",
                                  detail="etcd: unhealthy cluster") from None
    roles.RoleElection(reg.kv).release(ident.node_id)
    forget(reg, ident)


def forget(reg, ident, attempts=10):
    """Every record of ``ident`` and its join endpoint, in one transaction."""
    from rackforge import registry as registry_mod
    from rackforge.cluster import removal
    node_id = ident.node_id
    for _ in range(attempts):
        try:
            found = reg.get_node(node_id)
        except registry_mod.NodeNotFound:
            found = None
        compares, deletes = removal.plan(reg, found) if found else ([], [])
        puts = []
        for key in (keys.NODE_CERTS + node_id, keys.HEARTBEATS + node_id,
                    keys.FERNET_APPLIED + node_id):
            entry = reg.kv.get(key)
            if entry is not None:
                compares.append(Compare(key, entry.mod_revision))
                deletes.append(key)
        deletes += [e.key for e in reg.kv.get_prefix(keys.HEALTH + node_id + "/")]
        cluster = reg.kv.get(keys.CLUSTER)
        record = json.loads(cluster.value) if cluster else {}
        listed = record.get("join_endpoints") or []
        if ident.join_endpoint and ident.join_endpoint in listed:
            record["join_endpoints"] = [u for u in listed if u != ident.join_endpoint]
            compares.append(Compare(keys.CLUSTER, cluster.mod_revision))
            puts.append((keys.CLUSTER, json.dumps(record, sort_keys=True).encode()))
        if not (deletes or puts) or reg.kv.txn(compares, puts, deletes):
            return
    raise LeaveContended(node=ident.name, attempts=attempts)
