"""Reset this node to its factory state: the console's action and ``rackforge firstboot
factory-reset``.

The factory state is the node as its installer left it, before its first boot
joined anything: the installed system, its host name and its management
network (so the node stays reachable where it stands) are kept; everything the
cluster gave it goes.  First boot then runs again and waits for join settings
(the console's "Join the cluster with a new token", or ``rackforge firstboot
join``).

The reset runs in **phases**, each recorded in ``config_dir()/factory-
reset.json`` (outside the state it wipes) before its side effect, so a power
cut resumes it where it stopped: ``rackforge-factory-reset.service`` runs
``rackforge firstboot factory-reset --resume`` at boot (again every 30 s until
it ends), and the node agent, first boot, etcd and the join service do not
start while the record exists.  Every phase is idempotent.

``quiesce`` the node agent, first boot and the join service stopped and
            disabled: nothing re-registers the node or serves a join meanwhile;
``depart``  (a controller of a cluster with other controllers) it leaves OVN's
            clustered databases, RabbitMQ, Galera and its Ceph monitor and
            manager, each step recorded (:mod:`rackforge.nodeagent.depart`);
``leave``   (a member of a cluster it shares with other nodes) the cluster
            forgets it, through the other etcd members (:mod:`.leave`);
``stop``    every unit of the service catalogue disabled and stopped (in the
            reverse of their start order), etcd last; systemd reloaded once;
``wipe``    the state directory (first boot's journal, the node's key and
            certificate, the agent's state), etcd's data and files, the client
            file, the join service's file, every file holding a secret of the
            cluster (what the agent rendered for a service with secrets,
            keystone's keys, libvirt's secrets, Ceph keyrings, cinder's etcd
            client files), nova's ``compute_id``; what Galera, RabbitMQ, OVN and
            Ceph's monitor and manager kept on disk (MariaDB's data directory
            made again as the package makes it); the disks of removed OSDs
            blanked (their labels, checked to be theirs); the bootstrap file
            keeps only its ``management``, ``role`` and ``boot`` keys;
``start``   first boot enabled, the record removed, first boot started.

**Refused, with nothing changed** (:func:`refusal`):

- a host name typed that is not this node's (the confirmation);
- a controller whose clusters cannot spare it now: it is the only controller
  while other nodes remain, another controller does not report Galera,
  RabbitMQ, OVN or its Ceph monitor ok, or a cluster says this member may not
  go (:meth:`rackforge.nodeagent.depart.Departure.refusal`);
- a node hosting virtual machines (libvirt's domains): migrated or deleted
  first;
- a node with Ceph OSDs (its records of them, here or in etcd): they are
  drained and removed first with ``rackforge node disk remove`` on a
  controller;
- the cluster's only etcd voting member while other nodes are registered; an
  etcd member whose leaving would take the quorum with it (:mod:`.leave`);
- a member whose cluster cannot be reached (retryable), or whose identity
  cannot be read.

The sole node of its cluster resets without a leave: its cluster ends with it.
"""

import functools
import json
import logging
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from rackforge import errors, paths
from rackforge.fileutil import atomic_write, make_dirs
from rackforge.firstboot import leave as leave_mod
from rackforge.nodeagent import depart

LOG = logging.getLogger(__name__)
PHASES = ("quiesce", "depart", "leave", "stop", "wipe", "start")
RECORD = "factory-reset.json"
FIRSTBOOT = "rackforge-firstboot.service"
#: stopped first: nothing re-registers the node or serves a join while it leaves
FIRST_UNITS = ("rackforge-nodeagent.service", FIRSTBOOT, "rackforge-join.service")
LAST_UNITS = ("rackforge-etcd.service",)
#: secrets the agent writes outside the catalogue's rendered files (under the root):
#: emptied, the folders (and their owners) kept
SECRET_DIRS = ("etc/keystone/fernet-keys", "etc/keystone/credential-keys",
               "etc/libvirt/secrets", "etc/cinder/etcd", "var/lib/ceph/osd",
               "var/lib/ceph/bootstrap-osd")
#: what made this node one host of the cloud (nova's stable id of its compute node:
#: the cloud forgets the host, so a join makes it a new one)
HOST_FILES = ("var/lib/nova/compute_id",)
#: what a phase's commands may raise besides rackforge's errors
FAILURES = (errors.RackforgeError, OSError, subprocess.SubprocessError)


class NotConfirmed(errors.RackforgeError):
    message = ("type this node's host name ({hostname}) to confirm the factory reset; "
               "nothing was changed")
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


class ClusterUnreachable(errors.RackforgeError):
    message = ("the cluster this node leaves cannot be reached ({detail}): it must be told "
               "before the node forgets it; check the management network ('Test the "
               "network') and try again; nothing was changed")
    retryable = True


class PhaseFailed(errors.RackforgeError):
    message = ("factory reset: phase {phase} failed ({detail}); the reset is recorded in "
               "{record} and goes on where it stopped at the next boot, or with 'rackforge "
               "firstboot factory-reset --resume'")
    retryable = True


class NotStarted(errors.RackforgeError):
    message = ("factory reset done, but first boot did not start ({detail}); run "
               "'systemctl start {unit}'")
    retryable = True


class NothingToResume(errors.RackforgeError):
    message = "no factory reset to resume ({record} does not exist)"
    exit_code = 0


@dataclass
class Plan:
    """What a reset of this node does (the console shows it before the confirmation)."""
    hostname: str
    identity: object = None                      # leave.Identity, or None: never joined
    standing: object = None                      # leave.Standing of a member
    memberships: list = field(default_factory=list)   # depart's steps this node holds
    depart_refused: object = None                # why it cannot leave them now, or None
    osds: list = field(default_factory=list)     # ids of this node's OSDs
    vms: list = field(default_factory=list)      # libvirt domains defined or running here

    @property
    def member(self):
        return self.identity is not None

    @property
    def alone(self):
        return self.member and self.standing.others == 0

    @property
    def leaves(self):
        return self.member and not self.alone

    def lines(self):
        """What happens, in the operator's words."""
        out = []
        cluster = (self.standing.cluster if self.standing else None) or "?"
        if self.leaves and self.memberships:
            out.append("it leaves %s first; the other controllers keep them"
                       % depart.what(self.memberships))
        if self.leaves:
            out.append("node %s leaves cluster %s: its records%s go"
                       % (self.identity.name, cluster, " and its etcd member"
                          if self.standing.mine else ""))
        elif self.member:
            out.append("node %s is the only node of cluster %s: the cluster ends with it"
                       % (self.identity.name, cluster))
        out.append("its services stop; its keys, certificate, journal, etcd data and the "
                   "cluster's secrets are erased")
        out.append("kept: the host name %s, the management network, the installed system"
                   % self.hostname)
        out.append("first boot then waits for join settings")
        return out


@dataclass
class Env:
    """What a reset touches outside the process (the unit tests replace it)."""
    systemctl: object = None
    connect: object = None          # (leave.Identity, endpoints) -> NodeRegistry
    run: object = None              # subprocess.run (wipefs, ceph-bluestore-tool)
    root: Path = Path("/")
    hostname: str = None
    say: object = None              # a line of progress for the operator (the run sets it)

    def __post_init__(self):
        import socket

        from rackforge import systemd
        self.systemctl = self.systemctl or systemd.systemctl
        self.run = self.run or subprocess.run
        self.connect = self.connect or _connect
        self.hostname = self.hostname or socket.gethostname().split(".")[0]


def _connect(ident, endpoints):
    from rackforge import registry
    return registry.connect(list(endpoints) or None, **ident.tls)


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


def local_osds():
    """The ids of the OSDs this node keeps records of (``nodeagent/osd.py``), and of
    an OSD being made (its intent)."""
    folder = paths.state_dir() / "ceph" / "osds"
    out = []
    for f in sorted(folder.iterdir()) if folder.is_dir() else []:
        if f.suffix == ".json":
            try:
                out.append(int(json.loads(f.read_text())["id"]))
            except (OSError, ValueError, KeyError, TypeError):
                out.append(f.stem)          # unreadable: an OSD all the same
        elif f.name.startswith("making"):
            out.append("(being made)")
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

    :raises ClusterUnreachable: a member whose cluster does not answer;
        :class:`leave.Unidentified`."""
    from rackforge.nodeagent.ceph import osd_records
    out = Plan(hostname=env.hostname, identity=leave_mod.identity(),
               memberships=depart.holds(env.root), osds=local_osds(), vms=vms(env.root))
    if out.identity is None:
        return out
    try:
        reg = env.connect(out.identity, out.identity.etcd_endpoints)
        out.standing = leave_mod.standing(reg, out.identity)
        out.osds = sorted(set(out.osds) | {r["id"] for r in osd_records(
            reg.kv, out.identity.node_id)}, key=str)
        if out.memberships and out.leaves:
            out.depart_refused = _departure(reg, out.identity, env).refusal(out.memberships)
    except leave_mod.RegistryUnavailable as exc:
        raise ClusterUnreachable(detail=exc.kwargs.get("detail") or exc) from None
    return out


def _departure(reg, ident, env):
    from rackforge.nodeagent import view
    return depart.Departure(view.read(reg, ident.node_id), reg.kv, run=env.run,
                            systemctl=env.systemctl, root=env.root)


def refusal(p, confirm):
    """The error that refuses this reset with ``confirm`` typed, or None."""
    if confirm != p.hostname:
        return NotConfirmed(hostname=p.hostname)
    return blocker(p)


def blocker(p):
    """Why this node cannot be reset whatever is typed (the console's check), or None."""
    if p.vms:
        return HostsVms(count=len(p.vms), names=", ".join(p.vms[:5]) + (
            ", ..." if len(p.vms) > 5 else ""),
            node=p.identity.name if p.identity else p.hostname)
    if p.osds:
        return HoldsOsds(osds=", ".join("osd.%s" % i for i in p.osds),
                         node=p.identity.name if p.identity else p.hostname)
    if p.leaves:
        return leave_mod.quorum_refusal(p.standing, p.identity) or p.depart_refused
    return None


def start(confirm, env=None, say=None):
    """Check, record the intent and run every phase; returns the :class:`Plan`, or None
    when a recorded reset was resumed instead.

    Raises a refusal with nothing changed, or :class:`PhaseFailed` with the reset
    recorded (it resumes)."""
    env = env or Env()
    if read_record() is not None:
        resume(env, say)
        return None
    p = plan(env)
    refused = refusal(p, confirm)
    if refused:
        raise refused
    rec = {"hostname": p.hostname, "leave": p.leaves, "started": time.time(),
           "identity": p.identity.to_dict() if p.identity else None,
           # the leave goes through the others: this node's own member goes first
           "endpoints": p.standing.other_urls(p.identity.name) if p.leaves else [],
           # the clusters it leaves, and whose data the wipe erases (the sole node's too)
           "depart": p.memberships if p.leaves else [], "departed": [],
           "erase": p.memberships, "phases": {}}
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


def _run(rec, env, say):
    say = env.say = say or (lambda line: None)
    for phase in PHASES:
        if rec["phases"].get(phase) == "done":
            continue
        rec["phases"][phase] = "started"
        _write_record(rec)
        say("factory reset: %s" % phase)
        try:
            PHASE_FUNCS[phase](rec, env)
        except (PhaseFailed, NotStarted):
            raise
        except FAILURES as exc:
            raise PhaseFailed(phase=phase, detail=exc, record=record_path()) from None
        if phase != "start":            # its end removed the record
            rec["phases"][phase] = "done"
            _write_record(rec)
    say("factory reset: done; first boot waits for join settings")


# -- the phases -------------------------------------------------------------------------
#: systemctl leaves a unit's SysV script alone (its rc links): many Debian packages,
#: OpenStack's among them, ship one beside their native unit, and
#: ``systemd-sysv-install``'s ``update-rc.d`` reloads systemd whatever ``--no-reload``
#: says.  Where a native unit exists systemd never reads the script's links, so they
#: change nothing at boot.
NO_SYSV = {"SYSTEMCTL_SKIP_SYSV": "1"}


def _disable(env, units, phase):
    """Each unit disabled and stopped (``disable --now``), in the order given, before the
    next; systemd reloaded once at the end (``--no-reload``, and :data:`NO_SYSV` for
    the reload a SysV script's ``update-rc.d`` does), not once a unit (a controller's
    reset on the test bed: 87 reloads of about 2 s each with neither, 45 without the
    SysV part, the stop phase's one with both).  The links are gone from the disk as
    each unit is disabled, so a power cut before the reload leaves nothing enabled that
    was."""
    from rackforge.systemd import SystemctlFailed
    for unit in units:
        try:
            env.systemctl("disable", "--now", "--no-reload", unit, environ=NO_SYSV)
        except SystemctlFailed as exc:
            # a unit this image does not have is not running: only a live one matters
            if _active(env, unit):
                raise PhaseFailed(phase=phase, detail=exc, record=record_path()) from None
            LOG.info("factory reset: %s", exc)
    env.systemctl("daemon-reload")


def _active(env, unit):
    from rackforge.systemd import SystemctlFailed
    try:
        env.systemctl("is-active", "--quiet", unit)
    except SystemctlFailed:
        return False
    return True


def phase_quiesce(rec, env):
    _disable(env, FIRST_UNITS, "quiesce")


def phase_depart(rec, env):
    if not rec.get("depart"):
        return
    ident = leave_mod.Identity(**rec["identity"])
    try:
        reg = env.connect(ident, rec.get("endpoints") or ident.etcd_endpoints)
        departure = _departure(reg, ident, env)
    except leave_mod.RegistryUnavailable as exc:
        raise PhaseFailed(phase="depart", detail="the cluster does not answer: %s" % (
            exc.kwargs.get("detail") or exc), record=record_path()) from None
    departure.run_steps(rec["depart"], rec.setdefault("departed", []),
                        save=lambda: _write_record(rec), say=env.say or (lambda line: None))


def phase_leave(rec, env):
    if not rec.get("leave"):
        return
    ident = leave_mod.Identity(**rec["identity"])
    try:
        reg = env.connect(ident, rec.get("endpoints") or ident.etcd_endpoints)
        leave_mod.leave(reg, ident)
    except leave_mod.RegistryUnavailable as exc:
        raise PhaseFailed(phase="leave", detail="the cluster does not answer: %s" % (
            exc.kwargs.get("detail") or exc), record=record_path()) from None
    LOG.warning("factory reset: node %s left its cluster", ident.name)


@functools.lru_cache(maxsize=1)
def _catalogue():
    """The catalogue's services (read once: the stop and the wipe both use them)."""
    from rackforge.nodeagent import catalogue, hooks
    return catalogue.load(**hooks.names()).services


def _units(services):
    """The catalogue's units, the reverse of their start order, etcd last."""
    out = []
    for svc in reversed(services):
        out += [u for u in reversed(svc.units) if u not in out + list(FIRST_UNITS)
                and u not in LAST_UNITS]
    return out + list(LAST_UNITS)


def phase_stop(rec, env):
    from rackforge.nodeagent import units
    _disable(env, _units(_catalogue()), "stop")
    _remove(Path(env.root) / units.GATES.lstrip("/"))   # what only the agent starts stays down


def secret_files(services):
    """What holds the cluster's secrets on this node: the files the agent rendered
    for a service that has secrets (it renders them again after a join), and
    :data:`SECRET_DIRS`, :data:`HOST_FILES`; absolute paths."""
    out = [c.path for svc in services if svc.secrets for c in svc.configs
           if not c.path.startswith("/etc/systemd/")]       # units and drop-ins hold none
    return sorted(set(out)) + ["/" + d for d in SECRET_DIRS + HOST_FILES]


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def wipe_osd_disks(env):
    """The disks of this node's removed OSDs blank again (their BlueStore labels, as
    ``ceph-volume zap`` does), so a join makes OSDs on them.  Each OSD folder's
    ``block`` link names its disk; only a disk whose label is that OSD's (its id and
    the uuid in the folder's ``fsid``) is wiped: a link may name a device that is now
    another disk."""
    from rackforge.nodeagent import osd
    wiper = osd.Osds(None, None, run=env.run, root=env.root)
    for link in sorted((Path(env.root) / "var/lib/ceph/osd").glob("ceph-*/block")):
        disk, name = link.resolve(), link.parent.name.replace("ceph-", "osd.")
        try:
            uuid = (link.parent / "fsid").read_text().strip()
        except OSError:
            uuid = None
        label = osd.read_label(env.run, str(disk)) if disk.exists() else None
        if not (label and uuid and label.get("osd_uuid") == uuid
                and "osd.%s" % label.get("whoami") == name):
            LOG.warning("factory reset: %s left alone: it does not carry removed %s's label",
                        disk, name)
            continue
        LOG.warning("factory reset: wiping %s, the disk of removed %s", disk, name)
        wiper.wipe(str(disk))


def phase_wipe(rec, env):
    from rackforge import kvstore
    from rackforge.cluster import etcd
    from rackforge.firstboot import bootstrap, rejoin
    state = paths.state_dir()
    if state.is_dir():
        for child in state.iterdir():
            _remove(child)
    layout = etcd.Layout.default()
    for path in (layout.data_dir, layout.config_dir, kvstore.client_file(),
                 paths.config_dir() / "join-server.json"):
        _remove(Path(path))
    wipe_osd_disks(env)
    depart.erase(env.root, rec.get("erase") or [], env.run)
    for path in secret_files(_catalogue()):         # no secret of the cluster stays
        found = Path(env.root) / path.lstrip("/")
        if path.lstrip("/") in SECRET_DIRS and found.is_dir():
            for child in found.iterdir():           # the folder (its owner) stays
                _remove(child)
        else:
            _remove(found)
    where = bootstrap.path()
    kept = rejoin.kept(rejoin.raw(where))          # what a new join keeps too
    if kept:
        import yaml
        atomic_write(where, yaml.safe_dump(kept, sort_keys=False, default_flow_style=False),
                     mode=0o600)
    else:
        _remove(where)
    from rackforge.firstboot.cli import banner
    banner("factory reset: not joined; waiting for join settings (the console's 'Join the "
           "cluster with a new token', or 'rackforge firstboot join')")


def phase_start(rec, env):
    """First boot enabled, the record removed (first boot does not start while it
    exists), first boot started.  A power cut before the start: it starts at boot."""
    from rackforge.systemd import SystemctlFailed
    env.systemctl("enable", FIRSTBOOT)
    try:
        env.systemctl("reset-failed", FIRSTBOOT)
    except SystemctlFailed as exc:          # a unit that never failed: nothing to reset
        LOG.info("factory reset: %s", exc)
    _remove(record_path())
    try:
        env.systemctl("start", "--no-block", FIRSTBOOT)
    except SystemctlFailed as exc:
        raise NotStarted(detail=exc, unit=FIRSTBOOT) from None


PHASE_FUNCS = {"quiesce": phase_quiesce, "depart": phase_depart, "leave": phase_leave,
               "stop": phase_stop,
               "wipe": phase_wipe, "start": phase_start}
