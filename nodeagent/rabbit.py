"""RabbitMQ on the controllers: one cluster, formed in order, quorum queues by default.

- The Erlang cookie is the cluster's (secret ``rabbitmq-cookie``), written
  before the broker's first start (the package's install-time cookie never
  reaches the image).
- The first controller (slot 0) starts first; each other starts once it is
  up and joins it (peer discovery lists every controller; a node that came up
  on its own is joined explicitly: ``stop_app``, ``join_cluster``,
  ``start_app``).  Once it is a member, every quorum queue grows a replica on
  it, once (``rabbitmq-queues grow``, marked done in :data:`GROWN`; a queue
  keeps the members it was declared with).
  A node that has been a member (its data directory holds
  the cluster) starts without waiting: after a whole-rack power loss every
  broker waits for its peers at start, so none may wait for another's health.
  Membership is read from the cluster's member list, not its running nodes,
  so a member whose first controller is down does not try to join again.
- Partition handling is ``pause_minority``: a controller cut off from the
  other two stops serving rather than accept messages the majority never sees
  (the choice kolla-ansible and OpenStack-Ansible make; ``autoheal`` would keep
  both sides running and throw one side's messages away when they meet).
- Cluster task ``rabbitmq-users``: the ``guest`` user goes, ``openstack`` is
  made with the cluster's password (given on standard input, never argv), and
  the default virtual host declares quorum queues unless told otherwise.
"""

import json
import logging
import socket
import subprocess
import time
from pathlib import Path

from rackforge import errors, fileutil
from rackforge.nodeagent import health
from rackforge.nodeagent.reconcile import Action, Waiting

LOG = logging.getLogger(__name__)
UNIT = "rabbitmq-server.service"
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
QUEUES = "/usr/lib/rabbitmq/bin/rabbitmq-queues"
DATA = "/var/lib/rabbitmq/mnesia"      # RABBITMQ_MNESIA_BASE: rabbit@NAME/ once it has run
#: the quorum queues grew a replica here since it joined (the factory reset erases it)
GROWN = "/var/lib/rackforge/nodeagent/rabbitmq-grown"
PORT = 5672
STATUS_EVERY = 60.0


class RabbitError(errors.RackforgeError):
    message = "rabbitmq on {node}: {detail}"
    retryable = True


def node_name(name):
    return "rabbit@%s" % name


class Rabbit:
    def __init__(self, node_id, run=subprocess.run, clock=time.monotonic, data=DATA,
                 grown=GROWN):
        self.node_id = node_id
        self.run = run
        self.clock = clock
        self.data = Path(data)
        self.grown = Path(grown)
        self.member = False     # seen in the first controller's cluster since it last started
        self._detail, self._detail_at = None, -STATUS_EVERY

    def ctl(self, *args, stdin=None, timeout=60, node=None, tool=CTL):
        """``rabbitmqctl ARGS`` (or ``tool``) as the broker's user, against this node's
        broker or ``node``'s (Debian's wrapper would go through su and its PAM session
        on every call: two journal lines a minute for a health check)."""
        target = ["-n", node] if node else []
        res = self.run(["runuser", "-u", "rabbitmq", "--", "env", "HOME=/var/lib/rabbitmq",
                        tool, *target, *args], input=stdin, capture_output=True, text=True,
                       timeout=timeout)
        if res.returncode != 0:
            lines = ((res.stderr or res.stdout).strip().splitlines()
                     or ["exit %d" % res.returncode])
            raise RabbitError(node=node or "this node", detail="%s %s: %s" % (
                Path(tool).name, args[0], lines[-1][:200]))
        return res.stdout

    def cluster_status(self, node=None):
        """(members, running): every node of the cluster, up or not, and those running
        (as this node's broker, or ``node``'s, sees them)."""
        status = json.loads(self.ctl("--formatter", "json", "cluster_status", node=node))
        running = sorted(status.get("running_nodes") or [])
        members = set(running) | set(status.get("disk_nodes") or []) \
            | set(status.get("ram_nodes") or [])
        return sorted(members), running

    def has_run(self, name):
        """Whether this node's broker has data of its own (it formed or joined a cluster)."""
        try:
            return any((self.data / node_name(name)).iterdir())
        except OSError:
            return False

    # -- health (builtin "rabbitmq") ---------------------------------------------------
    def check(self, view, systemd):
        if not systemd.states([UNIT])[UNIT].is_active:
            return health.Result(health.FAILED, "rabbitmq-server is not running")
        try:
            with socket.create_connection((view.address, PORT), timeout=3):
                pass
        except OSError as exc:
            return health.Result(health.FAILED, "AMQP port %s:%d: %s"
                                 % (view.address, PORT, exc.strerror or exc))
        now = self.clock()
        if now - self._detail_at >= STATUS_EVERY:       # an Erlang VM per call: not often
            self._detail_at = now
            try:
                _, running = self.cluster_status()
                self._detail = {"running": len(running), "nodes": running}
            except (RabbitError, ValueError, subprocess.TimeoutExpired):
                self._detail = None
        return health.Result(health.OK, "", self._detail)

    # -- start step "rabbitmq" ---------------------------------------------------------
    def step(self, ctx):
        view = ctx.view
        seed = view.controllers[0] if view.controllers else None
        state = ctx.systemd.states([UNIT])[UNIT]
        if ctx.dry_run:
            return [] if state.is_active and not ctx.changed else [
                Action("step", "rabbitmq", "rabbitmq", "would start or restart")]
        actions = []
        follower = seed is not None and seed.id != view.node_id
        if follower and not state.is_active and not self.has_run(view.name):
            seed_ok = (health.read_all(ctx.kv).get(seed.id) or {}).get("rabbitmq") or {}
            if seed_ok.get("state") != health.OK:
                raise Waiting("waiting for %s, the first controller, to run RabbitMQ"
                              % seed.name)
        if not state.is_active:
            ctx.systemd.act("start", UNIT)
            actions.append(Action("start", UNIT, "rabbitmq"))
        elif ctx.changed:
            ctx.systemd.act("restart", UNIT)
            actions.append(Action("restart", UNIT, "rabbitmq", "its configuration changed"))
        if follower and (actions or not self.member):     # an Erlang VM per look: not often
            members, _ = self.cluster_status()
            self.member = node_name(seed.name) in members
            if not self.member:
                LOG.info("rabbitmq: joining %s's cluster", seed.name)
                self.grown.unlink(missing_ok=True)      # the queues grow onto it again
                self.ctl("stop_app")
                try:
                    self.ctl("join_cluster", node_name(seed.name), timeout=180)
                finally:                # a failed join leaves the broker serving, not stopped
                    self.ctl("start_app", timeout=180)
                self.member = True
                actions.append(Action("step", "rabbitmq", "rabbitmq",
                                      "joined %s's cluster" % seed.name))
        if follower and self.member and not self.grown.exists():
            # a quorum queue keeps the members it was declared with: those declared before
            # this node joined (by peer discovery or above) have no replica here; each
            # gets one, so each keeps its majority when another controller goes down
            self.ctl("grow", node_name(view.name), "all", tool=QUEUES, timeout=300)
            fileutil.make_dirs(self.grown.parent, 0o700)
            fileutil.atomic_write(self.grown, "%s\n" % time.time())
            actions.append(Action("step", "rabbitmq", "rabbitmq", "quorum queues grown onto "
                                  "it"))
        return actions

    # -- cluster task "rabbitmq-users" -------------------------------------------------
    def users(self, view, systemd, context):
        password = context["secrets"]["rabbitmq-openstack"]
        existing = {u.get("user") for u in json.loads(
            self.ctl("--formatter", "json", "list_users") or "[]")}
        if "guest" in existing:
            self.ctl("delete_user", "guest")
        if "openstack" not in existing:
            self.ctl("add_user", "openstack", stdin=password + "\n")
        else:
            self.ctl("change_password", "openstack", stdin=password + "\n")
        self.ctl("set_permissions", "-p", "/", "openstack", ".*", ".*", ".*")
        self.ctl("update_vhost_metadata", "/", "--default-queue-type", "quorum")
        return {"users": ["openstack"], "default_queue_type": "quorum"}
