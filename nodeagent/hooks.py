"""The agent's own code the catalogue refers to by name: start steps, cluster tasks,
cluster conditions and builtin health checks.

A record names them (``start: galera``, ``tasks: [galera-bootstrap]``,
``waits_for: [galera-primary]``, ``health: {type: builtin, name: galera}``);
:func:`names` lists what exists, so the catalogue check refuses a record that
names anything else.  :class:`Hooks` binds them to one node's agent (Galera
and RabbitMQ keep what they saw between passes).
"""

import subprocess
from pathlib import Path

from rackforge.nodeagent import ceph, galera, health, openstack, osd, rabbit
from rackforge.nodeagent import compute, ovn
from rackforge.nodeagent.reconcile import Action

STEP_NAMES = ("galera", "rabbitmq", "sysctl", "ceph-mon", "ceph-mgr", "ceph-osd", "ceph",
              "keystone", "cinder", "nova-cells")
TASK_NAMES = ("galera-bootstrap", "galera-users", "rabbitmq-users", "ceph-bootstrap",
              "ceph-clients", "openstack-databases", "keystone-bootstrap", "keystone-users",
              ) + tuple(openstack.DB_SYNC)
CONDITION_NAMES = ("galera-primary", "ceph-quorum", "nova-conductor")
CHECK_NAMES = ("galera", "rabbitmq", "keepalived", "ceph-mon", "ceph-mgr", "ceph-osd", "ceph",
               "openstack")
# the network and compute side: OVN (nodeagent/ovn.py), libvirt and nova (compute.py)
STEP_NAMES += ("ovn-central", "ovn-controller", "nova-compute")
CHECK_NAMES += ("ovn-central", "ovn-controller", "nova-compute")
SYSCTL_FILE = "/etc/sysctl.d/60-rackforge.conf"


def names():
    return {"steps": STEP_NAMES, "tasks": TASK_NAMES, "conditions": CONDITION_NAMES,
            "checks": CHECK_NAMES}


def sysctl_values(text):
    """``{key: value}`` of a sysctl.d file."""
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


class Hooks:
    def __init__(self, node_id, kv, run=subprocess.run, proc=Path("/proc/sys"), root="/"):
        self.kv = kv
        self.run = run
        self.proc = Path(proc)
        self.root = Path(root)
        self.galera = galera.Galera(node_id, kv, run=run)
        self.rabbit = rabbit.Rabbit(node_id, run=run)
        self.ceph = ceph.CephHooks(node_id, kv, run=run, root=root)
        self.osds = osd.Osds(node_id, kv, run=run, root=root)
        self.openstack = openstack.OpenStack(node_id, kv, run=run, root=root)
        self.STEPS = {"galera": self.galera.step, "rabbitmq": self.rabbit.step,
                      "sysctl": self.sysctl, "ceph-mon": self.ceph.mon_step,
                      "ceph-mgr": self.ceph.mgr_step, "ceph-osd": self.osds.step,
                      "ceph": self.ceph.cluster_step,
                      "keystone": self.openstack.keystone_step,
                      "cinder": self.openstack.cinder_step,
                      "nova-cells": self.openstack.cells_step}
        self.TASKS = {"galera-bootstrap": self.galera.bootstrap,
                      "galera-users": self.galera.users,
                      "rabbitmq-users": self.rabbit.users,
                      "ceph-bootstrap": self.ceph.bootstrap,
                      "ceph-clients": self.ceph.clients,
                      "openstack-databases": self.openstack.databases,
                      "keystone-bootstrap": self.openstack.keystone_bootstrap,
                      "keystone-users": self.openstack.keystone_users}
        self.TASKS.update({name: self.openstack.db_sync(name) for name in openstack.DB_SYNC})
        self.CONDITIONS = {"galera-primary": self.galera_primary,
                           "ceph-quorum": self.ceph_quorum,
                           "nova-conductor": self.nova_conductor}
        self.CHECKS = {"galera": self.galera.check, "rabbitmq": self.rabbit.check,
                       "keepalived": self.keepalived, "ceph-mon": self.ceph.mon_check,
                       "ceph-mgr": self.ceph.mgr_check, "ceph-osd": self.osds.check,
                       "ceph": self.ceph.cluster_check,
                       "openstack": self.openstack.cloud_check}
        self.ovn_central = ovn.Central(node_id, run=run, root=root)
        self.chassis = ovn.Chassis(run=run, root=root)
        self.compute = compute.Compute(run=run, root=root)
        for name, hooks in (("ovn-central", self.ovn_central),
                            ("ovn-controller", self.chassis),
                            ("nova-compute", self.compute)):
            self.STEPS[name], self.CHECKS[name] = hooks.step, hooks.check

    # -- step "sysctl": the file for later boots, the values now ---------------------------
    def sysctl(self, ctx):
        path = self.root / SYSCTL_FILE.lstrip("/")
        actions = []
        for key, value in sysctl_values(path.read_text() if path.exists() else "").items():
            target = self.proc / key.replace(".", "/")
            try:
                current = target.read_text().strip()
            except OSError:
                continue
            if current != value:
                if not ctx.dry_run:
                    target.write_text(value + "\n")
                actions.append(Action("sysctl", key, "sysctl", "%s -> %s" % (current, value)))
        return actions

    # -- conditions --------------------------------------------------------------------------
    def galera_primary(self, view, kv):
        """Some controller's Galera is in a Primary component and synced."""
        if ok_somewhere(kv or self.kv, "mariadb"):
            return True, ""
        return False, "no controller reports Galera synced yet"

    def ceph_quorum(self, view, kv):
        """Some controller's Ceph monitor is in a quorum."""
        if ok_somewhere(kv or self.kv, "ceph-mon"):
            return True, ""
        return False, "no Ceph monitor is in a quorum yet"

    def nova_conductor(self, view, kv):
        """Some controller runs Nova (its conductor answers nova-compute, which otherwise
        blocks its start waiting for one until systemd gives up on it)."""
        if ok_somewhere(kv or self.kv, "nova"):
            return True, ""
        return False, "no controller reports Nova ok yet"

    # -- builtin check "keepalived": running, and whether it holds the VIP ------------------
    def keepalived(self, view, systemd):
        state = systemd.states(["keepalived.service"])["keepalived.service"]
        held = view.vip in local_addresses(self.run) if view.vip else False
        if not state.is_active:
            return health.Result(health.FAILED, "keepalived is %s" % state.active,
                                 {"vip": held})
        return health.Result(health.OK, "", {"vip": held})


def ok_somewhere(kv, service):
    """Whether some node's agent publishes ``service`` ok."""
    return any((services.get(service) or {}).get("state") == health.OK
               for services in health.read_all(kv).values())


def ipv4_addresses(run=subprocess.run):
    """``[(interface, address, prefix)]`` of every IPv4 address on this node."""
    res = run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, timeout=10)
    out = []
    for line in res.stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            address, _, prefix = parts[parts.index("inet") + 1].partition("/")
            out.append((parts[1], address, int(prefix or 32)))
    return out


def local_addresses(run=subprocess.run):
    """Every IPv4 address configured on this node's interfaces."""
    return {address for _, address, _ in ipv4_addresses(run)}
