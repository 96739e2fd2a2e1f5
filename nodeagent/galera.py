"""MariaDB with Galera on the controllers: bootstrap, joins one at a time, health, and the
unattended re-forming of the cluster after every controller lost power.

- **New cluster**: cluster task ``galera-bootstrap``; the controller that
  claims it runs ``galera_new_cluster``, waits for a Primary component, creates
  the SST user and records epoch 1 under ``keys.GALERA + "epoch"``.
- **Joins**: the other controllers start MariaDB one at a time (a leased
  turn, ``keys.GALERA + "turn"``), each taking a full copy by SST
  (mariabackup) from a member of the Primary component.
- **After a whole-rack power loss**: the agent starts MariaDB normally first,
  so Galera's own primary-component recovery (``gvwstate.dat``) re-forms the
  cluster when every member comes back.  If no controller has a Primary
  component for :data:`RECOVERY_GRACE` seconds, each controller stops
  MariaDB, recovers its position (``grastate.dat``, ``galera_recovery``) and
  publishes it under the next epoch; when all have reported, each computes
  the same choice (:func:`galera_state.choose`), and only the chosen node,
  once it has moved the epoch forward by compare-and-set, bootstraps: never a
  second bootstrap in one epoch, never a node that is behind; histories that
  differ stop it with one line for the operator.

- **A configuration change** is applied by a restart, one controller at a
  time and only while the others hold the Primary component; until then the
  check says ``degraded``.  What the running MariaDB was started from is kept
  as a digest (:data:`APPLIED`), so a change is never lost to an agent restart,
  and a change of the member list alone (the config's ``restart_free`` in the
  catalogue: ``wsrep_cluster_address``, read only when MariaDB joins; it grows
  as the controllers join) needs none.
- **The only controller** (aio) skips the wait: after a restart or a power
  loss it bootstraps from its own data at once.

systemd does not restart MariaDB (a drop-in says ``Restart=no``): the agent
owns its life, restarting it through these same steps and reporting it.
"""

import hashlib
import json
import logging
import subprocess
import time
from pathlib import Path

from rackforge import errors, fileutil, keys
from rackforge.kvstore import Compare
from rackforge.nodeagent import galera_state, health, render
from rackforge.nodeagent.reconcile import Action, Waiting

LOG = logging.getLogger(__name__)
UNIT = "mariadb.service"
DATADIR = Path("/var/lib/mysql")
RECOVERY_GRACE = 90.0          # no Primary anywhere this long: recover the cluster
APPLIED = "/var/lib/rackforge/nodeagent/mariadb-applied"   # digest of the running config
START_TIMEOUT = 900
EPOCH = keys.GALERA + "epoch"
TURN = keys.GALERA + "turn"
POSITIONS = keys.GALERA + "positions/"


class GaleraError(errors.RackforgeError):
    message = "galera on {node}: {detail}"
    retryable = True


def mysql(query, run=subprocess.run, timeout=20):
    """Rows (lists of strings) of ``query``, as root over the local socket.  The query
    goes in on stdin: it may hold a password, and a command line is world-readable."""
    res = run(["mariadb", "--protocol=socket", "-N", "-B"], input=query,
              capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise GaleraError(node="this node", detail=(res.stderr.strip().splitlines() or
                                                    ["mariadb exit %d" % res.returncode])[-1])
    return [line.split("\t") for line in res.stdout.splitlines()]


def wsrep_status(run=subprocess.run):
    """``{variable: value}`` of ``SHOW GLOBAL STATUS LIKE 'wsrep_%'``; {} if not answering."""
    try:
        return {k.lower(): v for k, v in mysql("SHOW GLOBAL STATUS LIKE 'wsrep_%'", run)}
    except (GaleraError, subprocess.TimeoutExpired, OSError):
        return {}


def is_primary(status):
    return status.get("wsrep_cluster_status") == "Primary"


class Galera:
    """The Galera hooks of one node's agent (it keeps what it saw between passes)."""

    def __init__(self, node_id, kv, run=subprocess.run, datadir=DATADIR, clock=time.monotonic,
                 applied=APPLIED):
        self.node_id = node_id
        self.kv = kv
        self.run = run
        self.datadir = Path(datadir)
        self.clock = clock
        self.applied = Path(applied)
        self.configs = ()           # the service's configuration files (its first step)
        self.no_primary_since = None
        self.reported = True        # positions of this node may be in etcd: forget them

    # -- health (builtin check "galera") -----------------------------------------------
    def check(self, view, systemd):
        state = systemd.states([UNIT])[UNIT]
        if state.active == "activating":        # the agent started it: it is on its way
            return health.Result(health.PENDING, "starting (a state transfer may be in "
                                 "progress)")
        if not state.is_active:
            return health.Result(health.FAILED, "mariadb is %s" % state.active)
        status = wsrep_status(self.run)
        if not status:
            return health.Result(health.FAILED, "mariadb does not answer on its socket")
        detail = {"size": int(status.get("wsrep_cluster_size", 0) or 0),
                  "uuid": status.get("wsrep_cluster_state_uuid", ""),
                  "primary": is_primary(status)}
        local = status.get("wsrep_local_state")
        if not is_primary(status):
            return health.Result(health.FAILED, "not in a Primary component (%s)"
                                 % status.get("wsrep_cluster_status"), detail)
        if local == "4" and self.stale():
            return health.Result(health.DEGRADED, "its configuration changed; it restarts "
                                 "when the other members can spare it", detail)
        if local == "4":
            return health.Result(health.OK, "", detail)
        if local == "2":
            return health.Result(health.DEGRADED, "donor of a state transfer", detail)
        return health.Result(health.FAILED, "local state %s (%s)" % (
            local, status.get("wsrep_local_state_comment")), detail)

    # -- the new cluster (task "galera-bootstrap") -------------------------------------
    def bootstrap(self, view, systemd, context):
        status = wsrep_status(self.run)
        if not is_primary(status):
            self._new_cluster(view, systemd)
        self._wait_primary(view)
        self._users(context)
        uuid = wsrep_status(self.run).get("wsrep_cluster_state_uuid", "")
        first = {"epoch": 1, "seed": self.node_id, "uuid": uuid}
        self.kv.txn([Compare(EPOCH, 0)], [(EPOCH, json.dumps(first).encode())])
        return {"uuid": uuid, "seed": view.name}

    def _new_cluster(self, view, systemd):
        LOG.info("galera: bootstrapping a new cluster on %s", view.name)
        systemd.open_gate(UNIT)             # the script starts the unit itself
        res = self.run(["galera_new_cluster"], capture_output=True, text=True,
                       timeout=START_TIMEOUT)
        if res.returncode != 0:
            raise GaleraError(node=view.name, detail="galera_new_cluster failed; see "
                              "'journalctl -u mariadb'")

    def _wait_primary(self, view, timeout=300):
        deadline = self.clock() + timeout
        while self.clock() < deadline:
            if is_primary(wsrep_status(self.run)):
                return
            time.sleep(1)           # a poll of a starting database, not a fixed delay
        raise GaleraError(node=view.name, detail="no Primary component within %ds" % timeout)

    # -- cluster task "galera-users": the SST user's password, again after a rotation ----
    def users(self, view, systemd, context):
        if not is_primary(wsrep_status(self.run)):
            raise GaleraError(node=view.name, detail="not in a Primary component here")
        self._users(context)
        return {"users": ["sst"]}

    def _users(self, context):
        password = context["secrets"]["mariadb-sst"].replace("'", "''")
        mysql("CREATE USER IF NOT EXISTS 'sst'@'localhost' IDENTIFIED BY '%s'; "
              "ALTER USER 'sst'@'localhost' IDENTIFIED BY '%s'; "
              "GRANT RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR, REPLICA MONITOR "
              "ON *.* TO 'sst'@'localhost'" % (password, password), self.run)

    # -- bringing this node up (start step "galera") -----------------------------------
    def step(self, ctx):
        view, kv = ctx.view, ctx.kv
        unit = ctx.systemd.states([UNIT])[UNIT]
        status = wsrep_status(self.run) if unit.is_active else {}
        if ctx.dry_run:
            if is_primary(status) and not ctx.changed:
                return []
            return [Action("step", "galera", "mariadb", "would start, join or restart")]
        self.configs = ctx.service.configs
        if self._holds_turn(kv) and unit.active != "activating":
            self._end_turn(kv)              # this node's join (or restart) has ended
        if is_primary(status):
            self.no_primary_since = None
            self._forget_positions(kv)
            if not self.applied.exists():
                self._mark_applied()        # running before the agent kept a digest
            if self.stale():
                return self._restart_in_turn(ctx, kv, status)
            return []
        if unit.active == "activating":
            raise Waiting("starting: a state transfer may be in progress")
        anyone = self._primary_elsewhere(kv, view)
        if anyone:
            self.no_primary_since = None
            return self._join(ctx, kv, why="join %s's Primary component" % anyone)
        return self._whole_cluster_down(ctx, kv, unit)

    # -- which configuration the running MariaDB has ----------------------------------
    def digest(self):
        """sha256 of the configuration files, without the lines MariaDB reads only when
        it joins (each config's ``restart_free``)."""
        h = hashlib.sha256()
        for config in self.configs:
            try:
                text = Path(config.path).read_text()
            except FileNotFoundError:
                text = ""
            h.update(config.path.encode() + b"\0")
            for line in render.significant(text, config.restart_free):
                h.update(line.encode() + b"\n")
        return h.hexdigest()

    def stale(self):
        """True if the files changed since MariaDB last started from them."""
        if not self.configs or not self.applied.exists():
            return False
        return self.applied.read_text().strip() != self.digest()

    def _mark_applied(self):
        """Called as MariaDB is started from the files as they are now (by the start
        step, which knows the files; the bootstrap task leaves it to the step)."""
        if not self.configs:
            return
        fileutil.make_dirs(self.applied.parent, 0o700)
        fileutil.atomic_write(self.applied, self.digest() + "\n")

    def _primary_elsewhere(self, kv, view):
        """The name of a controller whose Galera is healthy (from the published health)."""
        names = {p.id: p.name for p in view.controllers}
        for node, services in health.read_all(kv).items():
            rec = services.get("mariadb") or {}
            if node != self.node_id and node in names and rec.get("state") in (
                    health.OK, health.DEGRADED):
                return names[node]
        return None

    def _join(self, ctx, kv, why):
        """Queue this node's start in its turn; the turn ends on a later pass, when the
        start (and its state transfer) has ended one way or the other."""
        if not self._take_turn(kv, ctx.tasks.lease):
            raise Waiting("waiting for another controller's turn to join")
        LOG.info("galera: %s", why)
        if ctx.systemd.states([UNIT])[UNIT].is_failed:
            ctx.systemd.act("reset-failed", UNIT)
        self._mark_applied()
        ctx.systemd.act("start-nowait", UNIT)
        return [Action("start", UNIT, "mariadb", why)]

    def _restart_in_turn(self, ctx, kv, status):
        """Apply a configuration change by a restart, only while other members hold the
        Primary component (the sole member of a cluster of several restarting would end
        it), and one controller at a time.  The only controller (aio) stops, and the
        next pass bootstraps it again from its own data, the most advanced there is."""
        if len(ctx.view.controllers) == 1:
            ctx.systemd.act("stop", UNIT)
            return [Action("stop", UNIT, "mariadb", "its configuration changed; the only "
                           "controller bootstraps again")]
        if int(status.get("wsrep_cluster_size", 0) or 0) < 2:
            return []           # later: when another member runs, or at the next start
        if not self._take_turn(kv, ctx.tasks.lease):
            raise Waiting("its configuration changed; waiting for the turn to restart")
        ctx.systemd.act("stop", UNIT)
        self._mark_applied()
        ctx.systemd.act("start-nowait", UNIT)
        return [Action("restart", UNIT, "mariadb", "its configuration changed")]

    def _holds_turn(self, kv):
        entry = kv.get(TURN)
        return entry is not None and json.loads(entry.value).get("node") == self.node_id

    def _take_turn(self, kv, lease):
        entry = kv.get(TURN)
        if entry is not None:
            return json.loads(entry.value).get("node") == self.node_id
        return kv.txn([Compare(TURN, 0)],
                      [(TURN, json.dumps({"node": self.node_id}).encode(), lease)])

    def _end_turn(self, kv):
        entry = kv.get(TURN)
        if entry is not None and json.loads(entry.value).get("node") == self.node_id:
            kv.txn([Compare(TURN, entry.mod_revision)], (), [TURN])

    # -- every controller lost power ---------------------------------------------------
    def _whole_cluster_down(self, ctx, kv, unit):
        if self.fresh():
            # a controller that never was a member joins a Primary component when one
            # shows up; to a recovery in progress it reports that it holds nothing
            current, _ = self._epoch(kv)
            epoch = current.get("epoch", 0) + 1
            if kv.get_prefix(POSITIONS + "%d/" % epoch):
                mine = POSITIONS + "%d/%s" % (epoch, self.node_id)
                if kv.get(mine) is None:
                    empty = galera_state.Position(galera_state.ZERO_UUID, -1)
                    kv.txn([], [(mine, json.dumps(empty.to_dict()).encode(),
                                 ctx.tasks.lease)])
                    self.reported = True
            raise Waiting("waiting for a controller with Galera synced to join")
        if [p.id for p in ctx.view.controllers] == [self.node_id]:
            return self._recover(ctx, kv)   # the only controller: nobody else to wait for
        now = self.clock()
        if self.no_primary_since is None:
            self.no_primary_since = now
            if not unit.is_active:
                # the normal start first: Galera re-forms by itself when all come back
                LOG.info("galera: no Primary component anywhere; starting normally first")
                if unit.is_failed:
                    ctx.systemd.act("reset-failed", UNIT)
                self._mark_applied()
                ctx.systemd.act("start-nowait", UNIT)
                return [Action("start", UNIT, "mariadb", "waiting for the members to "
                               "re-form the Primary component")]
        if now - self.no_primary_since < RECOVERY_GRACE:
            raise Waiting("no Primary component anywhere for %ds; recovery after %ds"
                          % (now - self.no_primary_since, RECOVERY_GRACE))
        return self._recover(ctx, kv)

    def _forget_positions(self, kv):
        """Once in a Primary component again, this node's published positions are history:
        left there, a later loss would be decided on seqnos that are no longer its."""
        if not self.reported:
            return
        mine = [e.key for e in kv.get_prefix(POSITIONS) if e.key.endswith("/" + self.node_id)]
        if mine:
            kv.txn([], (), mine)
        self.reported = False

    def _epoch(self, kv):
        entry = kv.get(EPOCH)
        return (json.loads(entry.value), entry.mod_revision) if entry else ({"epoch": 0}, 0)

    def _recover(self, ctx, kv):
        view = ctx.view
        current, revision = self._epoch(kv)
        epoch = current.get("epoch", 0) + 1
        mine = POSITIONS + "%d/%s" % (epoch, self.node_id)
        if kv.get(mine) is None:
            ctx.systemd.act("stop", UNIT)
            pos = self.position()
            if pos is None:
                raise GaleraError(node=view.name, detail="no Galera position could be "
                                  "recovered from %s" % self.datadir)
            kv.txn([], [(mine, json.dumps(pos.to_dict()).encode(), ctx.tasks.lease)])
            self.reported = True
            LOG.info("galera: published position %s:%d for epoch %d", pos.uuid[:8],
                     pos.seqno, epoch)
        reports = {}
        for entry in kv.get_prefix(POSITIONS + "%d/" % epoch):
            reports[entry.key.rsplit("/", 1)[-1]] = galera_state.Position.from_dict(
                json.loads(entry.value))
        slots = [(p.slot, p.id) for p in view.controllers]
        choice = galera_state.choose(reports, slots)
        if choice.seed is None:
            if choice.wait:
                raise Waiting(choice.stop)
            raise GaleraError(node=view.name, detail=choice.stop)
        names = {p.id: p.name for p in view.controllers}
        if choice.seed != self.node_id:
            raise Waiting("waiting for %s, the most advanced, to bootstrap epoch %d"
                          % (names.get(choice.seed, choice.seed), epoch))
        record = {"epoch": epoch, "seed": self.node_id, "at": time.time()}
        if not kv.txn([Compare(EPOCH, revision)], [(EPOCH, json.dumps(record).encode())]):
            raise Waiting("epoch %d was taken by another controller; not bootstrapping"
                          % epoch)
        grastate = self.datadir / "grastate.dat"     # read by the next power-cut recovery too
        st = grastate.stat()
        fileutil.atomic_write(grastate, galera_state.mark_safe(grastate.read_text()),
                              mode=st.st_mode & 0o7777, owner=(st.st_uid, st.st_gid))
        self._mark_applied()
        self._new_cluster(view, ctx.systemd)
        self.no_primary_since = None
        LOG.warning("galera: re-formed the cluster from %s (epoch %d)", view.name, epoch)
        return [Action("step", "galera", "mariadb", "bootstrapped epoch %d from the most "
                       "advanced position" % epoch)]

    def fresh(self):
        """True if this node never was a member of the cluster (no saved state)."""
        try:
            saved = galera_state.parse_grastate((self.datadir / "grastate.dat").read_text())
        except FileNotFoundError:
            return True
        return saved is None or saved.uuid == galera_state.ZERO_UUID

    def position(self):
        """This node's :class:`galera_state.Position` (MariaDB stopped)."""
        try:
            saved = (self.datadir / "grastate.dat").read_text()
        except FileNotFoundError:
            saved = ""
        recovered = None
        if galera_state.parse_grastate(saved) is None or \
                galera_state.parse_grastate(saved).seqno < 0:
            res = self.run(["galera_recovery"], capture_output=True, text=True,
                           timeout=START_TIMEOUT)
            recovered = res.stdout + res.stderr
        return galera_state.position(saved, recovered)
