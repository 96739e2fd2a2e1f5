"""nova-compute on the compute nodes: libvirt with the Ceph keys as libvirt secrets, then
nova-compute, as the node agent runs them (start step ``nova-compute``).

- **libvirt**: Debian's monolithic ``libvirtd`` (socket-activated, with
  ``virtlogd``).  ``/etc/libvirt/qemu.conf`` is the agent's: empty on a machine
  of its own (Debian's defaults: the package's file is all comments), and in a
  container ``cgroup_controllers = [ ]`` and ``security_driver = "none"``
  (nspawn mounts the v1 controllers read-only and there is no AppArmor to ask).
- **The Ceph secrets**: libvirt hands the ``client.nova`` and ``client.cinder``
  keys to QEMU for RBD disks.  Each is defined once with the cluster's UUID
  (secrets ``ceph-libvirt-nova``/``-cinder``, the same on every compute node:
  nova.conf's ``rbd_secret_uuid`` and cinder.conf name it) and its value is set
  from a file of mode 0600 removed at once (``virsh secret-set-value --file``),
  so a key never reaches a command line.  A secret already defined with the
  right usage and holding the right value is left alone.
- **nova-compute**: its unit's drop-in runs it on
  ``/etc/nova/nova-compute-node.conf`` (nova.conf's compute half, no database
  credentials; a converged node's controller services keep /etc/nova/nova.conf)
  then ``/etc/nova/nova-compute.conf``: the driver, ``virt_type`` (``kvm`` only
  where a guest kernel was seen running under KVM, :mod:`.kvm`), RBD ephemeral
  disks in pool ``vms``.
  A changed file restarts libvirtd and nova-compute (guests keep running
  across a libvirtd restart).

The check (builtin ``nova-compute``): nova-compute's unit active, and libvirt
answering ``virsh version``.
"""

import logging
import os
import subprocess
import tempfile
from pathlib import Path

from rackforge import errors
from rackforge.nodeagent import health
from rackforge.nodeagent.reconcile import Action

LOG = logging.getLogger(__name__)
LIBVIRTD = "libvirtd.service"
NOVA = "nova-compute.service"
VIRSH = ("virsh", "-c", "qemu:///system")
WORK = "/var/lib/rackforge/nodeagent"         # root's, 0700: the key files live there briefly
#: libvirt secret -> (UUID secret, key secret, Ceph user)
SECRETS = (("ceph-libvirt-nova", "ceph-nova-key", "client.nova"),
           ("ceph-libvirt-cinder", "ceph-cinder-key", "client.cinder"))


class VirshFailed(errors.RackforgeError):
    message = "virsh {what}: {detail}; is libvirtd running ('systemctl status libvirtd')?"
    retryable = True


def secret_xml(uuid, user):
    """A libvirt secret of usage ``ceph`` for Ceph user ``user``.  Not private: the agent
    reads the value back to see whether it needs setting (root and the libvirt group
    only may ask libvirt for it)."""
    return ("<secret ephemeral='no' private='no'>\n"
            "  <uuid>%s</uuid>\n"
            "  <usage type='ceph'>\n"
            "    <name>%s secret</name>\n"
            "  </usage>\n"
            "</secret>\n" % (uuid, user))


class Compute:
    """The ``nova-compute`` step and check of one compute node."""

    def __init__(self, run=subprocess.run, root="/"):
        self.run = run
        self.root = Path(root)

    def virsh(self, *args, check=True, timeout=30):
        argv = [*VIRSH, *args]
        try:
            res = self.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise VirshFailed(what=args[0], detail="no answer within %ds" % timeout) \
                from None
        if check and res.returncode != 0:
            last = (res.stderr or res.stdout or "").strip().splitlines()[-1:] or [""]
            raise VirshFailed(what=args[0], detail="exit %d: %s" % (res.returncode,
                                                                    last[0][:200]))
        return res

    def _with_file(self, text, func):
        """``func(path)`` with ``text`` in a file of mode 0600 that is removed afterwards."""
        work = self.root / WORK.lstrip("/")
        work.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(dir=work, prefix=".libvirt-secret-")   # mode 0600
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            return func(path)
        finally:
            os.unlink(path)

    # -- the libvirt secrets ----------------------------------------------------------------
    def secret_actions(self, secrets):
        """Define each Ceph secret and set its value where libvirt lacks it; the actions."""
        actions = []
        for uuid_name, key_name, user in SECRETS:
            uuid, key = secrets[uuid_name], secrets[key_name]
            shown = self.virsh("secret-dumpxml", uuid, check=False)
            if shown.returncode != 0 or ("%s secret" % user) not in (shown.stdout or ""):
                self._with_file(secret_xml(uuid, user),
                                lambda path: self.virsh("secret-define", "--file", path))
                actions.append(Action("step", "libvirt secret %s" % user, "nova-compute",
                                      "defined as %s" % uuid))
            value = self.virsh("secret-get-value", uuid, check=False)
            if value.returncode == 0 and (value.stdout or "").strip() == key:
                continue
            self._with_file(key, lambda path: self.virsh("secret-set-value", "--secret", uuid,
                                                         "--file", path))
            actions.append(Action("step", "libvirt secret %s" % user, "nova-compute",
                                  "value set"))
        return actions

    # -- start step "nova-compute" ----------------------------------------------------------
    def step(self, ctx):
        svc, systemd = ctx.service, ctx.systemd
        units = list(svc.units)
        states = systemd.states(units)
        if ctx.dry_run:
            if ctx.changed or not states[NOVA].is_active:
                return [Action("step", "nova-compute", svc.name, "would start or restart")]
            return []
        actions = []
        for unit in units:
            if not states[unit].is_enabled:
                systemd.act("enable", unit)
                actions.append(Action("enable", unit, svc.name))
        for unit in [u for u in units if u != NOVA]:      # libvirt first: the secrets
            actions += self._up(systemd, unit, states[unit], ctx.changed, svc.name)
        actions += self.secret_actions(ctx.context["secrets"])
        actions += self._up(systemd, NOVA, states[NOVA], ctx.changed, svc.name)
        return actions

    @staticmethod
    def _up(systemd, unit, state, changed, service):
        if not (state.is_active or state.active == "activating"):
            if state.is_failed:
                systemd.act("reset-failed", unit)
            systemd.act("start", unit)
            return [Action("start", unit, service)]
        if changed and unit.endswith(".service"):
            systemd.act("restart", unit)
            return [Action("restart", unit, service, "its configuration changed")]
        return []

    # -- builtin check "nova-compute" -------------------------------------------------------
    def check(self, view, systemd):
        st = systemd.states([NOVA])[NOVA]
        if not st.is_active:
            return health.Result(health.FAILED, "nova-compute is %s" % st.active)
        try:
            res = self.virsh("version", check=False, timeout=15)
        except VirshFailed as exc:
            return health.Result(health.FAILED, str(exc))
        if res.returncode != 0:
            last = (res.stderr or "").strip().splitlines()[-1:] or ["exit %d" % res.returncode]
            return health.Result(health.FAILED, "libvirt does not answer: %s" % last[0][:200])
        return health.Result(health.OK)
