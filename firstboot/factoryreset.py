"""Reset this node to its factory state: the console's action and ``rackforge firstboot
factory-reset``.

The factory state is the node as its installer left it, before its first boot
joined anything: the installed system, its host name and its management
network (so the node stays reachable where it stands) are kept; everything the
cluster gave it goes.  First boot then runs again and waits for join settings
(the console's "Join the cluster with a new token", or ``rackforge firstboot
join``).

The reset runs in four **phases**, each recorded in ``config_dir()/factory-
reset.json`` (outside the state it wipes) before its side effect, so a power
cut resumes it where it stopped: ``rackforge-factory-reset.service`` runs
``rackforge firstboot factory-reset --resume`` at boot, before first boot, the
node agent and etcd, while that record exists.  Every phase is idempotent.

``leave``  (a member of a cluster it shares with other nodes) the cluster forgets
           it: its records in one transaction compared on its node record (the
           node and its indexes, its role decision and controller place, its
           certificate, heartbeat, health, bring-up and install records), then
           its etcd membership when it has one;
``stop``   the node agent, first boot, the join service, etcd and every unit of
           the service catalogue stopped and disabled;
``wipe``   the state directory (first boot's journal, the node's key and
           certificate, the agent's state), etcd's data and files, the client
           file, every file holding a secret of the cluster (what the agent
           rendered for a service with secrets, keystone's keys, libvirt's
           secrets, Ceph keyrings); the disks of removed OSDs blanked (their
           labels); the bootstrap file keeps only its
           ``management``, ``role`` and ``boot`` keys (no token, no seed);
``start``  the record removed and first boot started again.

**Refused, with nothing changed** (:func:`refusal`):

- a host name typed that is not this node's (the confirmation);
- a node holding memberships whose leave (and erasure) rackforge does not do
  yet: Galera, RabbitMQ, OVN's clustered databases, a Ceph monitor (their data
  on disk says so); the refusal names them;
- a node hosting virtual machines (libvirt's domains): migrated or deleted
  first;
- a node with Ceph OSDs (its records of them): they are drained and removed
  first with ``rackforge node disk remove`` on a controller;
- the cluster's only etcd member while other nodes are registered: the cluster
  would end under them; an etcd member whose leaving would take the quorum
  with it (too few of the others answer);
- a member whose cluster cannot be reached: it must be told (retryable).

The sole node of its cluster resets without a leave: its cluster ends with it.
"""

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from rackforge import errors, keys, paths
from rackforge.fileutil import atomic_write, make_dirs

LOG = logging.getLogger(__name__)
PHASES = ("leave", "stop", "wipe", "start")
RECORD = "factory-reset.json"
FIRSTBOOT = "rackforge-firstboot.service"
#: stopped first, in this order: nothing re-registers the node or restarts a service
FIRST_UNITS = ("rackforge-nodeagent.service", FIRSTBOOT, "rackforge-join.service")
LAST_UNITS = ("rackforge-etcd.service",)
KEPT = ("management", "role", "boot")
#: (what, path under the root whose non-empty presence means the membership)
MEMBERSHIPS = (("Galera", "var/lib/mysql/grastate.dat"),
               ("RabbitMQ", "var/lib/rabbitmq/mnesia"),
               ("OVN northbound", "var/lib/ovn/ovnnb_db.db"),
               ("OVN southbound", "var/lib/ovn/ovnsb_db.db"),
               ("a Ceph monitor", "var/lib/ceph/mon"))
#: secrets the agent writes outside the catalogue's rendered files (under the root)
SECRET_DIRS = ("etc/keystone/fernet-keys", "etc/keystone/credential-keys",
               "etc/libvirt/secrets", "var/lib/ceph/osd", "var/lib/ceph/bootstrap-osd")
#: what made this node one host of the cloud (nova's stable id of its compute node:
#: the cloud forgets the host, so a join makes it a new one)
HOST_FILES = ("var/lib/nova/compute_id",)


class NotConfirmed(errors.RackforgeError):
    message = ("type this node's host name ({hostname}) to confirm the factory reset; "
               "nothing was changed")
    exit_code = 2


class LeaveNotBuilt(errors.RackforgeError):
    message = ("this node holds {what}: a factory reset does not leave or erase them yet "
               "(a decommission rackforge does not do yet), and would leave them behind; "
               "reinstall the node instead; nothing was changed")
    exit_code = 2


class HostsVms(errors.RackforgeError):
    message = ("this node hosts {count} virtual machine(s) ({names}): migrate or delete them "
               "first ('openstack server list --host {node}'); nothing was changed")
    exit_code = 2


class HoldsOsds(errors.RackforgeError):
    message = ("this node holds Ceph OSDs ({osds}): drain and remove each first with "
               "'rackforge node disk remove {node} osd.N' on a controller (Ceph copies its "
               "data away, then purges it), then reset; nothing was changed")
    exit_code = 2


class LastMember(errors.RackforgeError):
    message = ("this node is the only etcd member of cluster {cluster}, and {others} other "
               "node(s) are registered in it: a reset would end the cluster under them; "
               "reset them first; nothing was changed")
    exit_code = 2


class QuorumAtRisk(errors.RackforgeError):
    message = ("removing this node's etcd member would leave cluster {cluster} without a "
               "quorum: {healthy} of the other {others} member(s) answer, {needed} must; "
               "bring the others back first; nothing was changed")
    retryable = True


class ClusterUnreachable(errors.RackforgeError):
    message = ("the cluster this node leaves cannot be reached ({detail}): it must be told "
               "before the node forgets it; check the management network ('Test the "
               "network') and try again; nothing was changed")
    retryable = True


class PhaseFailed(errors.RackforgeError):
    message = ("factory reset: phase {phase} failed ({detail}); the reset is recorded in "
               "{record} and resumes where it stopped: run 'rackforge firstboot "
               "factory-reset --resume' or reboot")
    retryable = True


class NothingToResume(errors.RackforgeError):
    message = "no factory reset to resume ({record} does not exist)"
    exit_code = 0


@dataclass
class Plan:
    """What a reset of this node does (the console shows it before the confirmation)."""
    hostname: str
    node: dict = field(default_factory=dict)     # node.json: node_id, name, role, ...
    member: bool = False
    alone: bool = False                          # the only node: no leave
    cluster: str = None
    memberships: list = field(default_factory=list)   # what the node holds, unbuilt leave
    osds: list = field(default_factory=list)     # ids of this node's OSDs (its records)
    vms: list = field(default_factory=list)      # libvirt domains defined or running here
    others: int = 0                              # other nodes registered in its cluster
    etcd_members: int = 0
    etcd_healthy_others: int = 0                 # the other members that answer

    @property
    def leaves(self):
        return self.member and not self.alone

    def lines(self):
        """What happens, in the operator's words."""
        out = []
        if self.leaves:
            out.append("node %s leaves cluster %s: its records%s go"
                       % (self.node.get("name"), self.cluster or "?",
                          " and its etcd membership" if self.node.get("etcd_member") else ""))
        elif self.member:
            out.append("node %s is the only node of cluster %s: the cluster ends with it"
                       % (self.node.get("name"), self.cluster or "?"))
        out.append("its services stop; its keys, certificate, journal and etcd data are "
                   "erased")
        out.append("kept: the host name %s, the management network, the installed system"
                   % self.hostname)
        out.append("first boot then waits for join settings")
        return out


@dataclass
class Env:
    """What a reset touches outside the process (the unit tests replace it)."""
    systemctl: object = None
    connect: object = None          # (node.json) -> NodeRegistry of its cluster
    run: object = None              # subprocess.run (wipefs)
    root: Path = Path("/")
    hostname: str = None

    def __post_init__(self):
        import socket

        from rackforge import systemd
        import subprocess
        self.systemctl = self.systemctl or systemd.systemctl
        self.run = self.run or subprocess.run
        self.connect = self.connect or _connect
        self.hostname = self.hostname or socket.gethostname().split(".")[0]


def _connect(node):
    """The node's cluster, as its etcd client file says (else node.json's endpoints)."""
    from rackforge import kvstore, registry
    tls = {k: node[k] for k in ("ca_cert", "cert", "key") if node.get(k)}
    try:
        local = kvstore.read_client()
    except errors.RackforgeError:
        local = None
    endpoints = local[0] if local else node.get("etcd_endpoints")
    return registry.connect(endpoints or None, **(dict(local[1], **tls) if local else tls))


def record_path():
    return paths.config_dir() / RECORD


def read_record():
    try:
        return json.loads(record_path().read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise PhaseFailed(phase="(reading the record)", detail=exc,
                          record=record_path()) from None


def _write_record(rec):
    make_dirs(record_path().parent, 0o755)
    atomic_write(record_path(), json.dumps(rec, indent=2) + "\n", mode=0o600)


def _node_json():
    try:
        data = json.loads((paths.state_dir() / "node.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _present(path):
    if path.is_dir():
        return any(path.iterdir())
    return path.exists()


def memberships(root):
    """What this node holds that a reset cannot leave yet (see :data:`MEMBERSHIPS`)."""
    return [what for what, rel in MEMBERSHIPS if _present(Path(root) / rel)]


def osds():
    """The ids of the OSDs this node keeps records of (``nodeagent/osd.py``)."""
    folder = paths.state_dir() / "ceph" / "osds"
    out = []
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out.append(int(json.loads(f.read_text())["id"]))
        except (OSError, ValueError, KeyError, TypeError):
            out.append(f.stem)          # unreadable: an OSD all the same
    return out


def vms(root):
    """The libvirt domains on this node: defined (``/etc/libvirt/qemu``) or running
    (``/run/libvirt/qemu``), by their names (nova's ``instance-…``)."""
    found = set()
    for folder in ("etc/libvirt/qemu", "run/libvirt/qemu"):
        found.update(p.stem for p in (Path(root) / folder).glob("*.xml"))
    return sorted(found)


def plan(env):
    """This node's :class:`Plan`; reads the cluster when the node is a member.

    :raises ClusterUnreachable: a member whose cluster does not answer."""
    from rackforge import registry as registry_mod
    node = _node_json()
    out = Plan(hostname=env.hostname, node=node, member=bool(node.get("node_id")),
               memberships=memberships(env.root), osds=osds(), vms=vms(env.root))
    if not out.member:
        return out
    try:
        reg = env.connect(node)
        nodes = reg.list_nodes()
        entry = reg.kv.get(keys.CLUSTER)
        out.cluster = json.loads(entry.value).get("name") if entry else None
        if node.get("etcd_member"):
            members = reg.kv.members()
            out.etcd_members = len(members)
            out.etcd_healthy_others = len([m for m in members if m.get("name") != node.get(
                "name") and _answers(reg.kv, m)])
    except registry_mod.RegistryUnavailable as exc:
        raise ClusterUnreachable(detail=exc.kwargs.get("detail") or exc) from None
    out.others = len([n for n in nodes if n.id != node["node_id"]])
    out.alone = out.others == 0
    return out


def _answers(kv, member):
    """True when one of ``member``'s client URLs answers its status."""
    from rackforge import registry as registry_mod
    for url in member.get("clientURLs") or []:
        try:
            kv.member_status(url)
            return True
        except registry_mod.RegistryUnavailable:
            continue
    return False


def refusal(p, confirm):
    """The error that refuses this reset with ``confirm`` typed, or None."""
    if confirm != p.hostname:
        return NotConfirmed(hostname=p.hostname)
    return blocker(p)


def blocker(p):
    """Why this node cannot be reset whatever is typed (the console's check), or None."""
    if p.memberships:
        return LeaveNotBuilt(what=", ".join(p.memberships))
    if p.vms:
        return HostsVms(count=len(p.vms), names=", ".join(p.vms[:5]) + (
            ", ..." if len(p.vms) > 5 else ""), node=p.node.get("name") or p.hostname)
    if p.osds:
        return HoldsOsds(osds=", ".join("osd.%s" % i for i in p.osds),
                         node=p.node.get("name") or p.hostname)
    if p.leaves and p.node.get("etcd_member"):
        if p.etcd_members <= 1:
            return LastMember(cluster=p.cluster or "?", others=p.others)
        needed = (p.etcd_members - 1) // 2 + 1          # a quorum of those who stay
        if p.etcd_healthy_others < needed:
            return QuorumAtRisk(cluster=p.cluster or "?", healthy=p.etcd_healthy_others,
                                others=p.etcd_members - 1, needed=needed)
    return None


def start(confirm, env=None, say=None):
    """Check, record the intent and run every phase; returns the :class:`Plan`.

    Raises a refusal with nothing changed, or :class:`PhaseFailed` with the reset
    recorded (it resumes)."""
    env = env or Env()
    if read_record() is not None:
        return resume(env, say)
    p = plan(env)
    refused = refusal(p, confirm)
    if refused:
        raise refused
    rec = {"hostname": p.hostname, "node": {k: v for k, v in p.node.items()
                                            if k in ("node_id", "name", "role",
                                                     "etcd_member", "etcd_endpoints",
                                                     "ca_cert", "cert", "key")},
           "leave": p.leaves, "started": time.time(), "phases": {}}
    _write_record(rec)
    LOG.warning("factory reset of %s started: %s", p.hostname, "; ".join(p.lines()))
    _run(rec, env, say)
    return p


def resume(env=None, say=None):
    """Go on with a recorded reset from its first phase not done."""
    env = env or Env()
    rec = read_record()
    if rec is None:
        raise NothingToResume(record=record_path())
    _run(rec, env, say)
    return rec


def _run(rec, env, say):
    say = say or (lambda line: None)
    for phase in PHASES:
        if rec["phases"].get(phase) == "done":
            continue
        rec["phases"][phase] = "started"
        _write_record(rec)
        say("factory reset: %s" % phase)
        try:
            PHASE_FUNCS[phase](rec, env)
        except PhaseFailed:
            raise
        except (errors.RackforgeError, OSError) as exc:
            raise PhaseFailed(phase=phase, detail=exc, record=record_path()) from None
        if phase != "start":            # its end removes the record
            rec["phases"][phase] = "done"
            _write_record(rec)
    say("factory reset: done; first boot waits for join settings")


# -- the phases -------------------------------------------------------------------------
def phase_leave(rec, env):
    if not rec.get("leave"):
        return
    from rackforge import registry as registry_mod
    from rackforge.cluster import roles
    node = rec["node"]
    node_id = node["node_id"]
    try:
        reg = env.connect(node)
        roles.RoleElection(reg.kv).release(node_id)
        _forget(reg, node_id)
        if node.get("etcd_member"):
            _leave_etcd(reg.kv, node.get("name"))
    except registry_mod.RegistryUnavailable as exc:
        raise ClusterUnreachable(detail=exc.kwargs.get("detail") or exc) from None
    LOG.warning("factory reset: node %s left its cluster", node.get("name"))


def _forget(reg, node_id):
    """Every record of ``node_id`` in one transaction compared on its node record."""
    from rackforge import registry as registry_mod
    from rackforge.cluster import removal
    from rackforge.kvstore import Compare
    for _ in range(removal.CAS_ATTEMPTS):
        try:
            found = reg.get_node(node_id)
        except registry_mod.NodeNotFound:
            found = None
        compares, deletes = (removal.plan(reg, found) if found else ([], []))
        for key in (keys.NODE_CERTS + node_id, keys.HEARTBEATS + node_id,
                    keys.FERNET_APPLIED + node_id):
            entry = reg.kv.get(key)
            if entry is not None:
                compares.append(Compare(key, entry.mod_revision))
                deletes.append(key)
        deletes += [e.key for e in reg.kv.get_prefix(keys.HEALTH + node_id + "/")]
        if not deletes or reg.kv.txn(compares, (), deletes):
            return
    raise removal.RemoveContended(node=node_id, attempts=removal.CAS_ATTEMPTS)


def _leave_etcd(kv, name):
    """This node's etcd membership removed (by its name; gone already is fine)."""
    for member in kv.members():
        if member.get("name") == name:
            kv.member_remove(member["ID"])
            return


def _catalogue():
    from rackforge.nodeagent import catalogue, hooks
    return catalogue.load(**hooks.names()).services


def _units(services):
    """Every unit a reset stops: the agents first, the catalogue's, etcd last."""
    out = list(FIRST_UNITS)
    for svc in reversed(services):          # the reverse of the start order
        out += [u for u in reversed(svc.units) if u not in out and u not in LAST_UNITS]
    return out + list(LAST_UNITS)


def secret_files(services):
    """What holds the cluster's secrets on this node: the files the agent rendered
    for a service that has secrets (it renders them again after a join), and
    :data:`SECRET_DIRS`; absolute paths."""
    out = [c.path for svc in services if svc.secrets for c in svc.configs]
    return sorted(set(out)) + ["/" + d for d in SECRET_DIRS + HOST_FILES]


def phase_stop(rec, env):
    from rackforge.systemd import SystemctlFailed
    for unit in _units(_catalogue()):
        try:
            env.systemctl("disable", "--now", unit)
        except SystemctlFailed as exc:
            # a unit this image does not have is not running: only a live one matters
            if _active(env, unit):
                raise PhaseFailed(phase="stop", detail=exc, record=record_path()) from None
            LOG.info("factory reset: %s", exc)


def _active(env, unit):
    from rackforge.systemd import SystemctlFailed
    try:
        env.systemctl("is-active", "--quiet", unit)
    except SystemctlFailed:
        return False
    return True


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def phase_wipe(rec, env):
    from rackforge import kvstore
    from rackforge.cluster import etcd
    from rackforge.firstboot import bootstrap, rejoin
    state = paths.state_dir()
    if state.is_dir():
        for child in state.iterdir():
            _remove(child)
    layout = etcd.Layout.default()
    for path in (layout.data_dir, layout.config_dir, kvstore.client_file()):
        _remove(Path(path))
    wipe_osd_disks(env)
    for path in secret_files(_catalogue()):         # no secret of the cluster stays
        found = Path(env.root) / path.lstrip("/")
        if path.lstrip("/") in SECRET_DIRS and found.is_dir():
            for child in found.iterdir():           # the folder (its owner) stays
                _remove(child)
        else:
            _remove(found)
    where = bootstrap.path()
    raw = rejoin._raw(where) if where.exists() else {}
    kept = {k: raw[k] for k in KEPT if k in raw}
    if kept:
        import yaml
        atomic_write(where, yaml.safe_dump(kept, sort_keys=False, default_flow_style=False),
                     mode=0o600)
    else:
        _remove(where)
    from rackforge.firstboot.cli import banner
    banner("factory reset: not joined; waiting for join settings (the console's 'Join the "
           "cluster with a new token', or 'rackforge firstboot join')")


def wipe_osd_disks(env):
    """The disks of this node's removed OSDs blank again (their BlueStore labels, as
    ``ceph-volume zap`` does), so a join makes OSDs on them: each OSD folder's ``block``
    link names its disk (a removed OSD's folder stays until this reset)."""
    from rackforge.nodeagent import osd
    wiper = osd.Osds(None, None, run=env.run, root=env.root)
    for link in sorted((Path(env.root) / "var/lib/ceph/osd").glob("ceph-*/block")):
        disk = link.resolve()
        if disk.exists():
            LOG.warning("factory reset: wiping %s, the disk of removed %s", disk,
                        link.parent.name.replace("ceph-", "osd."))
            wiper.wipe(str(disk))


def phase_start(rec, env):
    """First boot enabled and started, then the record removed (a power cut between
    the two starts it once more: harmless)."""
    from rackforge.systemd import SystemctlFailed
    env.systemctl("enable", FIRSTBOOT)
    try:
        env.systemctl("reset-failed", FIRSTBOOT)
    except SystemctlFailed as exc:          # a unit that never failed: nothing to reset
        LOG.info("factory reset: %s", exc)
    env.systemctl("start", "--no-block", FIRSTBOOT)
    _remove(record_path())


PHASE_FUNCS = {"leave": phase_leave, "stop": phase_stop, "wipe": phase_wipe,
               "start": phase_start}
