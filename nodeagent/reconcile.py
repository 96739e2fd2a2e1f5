"""One reconcile pass: the node's desired services made real, and only what differs acted on.

Level-triggered, in the manner of a Kubernetes controller: each pass compares
the whole desired state (the services of this node's roles, in the
catalogue's order) with what it observes, and acts on the difference:

1. secrets this node may create or grant (:mod:`.keyring`);
2. for each desired service: wait for its secrets; render its
   configuration (written only when it changed); wait for the local services
   it requires and its conditions; run its cluster tasks (one controller
   claims each; the others wait for it to be done); then enable and start its
   units, or restart them when their inputs changed (or let its start step do
   it, for a service systemd alone cannot start: Galera).  A restart owed is
   recorded on disk (:data:`OWED`) before the file that owes it is written and
   cleared once paid, so a service that waited, or an agent that restarted in
   between, still restarts for a change it already wrote;
3. stop and disable the units of the catalogue's services this node does not
   run (never any other unit).

A service that cannot go on yet is *pending*, with the reason, and the others
go on: one stuck service never stalls the pass.  A pass with nothing to do
does nothing: the tests count its actions.  With ``dry_run`` nothing is
written, started or claimed; the actions say what would be.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

from rackforge import errors
from rackforge.fileutil import atomic_write, make_dirs
from rackforge.nodeagent import health as health_mod
from rackforge.nodeagent import render

LOG = logging.getLogger(__name__)
SYSTEMD_DIRS = ("/etc/systemd/", "/usr/lib/systemd/", "/run/systemd/")
OWED = "/var/lib/rackforge/nodeagent/restart-owed"   # a file per service: reload or restart


def worse(a, b):
    """Of two debts (None, "reload", "restart"), the one that pays both."""
    return "restart" if "restart" in (a, b) else (a or b)


class Waiting(Exception):
    """Raised by a start step that cannot go on yet: the service is pending, with ``why``."""

    def __init__(self, why):
        super().__init__(why)
        self.why = why


@dataclass(frozen=True)
class Action:
    kind: str           # write, enable, disable, start, stop, restart, step, task, secret
    target: str
    service: str = ""
    detail: str = ""

    def line(self):
        text = "%s %s" % (self.kind, self.target)
        if self.service and self.service != self.target:
            text += " (%s)" % self.service
        return text + (": %s" % self.detail if self.detail else "")


@dataclass
class Outcome:
    actions: list = field(default_factory=list)
    pending: dict = field(default_factory=dict)     # service -> why
    errors: dict = field(default_factory=dict)      # service -> one line
    running: list = field(default_factory=list)     # services whose units were brought up


@dataclass
class StepContext:
    """What a start step (:data:`hooks.STEPS`) gets: it brings its service up, idempotently,
    and returns its actions (or raises a RackforgeError)."""
    service: object
    view: object
    systemd: object
    kv: object
    tasks: object
    changed: bool
    dry_run: bool
    context: dict


class Reconciler:
    def __init__(self, catalogue, systemd, hooks, root="/", dry_run=False, templates=None):
        self.catalogue = catalogue
        self.systemd = systemd
        self.hooks = hooks
        self.root = root
        self.dry_run = dry_run
        self.env = render.environment(templates) if templates else render.environment()

    def desired(self, view):
        """The services this node runs, in start order: those of its roles, whose units
        this image carries (a profile without the control plane has none of its
        units), that need a VIP only where the cluster has one, and OpenStack's only where
        the node runs it (``settings["openstack"]``: its image has it, its profile wants it)."""
        cloud = bool(view.settings.get("openstack"))
        wanted = [s for s in self.catalogue.for_roles(view.roles)
                  if (view.vip or not s.vip) and (cloud or not s.openstack)]
        units = sorted({u for s in wanted for u in s.units})
        states = self.systemd.states(units)
        out, names = [], set()
        for s in wanted:            # in order: what a service requires comes before it
            rendered = {c.path.rsplit("/", 1)[-1] for c in s.configs}    # its own unit files
            if all(states[u].exists or u in rendered for u in s.units) \
                    and set(s.requires) <= names:
                out.append(s)
                names.add(s.name)
        return out

    def run(self, view, keyring, tasks, trackers, kv=None):
        """One pass; returns an :class:`Outcome`."""
        out = Outcome()
        desired = self.desired(view)
        if keyring is not None and not self.dry_run:
            needed = {name for svc in desired for name in svc.secrets}
            out.actions += [Action("secret", line) for line in keyring.reconcile(needed)]
        for svc in desired:
            try:
                self._service(svc, view, keyring, tasks, trackers, kv, out)
            except errors.RackforgeError as exc:
                out.errors[svc.name] = str(exc)
            except Exception as exc:        # noqa: BLE001 - one service never stops the pass
                LOG.exception("service %s: unexpected error", svc.name)
                out.errors[svc.name] = "unexpected %s: %s (the detail is in the journal)" % (
                    exc.__class__.__name__, str(exc)[:200])
        wanted = {s.name for s in desired}
        for svc in self.catalogue.services:
            if svc.name not in wanted:
                self._remove(svc, out)
        return out

    # -- one desired service -------------------------------------------------------------
    def _service(self, svc, view, keyring, tasks, trackers, kv, out):
        values, versions = keyring.read(svc.secrets) if keyring is not None else ({}, {})
        missing = [s for s in svc.secrets if s not in values]
        if missing:
            out.pending[svc.name] = "waiting for secret %s" % missing[0]
            return
        context = view.context(values)
        changed = worse(self._configs(svc, context, out), self._restart_owed(svc))
        for dep in svc.requires:
            tracker = trackers.get(dep)
            if tracker is None or tracker.state not in (health_mod.OK, health_mod.DEGRADED):
                out.pending[svc.name] = "waiting for %s to be ok" % dep
                return
        for condition in svc.waits_for:
            met, why = self.hooks.CONDITIONS[condition](view, kv)
            if not met:
                out.pending[svc.name] = "waiting for %s: %s" % (condition, why)
                return
        for task in svc.tasks:
            inputs = self.catalogue.task_inputs(task, versions)
            why = self._task(task, svc, view, tasks, context, out, inputs)
            if why:
                out.pending[svc.name] = why
                return
        states = self.systemd.states(list(svc.units))
        down = any(not (states[u].is_active or states[u].active == "activating")
                   for u in svc.units)
        tracker = trackers.get(svc.name)
        if tracker is not None and not changed \
                and tracker.holds_down(svc.start == "systemd", down):
            return
        for unit in svc.units:
            st = states[unit]
            # a service with a start step starts when the agent decides, not at boot
            if not st.is_enabled and svc.start == "systemd":
                self._act(out, "enable", unit, svc)
        if svc.start != "systemd":
            step = self.hooks.STEPS[svc.start]
            try:
                out.actions += step(StepContext(service=svc, view=view, systemd=self.systemd,
                                                kv=kv, tasks=tasks, changed=bool(changed),
                                                dry_run=self.dry_run, context=context))
            except Waiting as wait:
                out.pending[svc.name] = wait.why
                return
            self._restart_paid(svc)
            out.running.append(svc.name)
            return
        for unit in svc.units:
            st = states[unit]
            if not st.is_active:
                self._act(out, "start", unit, svc)
            elif changed:
                self._act(out, changed, unit, svc, "its configuration changed")
        self._restart_paid(svc)
        out.running.append(svc.name)

    # -- a restart owed: recorded before the new files, paid once the units run them ------
    def _owed(self, svc):
        return Path(self.root, OWED.lstrip("/"), svc.name)

    def _owe(self, svc, how):
        if svc.units:                   # intent before the side effect
            make_dirs(self._owed(svc).parent, 0o700)
            atomic_write(self._owed(svc), worse(self._restart_owed(svc), how), mode=0o600)

    def _restart_owed(self, svc):
        """What the units of ``svc`` owe for files changed in an earlier pass (or before
        the agent restarted): None, "reload" or "restart"."""
        try:
            return self._owed(svc).read_text().strip() or "restart"
        except FileNotFoundError:
            return None

    def _restart_paid(self, svc):
        if not self.dry_run:
            self._owed(svc).unlink(missing_ok=True)

    def _configs(self, svc, context, out):
        """Write what differs; returns what the service's units owe for it: None,
        "reload", or "restart" (a unit file changed, or the service cannot reload)."""
        owed, units_changed = None, False
        for config in svc.configs:
            text = render.render(self.env, config, context)
            path = "%s/%s" % (self.root.rstrip("/"), config.path.lstrip("/"))
            unit_file = config.path.startswith(SYSTEMD_DIRS)
            how = "reload" if svc.reload and not unit_file else "restart"
            if self.dry_run:
                if render.differs(path, text, config, None):
                    out.actions.append(Action("write", config.path, svc.name))
                    owed = worse(owed, how)
            elif render.restart_free_change(path, text, config):
                if render.write(self.root, config, text):
                    out.actions.append(Action("write", config.path, svc.name,
                                              "no restart needed"))
            elif render.write(self.root, config, text,
                              before=lambda how=how: self._owe(svc, how)):
                out.actions.append(Action("write", config.path, svc.name))
                owed = worse(owed, how)
                units_changed |= unit_file
        if units_changed:
            self.systemd.daemon_reload()
            out.actions.append(Action("daemon-reload", "systemd", svc.name))
        return owed

    def _task(self, name, svc, view, tasks, context, out, inputs):
        """None when task ``name`` is done (for ``inputs``: a task done for an older
        version of a secret it applies is run again, and nobody waits for that); else
        why the service waits."""
        if tasks is None:
            return "waiting for task %s (no registry)" % name
        done = tasks.done(name)
        if done is not None and done.holds_for(inputs):
            return None
        again = done is not None
        if not view.is_controller:
            return None if again else "waiting for task %s on a controller" % name
        if self.dry_run:
            out.actions.append(Action("task", name, svc.name, "would run it again for a "
                                      "rotated secret" if again else "would claim it"))
            return None if again else "task %s not done yet" % name
        func = self.hooks.TASKS[name]
        if tasks.run(name, func, view, self.systemd, context, inputs=inputs) == "done":
            out.actions.append(Action("task", name, svc.name, "done here again, for a "
                                      "rotated secret" if again else "done here"))
            return None
        if again:
            return None
        return "waiting for task %s (claimed by %s)" % (name, tasks.claimant(name))

    # -- a service this node does not run ------------------------------------------------
    def _remove(self, svc, out):
        states = self.systemd.states(list(svc.units))
        for unit in reversed(svc.units):
            st = states[unit]
            if not st.exists:
                continue
            if st.is_active:
                self._act(out, "stop", unit, svc, "not a service of this node's roles")
            if st.enabled == "enabled":
                self._act(out, "disable", unit, svc)

    def _act(self, out, verb, unit, svc, detail=""):
        out.actions.append(Action(verb, unit, svc.name, detail))
        if not self.dry_run:
            self.systemd.act(verb, unit)
