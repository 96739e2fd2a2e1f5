"""A node reset to its factory state (``firstboot/factoryreset.py``, ``firstboot/leave.py``)
and ``rackforge firstboot factory-reset``: the host name typed to confirm; a member
leaves its cluster (its etcd member through the other members, every record of it in
the in-memory registry, its join endpoint) before its units stop and its state is
erased; the bootstrap file keeps the management network only; refusals change
nothing; a reset cut at any phase, or right after a side effect, resumes and ends the
same."""

import json
import subprocess
import types

import lifecycle
import pytest
import yaml

from rackforge import keys, paths, registry
from rackforge.cluster import etcd, roles
from rackforge.firstboot import bootstrap, cli, factoryreset, journal, leave
from rackforge.kvstore import MemoryKV, RegistryUnavailable
from rackforge.nodeagent import depart
from rackforge.systemd import SystemctlFailed

BOOT = {"join": {"endpoint": "https://10.0.0.5:9443", "token": "abcdef.0123456789abcdef",
                 "ca_sha256": "sha256:" + "ab" * 32},
        "management": {"interface": "eno1", "address": "10.0.0.12/24", "gateway": "10.0.0.1"},
        "role": "controller"}


def url(name):
    return "https://%s:2379" % name


class MembersKV(MemoryKV):
    """The in-memory store with an etcd member list (the real store's membership calls)."""

    def __init__(self, names):
        super().__init__()
        self.member_list = [{"ID": str(100 + i), "name": n, "peerURLs": [],
                             "clientURLs": [url(n)]} for i, n in enumerate(names)]
        self.removed = []
        self.down = set()               # members whose status does not answer
        self.leaderless = set()         # members that answer with no leader

    def member_status(self, endpoint, timeout=3):
        if any(endpoint == url(n) for n in self.down):
            raise RegistryUnavailable(endpoint=endpoint, detail="connection refused")
        if any(endpoint == url(n) for n in self.leaderless):
            return {"leader": 0, "errors": ["etcdserver: no leader"]}
        return {"leader": 100}

    def members(self):
        return list(self.member_list)

    def member_remove(self, member_id):
        self.removed.append(member_id)
        self.member_list = [m for m in self.member_list if m["ID"] != member_id]
        return self.member_list


def make_cluster(kv, names):
    """Active nodes with roles (the first three controllers), certificates, heartbeats and
    health records, in the store ``kv``; returns {name: node}."""
    reg = registry.NodeRegistry(kv)
    election = roles.RoleElection(kv)
    kv.txn([], [(keys.CLUSTER, json.dumps({"name": "rack1", "join_endpoints": [
        "https://10.0.0.%d:9443" % (11 + i) for i in range(3)]}).encode())])
    out = {}
    for name in names:
        node = lifecycle.create(reg, "active", name=name, macs=[
            "52:54:00:00:00:%02x" % (len(out) + 1)])
        roles.record_role(reg, node.id, election.decide(node.id))
        kv.txn([], [(keys.NODE_CERTS + node.id, b"PEM"),
                    (keys.HEARTBEATS + node.id, b"{}"),
                    (keys.HEALTH + node.id + "/etcd", b"{}"),
                    (keys.HEALTH + node.id + "/join", b"{}")])
        out[name] = reg.get_node(node.id)
    return reg, out


@pytest.fixture
def node(tmp_path, monkeypatch):
    """This node, node-1, a member of a three-node cluster with an etcd member each."""
    for var, sub in (("RACKFORGE_STATE", "state"), ("RACKFORGE_CONFIG", "etc"),
                     ("RACKFORGE_ISSUE_DIR", "issue.d"),
                     ("RACKFORGE_ETCD_DATA", "etcd-data"),
                     ("RACKFORGE_ETCD_CLIENT", "etc/etcd/client.json")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("RACKFORGE_BOOTSTRAP", str(tmp_path / "etc" / "bootstrap.yaml"))
    kv = MembersKV(["node-1", "node-2", "node-3"])
    reg, nodes = make_cluster(kv, ["node-1", "node-2", "node-3"])
    me = nodes["node-1"]
    state = paths.state_dir()
    (state / "pki").mkdir(parents=True)
    (state / "pki" / "node.key").write_text("KEY")
    (state / "firstboot" / "steps").mkdir(parents=True)
    (state / "firstboot.done").write_text("")
    (state / "node.json").write_text(json.dumps({
        "node_id": me.id, "name": "node-1", "role": "controller", "etcd_member": True,
        "etcd_endpoints": ["https://10.0.0.12:2379"]}))
    layout = etcd.Layout.default()
    layout.data_dir.mkdir(parents=True)
    (layout.data_dir / "member").mkdir()
    layout.config_dir.mkdir(parents=True)
    (layout.config_dir / "client.json").write_text("{}")
    (paths.config_dir() / "join-server.json").write_text(json.dumps(
        {"listen": "10.0.0.11", "port": 9443, "node_id": me.id}))
    bootstrap.path().write_text(yaml.safe_dump(BOOT))
    calls = []
    world = types.SimpleNamespace(kv=kv, reg=reg, nodes=nodes, me=me, calls=calls,
                                  root=tmp_path / "root", active=set(), refuse=set(),
                                  down=False, endpoints=[], environ={})
    world.root.mkdir()
    for rel in ("run/rackforge/start/mariadb.service",          # a gate the agent opened
                "etc/systemd/system/nova-compute.service",      # a unit the agent wrote
                "etc/nova/nova-compute.conf"):                  # secrets: the reset's
        (world.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (world.root / rel).write_text("x\n")

    def systemctl(*args, environ=None):
        calls.append(args)
        if environ:
            world.environ[args] = environ
        if args[0] == "is-active":
            if args[-1] not in world.active:
                raise SystemctlFailed(args=" ".join(args), detail="inactive", unit=args[-1])
        elif world.refuse & set(args[1:]):          # systemctl fails the whole call
            unit, = world.refuse & set(args[1:])
            raise SystemctlFailed(args=" ".join(args), detail="no such unit", unit=unit)

    def connect(ident, endpoints):
        world.endpoints.append(list(endpoints))
        if world.down:
            raise RegistryUnavailable(endpoint="https://10.0.0.5:2379",
                                      detail="connection refused")
        assert ident.node_id == me.id and ident.name == "node-1"
        return reg

    def run(argv, **kw):
        calls.append(tuple(argv))
        return subprocess.CompletedProcess(argv, 0, "", "")

    world.env = factoryreset.Env(systemctl=systemctl, connect=connect, root=world.root,
                                 hostname="node-1", run=run)
    return world


def names(reg):
    return sorted(n.name for n in reg.list_nodes())


def keys_of(kv, node_id):
    return [e.key for e in kv.get_prefix("/") if node_id in e.key or node_id.encode()
            in e.value]


def assert_factory_state(world):
    state = paths.state_dir()
    assert not state.exists() or list(state.iterdir()) == []
    assert not etcd.Layout.default().data_dir.exists()
    assert not etcd.Layout.default().config_dir.exists()
    kept = yaml.safe_load(bootstrap.path().read_text())
    assert kept == {"management": BOOT["management"], "role": "controller"}
    assert bootstrap.path().stat().st_mode & 0o777 == 0o600
    assert not factoryreset.record_path().exists()
    banner = (paths.issue_dir() / cli.BANNER).read_text()
    assert "factory reset" in banner and "join settings" in banner
    # what only the agent starts stays down; a unit it wrote holds no secret and stays
    assert not (world.root / "run/rackforge/start").exists()
    assert not (world.root / "etc/nova/nova-compute.conf").exists()
    assert (world.root / "etc/systemd/system/nova-compute.service").exists()


def cluster_record(kv):
    return json.loads(kv.get(keys.CLUSTER).value)


def test_a_member_leaves_then_is_erased(node):
    plan = factoryreset.start("node-1", node.env)
    assert plan.leaves and plan.standing.cluster == "rack1"
    assert plan.lines()[0] == ("node node-1 leaves cluster rack1: its records and its etcd "
                               "member go")
    # the leave went through the other members, never this node's own
    assert node.endpoints[-1] == [url("node-2"), url("node-3")]
    # the cluster forgot it: no key names it, its controller place is free, its join
    # endpoint is no longer listed (the join service would refuse its address)
    assert names(node.reg) == ["node-2", "node-3"]
    assert keys_of(node.kv, node.me.id) == []
    assert node.me.id not in roles.RoleElection(node.kv).controllers()
    assert cluster_record(node.kv)["join_endpoints"] == ["https://10.0.0.12:9443",
                                                         "https://10.0.0.13:9443"]
    assert node.kv.removed == ["100"]
    assert [m["name"] for m in node.kv.members()] == ["node-2", "node-3"]
    # the agents stopped before the leave, etcd last, then first boot started again
    verbs = [c for c in node.calls if c[0] in ("disable", "stop", "daemon-reload")]
    first = len(factoryreset.FIRST_UNITS)
    assert verbs[:first + 1] == [("disable", "--now", "--no-reload", u)
                                 for u in factoryreset.FIRST_UNITS] + [("daemon-reload",)]
    stopped = [c[-1] for c in verbs[first + 1:-1]]
    assert verbs[first + 1:-1] == [("disable", "--now", "--no-reload", u) for u in stopped]
    assert verbs[-1] == ("daemon-reload",)              # once a phase, not once a unit
    # nor once a unit through a SysV script's update-rc.d
    disables = [c for c in verbs if c[0] == "disable"]
    assert {c: node.environ.get(c) for c in disables} == {c: {"SYSTEMCTL_SKIP_SYSV": "1"}
                                                          for c in disables}
    assert stopped[-1] == "rackforge-etcd.service"
    assert {"nova-compute.service", "mariadb.service", "ceph.target",
            "keepalived.service"} <= set(stopped)           # the catalogue's units
    # what needs a service stops before it (nova-compute before libvirtd)
    assert stopped.index("nova-compute.service") < stopped.index("libvirtd.service")
    assert node.calls[-1] == ("start", "--no-block", factoryreset.FIRSTBOOT)
    assert_factory_state(node)
    assert not (paths.config_dir() / "join-server.json").exists()
    # a bootstrap file with no join is first boot's "join is missing": it waits
    with pytest.raises(bootstrap.BootstrapError, match="join"):
        bootstrap.load(cmdline="")


def test_the_host_name_must_be_typed(node):
    with pytest.raises(factoryreset.NotConfirmed, match=r"\(node-1\)"):
        factoryreset.start("node-2", node.env)
    assert node.calls == [] and names(node.reg) == ["node-1", "node-2", "node-3"]
    assert not factoryreset.record_path().exists()
    assert (paths.state_dir() / "node.json").exists()


CONTROLLER_DATA = ("var/lib/ovn/ovnnb_db.db", "var/lib/rabbitmq/mnesia/rabbit@node-1/x",
                   "var/lib/mysql/grastate.dat", "var/lib/mysql/debian-11.8.flag",
                   "var/lib/ceph/mon/ceph-node-1/store.db")


class Departure:
    """``nodeagent/depart.py``'s Departure as the reset drives it (its own tests run it
    against a scripted rack): what it was asked, when, and a cut after ``cut_after``."""

    def __init__(self, world, refused=None, cut_after=None):
        self.world, self.refused, self.cut_after = world, refused, cut_after
        self.ran, self.asked = [], []

    def refusal(self, steps):
        self.asked.append(list(steps))
        return self.refused

    def run_steps(self, steps, finished, save, say=None):
        # after the agent stopped, before the cluster forgets the node
        assert ("disable", "--now", "--no-reload",
                "rackforge-nodeagent.service") in self.world.calls
        assert "node-1" in names(self.world.reg)
        for step in depart.ORDER:
            if step in steps and step not in finished:
                self.ran.append(step)
                finished.append(step)
                save()
                if step == self.cut_after:
                    raise SystemExit("power cut")


@pytest.fixture
def controller(node, monkeypatch):
    for rel in CONTROLLER_DATA:
        (node.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (node.root / rel).write_text("x")
    node.departure = Departure(node)
    monkeypatch.setattr(factoryreset, "_departure", lambda reg, ident, env: node.departure)
    return node


def test_a_controller_departs_its_clusters_then_leaves_and_its_data_is_erased(controller):
    plan = factoryreset.start("node-1", controller.env)
    assert plan.lines()[0] == ("it leaves OVN's clustered databases, RabbitMQ, Galera, a Ceph "
                               "monitor first; the other controllers keep them")
    assert controller.departure.asked == [["ovn", "rabbitmq", "galera", "ceph"]]
    assert controller.departure.ran == ["ovn", "rabbitmq", "galera", "ceph"]
    assert names(controller.reg) == ["node-2", "node-3"]
    assert_factory_state(controller)
    lib = controller.root / "var/lib"
    assert depart.holds(controller.root) == []
    assert [p.name for p in (lib / "mysql").iterdir()] == ["debian-11.8.flag"]
    assert ("mariadb-install-db", "--rpm", "--cross-bootstrap", "--user=mysql",
            "--disable-log-bin", "--skip-test-db", "--wsrep-provider=none",
            "--datadir=%s" % (lib / "mysql")) \
        in controller.calls


def test_a_controller_its_clusters_cannot_spare_is_refused(controller):
    controller.departure.refused = depart.PeersNotReady(
        what="Galera", problems="mariadb on node-3 is failed")
    with pytest.raises(depart.PeersNotReady, match="mariadb on node-3 is failed"):
        factoryreset.start("node-1", controller.env)
    assert controller.calls == [] and controller.departure.ran == []
    assert names(controller.reg) == ["node-1", "node-2", "node-3"]
    assert not factoryreset.record_path().exists()
    assert depart.holds(controller.root) == ["ovn", "rabbitmq", "galera", "ceph"]


def test_a_departure_cut_short_resumes_with_the_clusters_not_left(controller):
    controller.departure.cut_after = "rabbitmq"
    with pytest.raises(SystemExit):
        factoryreset.start("node-1", controller.env)
    rec = factoryreset.read_record()
    assert rec["phases"]["depart"] == "started" and rec["departed"] == ["ovn", "rabbitmq"]
    controller.departure.cut_after = None
    factoryreset.resume(controller.env)
    assert controller.departure.ran == ["ovn", "rabbitmq", "galera", "ceph"]
    assert_factory_state(controller)


def test_osds_are_removed_first_with_node_disk_remove(node):
    osds = paths.state_dir() / "ceph" / "osds"
    osds.mkdir(parents=True)
    for i in (3, 7):
        (osds / ("%d.json" % i)).write_text(json.dumps({"id": i}))
    # one only etcd's records know of (a record this node lost)
    node.kv.txn([], [(keys.CEPH_OSDS + "9", json.dumps({"id": 9, "node": node.me.id})
                      .encode())])
    with pytest.raises(factoryreset.HoldsOsds) as exc:
        factoryreset.start("node-1", node.env)
    assert "(osd.3, osd.7, osd.9)" in str(exc.value)
    assert "'rackforge node disk remove node-1 osd.N' on a controller" in str(exc.value)
    assert node.calls == [] and names(node.reg) == ["node-1", "node-2", "node-3"]
    for i in (3, 7):                    # as the agent forgets a removed one
        (osds / ("%d.json" % i)).unlink()
    node.kv.txn([], [], [keys.CEPH_OSDS + "9"])     # as the purge does
    factoryreset.start("node-1", node.env)
    assert_factory_state(node)


def test_a_node_hosting_vms_is_refused(node):
    for folder, name in (("etc/libvirt/qemu", "instance-00000001"),
                         ("run/libvirt/qemu", "instance-00000002")):
        (node.root / folder).mkdir(parents=True)
        (node.root / folder / (name + ".xml")).write_text("<domain/>")
    with pytest.raises(factoryreset.HostsVms) as exc:
        factoryreset.start("node-1", node.env)
    assert "2 virtual machine(s) (instance-00000001, instance-00000002)" in str(exc.value)
    assert "--host node-1" in str(exc.value)
    assert node.calls == [] and names(node.reg) == ["node-1", "node-2", "node-3"]


def test_no_secret_of_the_cluster_stays(node):
    root = node.root
    files = {"etc/nova/nova.conf": "transport_url = rabbit://openstack:pw@",
             "etc/ceph/ceph.client.nova.keyring": "key = AQ",
             "etc/keystone/fernet-keys/0": "k0",
             "etc/libvirt/secrets/abc.base64": "QUE=",
             "etc/cinder/etcd/client.key": "KEY",
             "var/lib/ceph/osd/ceph-3/keyring": "key = AQ",
             "var/lib/rabbitmq/.erlang.cookie": "cookie",
             "var/lib/nova/compute_id": "5f0c3f0e-0000-4000-8000-000000000001",
             "etc/hosts": "10.0.0.12 node-1\n",             # no secret: kept
             "etc/memcached.conf": "-m 64\n"}                # likewise
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    factoryreset.start("node-1", node.env)
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert left == ["etc/hosts", "etc/memcached.conf",
                    "etc/systemd/system/nova-compute.service"]      # the fixture's unit
    for folder in ("etc/keystone/fernet-keys", "var/lib/ceph/osd", "etc/libvirt/secrets"):
        assert (root / folder).is_dir()            # emptied, its owner kept


LABELS = {}        # device -> the BlueStore label ceph-bluestore-tool shows


def with_labels(node):
    """The fixture's ``run`` answering ``ceph-bluestore-tool show-label`` from LABELS."""
    plain = node.env.run

    def run(argv, **kw):
        if argv[0] == "ceph-bluestore-tool":
            node.calls.append(tuple(argv))
            label = LABELS.get(argv[-1])
            return subprocess.CompletedProcess(argv, 0 if label else 1, json.dumps(
                {argv[-1]: label}) if label else "", "" if label else "no label")
        return plain(argv, **kw)
    node.env.run = run


def osd_folder(node, osd_id, disk, uuid):
    folder = node.root / ("var/lib/ceph/osd/ceph-%d" % osd_id)
    folder.mkdir(parents=True)
    (folder / "block").symlink_to(disk)
    (folder / "fsid").write_text(uuid + "\n")


def test_a_removed_osds_disk_is_blank_again_and_no_other(node, tmp_path):
    with_labels(node)
    mine, other = tmp_path / "disk0.img", tmp_path / "disk1.img"
    for disk in (mine, other):
        disk.write_bytes(b"bluestore block device\n" + b"\x01" * (12 << 20))
    LABELS.clear()
    LABELS.update({str(mine): {"osd_uuid": "u-3", "whoami": "3"},
                   str(other): {"osd_uuid": "u-9", "whoami": "9"}})
    osd_folder(node, 3, mine, "u-3")
    osd_folder(node, 4, other, "u-4")       # its link names a disk now osd.9's
    factoryreset.start("node-1", node.env)
    assert ("wipefs", "--all", str(mine)) in node.calls
    assert ("wipefs", "--all", str(other)) not in node.calls
    data = mine.read_bytes()
    assert data[:10 << 20] == bytes(10 << 20) and data[10 << 20:] == b"\x01" * (
        len(data) - (10 << 20))                 # the label zeroed, as ceph-volume zap does
    assert other.read_bytes()[:10] == b"bluestore "
    assert list((node.root / "var/lib/ceph/osd").iterdir()) == []


def test_the_last_etcd_voter_with_other_nodes_is_refused(node):
    node.kv.member_list = node.kv.member_list[:1] + [
        {"ID": "105", "name": "node-2", "clientURLs": [url("node-2")], "isLearner": True}]
    with pytest.raises(leave.LastMember, match="2 other"):    # a learner has no vote
        factoryreset.start("node-1", node.env)
    assert node.calls == [] and names(node.reg) == ["node-1", "node-2", "node-3"]


@pytest.mark.parametrize("how", ["down", "leaderless"])
def test_an_etcd_member_whose_leaving_breaks_the_quorum_is_refused(node, how):
    setattr(node.kv, how, {"node-2"})     # of node-2 and node-3, both must answer
    with pytest.raises(leave.QuorumAtRisk, match="1 of the 2 voting member"):
        factoryreset.start("node-1", node.env)
    assert node.calls == [] and node.kv.removed == []
    assert names(node.reg) == ["node-1", "node-2", "node-3"]
    node.kv.member_list += [{"ID": "103", "name": "node-4", "clientURLs": [url("node-4")]},
                            {"ID": "104", "name": "node-5", "clientURLs": [url("node-5")],
                             "isLearner": True}]
    factoryreset.start("node-1", node.env)      # 2 of the 3 voters that stay: a quorum
    assert node.kv.removed == ["100"]


def test_etcd_refusing_the_removal_for_a_member_just_back_waits_and_resumes(node):
    """Every member answers, but etcd refuses the removal (HTTP 503 "unhealthy cluster":
    one that stays restarted a moment ago): nothing of the cluster changes, the reset
    says it would be without a quorum, and resumes once etcd agrees."""
    real = node.kv.member_remove

    def refuse(member_id):
        raise RegistryUnavailable(endpoint=url("node-2"),
                                  detail="HTTP 503 etcdserver: unhealthy cluster")
    node.kv.member_remove = refuse
    with pytest.raises(factoryreset.PhaseFailed, match="without a quorum"):
        factoryreset.start("node-1", node.env)
    assert node.kv.removed == [] and names(node.reg) == ["node-1", "node-2", "node-3"]
    node.kv.member_remove = real
    factoryreset.resume(node.env)
    assert node.kv.removed == ["100"] and names(node.reg) == ["node-2", "node-3"]
    assert_factory_state(node)


def test_the_quorum_is_checked_again_when_the_leave_runs(node, monkeypatch):
    """Planned with a quorum; at the leave (a resume, later) one of the two others is
    down: nothing of the cluster changes, the reset waits and resumes."""
    real = factoryreset.phase_leave

    def quorum_lost_meanwhile(rec, env):
        node.kv.down = {"node-3"}
        real(rec, env)
    monkeypatch.setitem(factoryreset.PHASE_FUNCS, "leave", quorum_lost_meanwhile)
    with pytest.raises(factoryreset.PhaseFailed, match="phase leave failed .*without a "
                       "quorum"):
        factoryreset.start("node-1", node.env)
    assert node.kv.removed == [] and names(node.reg) == ["node-1", "node-2", "node-3"]
    monkeypatch.setitem(factoryreset.PHASE_FUNCS, "leave", real)
    node.kv.down = set()
    factoryreset.resume(node.env)
    assert node.kv.removed == ["100"] and names(node.reg) == ["node-2", "node-3"]


def test_the_only_node_resets_without_a_leave(node, monkeypatch):
    for rel in ("var/lib/mysql/grastate.dat", "var/lib/ovn/ovnsb_db.db"):
        (node.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (node.root / rel).write_text("x")
    monkeypatch.setattr(factoryreset, "_departure", None)      # nobody to leave
    for name in ("node-2", "node-3"):
        node.reg.delete_node(node.nodes[name].id)
    node.kv.member_list = node.kv.member_list[:1]
    node.kv.down = {"node-1"}           # its own etcd: not asked
    plan = factoryreset.start("node-1", node.env)
    assert plan.alone and not plan.leaves
    assert "the cluster ends with it" in plan.lines()[0]
    assert node.kv.removed == [] and names(node.reg) == ["node-1"]
    assert_factory_state(node)
    # its clusters end with it: their data is erased all the same
    assert depart.holds(node.root) == []
    assert [c[0] for c in node.calls].count("mariadb-install-db") == 1


def test_an_unreachable_cluster_changes_nothing(node):
    node.down = True
    with pytest.raises(factoryreset.ClusterUnreachable, match="connection refused"):
        factoryreset.start("node-1", node.env)
    assert node.calls == [] and not factoryreset.record_path().exists()


def test_a_node_stopped_after_its_join_leaves_by_its_journals_identity(node):
    """First boot stopped after its join step: no node.json, but the join's result in
    the journal names it; it leaves like a member."""
    state = paths.state_dir()
    (state / "node.json").unlink()
    (state / "firstboot.done").unlink()
    (journal.steps_dir() / "03-join.json").write_text(json.dumps({
        "step": "join", "status": "done", "result": {
            "node_id": node.me.id, "name": "node-1", "etcd_endpoints": [url("node-2")]}}))
    plan = factoryreset.start("node-1", node.env)
    assert plan.leaves and node.endpoints[0] == [url("node-2")]
    assert names(node.reg) == ["node-2", "node-3"] and node.kv.removed == ["100"]
    assert_factory_state(node)


def test_a_joined_node_without_an_identity_is_refused(node):
    (paths.state_dir() / "node.json").unlink()
    (paths.state_dir() / "pki" / "node.crt").write_text("CERT")
    (paths.state_dir() / "firstboot.done").unlink()
    with pytest.raises(leave.Unidentified, match="it holds a node certificate"):
        factoryreset.start("node-1", node.env)
    assert node.calls == [] and names(node.reg) == ["node-1", "node-2", "node-3"]


def test_a_node_that_never_joined_resets_without_the_cluster(node):
    (paths.state_dir() / "node.json").unlink()
    (paths.state_dir() / "firstboot.done").unlink()
    node.down = True                            # never asked
    plan = factoryreset.start("node-1", node.env)
    assert not plan.member
    assert names(node.reg) == ["node-1", "node-2", "node-3"]
    assert_factory_state(node)


def test_a_unit_the_image_lacks_is_passed_a_live_one_stops_the_reset(node):
    node.refuse = {"memcached.service"}
    factoryreset.start("node-1", node.env)      # not installed: not running
    assert ("is-active", "--quiet", "memcached.service") in node.calls
    assert_factory_state(node)


def test_a_live_unit_that_does_not_stop_fails_and_resumes(node):
    node.refuse = {"rackforge-etcd.service"}
    node.active = {"rackforge-etcd.service"}
    with pytest.raises(factoryreset.PhaseFailed, match="phase stop"):
        factoryreset.start("node-1", node.env)
    rec = factoryreset.read_record()
    assert rec["phases"] == {"quiesce": "done", "depart": "done", "leave": "done",
                             "stop": "started"}
    assert (paths.state_dir() / "node.json").exists()      # nothing erased under it
    node.refuse = set()
    factoryreset.resume(node.env)
    assert_factory_state(node)
    assert node.kv.removed == ["100"]                        # left once


@pytest.mark.parametrize("cut", factoryreset.PHASES)
def test_a_reset_cut_in_any_phase_resumes(node, monkeypatch, cut):
    """Power cut as ``cut`` begins its side effect: the record says it started; the
    resumed reset runs it (again) and the rest, and ends in the factory state."""
    real = factoryreset.PHASE_FUNCS[cut]

    def power_cut(rec, env):
        raise SystemExit("power cut")
    monkeypatch.setitem(factoryreset.PHASE_FUNCS, cut, power_cut)
    with pytest.raises(SystemExit):
        factoryreset.start("node-1", node.env)
    assert factoryreset.read_record()["phases"][cut] == "started"
    monkeypatch.setitem(factoryreset.PHASE_FUNCS, cut, real)
    node.calls.clear()
    # a second confirmation resumes it as the boot-time unit does
    assert factoryreset.start("node-1", node.env) is None
    assert_factory_state(node)
    assert names(node.reg) == ["node-2", "node-3"]
    assert node.kv.removed == ["100"]


@pytest.mark.parametrize("after", ["member_remove", "release", "forget"])
def test_a_cut_right_after_a_side_effect_of_the_leave_resumes(node, monkeypatch, after):
    """The leave's own steps cut after their side effect: the resumed leave finds the
    member gone, the role released or the records gone, and finishes once."""
    from rackforge.cluster import roles as roles_mod
    owner, name = {"member_remove": (node.kv, "member_remove"),
                   "release": (roles_mod.RoleElection, "release"),
                   "forget": (leave, "forget")}[after]
    real = getattr(owner, name)

    def then_cut(*args, **kw):
        real(*args, **kw)
        raise SystemExit("power cut")
    monkeypatch.setattr(owner, name, then_cut)
    with pytest.raises(SystemExit):
        factoryreset.start("node-1", node.env)
    monkeypatch.setattr(owner, name, real)
    factoryreset.resume(node.env)
    assert_factory_state(node)
    assert names(node.reg) == ["node-2", "node-3"] and keys_of(node.kv, node.me.id) == []
    assert node.kv.removed == ["100"]


def test_the_command_wants_root_the_name_and_says_each_phase(node, capsys):
    args = types.SimpleNamespace(confirm="node-1", resume=False)
    assert cli.cmd_firstboot_factory_reset(args, geteuid=lambda: 1000, env=node.env) == 2
    assert "root" in capsys.readouterr().err
    wrong = types.SimpleNamespace(confirm="nodeX", resume=False)
    assert cli.cmd_firstboot_factory_reset(wrong, geteuid=lambda: 0, env=node.env) == 2
    assert "host name (node-1)" in capsys.readouterr().err
    assert cli.cmd_firstboot_factory_reset(args, geteuid=lambda: 0, env=node.env) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("factory reset: ")] == [
        "factory reset: quiesce", "factory reset: depart", "factory reset: leave",
        "factory reset: stop",
        "factory reset: wipe",
        "factory reset: start", "factory reset: done; first boot waits for join settings"]
    again = types.SimpleNamespace(confirm=None, resume=True)
    assert cli.cmd_firstboot_factory_reset(again, geteuid=lambda: 0, env=node.env) == 0
    assert "no factory reset to resume" in capsys.readouterr().err
