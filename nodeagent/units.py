"""systemd units as the agent sees and drives them: one ``systemctl show`` for the state of
many units, and the actions, each through :func:`rackforge.systemd.systemctl` (a failure
is one line naming the unit)."""

import subprocess
from dataclasses import dataclass

from rackforge import systemd

PROPS = ("Id", "LoadState", "ActiveState", "SubState", "UnitFileState", "NRestarts")


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

    def __init__(self, run=subprocess.run):
        self._run = run

    def states(self, units):
        if not units:
            return {}
        res = self._run(["systemctl", "show", "--no-pager", "-p", ",".join(PROPS), *units],
                        capture_output=True, text=True, timeout=60)
        found = parse_show(res.stdout)
        return {u: found.get(u, UnitState(name=u)) for u in units}

    def act(self, verb, unit):
        """``enable``, ``disable``, ``start``, ``stop``, ``restart``, ``reset-failed``, and
        ``start-nowait`` (queue the start and return: a Galera join's state transfer can
        take longer than the agent may block)."""
        args = [verb, unit]
        if verb == "start-nowait":
            args = ["start", "--no-block", unit]
        systemd.systemctl(*args, run=self._run)

    def daemon_reload(self):
        systemd.systemctl("daemon-reload", run=self._run)
