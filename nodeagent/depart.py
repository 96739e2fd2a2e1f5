"""A controller departing: it leaves the clusters the node agent formed on it, so the
other controllers keep them whole without it, and it can join again later as a new
member (the factory reset's ``depart`` phase, :mod:`rackforge.firstboot.factoryreset`).

The node agent is stopped by then (nothing restarts a service behind the leave).
The clusters are independent of each other; each one's leave is a step the reset
records before it begins and marks done after, and each step is idempotent, so a
power cut in the middle runs it again.  In order:

``ovn``       ovn-northd stopped (its southbound lock passes to another controller's);
              each database leaves its RAFT cluster (``cluster/leave``: a leader
              hands its leadership over first), and the server drops it once the
              others committed the removal (``ovsdb-client wait ... removed``);
              the database servers stopped.  A file that has left can never be
              opened again (``ovsdb(7)``): the wipe erases it.
``rabbitmq``  the broker stopped (a running node cannot be forgotten), then
              forgotten by a running member (``forget_cluster_node``, which in
              RabbitMQ 4 also takes it out of every quorum queue), checked in
              that member's cluster status.
``galera``    in the Galera turn (no join or restart runs meanwhile), with this
              member Synced (not a donor) in a Primary component of several:
              MariaDB stopped cleanly.  That is Galera's leave: it keeps no member
              list, and the others' component shrinks instead of losing a member.
``ceph``      the manager failed over when it is the active one, stopped, disabled
              and its key removed; the monitor stopped and disabled, the others'
              quorum waited for, then removed from the monmap (stopped first:
              removing a running monitor has crashed monitors, Ceph tracker 50089),
              checked in the monmap (a removal during an election can be dropped)
              and its record deleted, so every node's ``mon_host`` drops it.

Before any of it (:meth:`Departure.refusal`, read-only: the reset is refused with
nothing changed): another controller runs; every other controller reports each of
these services ok; and each cluster says this member may go: Galera Synced and
Primary here, no RabbitMQ quorum queue losing its majority
(``check_if_node_is_quorum_critical``), Ceph's ``mon ok-to-stop`` and ``ok-to-rm``.

What the clusters kept on disk (:data:`DATA`) is erased by the reset's wipe, after
every unit stopped, and MariaDB's data directory is made again as Debian's package
makes it, the state a joining controller starts from.
"""

import json
import logging
import subprocess
import time
from pathlib import Path

from rackforge import errors, keys, systemd
from rackforge.kvstore import Compare
from rackforge.nodeagent import ceph as ceph_mod
from rackforge.nodeagent import galera, galera_state, health, ovn, rabbit, units

LOG = logging.getLogger(__name__)
#: step -> (what, in the operator's words; the health record the other controllers
#: publish for it; paths under the root whose presence means this node is a member)
STEPS = {
    "ovn": ("OVN's clustered databases", "ovn-central",
            ("var/lib/ovn/ovnnb_db.db", "var/lib/ovn/ovnsb_db.db")),
    "rabbitmq": ("RabbitMQ", "rabbitmq", ("var/lib/rabbitmq/mnesia",)),
    "galera": ("Galera", "mariadb", ("var/lib/mysql/grastate.dat",)),
    "ceph": ("a Ceph monitor", "ceph-mon", ("var/lib/ceph/mon", "var/lib/ceph/mgr")),
}
ORDER = ("ovn", "rabbitmq", "galera", "ceph")   # the monitor last: its window is short
#: step -> what the wipe erases under the root: (folder, its contents go; the folder and
#: its owner stay) or a file
DATA = {
    "ovn": ("var/lib/ovn/ovnnb_db.db", "var/lib/ovn/ovnsb_db.db",
            "var/lib/ovn/.ovnnb_db.db.~lock~", "var/lib/ovn/.ovnsb_db.db.~lock~"),
    "rabbitmq": ("var/lib/rabbitmq/mnesia/",),
    "galera": ("var/lib/mysql/",),
    "ceph": ("var/lib/ceph/mon/", "var/lib/ceph/mgr/"),
}
#: kept in MariaDB's data directory: Debian's marker of the version that made it
KEEP = ("debian-*.flag",)
#: Debian's postinst makes the data directory so (mariadb-server 11.8); the script reads
#: the node's configuration, which now names Galera's provider and peers: none for the
#: bootstrap (the script passes options it does not know on to mariadbd)
INSTALL_DB = ("mariadb-install-db", "--rpm", "--cross-bootstrap", "--user=mysql",
              "--disable-log-bin", "--skip-test-db", "--wsrep-provider=none")
OVN_SERVERS = ("ovn-ovsdb-server-nb.service", "ovn-ovsdb-server-sb.service")
OVN_SOCKETS = {"nb": ovn.RUN_DIR + "/ovnnb_db.sock", "sb": ovn.RUN_DIR + "/ovnsb_db.sock"}
LEAVE_WAIT = 120            # seconds for a RAFT leave, a monitor quorum, a Galera turn
TURN_TTL = 60               # kept alive while MariaDB stops; a power cut frees it soon
STOP_WAIT = 960             # MariaDB's clean stop (its unit allows 900 s, no SIGKILL)
TURN_WAIT = 600
REMOVE_ATTEMPTS = 5


class DepartRefused(errors.RackforgeError):
    exit_code = 2


class OnlyController(DepartRefused):
    message = ("this node is its cluster's only controller and holds {what}: the others "
               "would have nothing left; reset the other nodes first; nothing was changed")


class PeersNotReady(DepartRefused):
    message = ("the other controllers must run {what} before this one leaves them: "
               "{problems}; wait until 'rackforge cluster status' shows them ok, then try "
               "again; nothing was changed")
    retryable = True


class NotSafeToLeave(DepartRefused):
    message = ("{what} says this node may not leave now ({detail}); nothing was changed; "
               "try again once it is healthy")
    retryable = True


class DepartFailed(errors.RackforgeError):
    message = "leaving {what}: {detail}"
    retryable = True


class NotNow(DepartFailed):
    message = "not leaving {what} now: {why}"


def holds(root):
    """The steps whose cluster this node is a member of (its data on disk says so), in
    :data:`ORDER`."""
    def present(path):
        return any(path.iterdir()) if path.is_dir() else path.exists()
    return [step for step in ORDER
            if any(present(Path(root) / rel) for rel in STEPS[step][2])]


def what(steps):
    return ", ".join(STEPS[s][0] for s in steps)


class Departure:
    """This controller's leave of the clusters in ``view`` (:mod:`.view`), with the
    cluster's store ``kv``; ``systemctl`` is :func:`rackforge.systemd.systemctl`."""

    def __init__(self, view, kv, run=subprocess.run, systemctl=systemd.systemctl, root="/",
                 clock=time.monotonic, sleep=time.sleep):
        self.view, self.kv, self.run, self.systemctl = view, kv, run, systemctl
        self.root = Path(root)
        self.clock, self.sleep = clock, sleep
        self.others = [c for c in view.controllers if c.id != view.node_id]
        self.rabbit = rabbit.Rabbit(view.node_id, run=run)
        self.cephcli = ceph_mod.Ceph(run)

    def path(self, rel):
        return self.root / rel.lstrip("/")

    # -- before anything ---------------------------------------------------------------
    def refusal(self, steps):
        """The error that refuses this leave with nothing changed, or None."""
        if not steps:
            return None
        if not self.others:
            return OnlyController(what=what(steps))
        problems = self._peer_problems(steps)
        if problems:
            return PeersNotReady(what=what(steps), problems="; ".join(problems))
        try:
            for step in steps:
                getattr(self, "_may_" + step, lambda: None)()
        except NotSafeToLeave as exc:
            return exc
        return None

    def _peer_problems(self, steps):
        states, problems = health.read_all(self.kv), []
        for step in steps:
            name = STEPS[step][1]
            for peer in self.others:
                rec = (states.get(peer.id) or {}).get(name) or {}
                if rec.get("state") != health.OK:
                    problems.append("%s on %s is %s%s" % (
                        name, peer.name, rec.get("state") or "not reported",
                        " (%s)" % rec["error"] if rec.get("error") else ""))
        return problems

    def _may_galera(self):
        state = self._state(galera.UNIT)
        if state in ("inactive", "failed", ""):
            return                      # not running here: a stopped member leaves nothing
        if state != "active":
            raise NotSafeToLeave(what="Galera", detail="MariaDB is %s (a state transfer may "
                                 "be in progress)" % state)
        status = galera.wsrep_status(self.run)
        if not status:
            raise NotSafeToLeave(what="Galera", detail="MariaDB runs but does not answer on "
                                 "its socket")
        if not galera.is_primary(status) or status.get("wsrep_local_state") != "4":
            raise NotSafeToLeave(what="Galera", detail="this member is %s, %s" % (
                status.get("wsrep_cluster_status") or "not in a component",
                status.get("wsrep_local_state_comment") or "not synced"))

    def _may_rabbitmq(self):
        if not self._active(rabbit.UNIT):
            return
        try:
            self.rabbit.ctl("check_if_node_is_quorum_critical", tool=rabbit.QUEUES,
                            timeout=120)
        except (rabbit.RabbitError, subprocess.TimeoutExpired) as exc:
            raise NotSafeToLeave(what="RabbitMQ", detail="a quorum queue would lose its "
                                 "majority: %s" % exc) from None

    def _may_ceph(self):
        if not self.path(ceph_mod.MON_DIR % self.view.name).is_dir():
            return
        for check in ("ok-to-stop", "ok-to-rm"):
            res = self.cephcli("mon", check, self.view.name, fmt=False, check=False)
            if res.returncode != 0:
                last = (res.stderr or res.stdout or "").strip().splitlines()[-1:] or [""]
                raise NotSafeToLeave(what="Ceph", detail="mon %s %s: %s" % (
                    check, self.view.name, last[0][:200]))

    # -- the leave ---------------------------------------------------------------------
    def run_steps(self, steps, done, save=lambda: None, say=lambda line: None):
        """Every step of ``steps`` not in ``done`` (a list the caller records; ``save``
        writes it after each step).  Each step's checks run again right before it:
        minutes, or a power cut, may have passed since the reset was planned."""
        for step in ORDER:
            if step in steps and step not in done:
                refused = self.refusal([step])
                if refused is not None:
                    kw = refused.kwargs
                    raise NotNow(what=STEPS[step][0], why=kw.get("problems") or (
                        "%s says %s" % (kw["what"], kw["detail"]) if kw.get("detail")
                        else "this is the only controller"))
                say("factory reset: leaving %s" % STEPS[step][0])
                getattr(self, step)()
                done.append(step)
                save()
                LOG.warning("factory reset: %s left %s", self.view.name, STEPS[step][0])

    def ovn(self):
        self._stop(ovn.NORTHD)
        for key, (name, path, _, _, ctl) in ovn.DATABASES.items():
            if not self.path(path).exists():
                continue
            status = self._ovn_status(key)
            if status is None:
                # no answer: the server dropped the database once it left (it answers
                # "unknown cluster"), or will never open a file that left; else the
                # server of a member's file is down: up, then it leaves
                if self._ovn_left(path):
                    continue
                unit = OVN_SERVERS[list(ovn.DATABASES).index(key)]
                if self._state(unit) == "failed":
                    self.systemctl("reset-failed", unit)
                self.systemctl("start", unit)
            status = self._ovn_settled(key)
            if status["status"] == "cluster member":
                ovn.run_checked(self.run, ["ovn-appctl", "-t", ctl, "cluster/leave", name],
                                "cluster/leave %s" % name)
            elif status["status"] != "leaving cluster":
                raise DepartFailed(what=name, detail="this server is '%s', not a member "
                                   "that can leave" % status["status"])
            # the server drops the database once the others have committed the removal
            ovn.run_checked(self.run, ["ovsdb-client", "--timeout=%d" % LEAVE_WAIT, "wait",
                                       "unix:" + OVN_SOCKETS[key], name, "removed"],
                            "wait for %s to leave" % name, timeout=LEAVE_WAIT + 15)
        for unit in OVN_SERVERS:
            self._stop(unit)

    def _ovn_status(self, key):
        name, _, _, _, ctl = ovn.DATABASES[key]
        try:
            return ovn.cluster_status(ovn.run_checked(
                self.run, ["ovn-appctl", "-t", ctl, "cluster/status", name],
                "cluster/status %s" % name, timeout=10))
        except ovn.OvnFailed:
            return None

    def _ovn_settled(self, key):
        """The database's status once its server answers and, as a member, knows its
        leader (a server just started says "Leader: unknown" until it hears from it)."""
        name, _, _, _, ctl = ovn.DATABASES[key]
        deadline = self.clock() + LEAVE_WAIT
        while True:
            status = self._ovn_status(key)
            if status is not None and not status["status"].startswith("joining") and not (
                    status["status"] == "cluster member"
                    and status["leader"] in ("", "unknown")):
                return status
            if self.clock() > deadline:
                if status is None:
                    raise DepartFailed(what=name, detail="its server does not answer on %s"
                                       % ctl)
                raise DepartFailed(what=name, detail="this server has heard from no leader "
                                   "in %ds (if another controller's 'ovn-appctl -t %s "
                                   "cluster/status %s' does not list it, it has left)"
                                   % (LEAVE_WAIT, ctl, name))
            self.sleep(2)

    def _ovn_left(self, path):
        """Whether the database file records that this server left its cluster: RAFT's
        note ``left``, which ``ovsdb-tool show-log`` prints as ``note: "left"`` (and
        ovsdb-server then refuses to open the file)."""
        log = ovn.run_checked(self.run, ["ovsdb-tool", "show-log", str(self.path(path))],
                              "ovsdb-tool show-log", timeout=60)
        return any(line.strip() == 'note: "left"' for line in log.splitlines())

    def rabbitmq(self):
        me = rabbit.node_name(self.view.name)
        self._stop(rabbit.UNIT)
        problems = []
        for peer in self.others:
            node = rabbit.node_name(peer.name)
            try:
                members, _ = self.rabbit.cluster_status(node=node)
                if me in members:
                    self.rabbit.ctl("forget_cluster_node", me, node=node, timeout=300)
                    members, _ = self.rabbit.cluster_status(node=node)
            except (rabbit.RabbitError, ValueError, subprocess.TimeoutExpired) as exc:
                problems.append("%s: %s" % (peer.name, exc))
                continue
            if me in members:
                raise DepartFailed(what="RabbitMQ", detail="%s still lists %s after "
                                   "forget_cluster_node" % (peer.name, me))
            return
        raise DepartFailed(what="RabbitMQ", detail="no other member forgot %s: %s"
                           % (me, "; ".join(problems)))

    def galera(self):
        state = self._state(galera.UNIT)
        if state in ("inactive", "failed", ""):
            # stopped: cleanly (a resumed leave) or not, it is no member now; the wipe
            # keeps it from coming back with its old state
            return
        if state != "active":
            raise DepartFailed(what="Galera", detail="MariaDB is %s (a state transfer may be "
                               "in progress)" % state)
        lease = self.kv.lease_grant(TURN_TTL)
        try:
            self._take_turn(lease)
            status = galera.wsrep_status(self.run)
            if not galera.is_primary(status) or status.get("wsrep_local_state") != "4" or \
                    int(status.get("wsrep_cluster_size", 0) or 0) < 2:
                raise DepartFailed(what="Galera", detail="this member is not a Synced member "
                                   "of a Primary component of several (%s, %s, size %s); "
                                   "stopping it now would not be a clean leave" % (
                                       status.get("wsrep_cluster_status"),
                                       status.get("wsrep_local_state_comment"),
                                       status.get("wsrep_cluster_size")))
            self._stop(galera.UNIT, wait=lease)
        finally:
            self.kv.lease_revoke(lease)         # the turn goes with it
        try:
            saved = galera_state.parse_grastate(
                (self.path(str(galera.DATADIR)) / "grastate.dat").read_text())
        except OSError:
            saved = None
        if saved is None or saved.seqno < 0:
            LOG.warning("factory reset: MariaDB's grastate.dat has no position after its stop "
                        "(it did not stop cleanly); the others count it as gone all the same")

    def _take_turn(self, lease):
        value = json.dumps({"node": self.view.node_id, "why": "leave"}).encode()
        deadline = self.clock() + TURN_WAIT
        while True:
            self.kv.lease_keepalive(lease)
            entry = self.kv.get(galera.TURN)
            if entry is None and self.kv.txn([Compare(galera.TURN, 0)],
                                             [(galera.TURN, value, lease)]):
                return
            if entry is not None and json.loads(entry.value).get("node") == self.view.node_id \
                    and self.kv.txn([Compare(galera.TURN, entry.mod_revision)],
                                    [(galera.TURN, value, lease)]):
                return                  # a turn this node held (its agent's) is this one
            if self.clock() > deadline:
                raise DepartFailed(what="Galera", detail="another controller's join or "
                                   "restart held the Galera turn for %ds" % TURN_WAIT)
            self.sleep(2)           # a poll of the turn's key, not a fixed delay

    def ceph(self):
        name = self.view.name
        mgr = "ceph-mgr@%s.service" % name
        if self.path(ceph_mod.MGR_DIR % name).exists():
            stat = self.cephcli("mgr", "stat") or {}
            if stat.get("active_name") == name:
                self.cephcli("mgr", "fail", name, fmt=False)
            self._stop(mgr, disable=True)
            self.cephcli("auth", "rm", "mgr.%s" % name, fmt=False)
        mon = "ceph-mon@%s.service" % name
        self._stop(mon, disable=True)
        deadline = self.clock() + LEAVE_WAIT
        while True:
            quorum = (self._ceph_json("quorum_status") or {}).get("quorum_names") or []
            if quorum and name not in quorum:
                break
            if self.clock() > deadline:
                # back as it was (this run removed nothing: a removal needs a quorum), so
                # its vote may give the others theirs
                self.systemctl("enable", "--now", mon)
                raise DepartFailed(what="a Ceph monitor", detail="the other monitors did "
                                   "not form a quorum without %s within %ds (%s); it runs "
                                   "again" % (name, LEAVE_WAIT, ", ".join(quorum) or
                                              "no quorum"))
            self.sleep(2)
        for attempt in range(REMOVE_ATTEMPTS + 1):
            if name not in self._monmap():
                break
            if attempt == REMOVE_ATTEMPTS:
                raise DepartFailed(what="a Ceph monitor", detail="%s is still in the monmap "
                                   "after %d removals" % (name, REMOVE_ATTEMPTS))
            try:
                self.cephcli("mon", "remove", name, fmt=False)
            except ceph_mod.CephFailed as exc:
                LOG.info("factory reset: %s (an election?); again", exc)
            self.sleep(2)
        self.kv.txn([], (), [keys.CEPH_MONS + name])

    def _ceph_json(self, *args):
        """``ceph ARGS`` as JSON, or None while the monitors elect (it times out)."""
        try:
            return self.cephcli(*args, timeout=30)
        except ceph_mod.CephFailed as exc:
            LOG.info("factory reset: %s", exc)
            return None

    def _monmap(self):
        """The monitors' names in the monmap (read until it answers)."""
        deadline = self.clock() + LEAVE_WAIT
        while True:
            dump = self._ceph_json("mon", "dump")
            if dump is not None:
                return [m.get("name") for m in dump.get("mons") or []]
            if self.clock() > deadline:
                raise DepartFailed(what="a Ceph monitor", detail="'ceph mon dump' did not "
                                   "answer within %ds" % LEAVE_WAIT)
            self.sleep(2)

    # -- units -------------------------------------------------------------------------
    def _active(self, unit):
        try:
            self.systemctl("is-active", "--quiet", unit)
        except systemd.SystemctlFailed:
            return False
        return True

    def _state(self, unit):
        return (self.systemctl("show", "-p", "ActiveState", "--value", unit).stdout
                or "").strip()

    def _stop(self, unit, disable=False, wait=None):
        """Stop ``unit`` (and disable it); with ``wait`` (a lease kept alive meanwhile),
        without systemctl's own time limit, until it is down."""
        if unit in units.GATED:             # what only the agent starts stays down
            (self.path(units.GATES) / unit).unlink(missing_ok=True)
        if wait is None:
            self.systemctl(*(("disable", "--now", unit) if disable else ("stop", unit)))
            return
        self.systemctl("stop", "--no-block", unit)
        deadline = self.clock() + STOP_WAIT
        while (state := self._state(unit)) in ("active", "activating", "deactivating",
                                               "reloading"):
            if self.clock() > deadline:
                raise DepartFailed(what=unit, detail="still %s %ds after its stop"
                                   % (state, STOP_WAIT))
            self.kv.lease_keepalive(wait)
            self.sleep(2)           # a poll of the unit's state, not a fixed delay


def erase(root, steps, run=subprocess.run):
    """What ``steps``' clusters kept under ``root`` (:data:`DATA`) erased; MariaDB's data
    directory made again as the package makes it.  Idempotent."""
    import shutil
    root = Path(root)
    for step in steps:
        for rel in DATA.get(step, ()):
            path = root / rel.rstrip("/")
            if rel.endswith("/"):
                keep = {p for pattern in KEEP for p in path.glob(pattern)}
                for child in sorted(path.iterdir()) if path.is_dir() else []:
                    if child in keep:
                        continue
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
            elif path.exists() or path.is_symlink():
                path.unlink()
    if "galera" in steps:
        datadir = root / DATA["galera"][0].rstrip("/")
        res = run(list(INSTALL_DB) + ["--datadir=%s" % datadir], capture_output=True,
                  text=True, timeout=300, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                               "TMPDIR": ""})
        if res.returncode != 0:
            last = (res.stderr or res.stdout or "").strip().splitlines()[-1:] or [""]
            raise DepartFailed(what="Galera", detail="mariadb-install-db: exit %d: %s"
                               % (res.returncode, last[0][:200]))
