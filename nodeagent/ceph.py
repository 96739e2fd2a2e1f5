"""Ceph's monitors and managers on the controllers, and the cluster as a whole (pools and
OpenStack keys), as the node agent runs them.  OSDs are :mod:`.osd`'s.

No cephadm, no containers: Debian's ``ceph-mon@``, ``ceph-mgr@`` units, enabled
so Ceph starts at boot without waiting for the agent.

- **The first monitor** (task ``ceph-bootstrap``, one controller): a one-monitor
  monmap with its msgr v2 and v1 addresses, ``ceph-mon --mkfs`` from the
  keyring the agent rendered from the cluster's secrets (``mon.``, ``client.admin``
  and ``client.bootstrap-osd``, each with its caps: no key is made inside Ceph
  first and copied out), started, recorded under ``keys.CEPH_MONS`` once it
  leads its quorum of one.
- **Each further monitor** (step ``ceph-mon``): the running cluster's monmap
  (``ceph mon getmap``), ``--mkfs`` with the same ``mon.`` key, started: it joins
  the quorum by itself; recorded, so every node's ``mon_host`` lists it.  A mkfs
  is marked done only after it succeeded (:data:`MADE`): a half-made store is
  made again, never started.
- **Managers** (step ``ceph-mgr``): ``ceph auth get-or-create mgr.NAME`` into the
  daemon's keyring file (the key never passes through the agent), started.
- **The cluster** (step ``ceph``): the OpenStack keys imported with their caps
  (task ``ceph-clients``), and the pools sized for the hosts that carry OSDs
  (task ``ceph-pools``, run again whenever that number changes; sizes in
  :mod:`.cephconf`).  Its check reads ``ceph status``: the health Ceph itself
  reports, nothing muted; one storage host means one copy by design, and
  Ceph's POOL_NO_REDUNDANCY then says so (said once in the log, and in the
  check's detail, not counted as a failure).

Every ``ceph`` command has a connect timeout; keys go to Ceph on stdin or in
files, never in argv.
"""

import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from rackforge import errors, keys
from rackforge.fileutil import make_dirs
from rackforge.nodeagent import cephconf, health
from rackforge.nodeagent.reconcile import Action, Waiting

LOG = logging.getLogger(__name__)
MON_DIR = "/var/lib/ceph/mon/ceph-%s"
MGR_DIR = "/var/lib/ceph/mgr/ceph-%s"
MON_KEYRING = "/etc/ceph/ceph.mon.keyring"
WORK_DIR = "/var/lib/ceph/tmp"         # the ceph user's: mkfs reads the monmap as ceph
MADE = "rackforge-made"             # in a monitor's directory: its mkfs succeeded
RUN_DIR = "/run/ceph"
CONNECT_TIMEOUT = 15
QUORUM_WAIT = 120
STUCK_LOG_OP_S = 600            # a cluster-log forward older than this never completes
UNSTICK_EVERY_S = 3600          # a monitor is restarted for it at most this often
CLIENTS = {     # the OpenStack services' keys: rbd on their own pools, Glance's images read-only
    "glance": {"mon": "profile rbd", "osd": "profile rbd pool=images",
               "mgr": "profile rbd pool=images"},
    "cinder": {"mon": "profile rbd",
               "osd": "profile rbd pool=volumes, profile rbd pool=vms, "
                      "profile rbd pool=backups, profile rbd-read-only pool=images",
               "mgr": "profile rbd pool=volumes, profile rbd pool=vms, profile rbd pool=backups"},
    "nova": {"mon": "profile rbd", "osd": "profile rbd pool=vms, profile rbd-read-only pool=images",
             "mgr": "profile rbd pool=vms"},
}
BY_DESIGN = {"POOL_NO_REDUNDANCY"}     # warned by Ceph when one host keeps one copy
# on by default, unused here: restful's import of python3-cryptography (PyO3) fails in the
# manager's sub-interpreters on Debian 13 (MGR_MODULE_DEPENDENCY); nfs serves CephFS
UNUSED_MGR_MODULES = ("restful", "nfs")


class CephFailed(errors.RackforgeError):
    message = "ceph {what}: {detail}"
    retryable = True


class Ceph:
    """The ``ceph`` command line, as client.admin (or ``name`` with ``keyring``)."""

    def __init__(self, run=subprocess.run, name=None, keyring=None):
        self.run = run
        self.auth = ["--name", name, "--keyring", keyring] if name else []

    def __call__(self, *args, stdin=None, fmt=True, timeout=90, check=True):
        argv = ["ceph", "--connect-timeout", str(CONNECT_TIMEOUT), *self.auth, *args]
        if fmt:
            argv += ["--format", "json"]
        try:
            res = self.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CephFailed(what=" ".join(args[:3]), detail="no answer within %ds" % timeout) \
                from None
        if check and res.returncode != 0:
            last = (res.stderr or res.stdout or "").strip().splitlines()[-1:] or [""]
            raise CephFailed(what=" ".join(args[:3]), detail="exit %d: %s" % (
                res.returncode, last[0][:200]))
        if not fmt:
            return res
        try:
            return json.loads(res.stdout) if (res.stdout or "").strip() else None
        except ValueError:
            raise CephFailed(what=" ".join(args[:3]), detail="unreadable JSON") from None


def asok(path, prefix, timeout=5.0, **args):
    """A daemon's answer on its admin socket (no monitor needed): ``{"prefix": ...}``
    sent with a NUL, a 4-byte big-endian length and the JSON back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps(dict(args, prefix=prefix)).encode() + b"\0")
        head = b""
        while len(head) < 4:
            chunk = s.recv(4 - len(head))
            if not chunk:
                raise OSError("the admin socket closed")
            head += chunk
        size, body = struct.unpack(">I", head)[0], b""
        while len(body) < size:
            chunk = s.recv(size - len(body))
            if not chunk:
                raise OSError("the admin socket closed")
            body += chunk
    return json.loads(body or b"{}")


def daemon_units(systemd, ctx, units, daemon):
    """Enable ``units`` (targets and the daemon's unit) and start ``daemon``; the actions."""
    actions, states = [], systemd.states(list(units))
    for unit in units:
        if not states[unit].is_enabled:
            actions.append(Action("enable", unit, ctx.service.name))
            if not ctx.dry_run:
                systemd.act("enable", unit)
    st = states[daemon]
    if not (st.is_active or st.active == "activating"):
        actions.append(Action("start", daemon, ctx.service.name,
                              "it had failed" if st.is_failed else ""))
        if not ctx.dry_run:
            if st.is_failed:
                systemd.act("reset-failed", daemon)
            systemd.act("start", daemon)
    return actions


def osd_records(kv, node_id=None):
    """The OSD records in etcd (of node ``node_id``: all when None), by id."""
    out = []
    for entry in kv.get_prefix(keys.CEPH_OSDS):
        try:
            rec = json.loads(entry.value)
            rec["id"] = int(rec["id"])
        except (ValueError, KeyError, TypeError):
            continue
        if node_id is None or rec.get("node") == node_id:
            out.append(rec)
    return sorted(out, key=lambda r: r["id"])


def osd_hosts(kv):
    """The nodes that carry at least one OSD (from the OSD records)."""
    return {rec["node"] for rec in osd_records(kv) if rec.get("node")}


def client_keyring(secrets):
    """The OpenStack clients' keyring, caps included, for ``ceph auth import``."""
    out = []
    for name, caps in CLIENTS.items():
        out.append("[client.%s]\n\tkey = %s\n" % (name, secrets["ceph-%s-key" % name]))
        out += ['\tcaps %s = "%s"\n' % (kind, caps[kind]) for kind in sorted(caps)]
    return "".join(out)


def pool_commands(hosts, existing):
    """The ``ceph`` commands that size the pools for ``hosts`` hosts with OSDs
    (``existing``: the pools there are), in order."""
    size, least = cephconf.pool_size(hosts), cephconf.min_size(cephconf.pool_size(hosts))
    rule = cephconf.crush_rule(hosts)
    cmds = [["osd", "crush", "rule", "create-replicated", "replicated_host", "default", "host"],
            ["osd", "crush", "rule", "create-replicated", "replicated_osd", "default", "osd"],
            ["config", "set", "global", "mon_allow_pool_size_one",
             "true" if size == 1 else "false"],
            ["config", "set", "global", "osd_pool_default_size", str(size)],
            ["config", "set", "global", "osd_pool_default_min_size", str(least)]]
    for pool in cephconf.POOLS:
        if pool not in existing:
            cmds.append(["osd", "pool", "create", pool])
    pools = list(cephconf.POOLS) + ([cephconf.MGR_POOL] if cephconf.MGR_POOL in existing
                                    else [])
    for pool in pools:
        cmds.append(["osd", "pool", "set", pool, "crush_rule", rule])
        cmds.append(["osd", "pool", "set", pool, "size", str(size)]
                    + (["--yes-i-really-mean-it"] if size == 1 else []))
        cmds.append(["osd", "pool", "set", pool, "min_size", str(least)])
    for pool in cephconf.POOLS:
        cmds.append(["osd", "pool", "application", "enable", pool, "rbd"])
    if cephconf.MGR_POOL in existing:
        # the manager makes .mgr and tags it; under load the tag can be lost (its second
        # command timed out) and Ceph then warns POOL_APP_NOT_ENABLED for good
        cmds.append(["osd", "pool", "application", "enable", cephconf.MGR_POOL, "mgr"])
    return cmds


def summarize(status, hosts):
    """A :class:`health.Result` of ``ceph status`` (JSON) with ``hosts`` OSD hosts."""
    h = status.get("health") or {}
    checks = {name: ((c.get("summary") or {}).get("message") or name)
              for name, c in (h.get("checks") or {}).items()}
    osdmap = status.get("osdmap") or {}
    osdmap = osdmap.get("osdmap", osdmap)           # older releases nest it
    pgs = {s["state_name"]: s["count"] for s in (status.get("pgmap") or {})
           .get("pgs_by_state") or []}
    detail = {"health": h.get("status", "unknown"), "checks": checks,
              "quorum": status.get("quorum_names") or [],
              "mons": (status.get("monmap") or {}).get("num_mons"),
              "osds": {"total": osdmap.get("num_osds", 0), "up": osdmap.get("num_up_osds", 0),
                       "in": osdmap.get("num_in_osds", 0)},
              "pgs": pgs, "osd_hosts": hosts}
    state = detail["health"]
    if state == "HEALTH_OK":
        return health.Result(health.OK, "", detail)
    if state == "HEALTH_WARN" and checks and set(checks) <= BY_DESIGN and hosts <= 1:
        detail["note"] = ("one host carries OSDs, so each pool keeps one copy by design; "
                          "Ceph warns %s until a second storage host joins"
                          % ", ".join(sorted(checks)))
        return health.Result(health.OK, "", detail)
    line = "%s: %s" % (state, "; ".join("%s %s" % kv for kv in sorted(checks.items())))
    return health.Result(health.DEGRADED if state == "HEALTH_WARN" else health.FAILED,
                         line[:300], detail)


class CephHooks:
    """The monitors', managers' and the cluster's steps, tasks and checks of one node."""

    def __init__(self, node_id, kv, run=subprocess.run, root="/", clock=time.monotonic,
                 sleep=time.sleep):
        self.node_id = node_id
        self.kv = kv
        self.run = run
        self.root = Path(root)
        self.ceph = Ceph(run)
        self.clock, self.sleep = clock, sleep
        self.said_by_design = False
        self.unstuck_at = -UNSTICK_EVERY_S

    def path(self, p):
        return self.root / p.lstrip("/")

    # -- monitors ---------------------------------------------------------------------------
    def mon_made(self, name):
        return self.path(MON_DIR % name + "/" + MADE).exists()

    def _mkfs(self, name, monmap):
        """``ceph-mon --mkfs`` of monitor ``name`` from ``monmap`` (a file); an earlier,
        unfinished attempt is removed first."""
        mon_dir = self.path(MON_DIR % name)
        if mon_dir.exists():
            shutil.rmtree(mon_dir)
        make_dirs(mon_dir, 0o750)
        shutil.chown(mon_dir, "ceph", "ceph")
        shutil.chown(monmap, "ceph", "ceph")
        res = self.run(["ceph-mon", "--mkfs", "-i", name, "--monmap", str(monmap), "--keyring",
                        str(self.path(MON_KEYRING)), "--setuser", "ceph", "--setgroup", "ceph"],
                       capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise CephFailed(what="mon --mkfs", detail=(res.stderr or "").strip()[-200:])
        (mon_dir / MADE).write_text("%s\n" % time.time())

    def _tmp(self):
        work = self.path(WORK_DIR)
        if not work.is_dir():
            make_dirs(work, 0o750)
            shutil.chown(work, "ceph", "ceph")
        tmp = tempfile.TemporaryDirectory(dir=work)
        shutil.chown(tmp.name, "ceph", "ceph")
        return tmp

    def _record_mon(self, view):
        record = {"name": view.name, "node": self.node_id, "address": view.address}
        entry = self.kv.get(keys.CEPH_MONS + view.name)
        if entry is None or json.loads(entry.value) != record:
            self.kv.txn([], [(keys.CEPH_MONS + view.name, json.dumps(record).encode())])
            return True
        return False

    def mon_state(self, name):
        """The monitor's state on its admin socket (leader, peon, probing, electing, ...),
        or None when it does not answer."""
        try:
            return asok(self.path(RUN_DIR) / ("ceph-mon.%s.asok" % name), "mon_status") \
                .get("state")
        except (OSError, ValueError):
            return None

    def bootstrap(self, view, systemd, context):
        """Task ``ceph-bootstrap``: the cluster's first monitor, here."""
        name = view.name
        if not self.mon_made(name):
            with self._tmp() as tmp:
                monmap = Path(tmp) / "monmap"
                res = self.run(["monmaptool", "--create", "--fsid",
                                context["secrets"]["ceph-fsid"], "--addv", name,
                                cephconf.mon_address(view.address), str(monmap)],
                               capture_output=True, text=True, timeout=60)
                if res.returncode != 0:
                    raise CephFailed(what="monmaptool", detail=res.stderr.strip()[-200:])
                self._mkfs(name, monmap)
        for unit in ("ceph.target", "ceph-mon.target", "ceph-mon@%s.service" % name):
            systemd.act("enable", unit)
        systemd.act("start", "ceph-mon@%s.service" % name)
        deadline = self.clock() + QUORUM_WAIT
        while self.mon_state(name) != "leader":
            if self.clock() > deadline:
                raise CephFailed(what="mon %s" % name,
                                 detail="not in quorum %ds after its start (%s)"
                                 % (QUORUM_WAIT, self.mon_state(name) or "no answer"))
            self.sleep(1)
        self._record_mon(view)
        LOG.info("ceph: cluster made; monitor %s leads it", name)
        return {"first": name}

    def mon_step(self, ctx):
        """Step ``ceph-mon``: this controller's monitor, made from the running cluster's
        monmap the first time, enabled and running."""
        view, name, actions = ctx.view, ctx.view.name, []
        if not self.mon_made(name):
            if ctx.dry_run:
                return [Action("step", "ceph-mon", "ceph-mon", "would make monitor " + name)]
            with self._tmp() as tmp:
                monmap = Path(tmp) / "monmap"
                self.ceph("mon", "getmap", "-o", str(monmap), fmt=False)
                self._mkfs(name, monmap)
            actions.append(Action("step", "ceph-mon", "ceph-mon", "monitor %s made" % name))
        actions += daemon_units(ctx.systemd, ctx, ("ceph.target", "ceph-mon.target",
                                                   "ceph-mon@%s.service" % name),
                                "ceph-mon@%s.service" % name)
        if not ctx.dry_run:
            actions += self.unstick_mon(ctx.systemd, name)
        if not ctx.dry_run and self._record_mon(view):
            actions.append(Action("step", "ceph-mon", "ceph-mon", "monitor %s recorded" % name))
        return actions

    def stuck_log_op(self, name):
        """Seconds the oldest ``log(...)`` op has been in flight on monitor ``name``, if it
        is past :data:`STUCK_LOG_OP_S` while the monitor is in a full quorum, else None.

        A peon forwards the cluster log to the leader; when that forward is lost (an
        election, a loaded leader) the op never completes and Ceph warns SLOW_OPS for
        good (seen here under load, as in rook/rook#14602; restarting the monitor is
        the known cure, red-hat-storage/cephci#5747)."""
        try:
            sock = self.path(RUN_DIR) / ("ceph-mon.%s.asok" % name)
            status = asok(sock, "mon_status")
            ops = asok(sock, "ops").get("ops") or []
        except (OSError, ValueError):
            return None
        mons = (status.get("monmap") or {}).get("mons") or []
        if status.get("state") not in ("leader", "peon") or \
                len(status.get("quorum") or []) < len(mons):
            return None
        ages = [float(op.get("age", 0)) for op in ops
                if str(op.get("description", "")).startswith("log(")]
        oldest = max(ages, default=0)
        return oldest if oldest > STUCK_LOG_OP_S else None

    def unstick_mon(self, systemd, name):
        """Restart monitor ``name`` when a log op is stuck on it (at most once an hour)."""
        age = self.stuck_log_op(name)
        if age is None or self.clock() - self.unstuck_at < UNSTICK_EVERY_S:
            return []
        self.unstuck_at = self.clock()
        unit = "ceph-mon@%s.service" % name
        LOG.warning("ceph: monitor %s has a cluster-log message stuck for %.0f s (a known "
                    "Ceph monitor fault: SLOW_OPS would never clear); restarting it, the "
                    "other monitors keep the quorum", name, age)
        systemd.act("restart", unit)
        return [Action("restart", unit, "ceph-mon", "a log op stuck for %.0f s" % age)]

    def mon_check(self, view, systemd):
        state = self.mon_state(view.name)
        if state in ("leader", "peon"):
            return health.Result(health.OK, "", {"state": state})
        name = "ceph-mon@%s.service" % view.name
        unit = systemd.states([name])[name]
        if state is None:
            return health.Result(health.FAILED, "monitor %s does not answer (its unit is %s)"
                                 % (view.name, unit.active))
        return health.Result(health.DEGRADED, "monitor %s is %s, not in quorum"
                             % (view.name, state), {"state": state})

    # -- managers ---------------------------------------------------------------------------
    def mgr_step(self, ctx):
        name, actions = ctx.view.name, []
        keyring = self.path(MGR_DIR % name) / "keyring"
        if not keyring.exists():
            if ctx.dry_run:
                return [Action("step", "ceph-mgr", "ceph-mgr", "would make manager " + name)]
            make_dirs(keyring.parent, 0o750)
            shutil.chown(keyring.parent, "ceph", "ceph")
            partial = keyring.with_name("keyring.new")
            self.ceph("auth", "get-or-create", "mgr.%s" % name, "mon", "allow profile mgr",
                      "osd", "allow *", "mds", "allow *", "-o", str(partial), fmt=False)
            os.chmod(partial, 0o600)
            shutil.chown(partial, "ceph", "ceph")
            os.replace(partial, keyring)
            actions.append(Action("step", "ceph-mgr", "ceph-mgr", "manager %s made" % name))
        actions += daemon_units(ctx.systemd, ctx, ("ceph.target", "ceph-mgr.target",
                                                   "ceph-mgr@%s.service" % name),
                                "ceph-mgr@%s.service" % name)
        return actions

    def mgr_check(self, view, systemd):
        unit = "ceph-mgr@%s.service" % view.name
        st = systemd.states([unit])[unit]
        if st.is_active:
            return health.Result(health.OK)
        if st.active == "activating":
            return health.Result(health.PENDING, "manager %s is starting" % view.name)
        return health.Result(health.FAILED, "manager %s is %s" % (view.name, st.active))

    # -- the cluster --------------------------------------------------------------------------
    def clients(self, view, systemd, context):
        """Task ``ceph-clients``: the OpenStack keys, with their caps (import is idempotent:
        it sets the key and caps the keyring says)."""
        self.ceph("auth", "import", "-i", "-", stdin=client_keyring(context["secrets"]),
                  fmt=False)
        for module in UNUSED_MGR_MODULES:
            self.ceph("mgr", "module", "disable", module, fmt=False)
        return {"clients": sorted(CLIENTS), "mgr_modules_off": list(UNUSED_MGR_MODULES)}

    def pools(self, hosts):
        existing = self.ceph("osd", "pool", "ls") or []
        for argv in pool_commands(hosts, existing):
            self.ceph(*argv, fmt=False)
        size = cephconf.pool_size(hosts)
        LOG.info("ceph: pools sized for %d host(s) with OSDs: size %d, min_size %d, "
                 "failure domain %s", hosts, size, cephconf.min_size(size),
                 cephconf.failure_domain(hosts))
        return {"hosts": hosts, "size": size}

    def cluster_step(self, ctx):
        """Step ``ceph``: the pools follow the number of hosts with OSDs."""
        hosts = len(osd_hosts(self.kv))
        if hosts == 0:
            raise Waiting("no OSD yet: the pools are made with the first")
        if ctx.dry_run or ctx.tasks is None:
            return []
        before = ctx.tasks.done("ceph-pools")
        got = ctx.tasks.run("ceph-pools", self.pools, hosts, inputs={"osd_hosts": hosts})
        if got == "waiting":
            if before is None:
                raise Waiting("task ceph-pools (claimed by %s)" % ctx.tasks.claimant(
                    "ceph-pools"))
            return []
        if before is None or not before.holds_for({"osd_hosts": hosts}):
            return [Action("task", "ceph-pools", "ceph", "pools sized for %d host(s)" % hosts)]
        return []

    def cluster_check(self, view, systemd):
        try:
            status = self.ceph("status", timeout=40)
        except CephFailed as exc:
            return health.Result(health.FAILED, str(exc))
        result = summarize(status or {}, len(osd_hosts(self.kv)))
        if result.detail.get("note") and not self.said_by_design:
            LOG.warning("ceph: %s", result.detail["note"])
            self.said_by_design = True
        return result
