"""OVN as the node agent runs it: the central databases' files and the RAFT create-or-join
choice, the chassis settings in Open vSwitch (exact ``ovs-vsctl`` commands against an
OVSDB in memory), the kernel-or-userspace datapath choice, the checks read from the
answers Debian 13's OVN 25.03 gave in an nspawn node, and the rendered files."""

import configparser
import json
import subprocess
from types import SimpleNamespace

import pytest
from fakesystemd import FakeSystemd

from rackforge.kvstore import MemoryKV
from rackforge.nodeagent import catalogue, health, hooks, keyring, ovn, render
from rackforge.nodeagent.reconcile import StepContext, Waiting
from rackforge.nodeagent.view import Peer, View

CONTROLLERS = [Peer("n1", "node1", "10.0.0.11", 0), Peer("n2", "node2", "10.0.0.12", 1),
               Peer("n3", "node3", "10.0.0.13", 2)]
COMPUTE = Peer("n4", "node4", "10.0.0.14")
PROVIDER = {"interface": "prov0", "physnet": "physnet1"}
SB = "tcp:10.0.0.11:6642,tcp:10.0.0.12:6642,tcp:10.0.0.13:6642"
# ovn-appctl -t /var/run/ovn/ovnnb_db.ctl cluster/status OVN_Northbound, OVN 25.03 (trimmed)
STATUS = """edf4
Name: OVN_Northbound
Cluster ID: 52c2 (52c203b9-88c6-48bd-88f5-12ff0fc841ca)
Server ID: edf4 (edf4d832-0922-4856-9d80-fc6938909a23)
Address: tcp:10.0.0.11:6643
Status: cluster member
Role: leader
Term: 1
Leader: self
Vote: self

Election timer: 1000
Log: [2, 5]
Connections: ->0000 <-1a2b
Disconnections: 0
Servers:
    edf4 (edf4 at tcp:10.0.0.11:6643) (self) next_index=2 match_index=4
    1a2b (1a2b at tcp:10.0.0.12:6643) next_index=5 match_index=4
"""


def view(node="n1", roles=("controller",), vip="10.0.0.100", provider=None):
    me = next((p for p in CONTROLLERS if p.id == node), COMPUTE)
    return View(node_id=node, name=me.name, address=me.address, roles=set(roles),
                state="active", cluster={"name": "rack", "vip": vip} if vip else {"name": "r"},
                controllers=CONTROLLERS, nodes=CONTROLLERS + [COMPUTE],
                facts={"interface": "eth0", "prefix": 24, "cpus": 4, "memory_mib": 16384},
                settings={"provider": provider or {}, "openstack": {"workers": 1}})


def secrets():
    cat = catalogue.load(**hooks.names())
    return {name: keyring.generate(s).decode() for name, s in cat.secrets.items()}


def rendered(service, v, values=None):
    cat = catalogue.load(**hooks.names())
    context = v.context(values or secrets())
    context["node"].update(kvm=False, container="")     # facts view.py is to pass on
    env = render.environment()
    return {c.path: render.render(env, c, context) for c in cat.by_name[service].configs}


def ctx(svc, v, systemd, kv=None, changed=False, dry_run=False):
    return StepContext(service=svc, view=v, systemd=systemd, kv=kv, tasks=None,
                       changed=changed, dry_run=dry_run, context=v.context({}))


# -- the catalogue and its files ------------------------------------------------------------
def test_records_run_on_their_roles_with_registered_steps_and_checks():
    cat = catalogue.load(**hooks.names())
    assert cat.by_name["ovn-central"].roles == ("controller",)
    assert cat.by_name["ovn-central"].start == "ovn-central"
    for name in ("ovn-controller", "neutron-ovn-metadata-agent"):
        assert cat.by_name[name].roles == ("compute",)
    assert "ovn-controller" in cat.by_name["neutron-ovn-metadata-agent"].requires
    bound = hooks.Hooks("n1", MemoryKV(), run=lambda *a, **k: None)
    for name in ("ovn-central", "ovn-controller"):
        assert name in bound.STEPS and name in bound.CHECKS


def test_central_files_bind_the_management_address_and_list_every_controller():
    files = rendered("ovn-central", view("n2"))
    opts = files["/etc/default/ovn-central"]
    for flag in ("--db-nb-addr=10.0.0.12", "--db-nb-port=6641", "--db-sb-addr=10.0.0.12",
                 "--db-sb-port=6642", "--db-nb-cluster-local-addr=10.0.0.12",
                 "--db-nb-cluster-local-port=6643", "--db-sb-cluster-local-addr=10.0.0.12",
                 "--db-sb-cluster-local-port=6644", "--db-nb-create-insecure-remote=yes"):
        assert flag in opts
    assert "remote-addr" not in opts and "0.0.0.0" not in opts     # files made by the agent
    northd = files["/etc/default/ovn-northd"]
    assert "--ovn-northd-nb-db=tcp:10.0.0.11:6641,tcp:10.0.0.12:6641,tcp:10.0.0.13:6641 " \
           "--ovn-northd-sb-db=%s\"" % SB in northd
    dropin = files["/etc/systemd/system/ovn-northd.service.d/50-rackforge.conf"]
    assert "EnvironmentFile=\nEnvironmentFile=-/etc/default/ovn-northd" in dropin
    cat = catalogue.load(**hooks.names())
    free = {c.path: c.restart_free for c in cat.by_name["ovn-central"].configs}
    assert free["/etc/default/ovn-northd"] == ("OVN_CTL_OPTS",)   # a joining controller
    assert free["/etc/default/ovn-central"] == ()                  # restarts nothing


def test_clients_name_every_controller():
    assert ovn.remotes(CONTROLLERS, ovn.SB_PORT) == SB
    assert ovn.remotes([vars(p) for p in CONTROLLERS], ovn.NB_PORT) == SB.replace("6642", "6641")


def test_metadata_agent_reaches_nova_through_the_vip_or_the_first_controller():
    values = secrets()
    files = rendered("neutron-ovn-metadata-agent", view("n4", ("compute",)), values)
    parser = configparser.RawConfigParser(interpolation=None)
    parser.read_string(files["/etc/neutron/neutron_ovn_metadata_agent.ini"])
    assert parser["DEFAULT"]["nova_metadata_host"] == "10.0.0.100"
    assert parser["DEFAULT"]["nova_metadata_port"] == "8775"
    assert parser["DEFAULT"]["metadata_proxy_shared_secret"] == values["metadata-secret"]
    assert parser["ovn"]["ovn_sb_connection"] == SB
    assert parser["ovs"]["ovsdb_connection"] == "unix:/var/run/openvswitch/db.sock"
    assert parser["agent"]["root_helper"] == "sudo neutron-rootwrap /etc/neutron/rootwrap.conf"
    novip = rendered("neutron-ovn-metadata-agent", view("n4", ("compute",), vip=None))
    assert "nova_metadata_host = 10.0.0.11\n" in novip[
        "/etc/neutron/neutron_ovn_metadata_agent.ini"]
    cat = catalogue.load(**hooks.names())
    config = cat.by_name["neutron-ovn-metadata-agent"].configs[0]
    assert (config.mode, config.group) == (0o640, "neutron")
    assert rendered("ovn-controller", view("n4", ("compute",)))[
        "/etc/openvswitch/system-id.conf"] == "node4\n"


# -- RAFT: create or join ---------------------------------------------------------------------
def test_the_first_controller_creates_and_the_others_join_through_every_other():
    assert ovn.raft_plan(view("n1"), [], have=False) == ("create", [])
    with pytest.raises(Waiting, match="node1, the first controller"):
        ovn.raft_plan(view("n2"), [], have=False)
    assert ovn.raft_plan(view("n2"), [CONTROLLERS[0]], have=False) == (
        "join", ["10.0.0.11", "10.0.0.13"])
    # a first controller whose database was lost while the others run joins them
    assert ovn.raft_plan(view("n1"), [CONTROLLERS[1]], have=False) == (
        "join", ["10.0.0.12", "10.0.0.13"])
    # half a pair made by a join is finished by a join
    assert ovn.raft_plan(view("n3"), [], have=True)[0] == "join"


class Recorder:
    def __init__(self, answers=None):
        self.calls, self.answers = [], answers if answers is not None else {}

    def __call__(self, argv, input=None, **kw):
        self.calls.append(list(argv))
        for prefix, answer in self.answers.items():
            if tuple(argv[:len(prefix)]) == prefix:
                rc, out = answer(argv) if callable(answer) else answer
                return subprocess.CompletedProcess(argv, rc, out, "")
        if argv[0] == "ovsdb-tool" and argv[1] in ("create-cluster", "join-cluster"):
            open(argv[2], "w").close()
        return subprocess.CompletedProcess(argv, 0, "", "")


def central(tmp_path, run):
    svc = catalogue.load(**hooks.names()).by_name["ovn-central"]
    return ovn.Central("n1", run=run, root=tmp_path), svc, FakeSystemd(svc.units)


def published_ok(kv, node_id, service="ovn-central"):
    tracker = health.Tracker(service=SimpleNamespace(name=service), state=health.OK)
    health.publish(kv, node_id, service, tracker, None)


def test_the_first_controller_creates_the_cluster_once_then_only_starts(tmp_path):
    run = Recorder()
    hooks_, svc, systemd = central(tmp_path, run)
    actions = hooks_.step(ctx(svc, view("n1"), systemd, kv=MemoryKV()))
    tools = [c for c in run.calls if c[0] == "ovsdb-tool"]
    assert tools == [
        ["ovsdb-tool", "create-cluster", str(tmp_path / "var/lib/ovn/ovnnb_db.db"),
         str(tmp_path / "usr/share/ovn/ovn-nb.ovsschema"), "tcp:10.0.0.11:6643"],
        ["ovsdb-tool", "create-cluster", str(tmp_path / "var/lib/ovn/ovnsb_db.db"),
         str(tmp_path / "usr/share/ovn/ovn-sb.ovsschema"), "tcp:10.0.0.11:6644"]]
    assert "created the OVN_Northbound cluster" in actions[0].detail
    assert [c for c in systemd.calls if c[0] == "start"] == [("start", u) for u in svc.units]
    systemd.calls.clear()
    run.calls.clear()
    assert hooks_.step(ctx(svc, view("n1"), systemd, kv=MemoryKV())) == []
    assert run.calls == [] and systemd.calls == []
    # a changed file restarts the daemons, not the oneshot that pulls them in
    hooks_.step(ctx(svc, view("n1"), systemd, kv=MemoryKV(), changed=True))
    assert systemd.calls == [("restart", "ovn-ovsdb-server-nb.service"),
                             ("restart", "ovn-ovsdb-server-sb.service"),
                             ("restart", "ovn-northd.service")]


def test_another_controller_waits_then_joins_naming_every_other_member(tmp_path):
    run = Recorder()
    hooks_, svc, systemd = central(tmp_path, run)
    kv = MemoryKV()
    with pytest.raises(Waiting, match="node1"):
        hooks_.step(ctx(svc, view("n2"), systemd, kv=kv))
    assert run.calls == [] and systemd.calls == []
    published_ok(kv, "n1")
    hooks_.step(ctx(svc, view("n2"), systemd, kv=kv))
    assert [c for c in run.calls if c[0] == "ovsdb-tool"][0] == [
        "ovsdb-tool", "join-cluster", str(tmp_path / "var/lib/ovn/ovnnb_db.db"),
        "OVN_Northbound", "tcp:10.0.0.12:6643", "tcp:10.0.0.11:6643", "tcp:10.0.0.13:6643"]
    assert [c for c in run.calls if c[0] == "ovsdb-tool"][1][3:] == [
        "OVN_Southbound", "tcp:10.0.0.12:6644", "tcp:10.0.0.11:6644", "tcp:10.0.0.13:6644"]


def test_a_controller_with_its_databases_starts_at_once_after_a_power_loss(tmp_path):
    for name in ("ovnnb_db.db", "ovnsb_db.db"):
        (tmp_path / "var/lib/ovn").mkdir(parents=True, exist_ok=True)
        (tmp_path / "var/lib/ovn" / name).write_text("")
    run = Recorder()
    hooks_, svc, systemd = central(tmp_path, run)
    hooks_.step(ctx(svc, view("n3"), systemd, kv=MemoryKV()))     # nobody ok, no waiting
    assert run.calls == [] and ("start", "ovn-northd.service") in systemd.calls


def test_dry_run_makes_nothing(tmp_path):
    run = Recorder()
    hooks_, svc, systemd = central(tmp_path, run)
    actions = hooks_.step(ctx(svc, view("n1"), systemd, kv=MemoryKV(), dry_run=True))
    assert actions and run.calls == [] and systemd.calls == []
    assert not (tmp_path / "var/lib/ovn").exists()


def test_central_check_reads_cluster_status(tmp_path):
    answers = {}
    run = Recorder(answers)
    hooks_, svc, systemd = central(tmp_path, run)
    systemd.units["ovn-northd.service"]["active"] = "active"
    answers[("ovn-appctl",)] = (0, STATUS)
    result = hooks_.check(view("n1"), systemd)
    assert result.state == health.OK
    assert result.detail["nb"] == {"role": "leader", "servers": 2}
    assert ["ovn-appctl", "-t", "/var/run/ovn/ovnsb_db.ctl", "cluster/status",
            "OVN_Southbound"] in run.calls
    answers[("ovn-appctl",)] = (0, STATUS.replace("Leader: self", "Leader: unknown"))
    result = hooks_.check(view("n1"), systemd)
    assert result.state == health.FAILED and "has no leader" in result.error
    answers[("ovn-appctl",)] = (0, STATUS.replace("Status: cluster member",
                                                  "Status: joining cluster"))
    assert hooks_.check(view("n1"), systemd).state == health.PENDING
    answers[("ovn-appctl",)] = (0, STATUS)
    systemd.units["ovn-northd.service"]["active"] = "failed"
    assert hooks_.check(view("n1"), systemd).state == health.DEGRADED
    answers[("ovn-appctl",)] = (1, "")
    assert hooks_.check(view("n1"), systemd).state == health.FAILED


# -- the chassis --------------------------------------------------------------------------------
class Ovsdb:
    """``ovs-vsctl`` over an Open_vSwitch database in memory: external_ids, bridges with
    their datapath type and ports, managers; every call recorded."""

    def __init__(self, modprobe=1, connected="connected"):
        self.ids = {"rundir": "/var/run/openvswitch", "system-id": "node4"}
        self.bridges, self.managers, self.calls = {}, [], []
        self.modprobe, self.connected = modprobe, connected

    def __call__(self, argv, input=None, **kw):
        self.calls.append(list(argv))
        out, rc = "", 0
        if argv[0] == "modprobe":
            rc = self.modprobe
        elif argv[0] == "ovn-appctl":
            out = self.connected + "\n"
        elif argv[0] == "ovs-vsctl":
            out = self.vsctl([a for a in argv[1:] if not a.startswith("--timeout")])
        return subprocess.CompletedProcess(argv, rc, out, "")

    def vsctl(self, args):
        if args[-2:] == ["list", "Open_vSwitch"]:
            return json.dumps({"data": [[["map", sorted(self.ids.items())]]],
                               "headings": ["external_ids"]})
        if args[-2:] == ["list", "Bridge"]:
            return json.dumps({"data": [[n, b["type"]] for n, b in sorted(self.bridges.items())],
                               "headings": ["name", "datapath_type"]})
        if args[0] == "list-ports":
            return "".join(p + "\n" for p in self.bridges[args[1]]["ports"])
        if args[0] == "get-manager":
            return "".join(m + "\n" for m in self.managers)
        if args[0] == "set-manager":
            self.managers = args[1:]
        elif args[:3] == ["set", "Open_vSwitch", "."]:
            for arg in args[3:]:
                key, _, value = arg[len("external_ids:"):].partition("=")
                self.ids[key] = json.loads(value)
        elif args[:4] == ["remove", "Open_vSwitch", ".", "external_ids"]:
            for key in args[4:]:
                self.ids.pop(key)
        elif args[:2] == ["set", "Bridge"]:
            self.bridges[args[2]]["type"] = args[3].split("=")[1]
        elif args[:2] == ["--may-exist", "add-br"]:
            self.bridges.setdefault(args[2], {"type": args[-1].split("=")[1], "ports": []})
        elif args[:2] == ["--may-exist", "add-port"]:
            self.bridges[args[2]]["ports"].append(args[3])
        return ""


def chassis(tmp_path, db, kernel=False, modules=False, provider_up=False):
    (tmp_path / "sys/class/net/prov0").mkdir(parents=True)
    (tmp_path / "sys/class/net/prov0/flags").write_text("0x1003\n" if provider_up else "0x1002\n")
    if kernel:
        (tmp_path / "sys/module/openvswitch").mkdir(parents=True)
    if modules:
        (tmp_path / "proc").mkdir()
        (tmp_path / "proc/modules").write_text("")
    svc = catalogue.load(**hooks.names()).by_name["ovn-controller"]
    return ovn.Chassis(run=db, root=tmp_path), svc, FakeSystemd(svc.units)


def vsctl_writes(db):
    return [c[2:] for c in db.calls if c[0] == "ovs-vsctl" and c[2] not in (
        "--format=json", "list-ports", "get-manager")]


def test_a_chassis_in_a_container_is_set_for_the_userspace_datapath(tmp_path, caplog):
    db = Ovsdb()
    hooks_, svc, systemd = chassis(tmp_path, db)
    v = view("n4", ("compute",), provider=PROVIDER)
    with caplog.at_level("WARNING"):
        hooks_.step(ctx(svc, v, systemd))
    assert "userspace datapath (netdev)" in caplog.text
    assert systemd.calls.index(("start", "openvswitch-switch.service")) \
        < systemd.calls.index(("start", "ovn-controller.service"))
    assert vsctl_writes(db) == [
        ["set", "Open_vSwitch", ".", 'external_ids:hostname="node4"',
         'external_ids:ovn-bridge-datapath-type="netdev"',
         'external_ids:ovn-bridge-mappings="physnet1:br-provider"',
         'external_ids:ovn-cms-options="enable-chassis-as-gw"',
         'external_ids:ovn-encap-ip="10.0.0.14"', 'external_ids:ovn-encap-type="geneve"',
         'external_ids:ovn-remote="%s"' % SB],
        ["set-manager", "ptcp:6640:127.0.0.1"],
        ["--may-exist", "add-br", "br-provider", "--", "set", "Bridge", "br-provider",
         "datapath_type=netdev"],
        ["--may-exist", "add-port", "br-provider", "prov0"]]
    assert ["ip", "link", "set", "dev", "prov0", "up"] in db.calls
    assert db.ids["hostname"] == db.ids["system-id"] == "node4"       # nova's [DEFAULT] host
    # a second pass changes nothing
    db.calls.clear()
    systemd.calls.clear()
    (tmp_path / "sys/class/net/prov0/flags").write_text("0x1003\n")
    assert hooks_.step(ctx(svc, v, systemd)) == []
    assert vsctl_writes(db) == [] and systemd.calls == []
    assert not any(c[0] == "modprobe" for c in db.calls)        # decided once


def test_br_int_made_before_the_setting_gets_the_netdev_type_and_no_provider_no_gateway(
        tmp_path):
    db = Ovsdb()
    db.ids.update({"ovn-bridge-mappings": "physnet1:br-provider",
                   "ovn-cms-options": "enable-chassis-as-gw"})
    db.bridges["br-int"] = {"type": "", "ports": []}
    db.managers = ["ptcp:6640:127.0.0.1"]
    hooks_, svc, systemd = chassis(tmp_path, db)
    hooks_.step(ctx(svc, view("n4", ("compute",)), systemd))
    writes = vsctl_writes(db)
    assert ["remove", "Open_vSwitch", ".", "external_ids", "ovn-bridge-mappings",
            "ovn-cms-options"] in writes
    assert ["set", "Bridge", "br-int", "datapath_type=netdev"] in writes
    assert not any("br-provider" in " ".join(w) for w in writes)


@pytest.mark.parametrize("kernel, modules, modprobe, want", [
    (True, True, 1, "system"),          # loaded
    (False, True, 0, "system"),         # loads
    (False, True, 1, "netdev"),         # no module in this kernel
    (False, False, 0, "netdev"),        # no module support here (a container)
])
def test_the_kernel_datapath_where_the_module_is_there_or_loads(
        tmp_path, kernel, modules, modprobe, want):
    db = Ovsdb(modprobe=modprobe)
    hooks_, svc, systemd = chassis(tmp_path, db, kernel=kernel, modules=modules)
    assert hooks_.datapath() == want
    hooks_.step(ctx(svc, view("n4", ("compute",)), systemd))
    assert ("ovn-bridge-datapath-type" in db.ids) == (want == "netdev")


def test_a_missing_provider_interface_is_one_line(tmp_path):
    db = Ovsdb()
    hooks_, svc, systemd = chassis(tmp_path, db)
    bad = view("n4", ("compute",), provider={"interface": "prov9", "physnet": "physnet1"})
    with pytest.raises(ovn.OvnFailed, match="prov9 is not on this node; fix the profile"):
        hooks_.step(ctx(svc, bad, systemd))
    assert systemd.calls == []


def test_chassis_check_says_whether_ovn_controller_reaches_the_southbound(tmp_path):
    db = Ovsdb()
    hooks_, svc, systemd = chassis(tmp_path, db)
    assert hooks_.check(view("n4", ("compute",)), systemd).state == health.FAILED
    for unit in svc.units:
        systemd.units[unit]["active"] = "active"
    assert hooks_.check(view("n4", ("compute",)), systemd).state == health.OK
    assert ["ovn-appctl", "-t", "ovn-controller", "connection-status"] in db.calls
    db.connected = "not connected"
    result = hooks_.check(view("n4", ("compute",)), systemd)
    assert result.state == health.FAILED and SB in result.error
