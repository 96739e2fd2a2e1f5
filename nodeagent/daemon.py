"""``rackforge nodeagent run``: the node agent's loop, for the rest of the node's life.

- ``Type=notify``: READY once the first pass is done; STATUS says what it is
  waiting for; WATCHDOG on every turn of the loop (``WatchdogSec=`` in the
  unit restarts an agent that hangs).
- A lease (:data:`LEASE_TTL`) carries the node's heartbeat, its services'
  health and its claims on cluster tasks, so a dead node's states expire with
  it.  A thread of its own (:class:`LeaseKeeper`, on a connection of its own)
  renews it, so a pass that blocks in a long step (a Galera bootstrap, an SST)
  never lets a live node's claim lapse and another controller take the task.
- It watches ``/rackforge/`` (a lost or compacted watch only means reading
  everything again: each pass is level-triggered) and reconciles on every
  change and at least every :data:`PASS_EVERY` seconds; health checks run on
  their own schedules in between, and a failed unit is restarted with a
  growing delay and a limit (:mod:`.health`).
- Its log goes to the journal with the fields ``NODE``, ``SERVICE`` and
  ``ACTION`` (systemd-python's journal handler).
"""

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

from rackforge import __version__, errors, keys, paths, systemd
from rackforge.kvstore import RegistryRejected, RegistryUnavailable, WatchCompacted
from rackforge.nodeagent import catalogue as catalogue_mod
from rackforge.nodeagent import health as health_mod
from rackforge.nodeagent import hooks as hooks_mod
from rackforge.nodeagent import keyring, reconcile, tasks, units, view as view_mod

LOG = logging.getLogger("rackforge.nodeagent")
LEASE_TTL = 15
HEARTBEAT_EVERY = 60.0      # the time in the heartbeat; the lease says the node is alive
PASS_EVERY = 30.0
TICK = 2.0


class NodeNotJoined(errors.ConfigError):
    message = ("this node has not finished first boot ({path} is missing): nothing to run "
               "yet; 'rackforge firstboot run' says why")


def node_file():
    return paths.state_dir() / "node.json"


def journal_logging():
    """Log to the journal with structured fields when systemd-python is there."""
    root = logging.getLogger("rackforge")
    try:
        from systemd import journal
    except ImportError:
        return
    if os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"):
        handler = journal.JournalHandler(SYSLOG_IDENTIFIER="rackforge-nodeagent")
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        root.propagate = False          # not a second time through stderr


def facts(address, run=None):
    """What the templates need to know of this machine: the management interface and its
    prefix, CPUs, memory, whether KVM works and the container it runs in (:mod:`.kvm`)."""
    import subprocess

    from rackforge.nodeagent import kvm

    run = run or subprocess.run
    out = {"cpus": os.cpu_count() or 1}
    try:
        with open("/proc/meminfo") as f:
            kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
        out["memory_mib"] = kib // 1024
    except (OSError, StopIteration, ValueError):
        pass
    for interface, found, prefix in hooks_mod.ipv4_addresses(run):
        if found == address:
            out["interface"], out["prefix"] = interface, prefix
    out.update(kvm.facts(run))
    return out


class Agent:
    """One node's agent: a pass, the health checks, the heartbeat."""

    def __init__(self, registry, node_id, private_key, catalogue, systemd_, hooks,
                 settings=None, root="/", clock=time.time):
        self.registry = registry
        self.kv = registry.kv
        self.node_id = node_id
        self.catalogue = catalogue
        self.systemd = systemd_
        self.hooks = hooks
        self.settings = settings or {}
        self.clock = clock
        self.lease = None
        self.keyring = keyring.Keyring(self.kv, node_id, private_key, catalogue.secrets)
        self.reconciler = reconcile.Reconciler(catalogue, systemd_, hooks, root=root)
        self.trackers = {}
        self.facts = {}
        self.view = None
        self.last_outcome = None
        self.said_errors = {}           # service -> the error line last logged
        self.want_pass = False          # a restart of a step-managed service: pass now
        self.publishes = True           # False: a one-off pass beside the running agent
        self.heartbeat_at = 0.0
        self.follow = None              # keeps the way to etcd on its members (main)

    # -- the lease: heartbeat and health live under it ---------------------------------------
    def keep_lease(self):
        now = self.clock()
        if self.lease is None or self.kv.lease_keepalive(self.lease) == 0:
            self.lease = self.kv.lease_grant(LEASE_TTL)
            self.heartbeat_at = 0.0
            for name, tracker in self.trackers.items():     # a new lease: publish again
                health_mod.publish(self.kv, self.node_id, name, tracker, self.lease)
        if now - self.heartbeat_at >= HEARTBEAT_EVERY:
            heartbeat = {"time": now, "agent": __version__}
            self.kv.txn([], [(keys.HEARTBEATS + self.node_id,
                              json.dumps(heartbeat).encode(), self.lease)])
            self.heartbeat_at = now

    # -- one pass -----------------------------------------------------------------------------
    def reconcile(self):
        view = view_mod.read(self.registry, self.node_id, self.facts, self.settings)
        if not self.facts:
            self.facts = facts(view.address)
            view.facts = self.facts
        self.view = view
        task_runner = tasks.Tasks(self.kv, self.node_id, self.lease, self.catalogue.version)
        outcome = self.reconciler.run(view, self.keyring, task_runner, self.trackers, self.kv)
        now = self.clock()
        desired = {s.name for s in self.reconciler.desired(view)}
        for svc in self.catalogue.services:
            if svc.name not in desired:
                self.trackers.pop(svc.name, None)
                continue
            tracker = self.trackers.get(svc.name)
            if tracker is None:
                tracker = self.trackers[svc.name] = health_mod.Tracker(service=svc, since=now)
            pending = outcome.pending.get(svc.name)
            why = pending or outcome.errors.get(svc.name)
            changed = False
            if why and tracker.state == health_mod.PENDING \
                    or pending and svc.health is None:   # no check of its own: as it goes
                changed = tracker.set(health_mod.PENDING, why, now)
            elif svc.health is None and svc.name in outcome.running:
                changed = tracker.set(health_mod.OK, "", now)   # nothing to check: it is up
            elif svc.health is None and why:
                changed = tracker.set(health_mod.FAILED, why, now)
            if changed and self.publishes:
                health_mod.publish(self.kv, self.node_id, svc.name, tracker, self.lease)
        for action in outcome.actions:
            LOG.info("%s", action.line(), extra={"NODE": view.name, "SERVICE": action.service,
                                                 "ACTION": action.kind})
        for name, line in sorted(outcome.errors.items()):      # once per new error line
            if self.said_errors.get(name) != line:
                LOG.error("service %s: %s", name, line,
                          extra={"NODE": view.name, "SERVICE": name, "ACTION": "error"})
        self.said_errors = dict(outcome.errors)
        self.last_outcome = outcome
        return outcome

    # -- health -------------------------------------------------------------------------------
    def check_due(self, force=False):
        """Run the checks that are due; restart failed units within their limits."""
        now = self.clock()
        view = self.view
        if view is None:
            return
        for name, tracker in self.trackers.items():
            svc = tracker.service
            if svc.health is None or (not force and now < tracker.next_check):
                continue
            tracker.next_check = now + svc.health.interval
            if tracker.state == health_mod.PENDING and self.last_outcome \
                    and (name in self.last_outcome.pending or name in self.last_outcome.errors):
                continue        # not up yet (waiting, or its task failed and is retried):
                # nothing to check, nothing to restart.  Once up, a service that
                # waits again (a restart in turn) is still checked: its peers act on
                # what it publishes, and a stale "ok" would send them to a Primary
                # component that is gone

            def builtin(name):
                return self.hooks.CHECKS[name](view, self.systemd)
            result = health_mod.check(svc, view.address, view.context(), builtin=builtin)
            if tracker.observe(result, now):
                health_mod.publish(self.kv, self.node_id, name, tracker, self.lease)
                LOG.info("service %s is %s%s", name, tracker.state,
                         ": " + tracker.error if tracker.error else "",
                         extra={"NODE": view.name, "SERVICE": name, "ACTION": "health"})
            if tracker.state == health_mod.FAILED and tracker.may_restart(now):
                self.restart(svc, tracker)

    def restart(self, svc, tracker):
        LOG.warning("service %s failed (%s): restarting it (%d of %d in %ds)", svc.name,
                    tracker.error, len(tracker.restarts), svc.restart_limit,
                    svc.restart_window, extra={"NODE": self.view.name, "SERVICE": svc.name,
                                               "ACTION": "restart"})
        health_mod.publish(self.kv, self.node_id, svc.name, tracker, self.lease)
        try:
            if svc.start == "systemd":
                for unit in svc.units:
                    self.systemd.act("restart", unit)
            else:
                self.want_pass = True   # Galera comes back through its step: a pass now
        except errors.RackforgeError as exc:
            LOG.error("service %s: %s", svc.name, exc)


def follow_members(kvs, node_path, client_path=None):
    """Keep this node's way to etcd on etcd's voting members: ``client.json``'s
    endpoints, ``node.json``'s ``etcd_endpoints`` (a factory reset's leave reads them)
    and the live connections ``kvs`` (the first asks).  A node learns the members when
    it joins: a compute node that joined while the seed was the only member knew the
    seed alone, and lost the registry for good when the seed left (a factory reset)
    or died.  The new endpoints, or None when nothing changed."""
    from rackforge.cluster import etcd
    from rackforge.fileutil import atomic_write
    from rackforge.kvstore import read_client, write_client

    members = getattr(kvs[0], "members", None)
    current = read_client(client_path)
    if members is None or current is None:
        return None
    endpoints, tls = current
    # the one it used first stays first (a controller's own member)
    urls = etcd.voting_endpoints(members(), first=endpoints[0] if endpoints else None)
    if not urls or set(urls) == set(endpoints):
        return None
    write_client(urls, tls, client_path)
    node_path = Path(node_path)
    node = json.loads(node_path.read_text())
    if node.get("etcd_endpoints") != urls:
        node["etcd_endpoints"] = urls
        atomic_write(node_path, json.dumps(node, indent=2) + "\n",
                     mode=node_path.stat().st_mode & 0o777)
    for kv in kvs:
        setter = getattr(kv, "set_endpoints", None)
        if setter is not None:
            setter(urls)
    LOG.info("etcd's members changed: this node reaches them at %s (was %s)",
             ", ".join(urls), ", ".join(endpoints))
    return urls


class LeaseKeeper(threading.Thread):
    """Renews ``agent.lease`` every third of :data:`LEASE_TTL` through ``kv`` (not the
    loop's client: a pass may be inside a call on it).  An expired lease is left to the
    loop, which grants a new one and publishes again."""

    def __init__(self, agent, kv, stop):
        super().__init__(name="lease-keeper", daemon=True)
        self.agent, self.kv, self.stop = agent, kv, stop

    def run(self):
        while not self.stop.wait(LEASE_TTL / 3):
            lease = self.agent.lease
            if lease is None:
                continue
            try:
                self.kv.lease_keepalive(lease)
            except (RegistryUnavailable, RegistryRejected) as exc:
                LOG.warning("renewing the lease: %s; trying again", exc)


class HealthStates:
    """Which watch events call for a pass: anything but heartbeats, and of the health
    records only a service's state changing (a service some other waits for came up, or
    went down; on this node or another), not a check's detail or its time."""

    def __init__(self):
        self.seen = {}

    def matters(self, event):
        key = getattr(event, "key", "") if not isinstance(event, bool) else ""
        if not key:
            return True
        if key.startswith(keys.HEARTBEATS):
            return False
        if not key.startswith(keys.HEALTH):
            return True
        try:
            state = json.loads(event.value).get("state") if event.value else None
        except (ValueError, AttributeError):
            state = None
        changed = self.seen.get(key, "unseen") != state
        self.seen[key] = state
        return changed


def run_forever(agent, stop):
    """The loop: pass, checks, watch; until ``stop`` is set."""
    revision, next_pass, ready = 0, 0.0, False
    states = HealthStates()
    while not stop.is_set():
        try:
            agent.keep_lease()
            now = time.monotonic()
            if now >= next_pass:
                if agent.follow is not None:
                    try:
                        agent.follow()
                    except (RegistryUnavailable, RegistryRejected):
                        raise
                    except (OSError, ValueError, errors.RackforgeError) as exc:
                        LOG.warning("following etcd's members: %s", exc)
                revision = agent.kv.revision()
                outcome = agent.reconcile()
                next_pass = now + PASS_EVERY
                pending = ", ".join("%s (%s)" % item for item in sorted(outcome.pending.items()))
                systemd.notify("STATUS=%s" % (("waiting: " + pending)[:200] if pending
                                              else "all services up"))
                if not ready:
                    systemd.notify("READY=1")
                    ready = True
            agent.check_due()
            if agent.want_pass:
                agent.want_pass, next_pass = False, 0.0
                continue
            systemd.notify("WATCHDOG=1")
            try:
                events, revision = agent.kv.watch(keys.ROOT, revision, timeout=TICK)
            except WatchCompacted:
                events = [True]
            if events and any([states.matters(e) for e in events]):
                next_pass = 0.0       # something the desired state depends on changed
        except (RegistryUnavailable, RegistryRejected) as exc:
            LOG.warning("the registry does not answer (%s); trying again", exc)
            systemd.notify("STATUS=registry unavailable: %s" % str(exc)[:150])
            stop.wait(TICK)


def main(args):
    """``rackforge nodeagent run``."""
    from rackforge import registry

    journal_logging()
    path = node_file()
    try:
        node = json.loads(path.read_text())
    except FileNotFoundError:
        raise NodeNotJoined(path=path) from None
    reg = registry.connect()
    cat = catalogue_mod.load(**hooks_mod.names())
    key = keyring.private_key(node["key"])
    agent = Agent(reg, node["node_id"], key, cat, units.Systemd(),
                  hooks_mod.Hooks(node["node_id"], reg.kv), settings=settings())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    LOG.info("rackforge %s node agent for %s: catalogue %s, %d services", __version__,
             node["name"], cat.version, len(cat.services))
    keeper_kv, api_reg = registry.connect().kv, registry.connect()
    agent.follow = lambda: follow_members([agent.kv, keeper_kv, api_reg.kv], path)
    LeaseKeeper(agent, keeper_kv, stop).start()
    api = local_api(agent, api_reg)
    run_forever(agent, stop)
    systemd.notify("STOPPING=1")
    api.stop()
    if agent.lease is not None:
        try:
            agent.kv.lease_revoke(agent.lease)     # a clean stop: the states go at once
        except (RegistryUnavailable, RegistryRejected):
            pass
    return 0


def local_api(agent, reg, path=None, network=None, bmc=None, allowed_uids=(0,)):
    """The local API for the console (:mod:`.localapi`), on a registry connection of its
    own (the loop's is not shared between threads); one status request at a time.
    ``network``, ``bmc``: the network change and the BMC (tests give their own)."""
    from rackforge import nodeprofile
    from rackforge.cluster import etcd
    from rackforge.nodeagent import bmcinband, lldp, localapi, netchange, nettest, nodestatus

    lock = threading.Lock()
    network = network or netchange.NetworkChange()
    bmc = bmc or bmcinband.InbandBmc()
    try:
        network.resume()        # a change left unconfirmed by a stop or a power cut
    except errors.RackforgeError as exc:
        LOG.error("the management network change left pending was not rolled back: %s", exc)
    profile = nodeprofile.load().name

    def status():
        view = agent.view
        with lock:
            return nodestatus.document(reg, agent.node_id, profile,
                                       view.address if view else None, etcd.QUOTA_BYTES)
    api = localapi.LocalApi({("GET", "/v1/status"): status,
                             ("GET", "/v1/lldp"): lldp.query,
                             ("GET", "/v1/bmc"): bmc.state,
                             ("POST", "/v1/bmc"): bmc.set_network,
                             ("POST", "/v1/bmc/password"): bmc.set_password,
                             ("GET", "/v1/nettest"): lambda: nettest.query(lambda: agent.view),
                             ("GET", "/v1/services"): lambda: services(agent),
                             ("GET", "/v1/network"): network.state,
                             ("POST", "/v1/network"): network.propose,
                             ("POST", "/v1/network/confirm"): network.confirm,
                             ("POST", "/v1/network/rollback"): network.rollback},
                            path=path or localapi.SOCKET, allowed_uids=allowed_uids)
    try:
        return api.start()
    except OSError as exc:          # the agent runs without it; the console says so
        LOG.warning("the local API did not start on %s: %s", api.path, exc)
        return api


def services(agent):
    """``GET /v1/services``: the agent itself, then each service it runs here with its
    units and health (what the console may restart and follow)."""
    out = [{"name": "nodeagent", "units": ["rackforge-nodeagent.service"], "state": "ok",
            "error": ""}]
    for name, tracker in sorted(dict(agent.trackers).items()):
        out.append({"name": name, "units": list(tracker.service.units),
                    "state": tracker.state, "error": tracker.error or ""})
    return {"services": out}


def settings():
    """The profile's settings the templates use (small sizes for converged nodes)."""
    from rackforge import nodeprofile

    profile = nodeprofile.load()
    agent = dict(getattr(profile, "agent", None) or {})
    return {"memcached_mib": int(agent.get("memcached_mib", 64)),
            "innodb_buffer_pool_mib": int(agent.get("innodb_buffer_pool_mib", 256)),
            "rabbitmq_memory": float(agent.get("rabbitmq_memory", 0.2)),
            "ceph": dict(getattr(profile, "ceph", None) or {}),
            "openstack": openstack_settings(profile),
            "provider": provider_settings(profile)}


#: the control plane is in this image (HAProxy then fronts its APIs)
CONTROL_PLANE = "/usr/bin/keystone-manage"


def openstack_settings(profile, present=None):
    """Worker counts and Keystone's token settings from the profile's ``openstack``
    section ({} on an image without the control plane, or with ``openstack.enabled``
    false: a rack of the foundation and Ceph alone; the agent then runs no OpenStack
    record and HAProxy fronts no API)."""
    present = os.path.exists(CONTROL_PLANE) if present is None else present
    given = dict(getattr(profile, "openstack", None) or {})
    if not present or given.get("enabled", True) is False:
        return {}
    return {"api_processes": int(given.get("api_processes", 1)),
            "api_threads": int(given.get("api_threads", 4)),
            "workers": int(given.get("workers", 1)),
            "token_expiration": int(given.get("token_expiration", 86400)),
            # keys kept: expiry + expired window over the rotation interval, plus staged
            # and primary (kolla-ansible's formula)
            "fernet_keys": int(given.get("fernet_keys", 5)),
            "fernet_rotation": int(given.get("fernet_rotation", 86400))}


def provider_settings(profile):
    """``{interface, physnet}`` of the profile's provider network ({} without one)."""
    provider = dict(((getattr(profile, "network", None) or {}).get("provider")) or {})
    if not provider.get("interface"):
        return {}
    return {"interface": provider["interface"], "physnet": provider.get("physnet", "physnet1")}
