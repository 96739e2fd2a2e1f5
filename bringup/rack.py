"""``rackforge rack up``: enroll the rack's BMCs, install every node, follow them to active.

Three stages, each working on all nodes at once and none held up by another:

1. **Enroll** the BMCs given (:func:`rackforge.bmc.cli.enroll_one`, the code
   path of ``bmc enroll``), in parallel; a BMC already enrolled is taken from
   the registry as it is (its stored password, which ``--set-bmc-password``
   may have changed), never enrolled again.
2. **Kick off** each node (:mod:`.steps`), in parallel with retries
   (:mod:`rackforge.bmc.parallel`): its BMC password, the move to
   ``installing``, next boot from the network and power on.  An ``active``
   or ``maintenance`` node is left alone; a ``failed`` one is reported, and
   installed again only with ``--retry-failed``.
3. **Follow** every node through the phases of :data:`PHASES` by reading the
   registry, one line per change, until it is ``active``, ``failed`` (its
   record's reason) or past its deadline.  Once a node is ``installed`` its
   BMC boots it from disk, persistently; a node still ``installed``
   ``reboot_wait`` later (its installer's reboot never came) is reset through
   its BMC, once.

Run again, it continues: with no BMC given, it takes up every node with a
bring-up record that is not active yet (:mod:`.progress`).
"""

import concurrent.futures
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from rackforge import errors, keys
from rackforge.bmc import base, credentials, drivers, parallel
from rackforge.bmc import cli as bmc_cli
from rackforge.bmc.errors import redact
from rackforge.bringup import installapi, progress, steps
from rackforge.bringup.progress import STARTED

#: what ``rack up`` shows a node go through (a node's state, but ``installing`` in two:
#: booting until its installer called the install API, installing after)
PHASES = ("enrolled", "booting", "installing", "installed", "joining", "active")
OK = ("active", "left alone")
#: a failed BMC step (boot device, reset) is tried again this long after
STEP_RETRY = 30.0


@dataclass
class Settings:
    driver: str = "ipmi"
    username: str = ""
    password: Callable = None           # () -> the BMC password, asked only if needed
    insecure: bool = False
    set_bmc_password: bool = False
    retry_failed: bool = False
    uefi: bool = False
    disk: dict = None
    concurrency: int = parallel.DEFAULT_CONCURRENCY
    timeout: float = 120.0              # per BMC and stage, retries included
    attempts: int = 5
    deadline: float = 3600.0            # per node, from this run's start to active
    reboot_wait: float = 900.0          # installed this long without a first boot: reset
    poll: float = 5.0
    follow: bool = True


@dataclass
class Tracker:
    """One node in this run."""
    label: str                          # ADDR:PORT
    address: str = None                 # where to enroll it (a BMC not enrolled yet)
    port: int = None
    bmc: Optional[base.BMC] = None
    node_id: str = None
    name: str = None
    phase: str = "enrolling"
    since: float = 0.0
    error: str = None
    outcome: str = None                 # active, left alone, failed, timed out
    deadline: float = 0.0
    jobs: dict = field(default_factory=dict)        # BMC step -> its future
    retry_at: dict = field(default_factory=dict)    # BMC step -> when to try it again
    noted: set = field(default_factory=set)         # one-time notes already shown

    @property
    def title(self):
        return self.name or self.label


class RackUp:
    """One ``rack up`` run.  Everything outside (drivers, clocks, sleep) is injectable."""

    def __init__(self, registry, settings, display, key, driver_for=None,
                 clock=time.monotonic, wall=time.time, sleep=time.sleep, on_secret=None,
                 executor=concurrent.futures.ThreadPoolExecutor):
        self.registry = registry
        self.kv = registry.kv
        self.settings = settings
        self.display = display
        self.key = key
        self.store = progress.ProgressStore(self.kv, clock=wall)
        self.clock, self.wall, self.sleep = clock, wall, sleep
        self.executor = executor            # workers -> the pool the BMC steps run in
        self._drivers = {}
        self._driver_for = driver_for or drivers.get_driver
        self.secrets = []
        self.on_secret = on_secret or (lambda secret: None)
        self.steps = steps.NodeSteps(registry, self.store, key, self.driver, uefi=settings.uefi,
                                     power_wait=min(60.0, settings.timeout),
                                     disk=settings.disk, on_secret=self._secret)

    def driver(self, name):
        if name not in self._drivers:
            self._drivers[name] = self._driver_for(name)
        return self._drivers[name]

    def _secret(self, secret):
        if secret and secret not in self.secrets:
            self.secrets.append(secret)
            self.on_secret(secret)

    # -- the run -------------------------------------------------------------------------
    def run(self, addresses):
        """Bring up the BMCs at ``addresses`` (``[(address, port)]``; empty: continue the
        nodes of earlier runs).  :returns: the trackers, each with its outcome."""
        trackers = self.targets(addresses)
        self.enroll([t for t in trackers if t.node_id is None and t.outcome is None])
        self.kick_off([t for t in trackers if t.outcome is None])
        if self.settings.follow:
            self.follow([t for t in trackers if t.outcome is None])
        return trackers

    def targets(self, addresses):
        """A tracker per BMC: from the registry when it is enrolled, else to enroll."""
        known = bmc_cli.enrolled_bmcs(self.registry)
        if not addresses:
            records = {r.node: r for r in self.store.list()}
            nodes = [n for n in self.registry.list_nodes() if n.id in records]
            return [self._tracker(n) for n in nodes]
        out = []
        for address, port in addresses:
            driver = self.driver(self.settings.driver)
            node = known.get((address, port or driver.default_port))
            label = address if port is None else "%s:%d" % (address, port)
            out.append(self._tracker(node) if node else
                       Tracker(label=label, address=address, port=port))
        return out

    def _tracker(self, node):
        info = node.bmc or {}
        t = Tracker(label="%s:%s" % (info.get("address"), info.get("port")), node_id=node.id,
                    name=node.name, phase=node.state)
        record = self.store.get(node.id)
        if record is not None:
            t.phase, t.since = record.phase, record.since
        try:
            password = credentials.decrypt(info["password"], self.key, node=node.name) \
                if info.get("password") else ""
        except errors.RackforgeError as exc:
            return self._fail(t, exc)
        self._secret(password)
        t.bmc = base.BMC(address=info.get("address"), port=info.get("port"),
                         username=info.get("username", ""), password=password,
                         driver=info.get("driver", "ipmi"), node=node.name,
                         insecure=info.get("insecure", False), options=info.get("options", {}))
        return t

    def _fail(self, t, error, outcome="failed"):
        t.outcome, t.error = outcome, progress.clip(redact(error, self.secrets))
        if t.node_id:
            try:
                self.store.set(t.node_id, error=t.error)
            except errors.RackforgeError:
                pass            # the line on the terminal is what matters now
        self.display.update(t)
        return t

    def _ensure_record(self, t, node):
        now = self.wall()
        record = self.store.update(node.id, lambda p: None, create=lambda: progress.Progress(
            node=node.id, name=node.name, bmc=t.label, phase=node.state, since=now))
        t.since = t.since or record.since       # a new tracker: how long in its phase

    # -- 1. enroll -----------------------------------------------------------------------
    def enroll(self, trackers):
        if not trackers:
            return
        s = self.settings
        password = s.password() if s.password else ""
        self._secret(password)
        existing = bmc_cli.enrolled_bmcs(self.registry)
        for t in trackers:
            t.bmc = base.BMC(address=t.address, port=t.port, username=s.username,
                             password=password, driver=s.driver, insecure=s.insecure)

        def one(t):
            driver = self.driver(t.bmc.driver)
            driver.validate(t.bmc)
            credentials.check_login(t.bmc.username, t.bmc.password, t.bmc.label, s.insecure)
            node, _, created = bmc_cli.enroll_one(self.registry, self.key, existing, driver,
                                                  t.bmc)
            t.node_id, t.name, t.bmc.node = node.id, node.name, node.name
            t.label = "%s:%s" % (node.bmc["address"], node.bmc["port"])
            self._ensure_record(t, node)
            return node.state
        self._parallel(trackers, one, "enroll")

    def _parallel(self, trackers, fn, action):
        s = self.settings
        results = parallel.run_all(trackers, fn, action, label=lambda t: t.title,
                                   concurrency=max(1, s.concurrency), timeout=s.timeout,
                                   attempts=max(1, s.attempts), secrets=self.secrets)
        for t, result in zip(trackers, results):
            if not result.ok:
                self._fail(t, "%s: %s" % (action, result.error))
            else:
                t.phase = result.value
                self.display.update(t)

    # -- 2. kick off ---------------------------------------------------------------------
    def kick_off(self, trackers):
        self._parallel(trackers, self._kick, "rack up")

    def _kick(self, t):
        node = self.registry.get_node(t.node_id)
        self._ensure_record(t, node)
        if node.state in ("active", "maintenance"):
            t.outcome = "active" if node.state == "active" else "left alone"
            return node.state
        if node.state == "failed" and not self.settings.retry_failed:
            raise steps.NodeFailed(node=node.name, reason=node.boot.get("error")
                                   or "no reason recorded")
        if not installapi.enrolled_identity(node)[0]:
            raise steps.NoMac(node=node.name)
        if self.settings.set_bmc_password:
            self.steps.password(t)
        if node.state in steps.INSTALLABLE or node.state == "failed":
            node = self.steps.to_installing(t, node)
        if node.state != "installing":
            return node.state
        record = self.store.get(t.node_id)
        entry = self.kv.get(keys.BRINGUP_INSTALL + t.node_id)
        self.steps.power(t, began=progress.began(record, entry))
        return progress.phase_of(node, record, entry)

    # -- 3. follow -----------------------------------------------------------------------
    def follow(self, trackers):
        start = self.clock()
        for t in trackers:
            t.deadline = start + self.settings.deadline
        self.display.start(trackers)
        workers = max(1, min(self.settings.concurrency, len(trackers) or 1))
        with self.executor(workers) as pool:
            while True:
                for t in trackers:
                    if t.outcome is None:
                        self._observe(t, pool)
                self.display.tick()
                if all(t.outcome is not None for t in trackers):
                    return
                self.sleep(self.settings.poll)

    def _observe(self, t, pool):
        try:
            self._look(t, pool)
        except errors.RackforgeError as exc:
            if not exc.retryable:            # the node was removed, a bad record: final
                return self._fail(t, exc)
            self._note_error(t, exc)         # etcd electing a leader: the next poll
        self._check_deadline(t)

    def _look(self, t, pool):
        node = self.registry.get_node(t.node_id)
        record = self.store.get(t.node_id)
        entry = self.kv.get(keys.BRINGUP_INSTALL + t.node_id)
        phase = progress.phase_of(node, record, entry)
        if phase != t.phase:
            t.phase, t.since, t.error = phase, self.wall(), None
            self.store.set(t.node_id, phase=phase, since=t.since)
            self.display.update(t)
        if node.state == "failed":
            return self._fail(t, node.boot.get("error") or "failed, no reason recorded")
        past_install = node.state in ("installed", "joining", "active")
        disk_done = record is not None and record.is_done("disk")
        # a step's result (the note, or the error to retry) is read before the node
        # counts as up: the step's own record says done before its job hands it back
        if past_install and ("disk" in t.jobs or not disk_done):
            return self._job(t, pool, "disk", lambda: self.steps.disk(t), "boot-device disk",
                             "boot device disk not set")
        if "restart" in t.jobs or node.state == "installed":
            return self._reboot_overdue(t, pool, node, record)
        if node.state == "active":
            t.outcome = "active"
            if t.phase != "active":         # else the phase's line said it already
                self.display.update(t)

    def _reboot_overdue(self, t, pool, node, record):
        """Reset a node whose installer's reboot never brought it back, once: measured
        from its install report (the install API's time), else from when this run saw
        it installed."""
        if "restart" in t.jobs:
            return self._job(t, pool, "restart", None, "power reset", "not reset")
        step = record.step("restart") if record is not None else None
        if step is not None:
            if step["status"] == STARTED and "restart" not in t.noted:
                t.noted.add("restart")
                self.display.note(t, "a reset through its BMC was begun by an earlier run "
                                     "and not recorded done: if its console shows no boot, "
                                     "'rackforge power reset %s'" % t.title)
            return None
        reported = node.boot.get("installed")
        # the later of the report and this run's sight of it: neither a controller's
        # clock nor a record of an earlier phase can make it early
        since = max(reported, t.since) if isinstance(reported, (int, float)) else t.since
        waited = self.wall() - since
        if record is not None and waited >= self.settings.reboot_wait:
            return self._job(t, pool, "restart", lambda: self.steps.restart(t, waited),
                             "power reset", "not reset")
        return None

    def _job(self, t, pool, step, fn, action, failed):
        """Run one BMC step of ``t`` in ``pool`` without holding up the poll: started
        on one poll, its result read on a later one; a failure is tried again
        :data:`STEP_RETRY` seconds later."""
        job = t.jobs.get(step)
        if job is None:
            if self.clock() >= t.retry_at.get(step, 0.0):
                t.jobs[step] = pool.submit(parallel.call_with_retries, fn, t.title, action,
                                           timeout=self.settings.timeout,
                                           attempts=max(1, self.settings.attempts))
            return
        if not job.done():
            return
        del t.jobs[step]
        try:
            note, _ = job.result()
        except errors.RackforgeError as exc:
            t.retry_at[step] = self.clock() + STEP_RETRY
            return self._note_error(t, "%s (tried again in %ds): %s"
                                    % (failed, STEP_RETRY, exc))
        if note:
            self.display.note(t, note)

    def _note_error(self, t, error):
        line = progress.clip(redact(error, self.secrets))
        if line != t.error:
            t.error = line
            try:
                self.store.set(t.node_id, error=line)
            except errors.RackforgeError:
                pass
            self.display.update(t)

    def _check_deadline(self, t):
        if t.outcome is None and self.clock() >= t.deadline:
            self._fail(t, "not active %ds after this run began (phase %s); 'rackforge rack "
                       "up' again continues" % (self.settings.deadline, t.phase),
                       outcome="timed out")
