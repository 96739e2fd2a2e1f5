"""A controller departing (``nodeagent/depart.py``): it leaves OVN's RAFT databases,
RabbitMQ, Galera and Ceph's monitor and manager in that order, each through the command
its project documents, against a scripted three-controller rack that answers as
OVN 25.03, RabbitMQ 4.0, MariaDB 11.8 and Ceph 18 do; the refusals change nothing; a
resumed leave finds what is done already; the wipe erases each cluster's data and makes
MariaDB's data directory again."""

import json
import subprocess
from types import SimpleNamespace

import pytest

from rackforge import keys
from rackforge.kvstore import MemoryKV
from rackforge.nodeagent import depart, galera, health, rabbit
from rackforge.systemd import SystemctlFailed

PEERS = [SimpleNamespace(id="n%d" % i, name="node%d" % i, address="10.0.0.1%d" % i,
                         slot=i - 1) for i in (1, 2, 3)]
ME = PEERS[0]
WSREP_SYNCED = {"wsrep_cluster_status": "Primary", "wsrep_local_state": "4",
                "wsrep_local_state_comment": "Synced", "wsrep_cluster_size": "3"}


def done(argv, out="", rc=0, err=""):
    return subprocess.CompletedProcess(argv, rc, out, err)


class Rack:
    """The other controllers and this node's services, as the commands see them."""

    def __init__(self, kv):
        self.kv = kv
        self.calls = []                          # (what, detail) in the order they happened
        self.active = {"ovn-northd.service", "ovn-ovsdb-server-nb.service",
                       "ovn-ovsdb-server-sb.service", rabbit.UNIT, galera.UNIT,
                       "ceph-mon@node1.service", "ceph-mgr@node1.service"}
        self.ovn = {"OVN_Northbound": "cluster member", "OVN_Southbound": "cluster member"}
        self.ovn_left = set()                   # files with RAFT's "left" note
        self.leaderless = 0                     # status polls that hear no leader yet
        self.broken = set()                     # units that do not start
        self.failed = set()
        self.rabbit = {"node2": {"rabbit@node1", "rabbit@node2", "rabbit@node3"},
                       "node3": {"rabbit@node1", "rabbit@node2", "rabbit@node3"}}
        self.rabbit_down = set()
        self.quorum_critical = False
        self.wsrep = dict(WSREP_SYNCED)
        self.monmap = ["node1", "node2", "node3"]
        self.mgr_active = "node1"
        self.auth = {"mgr.node1", "mgr.node2"}
        self.ok_to = {"ok-to-stop": 0, "ok-to-rm": 0}
        self.dropped_removals = 0               # removals lost to an election
        self.turn_at_stop = None
        self.no_quorum = False

    # -- systemctl ---------------------------------------------------------------------
    def systemctl(self, *args):
        unit = args[-1]
        if args[0] == "is-active":
            if unit not in self.active:
                raise SystemctlFailed(args=" ".join(args), detail="inactive", unit=unit)
            return done(args)
        if args[0] == "show":
            return done(args, ("active" if unit in self.active else "failed"
                               if unit in self.failed else "inactive") + "\n")
        self.calls.append((" ".join(args[:-1]), unit))
        if args[0] == "reset-failed":
            return done(args)
        if args[0] == "start" or args[:2] == ("enable", "--now"):
            if unit not in self.broken:
                self.active.add(unit)
            return done(args)
        if unit == galera.UNIT:
            entry = self.kv.get(galera.TURN)
            self.turn_at_stop = json.loads(entry.value) if entry else None
        self.active.discard(unit)
        return done(args)

    # -- commands ----------------------------------------------------------------------
    def __call__(self, argv, input=None, **kw):
        argv = list(argv)
        if argv[0] == "ovn-appctl":
            return self.appctl(argv)
        if argv[0] == "ovsdb-client":
            name = argv[-2]
            self.calls.append(("ovsdb-client wait removed", name))
            self.ovn[name] = "left cluster"
            self.ovn_left.add(name)
            return done(argv)
        if argv[0] == "ovsdb-tool":
            name = "OVN_Northbound" if argv[-1].endswith("ovnnb_db.db") else "OVN_Southbound"
            # as ovsdb-tool 3.5 prints RAFT's records (its note after a completed leave)
            return done(argv, "record 0:\n name: \"%s\"\n\nrecord 1:\n term: 2\n%s" % (
                name, ' comment: "this server left the cluster"\n note: "left"\n'
                if name in self.ovn_left else " index: 7\n"))
        if argv[0] == "runuser":
            return self.rabbitmq(argv[argv.index("--") + 3:])
        if argv[0] == "mariadb":
            if galera.UNIT not in self.active:
                return done(argv, rc=1, err="Can't connect to local server through socket")
            return done(argv, "".join("%s\t%s\n" % kv for kv in self.wsrep.items()))
        if argv[0] == "ceph":
            return self.ceph(argv)
        if argv[0] == "mariadb-install-db":
            self.calls.append(("mariadb-install-db", argv[-1]))
            return done(argv)
        raise AssertionError("unexpected command %s" % argv)

    def appctl(self, argv):
        verb, name = argv[3], argv[4]
        unit = "ovn-ovsdb-server-%s.service" % ("nb" if name == "OVN_Northbound" else "sb")
        if unit not in self.active:
            return done(argv, rc=1, err="cannot connect to \"%s\" (No such file or directory)"
                        % argv[2])
        if name in self.ovn_left:       # the server dropped the database once it left
            return done(argv, rc=2, err="unknown cluster\novs-appctl: %s: server returned "
                        "an error" % argv[2])
        if verb == "cluster/leave":
            self.calls.append(("cluster/leave", name))
            self.ovn[name] = "leaving cluster"
            return done(argv)
        servers = "Servers:\n    1a2b (1a2b at tcp:10.0.0.11:6643) (self)\n"
        leader = "3c4d"
        if self.leaderless:
            self.leaderless, leader = self.leaderless - 1, "unknown"
        return done(argv, "1a2b\nName: %s\nStatus: %s\nRole: follower\nLeader: %s\n%s"
                    % (name, self.ovn[name], leader, servers))

    def rabbitmq(self, args):
        tool, node = args[0], None
        args = args[1:]
        if args[0] == "-n":
            node, args = args[1].split("@")[1], args[2:]
        if tool == rabbit.QUEUES:
            assert args == ["check_if_node_is_quorum_critical"] and node is None
            if self.quorum_critical:
                return done(args, rc=69, err="Error:\nsome queues would lose online quorum")
            return done(args, "ok")
        if node in self.rabbit_down:
            return done(args, rc=69, err="Error: unable to perform an operation on node "
                        "'rabbit@%s'" % node)
        if args[-1] == "cluster_status":
            members = sorted(self.rabbit[node])
            return done(args, json.dumps({"disk_nodes": members, "running_nodes": [
                m for m in members if m != "rabbit@node1"]}))
        assert args[0] == "forget_cluster_node"
        assert rabbit.UNIT not in self.active, "a running node cannot be forgotten"
        self.calls.append(("forget_cluster_node", "%s on %s" % (args[1], node)))
        for members in self.rabbit.values():
            members.discard(args[1])
        return done(args)

    def ceph(self, argv):
        args = [a for a in argv[3:] if a not in ("--format", "json")]
        out = None
        if args in (["quorum_status"], ["mon", "dump"]) and self.no_quorum:
            return done(argv, rc=1, err="[errno 110] RADOS timed out (error connecting to "
                        "the cluster)")
        if args[:2] == ["mon", "ok-to-stop"] or args[:2] == ["mon", "ok-to-rm"]:
            rc = self.ok_to[args[1]]
            return done(argv, rc=rc, err="" if rc == 0 else
                        "Error EBUSY: removing mon.node1 would break quorum")
        if args == ["mgr", "stat"]:
            out = {"active_name": self.mgr_active, "available": True}
        elif args[:2] == ["mgr", "fail"]:
            self.calls.append(("ceph mgr fail", args[2]))
            self.mgr_active = "node2"
        elif args[:2] == ["auth", "rm"]:
            assert "ceph-mgr@node1.service" not in self.active
            self.calls.append(("ceph auth rm", args[2]))
            self.auth.discard(args[2])
        elif args == ["quorum_status"]:
            up = [m for m in self.monmap if m != "node1" or "ceph-mon@node1.service"
                  in self.active]
            out = {"quorum_names": up}
        elif args == ["mon", "dump"]:
            out = {"mons": [{"name": m} for m in self.monmap]}
        elif args[:2] == ["mon", "remove"]:
            assert "ceph-mon@node1.service" not in self.active, "stop before remove"
            self.calls.append(("ceph mon remove", args[2]))
            if self.dropped_removals:
                self.dropped_removals -= 1
            elif args[2] in self.monmap:
                self.monmap.remove(args[2])
        else:
            raise AssertionError("unexpected ceph %s" % args)
        return done(argv, json.dumps(out) if out is not None else "")


@pytest.fixture
def rack(tmp_path):
    kv = MemoryKV()
    for peer in PEERS[1:]:
        for svc in ("ovn-central", "rabbitmq", "mariadb", "ceph-mon"):
            kv.txn([], [(keys.HEALTH + "%s/%s" % (peer.id, svc),
                         json.dumps({"state": health.OK}).encode())])
    kv.txn([], [(keys.CEPH_MONS + name, json.dumps({"name": name}).encode())
                for name in ("node1", "node2", "node3")])
    root = tmp_path / "root"
    for rel in ("var/lib/ovn/ovnnb_db.db", "var/lib/ovn/ovnsb_db.db",
                "var/lib/rabbitmq/mnesia/rabbit@node1/cluster_nodes.config",
                "var/lib/mysql/grastate.dat", "var/lib/mysql/debian-11.8.flag",
                "var/lib/mysql/mysql/user.frm", "var/lib/ceph/mon/ceph-node1/store.db/1.sst",
                "var/lib/ceph/mgr/ceph-node1/keyring"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x\n")
    world = Rack(kv)
    view = SimpleNamespace(node_id=ME.id, name=ME.name, controllers=PEERS)
    world.root = root
    world.departure = depart.Departure(view, kv, run=world, systemctl=world.systemctl,
                                       root=root, sleep=lambda s: None)
    return world


def test_a_controller_holds_every_cluster_its_data_names(rack):
    assert depart.holds(rack.root) == ["ovn", "rabbitmq", "galera", "ceph"]
    (rack.root / "var/lib/mysql/grastate.dat").unlink()
    for child in (rack.root / "var/lib/rabbitmq/mnesia").iterdir():
        import shutil
        shutil.rmtree(child)
    assert depart.holds(rack.root) == ["ovn", "ceph"]


def test_it_leaves_each_cluster_in_order_through_its_own_commands(rack):
    assert rack.departure.refusal(depart.ORDER) is None
    assert rack.calls == []                             # the checks changed nothing
    finished, saved = [], []
    rack.departure.run_steps(list(depart.ORDER), finished, save=lambda: saved.append(
        list(finished)))
    assert finished == ["ovn", "rabbitmq", "galera", "ceph"]
    assert saved == [finished[:i] for i in range(1, 5)]        # recorded after each step
    assert [c for c in rack.calls if c[0] != "stop --no-block"] == [
        # OVN: northd first, each database leaves and is dropped, then its servers stop
        ("stop", "ovn-northd.service"),
        ("cluster/leave", "OVN_Northbound"), ("ovsdb-client wait removed", "OVN_Northbound"),
        ("cluster/leave", "OVN_Southbound"), ("ovsdb-client wait removed", "OVN_Southbound"),
        ("stop", "ovn-ovsdb-server-nb.service"), ("stop", "ovn-ovsdb-server-sb.service"),
        # RabbitMQ: stopped, then forgotten by a running member
        ("stop", rabbit.UNIT), ("forget_cluster_node", "rabbit@node1 on node2"),
        # Galera: a clean stop in the turn, waited for
        # Ceph: the active manager fails over, stops, loses its key; the monitor stops,
        # then leaves the monmap
        ("ceph mgr fail", "node1"), ("disable --now", "ceph-mgr@node1.service"),
        ("ceph auth rm", "mgr.node1"), ("disable --now", "ceph-mon@node1.service"),
        ("ceph mon remove", "node1")]
    assert ("stop --no-block", galera.UNIT) in rack.calls
    assert rack.turn_at_stop == {"node": "n1", "why": "leave"}
    assert rack.kv.get(galera.TURN) is None                  # the turn went with the stop
    assert all("rabbit@node1" not in m for m in rack.rabbit.values())
    assert rack.monmap == ["node2", "node3"] and rack.auth == {"mgr.node2"}
    # every node's mon_host drops it
    assert [e.key for e in rack.kv.get_prefix(keys.CEPH_MONS)] == [
        keys.CEPH_MONS + "node2", keys.CEPH_MONS + "node3"]


def test_what_only_the_agent_starts_stays_down_when_it_stops(rack):
    gate = rack.root / "run/rackforge/start/mariadb.service"
    gate.parent.mkdir(parents=True)
    gate.write_text("")
    rack.departure.galera()
    assert not gate.exists()


@pytest.mark.parametrize("how,refusal,words", [
    ("alone", depart.OnlyController, "only controller"),
    ("peer", depart.PeersNotReady, "mariadb on node3 is degraded (donor of a state transfer)"),
    ("silent", depart.PeersNotReady, "ovn-central on node2 is not reported"),
    ("donor", depart.NotSafeToLeave, "Galera says this node may not leave now (this member "
                                     "is Primary, Donor/Desynced)"),
    ("queues", depart.NotSafeToLeave, "some queues would lose online quorum"),
    ("mon", depart.NotSafeToLeave, "mon ok-to-rm node1: Error EBUSY"),
])
def test_a_leave_the_clusters_cannot_spare_is_refused_with_nothing_changed(rack, how, refusal,
                                                                           words):
    if how == "alone":
        rack.departure.others = []
    elif how == "peer":
        rack.kv.txn([], [(keys.HEALTH + "n3/mariadb", json.dumps({
            "state": health.DEGRADED, "error": "donor of a state transfer"}).encode())])
    elif how == "silent":
        rack.kv.txn([], (), [keys.HEALTH + "n2/ovn-central"])
    elif how == "donor":
        rack.wsrep.update(wsrep_local_state="2", wsrep_local_state_comment="Donor/Desynced")
    elif how == "queues":
        rack.quorum_critical = True
    else:
        rack.ok_to["ok-to-rm"] = 16
    refused = rack.departure.refusal(depart.holds(rack.root))
    assert isinstance(refused, refusal) and words in str(refused)
    assert "nothing was changed" in str(refused)
    assert rack.calls == [] and rack.monmap == ["node1", "node2", "node3"]


def test_a_resumed_leave_finds_what_is_done_and_does_it_once(rack):
    """Cut after each cluster's side effect: the broker was forgotten, MariaDB stopped,
    the monitor removed."""
    rack.active -= {rabbit.UNIT, galera.UNIT, "ceph-mon@node1.service",
                    "ceph-mgr@node1.service"}
    for members in rack.rabbit.values():
        members.discard("rabbit@node1")
    rack.monmap.remove("node1")
    rack.auth.discard("mgr.node1")
    rack.mgr_active = "node2"
    finished = ["ovn"]                          # recorded done: not run again
    rack.departure.run_steps(list(depart.ORDER), finished)
    assert finished == ["ovn", "rabbitmq", "galera", "ceph"]
    verbs = [c[0] for c in rack.calls]
    assert "forget_cluster_node" not in verbs and "ceph mon remove" not in verbs
    assert "stop --no-block" not in verbs and "cluster/leave" not in verbs


def test_ovn_resumed_a_left_file_is_passed_a_members_file_is_started_and_left(rack):
    """After a power cut the northbound file has left (its server cannot open it: the
    file says so), the southbound's server failed at boot: it is started, heard from
    its leader after a while, and leaves."""
    rack.ovn_left.add("OVN_Northbound")
    rack.active -= {"ovn-ovsdb-server-nb.service", "ovn-ovsdb-server-sb.service"}
    rack.failed = {"ovn-ovsdb-server-sb.service"}
    rack.leaderless = 2
    rack.departure.ovn()
    assert ("cluster/leave", "OVN_Northbound") not in rack.calls
    assert ("start", "ovn-ovsdb-server-nb.service") not in rack.calls
    order = [("reset-failed", "ovn-ovsdb-server-sb.service"),
             ("start", "ovn-ovsdb-server-sb.service"), ("cluster/leave", "OVN_Southbound")]
    assert [c for c in rack.calls if c in order] == order
    assert rack.leaderless == 0 and rack.ovn_left == {"OVN_Northbound", "OVN_Southbound"}


def test_ovn_a_server_that_does_not_come_back_fails_the_step(rack):
    rack.active.discard("ovn-ovsdb-server-nb.service")
    rack.broken = {"ovn-ovsdb-server-nb.service"}
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds
    rack.departure.clock, rack.departure.sleep = (lambda: now[0]), sleep
    with pytest.raises(depart.DepartFailed, match="does not answer on /var/run/ovn/ovnnb"):
        rack.departure.ovn()
    assert "cluster/leave" not in [c[0] for c in rack.calls]


def test_ovn_a_server_that_will_not_answer_or_is_not_a_member_fails_the_step(rack):
    rack.ovn["OVN_Northbound"] = "disconnected from the cluster (election timeout)"
    with pytest.raises(depart.DepartFailed, match="not a member that can leave"):
        rack.departure.ovn()
    assert "cluster/leave" not in [c[0] for c in rack.calls]


def test_each_step_is_checked_again_right_before_it(rack):
    """Minutes after the plan a peer's broker went down: RabbitMQ is not left (the one
    running node would pause the cloud's bus), and nothing of it changed."""
    finished = []
    rack.kv.txn([], [(keys.HEALTH + "n3/rabbitmq", json.dumps({
        "state": health.FAILED, "error": "rabbitmq-server is not running"}).encode())])
    with pytest.raises(depart.NotNow, match="not leaving RabbitMQ now: rabbitmq on node3 is "
                       "failed"):
        rack.departure.run_steps(list(depart.ORDER), finished)
    assert finished == ["ovn"] and rabbit.UNIT in rack.active
    assert "forget_cluster_node" not in [c[0] for c in rack.calls]


def test_a_mariadb_in_a_state_transfer_is_not_taken_for_a_stopped_one(rack):
    real = rack.systemctl

    def activating(*args):
        if args[0] == "show" and args[-1] == galera.UNIT:
            return done(args, "activating\n")
        return real(*args)
    rack.departure.systemctl = activating
    refused = rack.departure.refusal(["galera"])
    assert isinstance(refused, depart.NotSafeToLeave) and "activating" in str(refused)
    with pytest.raises(depart.DepartFailed, match="MariaDB is activating"):
        rack.departure.galera()
    assert galera.UNIT in rack.active


def test_a_hung_mariadb_is_not_taken_for_a_stopped_one(rack):
    rack.wsrep = {}
    rack.departure.run = lambda argv, **kw: done(argv, rc=1, err="timeout") \
        if argv[0] == "mariadb" else rack(argv, **kw)
    refused = rack.departure.refusal(["galera"])
    assert isinstance(refused, depart.NotSafeToLeave) and "does not answer" in str(refused)


def test_a_monitor_whose_peers_form_no_quorum_runs_again(rack):
    rack.monmap = ["node1", "node2", "node3"]
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds
    rack.departure.clock, rack.departure.sleep = (lambda: now[0]), sleep
    rack.no_quorum = True               # no monitor answers: not even 'mon dump'
    with pytest.raises(depart.DepartFailed, match="it runs again"):
        rack.departure.ceph()
    assert "ceph-mon@node1.service" in rack.active
    assert ("enable --now", "ceph-mon@node1.service") in rack.calls
    assert "ceph mon remove" not in [c[0] for c in rack.calls]


def test_a_member_that_does_not_answer_is_passed_for_another(rack):
    rack.rabbit_down = {"node2"}
    rack.departure.rabbitmq()
    assert ("forget_cluster_node", "rabbit@node1 on node3") in rack.calls
    rack.rabbit_down = {"node2", "node3"}
    rack.rabbit["node3"].add("rabbit@node1")
    with pytest.raises(depart.DepartFailed, match="no other member forgot rabbit@node1"):
        rack.departure.rabbitmq()


def test_the_galera_turn_of_another_controller_is_waited_for_then_fails(rack):
    lease = rack.kv.lease_grant(600)
    rack.kv.txn([], [(galera.TURN, json.dumps({"node": "n2"}).encode(), lease)])
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds
    rack.departure.clock, rack.departure.sleep = (lambda: now[0]), sleep
    with pytest.raises(depart.DepartFailed, match="held the Galera turn for 600s"):
        rack.departure.galera()
    assert galera.UNIT in rack.active and now[0] >= depart.TURN_WAIT
    rack.kv.lease_revoke(lease)                 # the other join ends
    rack.departure.galera()
    assert ("stop --no-block", galera.UNIT) in rack.calls
    assert galera.UNIT not in rack.active and rack.kv.get(galera.TURN) is None


def test_galera_not_synced_when_its_turn_comes_is_not_stopped(rack):
    rack.wsrep.update(wsrep_cluster_status="non-Primary")
    with pytest.raises(depart.DepartFailed, match="not a Synced member"):
        rack.departure.galera()
    assert galera.UNIT in rack.active and rack.kv.get(galera.TURN) is None


def test_a_removal_dropped_by_an_election_is_made_again_and_checked(rack):
    rack.dropped_removals = depart.REMOVE_ATTEMPTS - 1      # the last one holds
    rack.departure.ceph()
    assert [c for c in rack.calls if c[0] == "ceph mon remove"] == [
        ("ceph mon remove", "node1")] * depart.REMOVE_ATTEMPTS
    assert rack.monmap == ["node2", "node3"]
    rack2_calls = len(rack.calls)
    rack.monmap.append("node1")
    rack.dropped_removals = depart.REMOVE_ATTEMPTS
    with pytest.raises(depart.DepartFailed, match="still in the monmap after 5 removals"):
        rack.departure.ceph()
    assert len(rack.calls) > rack2_calls


def test_the_wipe_erases_each_clusters_data_and_remakes_mariadbs(rack):
    depart.erase(rack.root, ["ovn", "rabbitmq", "galera", "ceph"], rack)
    lib = rack.root / "var/lib"
    assert not (lib / "ovn/ovnnb_db.db").exists() and not (lib / "ovn/ovnsb_db.db").exists()
    for folder in ("rabbitmq/mnesia", "ceph/mon", "ceph/mgr"):
        assert (lib / folder).is_dir() and list((lib / folder).iterdir()) == []
    # the datadir keeps Debian's version marker only, and is made again as the package does
    assert sorted(p.name for p in (lib / "mysql").iterdir()) == ["debian-11.8.flag"]
    assert rack.calls == [("mariadb-install-db", "--datadir=%s" % (lib / "mysql"))]
    assert depart.holds(rack.root) == []
    depart.erase(rack.root, ["ovn", "rabbitmq", "galera", "ceph"], rack)      # again: same
    assert len(rack.calls) == 2


def test_a_failed_install_db_fails_the_wipe(rack):
    def failing(argv, **kw):
        return done(argv, rc=1, err="Installation of system tables failed!")
    with pytest.raises(depart.DepartFailed, match="system tables failed"):
        depart.erase(rack.root, ["galera"], failing)
