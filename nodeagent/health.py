"""Health: each service's check on its schedule, its state, and what is done about a failure.

A service is ``ok``, ``degraded`` (works, not fully: a Galera donor), ``failed``
(its unit failed, or its check keeps failing), or ``pending`` (not started yet:
waiting for a task, a condition, a secret, a service it requires).  The agent
publishes each state with ``since`` and the last error line under
``keys.HEALTH + node/service``, written under the node's lease, so the
states of a dead node vanish with it.  A state is written when it changes,
not on every check.

A failed unit is restarted with a growing delay (10 s doubling up to 5 min),
at most ``restart_limit`` times in ``restart_window`` seconds; past that it is
left failed and said so once, not in a loop.
"""

import json
import logging
import socket
import subprocess
import urllib.request
from dataclasses import dataclass, field

from rackforge import keys

LOG = logging.getLogger(__name__)
OK, DEGRADED, FAILED, PENDING = "ok", "degraded", "failed", "pending"
FIRST_DELAY, MAX_DELAY = 10.0, 300.0
FAILURES_BEFORE_FAILED = 3          # a check failing this many times in a row


@dataclass
class Result:
    state: str
    error: str = ""
    detail: dict = None         # what cluster status shows (Galera's size, the VIP held)


def check_tcp(address, health):
    try:
        with socket.create_connection((address, health.port), timeout=health.timeout):
            return Result(OK)
    except OSError as exc:
        return Result(FAILED, "tcp %s:%d: %s" % (address, health.port, exc.strerror or exc))


def check_http(address, health):
    url = "http://%s:%d%s" % (address, health.port, health.path)
    try:
        with urllib.request.urlopen(url, timeout=health.timeout) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        return Result(FAILED, "GET %s: %s" % (url, getattr(exc, "reason", exc)))
    if status == health.status:
        return Result(OK)
    return Result(FAILED, "GET %s answered %d, not %d" % (url, status, health.status))


def check_command(argv, health, run=subprocess.run):
    """Exit 0: ok; 2: degraded; else failed, with the last line of its output."""
    try:
        res = run(list(argv), capture_output=True, text=True, timeout=health.timeout)
    except subprocess.TimeoutExpired:
        return Result(FAILED, "%s: no answer within %ss" % (argv[0], health.timeout))
    except OSError as exc:
        return Result(FAILED, "%s: %s" % (argv[0], exc.strerror or exc))
    last = ((res.stdout or "") + (res.stderr or "")).strip().splitlines()[-1:] or [""]
    if res.returncode == 0:
        return Result(OK)
    if res.returncode == 2:
        return Result(DEGRADED, last[0][:200])
    return Result(FAILED, last[0][:200] or "exit %d" % res.returncode)


def check(service, address, context=None, run=subprocess.run, builtin=None):
    """Run ``service``'s check once; None when it has none.  ``builtin``: a callable
    running the agent's own check of that name."""
    health = service.health
    if health is None:
        return None
    if health.type == "builtin":
        return builtin(health.name)
    if health.type == "tcp":
        return check_tcp(address, health)
    if health.type == "http":
        return check_http(address, health)
    argv = [a.format(**(context or {})) for a in health.argv]
    return check_command(argv, health, run)


@dataclass
class Tracker:
    """One service's health over time, and its restart policy."""
    service: object
    state: str = PENDING
    since: float = 0.0
    error: str = ""
    failures: int = 0
    next_check: float = 0.0
    restarts: list = field(default_factory=list)     # times of automatic restarts
    next_restart: float = 0.0
    delay: float = FIRST_DELAY
    gave_up: bool = False
    detail: dict = None

    def set(self, state, error, now):
        changed = state != self.state or (error and error != self.error)
        if state != self.state:
            self.since = now
        self.state, self.error = state, error
        return changed

    def observe(self, result, now):
        """Fold a check's result in; returns True if the published state changes."""
        if result.detail is not None and result.detail != self.detail:
            self.detail = result.detail
            changed = True
        else:
            changed = False
        return self._fold(result, now) or changed

    def _fold(self, result, now):
        if result.state == OK:
            self.failures, self.delay, self.gave_up = 0, FIRST_DELAY, False
            return self.set(OK, "", now)
        if result.state in (DEGRADED, PENDING):     # it works, or it is on its way: no
            self.failures = 0                       # failure counts towards a restart
            return self.set(result.state, result.error, now)
        self.failures += 1
        if self.failures >= FAILURES_BEFORE_FAILED or self.state == FAILED:
            return self.set(FAILED, result.error, now)
        return False                  # a blip: not failed yet

    def may_restart(self, now):
        """True if an automatic restart is due and allowed; records it."""
        svc = self.service
        self.restarts = [t for t in self.restarts if now - t < svc.restart_window]
        if len(self.restarts) >= svc.restart_limit:
            if not self.gave_up:
                LOG.error("service %s failed %d times in %ds: left failed, not restarted "
                          "again; 'journalctl -u %s' says why", svc.name, len(self.restarts),
                          svc.restart_window, svc.units[0] if svc.units else svc.name)
                self.gave_up = True
            return False
        if now < self.next_restart:
            return False
        self.restarts.append(now)
        self.next_restart = now + self.delay
        self.delay = min(self.delay * 2, MAX_DELAY)
        return True

    def holds_down(self, systemd_managed, down):
        """Whether a reconcile pass must leave the service's units ``down`` as they are:
        a unit that went down after it was up is the restart policy's (its checks confirm
        the failure, report it once and restart it with backoff and a limit; a start
        step's service is restarted through its step, in the pass the policy asks for),
        and a service the policy gave up on stays down until an input changes or the
        agent restarts."""
        if not down or not self.service.units or self.service.health is None:
            return False            # up, or nothing the policy restarts
        if self.gave_up or self.state in (OK, DEGRADED):
            return True
        return systemd_managed and self.state == FAILED

    def record(self):
        record = {"state": self.state, "since": self.since, "error": self.error,
                  "restarts": len(self.restarts)}
        if self.detail:
            record["detail"] = self.detail
        return record


def publish(kv, node_id, service_name, tracker, lease):
    """Write the tracker's state under the node's lease."""
    kv.txn([], [(keys.HEALTH + "%s/%s" % (node_id, service_name),
                 json.dumps(tracker.record()).encode(), lease)])


def read_all(kv):
    """{node id: {service: record}} of every live node."""
    out = {}
    for entry in kv.get_prefix(keys.HEALTH):
        node, _, service = entry.key[len(keys.HEALTH):].partition("/")
        try:
            out.setdefault(node, {})[service] = json.loads(entry.value)
        except ValueError:
            continue
    return out
