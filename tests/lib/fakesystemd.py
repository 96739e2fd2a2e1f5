"""systemd in memory, with the interface of ``rackforge.nodeagent.units.Systemd``: unit
states the tests set, and every call recorded (the reconcile tests count actions)."""

from rackforge.nodeagent.units import GATED, UnitState


class FakeSystemd:
    def __init__(self, installed=()):
        self.units = {u: {"active": "inactive", "enabled": "disabled"} for u in installed}
        self.calls = []
        self.reloads = 0
        self.gates = set()          # the units of GATED the agent let systemd start

    def install(self, *units):
        for u in units:
            self.units.setdefault(u, {"active": "inactive", "enabled": "disabled"})

    def states(self, units):
        out = {}
        for u in units:
            st = self.units.get(u)
            out[u] = (UnitState(name=u) if st is None else
                      UnitState(name=u, load="loaded", active=st["active"],
                                enabled=st["enabled"]))
            if out[u].is_failed:
                self.close_gate(u)
        return out

    def act(self, verb, unit):
        self.calls.append((verb, unit))
        st = self.units[unit]
        if verb in ("start", "restart", "start-nowait"):
            self.open_gate(unit)
            st["active"] = "active"
        elif verb == "stop":
            self.close_gate(unit)
            st["active"] = "inactive"
        elif verb == "enable":
            st["enabled"] = "enabled"
        elif verb == "disable":
            st["enabled"] = "disabled"

    def open_gate(self, unit):
        if unit in GATED:
            self.gates.add(unit)

    def close_gate(self, unit):
        self.gates.discard(unit)

    def daemon_reload(self):
        self.reloads += 1

    def fail(self, unit):
        self.units[unit]["active"] = "failed"
