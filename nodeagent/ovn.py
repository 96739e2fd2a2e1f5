"""OVN, the network of the cloud (ML2/OVN): the central databases on the controllers, and
Open vSwitch with ovn-controller on the compute nodes, as the node agent runs them.

- **ovn-central** (start step ``ovn-central``): the northbound and southbound
  databases clustered with RAFT on every controller, each bound to the node's
  management address (NB :data:`NB_PORT`, SB :data:`SB_PORT`, RAFT
  :data:`NB_RAFT`/:data:`SB_RAFT`), and ovn-northd on each, active/standby by
  its own lock in the southbound database.  The step makes a database file
  only where there is none, the way the Juju charm does, with ``ovsdb-tool``
  before Debian's ``ovn-ctl`` starts it (given the local RAFT address and no
  remote one, ``ovn-ctl`` starts a clustered file as it is): the first
  controller (slot 0) creates the cluster (``create-cluster``) while no other
  controller reports ovn-central ok; every other controller, or a first
  controller whose database was lost while the others run, joins
  (``join-cluster`` naming every other controller: any member that answers
  lets it in).  A controller that has a database starts
  at once, so a whole-rack power loss waits for nobody: RAFT elects a leader
  once a majority is up.  Clients name every controller
  (:func:`remotes`: ``tcp:A:6641,tcp:B:6641,...``).
- **ovn-controller** (start step ``ovn-controller``): Open vSwitch, then the
  chassis settings in the local database (``ovs-vsctl``, only those that
  differ): ``system-id`` and ``hostname`` are the node's name (nova's ``host``:
  a port is bound to the chassis whose hostname nova names), the southbound
  list, Geneve from the management address, and with a provider interface the
  bridge mapping ``PHYSNET:br-provider`` (the interface as its port) and
  ``enable-chassis-as-gw``; and a manager on loopback (:data:`LOCAL_MANAGER`)
  for nova-compute's os-vif, which runs as a user Debian's ``db.sock``
  (``srwxr-x--- root root``) refuses.  Debian's ``ovs-ctl`` sets ``system-id``
  again at every start from ``/etc/openvswitch/system-id.conf``, which the
  record therefore renders too.
- **The datapath**: the kernel's where the ``openvswitch`` module is loaded or
  loads, else Open vSwitch's userspace ``netdev`` datapath (a container, or a
  kernel without the module: ovs-vswitchd does not fall back by itself, and a
  ``system`` bridge fails to open), set for every bridge OVN uses; said once in
  the journal.  In userspace, Geneve to other chassis leaves through an OVS
  bridge that holds the encapsulation address; the management address stays
  where the network configuration put it, so that is the network's to arrange.

Checks: builtin ``ovn-central`` (both databases: a member of a cluster that
has a leader; ovn-northd running) and ``ovn-controller`` (connected to the
southbound database).
"""

import json
import logging
import subprocess
from pathlib import Path

from rackforge import errors
from rackforge.nodeagent import health
from rackforge.nodeagent.reconcile import Action, Waiting

LOG = logging.getLogger(__name__)
NB_PORT, SB_PORT, NB_RAFT, SB_RAFT = 6641, 6642, 6643, 6644
RUN_DIR = "/var/run/ovn"
DB_DIR = "/var/lib/ovn"
SCHEMA_DIR = "/usr/share/ovn"
#: key -> (database name, file, schema, RAFT port, control socket)
DATABASES = {
    "nb": ("OVN_Northbound", DB_DIR + "/ovnnb_db.db", SCHEMA_DIR + "/ovn-nb.ovsschema",
           NB_RAFT, RUN_DIR + "/ovnnb_db.ctl"),
    "sb": ("OVN_Southbound", DB_DIR + "/ovnsb_db.db", SCHEMA_DIR + "/ovn-sb.ovsschema",
           SB_RAFT, RUN_DIR + "/ovnsb_db.ctl"),
}
CENTRAL_UNITS = ("ovn-ovsdb-server-nb.service", "ovn-ovsdb-server-sb.service",
                 "ovn-northd.service", "ovn-central.service")
NORTHD = "ovn-northd.service"
OVS = "openvswitch-switch.service"
CONTROLLER = "ovn-controller.service"
INTEGRATION_BRIDGE = "br-int"
PROVIDER_BRIDGE = "br-provider"
#: OVSDB on loopback for nova-compute's os-vif (user nova may not open Debian's db.sock,
#: srwxr-x--- root:root); the metadata agent runs as root and uses the socket
LOCAL_MANAGER = "ptcp:6640:127.0.0.1"
#: oneshot units that only pull the daemons in (PartOf them): started, never restarted
WRAPPERS = ("ovn-central.service", "ovn-host.service")
#: the chassis keys of Open_vSwitch's external_ids that this module owns
CHASSIS_KEYS = ("system-id", "hostname", "ovn-remote", "ovn-encap-type", "ovn-encap-ip",
                "ovn-bridge-datapath-type", "ovn-bridge-mappings", "ovn-cms-options")


class OvnFailed(errors.RackforgeError):
    message = "ovn {what}: {detail}"
    retryable = True


def remotes(controllers, port):
    """The clients' connection list: ``tcp:ADDRESS:PORT`` of every controller, in order."""
    return ",".join("tcp:%s:%d" % (c["address"] if isinstance(c, dict) else c.address, port)
                    for c in controllers)


def run_checked(run, argv, what, stdin=None, timeout=30):
    """``argv`` run; its standard output, or :class:`OvnFailed` with its last line."""
    try:
        res = run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise OvnFailed(what=what, detail="no answer within %ds" % timeout) from None
    if res.returncode != 0:
        last = (res.stderr or res.stdout or "").strip().splitlines()[-1:] or [""]
        raise OvnFailed(what=what, detail="exit %d: %s" % (res.returncode, last[0][:200]))
    return res.stdout or ""


def unit_actions(ctx, units, restart):
    """Enable ``units``; start those down; restart (services only) when ``restart``."""
    systemd, name, actions = ctx.systemd, ctx.service.name, []
    states = systemd.states(list(units))
    for unit in units:
        st = states[unit]
        if not st.is_enabled:
            actions.append(Action("enable", unit, name))
            if not ctx.dry_run:
                systemd.act("enable", unit)
        if not (st.is_active or st.active == "activating"):
            actions.append(Action("start", unit, name, "it had failed" if st.is_failed
                                  else ""))
            if not ctx.dry_run:
                if st.is_failed:
                    systemd.act("reset-failed", unit)
                systemd.act("start", unit)
        elif restart and unit.endswith(".service") and unit not in WRAPPERS:
            actions.append(Action("restart", unit, name, "its configuration changed"))
            if not ctx.dry_run:
                systemd.act("restart", unit)
    return actions


# -- the central databases --------------------------------------------------------------------
def raft_plan(view, peers_ok, have):
    """What to do for a missing database on this controller: ``("create", [])`` or
    ``("join", [remote RAFT addresses...])`` (ports added by the caller); raises
    :class:`Waiting` when neither may happen yet.  ``peers_ok``: the other controllers
    whose ovn-central is ok; ``have``: whether this node already has the other database
    (a half-made pair is finished the same way it was begun)."""
    others = [c for c in view.controllers if c.id != view.node_id]
    first = view.controllers[0] if view.controllers else None
    if first is not None and first.id == view.node_id and not peers_ok:
        return "create", []
    if peers_ok or have:
        return "join", [c.address for c in others]
    raise Waiting("waiting for %s, the first controller, to create the OVN databases"
                  % (first.name if first else "a controller"))


def cluster_status(text):
    """``{status, role, leader, servers}`` from ``ovn-appctl cluster/status`` text."""
    out = {"status": "", "role": "", "leader": "", "servers": 0}
    in_servers = False
    for line in text.splitlines():
        if in_servers:
            if line.startswith((" ", "\t")) and line.strip():
                out["servers"] += 1
                continue
            in_servers = False
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key in ("status", "role", "leader"):
            out[key] = value.strip()
        elif key == "servers":
            in_servers = True
    return out


class Central:
    """The controllers' OVN databases: the ``ovn-central`` step and check."""

    def __init__(self, node_id, run=subprocess.run, root="/"):
        self.node_id = node_id
        self.run = run
        self.root = Path(root)

    def path(self, p):
        return self.root / p.lstrip("/")

    def peers_ok(self, view, kv):
        """The other controllers whose agent publishes ovn-central ok."""
        states = health.read_all(kv) if kv is not None else {}
        return [c for c in view.controllers if c.id != view.node_id
                and ((states.get(c.id) or {}).get("ovn-central") or {}).get("state")
                == health.OK]

    def make_argv(self, key, view, plan, peers):
        """The ``ovsdb-tool`` command line that makes database ``key`` here."""
        name, path, schema, port, _ = DATABASES[key]
        local = "tcp:%s:%d" % (view.address, port)
        if plan == "create":
            return ["ovsdb-tool", "create-cluster", str(self.path(path)),
                    str(self.path(schema)), local]
        return ["ovsdb-tool", "join-cluster", str(self.path(path)), name, local] + \
            ["tcp:%s:%d" % (address, port) for address in peers]

    def step(self, ctx):
        view, actions = ctx.view, []
        missing = [k for k, db in DATABASES.items() if not self.path(db[1]).exists()]
        if missing:
            plan, peers = raft_plan(view, self.peers_ok(view, ctx.kv),
                                    have=len(missing) < len(DATABASES))
            if plan == "join" and not peers:
                raise Waiting("no other controller to join the OVN databases through")
            for key in missing:
                argv = self.make_argv(key, view, plan, peers)
                if not ctx.dry_run:
                    self.path(DB_DIR).mkdir(mode=0o755, parents=True, exist_ok=True)
                    run_checked(self.run, argv, "ovsdb-tool %s %s" % (argv[1], key))
                what = ("created the %s cluster" if plan == "create"
                        else "joined the %s cluster through " + ", ".join(peers))
                actions.append(Action("step", "ovn-central", "ovn-central",
                                      what % DATABASES[key][0]))
                LOG.info("ovn: %s", actions[-1].detail)
        return actions + unit_actions(ctx, ctx.service.units, ctx.changed)

    def db_status(self, key):
        name, _, _, _, ctl = DATABASES[key]
        return cluster_status(run_checked(self.run, ["ovn-appctl", "-t", ctl, "cluster/status",
                                                     name], "cluster/status %s" % name,
                                          timeout=10))

    def check(self, view, systemd):
        detail, problems, pending = {}, [], []
        for key, db in DATABASES.items():
            try:
                st = self.db_status(key)
            except OvnFailed as exc:
                return health.Result(health.FAILED, str(exc))
            detail[key] = {"role": st["role"], "servers": st["servers"]}
            if st["status"].startswith("joining"):
                pending.append("%s is joining its cluster" % db[0])
            elif st["status"] != "cluster member":
                problems.append("%s: %s" % (db[0], st["status"] or "no status"))
            elif st["leader"] in ("", "unknown"):
                problems.append("%s: its cluster has no leader" % db[0])
        if problems:
            return health.Result(health.FAILED, "; ".join(problems), detail)
        if pending:
            return health.Result(health.PENDING, "; ".join(pending), detail)
        northd = systemd.states([NORTHD])[NORTHD]
        if not northd.is_active:
            return health.Result(health.DEGRADED, "ovn-northd is %s (another controller's "
                                 "may serve)" % northd.active, detail)
        return health.Result(health.OK, "", detail)


# -- the chassis -------------------------------------------------------------------------------
def ovsdb_map(data):
    """A ``["map", [[k, v], ...]]`` of ``ovs-vsctl --format=json --data=json`` as a dict."""
    if isinstance(data, list) and len(data) == 2 and data[0] == "map":
        return {k: v for k, v in data[1]}
    return {}


def chassis_ids(view, settings, datapath):
    """The external_ids this chassis needs (the keys of :data:`CHASSIS_KEYS` it sets)."""
    provider = settings.get("provider") or {}
    ids = {"system-id": view.name, "hostname": view.name,
           "ovn-remote": remotes(view.controllers, SB_PORT),
           "ovn-encap-type": "geneve", "ovn-encap-ip": view.address}
    if datapath == "netdev":
        ids["ovn-bridge-datapath-type"] = "netdev"
    if provider.get("interface"):
        ids["ovn-bridge-mappings"] = "%s:%s" % (provider.get("physnet", "physnet1"),
                                                PROVIDER_BRIDGE)
        ids["ovn-cms-options"] = "enable-chassis-as-gw"
    return ids


def vsctl_argv(current, wanted):
    """The ``ovs-vsctl`` command lines that make external_ids ``current`` hold ``wanted``
    (the keys of :data:`CHASSIS_KEYS` not wanted are removed)."""
    argv = []
    changed = sorted(k for k, v in wanted.items() if current.get(k) != v)
    if changed:     # values quoted as OVSDB strings: a list holds ':' and ','
        argv.append(["ovs-vsctl", "set", "Open_vSwitch", "."]
                    + ["external_ids:%s=%s" % (k, json.dumps(wanted[k])) for k in changed])
    stale = sorted(k for k in CHASSIS_KEYS if k in current and k not in wanted)
    if stale:
        argv.append(["ovs-vsctl", "remove", "Open_vSwitch", ".", "external_ids"] + stale)
    return argv


class Chassis:
    """Open vSwitch and ovn-controller on a compute node: the step and the check."""

    def __init__(self, run=subprocess.run, root="/"):
        self.run = run
        self.root = Path(root)
        self._datapath = None

    def vsctl(self, *args):
        return run_checked(self.run, ["ovs-vsctl", "--timeout=10", *args],
                           "ovs-vsctl " + " ".join(args[:2]))

    def datapath(self):
        """``"system"`` (the kernel's) where the openvswitch module is loaded or loads,
        else ``"netdev"`` (Open vSwitch's userspace datapath); decided and said once."""
        if self._datapath is None:
            loaded = (self.root / "sys/module/openvswitch").exists()
            if not loaded and (self.root / "proc/modules").exists():
                try:
                    loaded = self.run(["modprobe", "openvswitch"], capture_output=True,
                                      text=True, timeout=30).returncode == 0
                except (OSError, subprocess.TimeoutExpired):
                    loaded = False
            self._datapath = "system" if loaded else "netdev"
            if loaded:
                LOG.info("ovn: Open vSwitch uses the kernel datapath (module openvswitch)")
            else:
                LOG.warning("ovn: no openvswitch kernel module here: Open vSwitch uses its "
                            "userspace datapath (netdev), slower, for every OVN bridge")
        return self._datapath

    def bridges(self):
        """``{bridge: {"datapath_type": ..., "ports": [...]}}`` of the local database."""
        table = json.loads(self.vsctl("--format=json", "--data=json",
                                      "--columns=name,datapath_type", "list", "Bridge"))
        out = {}
        for name, dp_type in table.get("data") or []:
            out[name] = {"datapath_type": dp_type if isinstance(dp_type, str) else ""}
        for name in out:
            out[name]["ports"] = self.vsctl("list-ports", name).split()
        return out

    def external_ids(self):
        table = json.loads(self.vsctl("--format=json", "--data=json", "--columns=external_ids",
                                      "list", "Open_vSwitch"))
        rows = table.get("data") or [[["map", []]]]
        return ovsdb_map(rows[0][0])

    def plan(self, view, settings):
        """The ``ovs-vsctl`` command lines (each without ``--timeout``) this chassis needs
        now, from what the local database holds."""
        datapath = self.datapath()
        wanted = chassis_ids(view, settings, datapath)
        cmds = vsctl_argv(self.external_ids(), wanted)
        bridges = self.bridges()
        dp_type = "netdev" if datapath == "netdev" else "system"
        for bridge in (INTEGRATION_BRIDGE, PROVIDER_BRIDGE):
            # ovn-controller makes br-int with ovn-bridge-datapath-type, but one made
            # before that was set keeps the type it was made with
            if bridge in bridges and (bridges[bridge]["datapath_type"] or "system") != dp_type:
                cmds.append(["ovs-vsctl", "set", "Bridge", bridge, "datapath_type=" + dp_type])
        managers = self.vsctl("get-manager").split()
        if LOCAL_MANAGER not in managers:
            cmds.append(["ovs-vsctl", "set-manager", *managers, LOCAL_MANAGER])
        interface = (settings.get("provider") or {}).get("interface")
        if interface:
            if PROVIDER_BRIDGE not in bridges:
                cmds.append(["ovs-vsctl", "--may-exist", "add-br", PROVIDER_BRIDGE, "--", "set",
                             "Bridge", PROVIDER_BRIDGE, "datapath_type=" + dp_type])
            if interface not in (bridges.get(PROVIDER_BRIDGE) or {}).get("ports", []):
                cmds.append(["ovs-vsctl", "--may-exist", "add-port", PROVIDER_BRIDGE,
                             interface])
        return cmds

    def step(self, ctx):
        view = ctx.view
        settings = ctx.context.get("settings") or {}
        interface = (settings.get("provider") or {}).get("interface")
        if interface and not (self.root / "sys/class/net" / interface).exists():
            raise OvnFailed(what="provider interface", detail="%s is not on this node; fix "
                            "the profile's provider interface" % interface)
        actions = unit_actions(ctx, [OVS], ctx.changed)
        if ctx.dry_run and actions:
            return actions + [Action("step", "ovn-controller", "ovn-controller",
                                     "would set the chassis in Open vSwitch")]
        for argv in self.plan(view, settings):
            if not ctx.dry_run:
                self.vsctl(*argv[1:])
            actions.append(Action("step", "ovn-controller", "ovn-controller",
                                  " ".join(argv[1:])))
        if interface:
            actions += self.link_up(interface, ctx.dry_run)
        return actions + unit_actions(ctx, [u for u in ctx.service.units if u != OVS],
                                      ctx.changed)

    def link_up(self, interface, dry_run):
        """The provider interface up (it carries no address: OVS owns it)."""
        try:
            flags = int((self.root / "sys/class/net" / interface / "flags").read_text(), 16)
        except (OSError, ValueError):
            flags = 0
        if flags & 1:
            return []
        if not dry_run:
            run_checked(self.run, ["ip", "link", "set", "dev", interface, "up"],
                        "ip link set %s up" % interface)
        return [Action("step", "ovn-controller", "ovn-controller", "%s up" % interface)]

    def check(self, view, systemd):
        states = systemd.states([OVS, CONTROLLER])
        for unit in (OVS, CONTROLLER):
            if not states[unit].is_active:
                return health.Result(health.FAILED, "%s is %s" % (unit, states[unit].active))
        try:
            status = run_checked(self.run, ["ovn-appctl", "-t", "ovn-controller",
                                            "connection-status"], "connection-status",
                                 timeout=10).strip()
        except OvnFailed as exc:
            return health.Result(health.FAILED, str(exc))
        if status != "connected":
            return health.Result(health.FAILED, "ovn-controller is %s to the southbound "
                                 "database (%s)" % (status or "not connected",
                                                    remotes(view.controllers, SB_PORT)))
        return health.Result(health.OK, "", {"datapath": self.datapath()})
