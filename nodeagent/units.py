"""systemd units as the agent sees and drives them: one ``systemctl show`` for the state of
many units, and the actions, each through :func:`rackforge.systemd.systemctl` (a failure
is one line naming the unit)."""

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from rackforge import systemd
from rackforge.fileutil import atomic_write, make_dirs

PROPS = ("Id", "LoadState", "ActiveState", "SubState", "UnitFileState", "NRestarts")

# Units only the agent may start.  Debian's OpenStack units want mysql.service,
# rabbitmq-server.service and keystone.service, so at boot, or when one of them starts,
# systemd would start MariaDB and RabbitMQ behind the agent's back: a Galera join out of
# turn, or during the agent's recovery of the cluster's positions.  Their drop-ins say
# ``ConditionPathExists=GATES/UNIT``; the agent writes that file just before it starts the
# unit, removes it before it stops it and once it sees the unit failed, and /run starts
# empty at every boot, so any other start is skipped by systemd ("condition"), not run.
GATED = ("mariadb.service", "rabbitmq-server.service")
GATES = "/run/rackforge/start"


@dataclass(frozen=True)
class UnitState:
    name: str
    load: str = "not-found"
    active: str = "inactive"          # active | reloading | inactive | failed | activating ...
    sub: str = ""
    enabled: str = ""                 # enabled | disabled | static | masked | ...

    @property
    def exists(self):
        return self.load == "loaded"

    @property
    def is_active(self):
        return self.active in ("active", "reloading")

    @property
    def is_enabled(self):
        return self.enabled in ("enabled", "enabled-runtime", "static", "alias", "indirect",
                                "generated")

    @property
    def is_failed(self):
        return self.active == "failed"


def parse_show(text):
    """``{unit: UnitState}`` from ``systemctl show -p ...`` output (blocks split by a
    blank line)."""
    out = {}
    for block in text.strip().split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if fields.get("Id"):
            out[fields["Id"]] = UnitState(name=fields["Id"], load=fields.get("LoadState", ""),
                                          active=fields.get("ActiveState", ""),
                                          sub=fields.get("SubState", ""),
                                          enabled=fields.get("UnitFileState", ""))
    return out


class Systemd:
    """The real one.  Tests use ``tests/lib/fakesystemd.py``, which keeps the same
    interface over states in memory."""

    settle = 20.0

    def __init__(self, run=subprocess.run, clock=time.monotonic, sleep=time.sleep,
                 gates=GATES):
        self._run = run
        self._clock = clock
        self._sleep = sleep
        self.gates = Path(gates)

    def states(self, units):
        if not units:
            return {}
        res = self._run(["systemctl", "show", "--no-pager", "-p", ",".join(PROPS), *units],
                        capture_output=True, text=True, timeout=60)
        found = parse_show(res.stdout)
        out = {u: found.get(u, UnitState(name=u)) for u in units}
        for unit, state in out.items():
            if state.is_failed:     # died, or its start failed: the next start is the agent's
                self.close_gate(unit)
        return out

    def act(self, verb, unit):
        """``enable``, ``disable``, ``start``, ``stop``, ``restart``, ``reset-failed``, and
        ``start-nowait`` (queue the start and return: a Galera join's state transfer can
        take longer than the agent may block).

        ``start`` and ``restart`` queue the job and wait at most :attr:`settle` seconds
        for the unit to be up: one that failed by then is an error line, as a blocking
        ``systemctl start`` would say; one still starting (nova-compute waiting for a
        conductor, a slow Type=notify service) is left to its health check, so one unit
        never holds the whole pass up for systemd's start timeout.

        A unit of :data:`GATED` is opened before it starts and closed before it stops."""
        if verb in ("start", "start-nowait", "restart"):
            self.open_gate(unit)
        elif verb == "stop":
            self.close_gate(unit)
        if verb == "start-nowait":
            systemd.systemctl("start", "--no-block", unit, run=self._run)
            return
        if verb not in ("start", "restart"):
            systemd.systemctl(verb, unit, run=self._run)
            return
        systemd.systemctl(verb, "--no-block", unit, run=self._run)
        deadline = self._clock() + self.settle
        while True:
            state = self.states([unit])[unit]
            if state.is_failed:
                raise systemd.SystemctlFailed(args="%s %s" % (verb, unit), unit=unit,
                                              detail="it failed as it started")
            if state.is_active or self._clock() >= deadline:
                return
            self._sleep(0.5)

    def open_gate(self, unit):
        """Let systemd start ``unit`` (of :data:`GATED`; any other is always open): the
        agent's own start, or a script's it runs (``galera_new_cluster``)."""
        if unit in GATED:
            make_dirs(self.gates, 0o755)
            atomic_write(self.gates / unit, "started by the rackforge node agent\n",
                         mode=0o644)

    def close_gate(self, unit):
        if unit in GATED:
            (self.gates / unit).unlink(missing_ok=True)

    def daemon_reload(self):
        systemd.systemctl("daemon-reload", run=self._run)
