"""Reconcile passes on recorded cluster states, with systemd in memory: what a pass does,
that a second pass does nothing, and that only what changed restarts.

The catalogue is the real one (every record and template); the start steps,
tasks and builtin checks are stand-ins that record their calls (Galera's and
RabbitMQ's real ones are exercised in the nspawn rack).
"""

import json

import agentrack
import pytest
from fakesystemd import FakeSystemd

from rackforge import keys
from rackforge.cluster import roles
from rackforge.nodeagent import catalogue, daemon, health, hooks, keyring, reconcile, tasks, view

ALL_UNITS = ("rackforge-etcd.service", "rackforge-join.service", "memcached.service",
             "mariadb.service", "rackforge-galeracheck.socket", "rabbitmq-server.service",
             "haproxy.service", "keepalived.service")


class StandIns:
    """Steps, tasks, conditions and checks that record what they were asked."""

    def __init__(self):
        self.calls = []
        self.STEPS = {name: self._step(name) for name in hooks.STEP_NAMES}
        self.TASKS = {name: self._task(name) for name in hooks.TASK_NAMES}
        self.CONDITIONS = {name: (lambda v, kv: (True, "")) for name in hooks.CONDITION_NAMES}
        self.CHECKS = {name: (lambda v, s: health.Result(health.OK))
                       for name in hooks.CHECK_NAMES}

    def _step(self, name):
        def step(ctx):
            if ctx.dry_run:
                return [reconcile.Action("step", name, ctx.service.name, "would run")]
            self.calls.append(("step", name, ctx.changed))
            unit = ctx.service.units[0] if ctx.service.units else None
            if unit and not ctx.systemd.states([unit])[unit].is_active:
                ctx.systemd.act("start", unit)
                return [reconcile.Action("start", unit, ctx.service.name)]
            if unit and ctx.changed:
                ctx.systemd.act("restart", unit)
                return [reconcile.Action("restart", unit, ctx.service.name)]
            return []
        return step

    def _task(self, name):
        def task(v, systemd, context):
            self.calls.append(("task", name))
            return {"ok": True}
        return task


@pytest.fixture
def rack(tmp_path):
    return agentrack.make(tmp_path)


def agent_parts(reg, nodes, name, root):
    node, key = nodes[name]
    cat = catalogue.load(**hooks.names())
    systemd = FakeSystemd(ALL_UNITS)
    stand = StandIns()
    lease = reg.kv.lease_grant(60)
    facts = {"interface": "eth0", "prefix": 24, "cpus": 2, "memory_mib": 4096}
    settings = {"memcached_mib": 64, "innodb_buffer_pool_mib": 128, "rabbitmq_memory": 0.2}

    def one_pass(rec, trackers=None):
        v = view.read(reg, node.id, facts, settings)
        ring = keyring.Keyring(reg.kv, node.id, key, cat.secrets)
        runner = tasks.Tasks(reg.kv, node.id, lease, cat.version)
        return rec.run(v, ring, runner, trackers if trackers is not None else ok_trackers(cat),
                       reg.kv)
    rec = reconcile.Reconciler(cat, systemd, stand, root=str(root))
    return rec, systemd, stand, one_pass


def ok_trackers(cat):
    return {s.name: health.Tracker(service=s, state=health.OK) for s in cat.services}


def kinds(outcome):
    return sorted({a.kind for a in outcome.actions})


def test_a_controller_comes_up_and_a_second_pass_does_nothing(rack, tmp_path):
    reg, nodes = rack
    rec, systemd, stand, one_pass = agent_parts(reg, nodes, "n1", tmp_path)
    first = one_pass(rec)
    assert first.errors == {} and first.pending == {}
    assert {"write", "enable", "start", "task", "secret"} <= set(kinds(first))
    assert systemd.units["memcached.service"] == {"active": "active", "enabled": "enabled"}
    # a service the agent starts itself is not enabled at boot (Galera: joins in turn)
    assert systemd.units["mariadb.service"] == {"active": "active", "enabled": "disabled"}
    assert ("task", "galera-bootstrap") in stand.calls
    memcached = (tmp_path / "etc/memcached.conf").read_text()
    assert "-l 10.0.0.11" in memcached and "-m 64" in memcached
    cnf = (tmp_path / "etc/mysql/mariadb.conf.d/99-rackforge.cnf").read_text()
    assert "gcomm://10.0.0.11,10.0.0.12,10.0.0.13" in cnf
    assert "innodb_flush_log_at_trx_commit = 1" in cnf
    assert (tmp_path / "var/lib/rabbitmq/.erlang.cookie").stat().st_mode & 0o777 == 0o400

    calls, asked = len(systemd.calls), len(stand.calls)
    second = one_pass(rec)
    assert second.actions == [] and len(systemd.calls) == calls
    # the steps are asked again (they look, find nothing to do); no task runs again
    assert [c for c in stand.calls[asked:] if c[0] != "step" or c[2]] == []


def test_only_what_changed_restarts(rack, tmp_path):
    reg, nodes = rack
    rec, systemd, stand, one_pass = agent_parts(reg, nodes, "n1", tmp_path)
    one_pass(rec)
    one_pass(rec)
    # the VIP moves: HAProxy and keepalived change, nothing else does
    reg.kv.txn([], [(keys.CLUSTER, json.dumps({"name": "rack1", "vip": "10.0.0.101"})
                     .encode())])
    third = one_pass(rec)
    # keepalived's unit drop-in names the VIP: a restart; HAProxy reloads its new file
    assert [(a.kind, a.target) for a in third.actions if a.kind in ("restart", "reload")] \
        == [("reload", "haproxy.service"), ("restart", "keepalived.service")]
    written = sorted(a.target for a in third.actions if a.kind == "write")
    assert written == ["/etc/haproxy/haproxy.cfg", "/etc/keepalived/keepalived.conf",
                       "/etc/systemd/system/keepalived.service.d/50-rackforge.conf"]
    assert "daemon-reload" in kinds(third)


def test_a_change_written_while_the_service_waits_is_restarted_for_later(rack, tmp_path):
    """keepalived's file changes while it waits for HAProxy, and the agent restarts in
    between: the restart owed is on disk, paid once keepalived may go on, and only once."""
    reg, nodes = rack
    rec, systemd, stand, one_pass = agent_parts(reg, nodes, "n1", tmp_path)
    one_pass(rec)
    reg.kv.txn([], [(keys.CLUSTER, json.dumps({"name": "rack1", "vip": "10.0.0.101"})
                     .encode())])
    trackers = ok_trackers(rec.catalogue)
    trackers["haproxy"].state = health.FAILED
    waiting = one_pass(rec, trackers)
    assert "keepalived" in waiting.pending
    assert ("write", "/etc/keepalived/keepalived.conf") in \
        [(a.kind, a.target) for a in waiting.actions]
    assert ("restart", "keepalived.service") not in systemd.calls
    rec, systemd2, _, one_pass = agent_parts(reg, nodes, "n1", tmp_path)   # a new agent
    systemd2.units = systemd.units
    later = one_pass(rec)
    assert [a.target for a in later.actions if a.kind == "restart"] == ["keepalived.service"]
    assert one_pass(rec).actions == []


def test_a_controller_joining_restarts_nothing(tmp_path):
    """The third controller joins: the member list MariaDB reads only when it forms or
    joins is rewritten without a restart; RabbitMQ's (the first controller and this node)
    does not change; HAProxy and keepalived reload."""
    reg, nodes = agentrack.make(tmp_path / "rack", count=2)
    rec, systemd, stand, one_pass = agent_parts(reg, nodes, "n1", tmp_path)
    one_pass(rec)
    agentrack.add(reg, roles.RoleElection(reg.kv), reg.authority, nodes, "n3", "10.0.0.13")
    calls, asked = len(systemd.calls), len(stand.calls)
    joined = one_pass(rec)
    quiet = sorted(a.target for a in joined.actions if a.detail == "no restart needed")
    assert quiet == ["/etc/mysql/mariadb.conf.d/99-rackforge.cnf"]
    assert "gcomm://10.0.0.11,10.0.0.12,10.0.0.13" in \
        (tmp_path / "etc/mysql/mariadb.conf.d/99-rackforge.cnf").read_text()
    assert sorted(systemd.calls[calls:]) == [
        ("reload", "haproxy.service"), ("reload", "keepalived.service")]
    assert not [c for c in stand.calls[asked:] if c[0] == "step" and c[2]]


def test_dry_run_says_what_it_would_do_and_does_nothing(rack, tmp_path):
    reg, nodes = rack
    rec, systemd, stand, one_pass = agent_parts(reg, nodes, "n2", tmp_path)
    rec.dry_run = True
    before = [(e.key, e.value) for e in reg.kv.get_prefix("/")]
    outcome = one_pass(rec)
    assert {"write", "enable", "start"} <= set(kinds(outcome))
    assert systemd.calls == [] and stand.calls == []
    assert not (tmp_path / "etc").exists()
    assert [(e.key, e.value) for e in reg.kv.get_prefix("/")] == before


def test_a_compute_node_runs_no_control_plane_and_stops_what_it_should_not_run(rack, tmp_path):
    reg, nodes = rack
    rec, systemd, stand, one_pass = agent_parts(reg, nodes, "n4", tmp_path)
    systemd.units["memcached.service"] = {"active": "active", "enabled": "enabled"}
    one_pass(rec)
    assert ("stop", "memcached.service") in systemd.calls
    assert ("disable", "memcached.service") in systemd.calls
    assert not any(verb == "start" for verb, _ in systemd.calls)
    assert (tmp_path / "etc/hosts").is_file()          # hosts is every node's
    assert not (tmp_path / "etc/haproxy").exists()
    assert one_pass(rec).actions == []


def test_a_service_waits_for_what_it_needs_and_the_others_go_on(rack, tmp_path):
    reg, nodes = rack
    rec, systemd, stand, one_pass = agent_parts(reg, nodes, "n1", tmp_path)
    trackers = ok_trackers(rec.catalogue)
    trackers["haproxy"].state = health.FAILED
    outcome = one_pass(rec, trackers)
    assert outcome.pending["keepalived"] == "waiting for haproxy to be ok"
    assert systemd.units["keepalived.service"]["active"] == "inactive"
    assert systemd.units["memcached.service"]["active"] == "active"


def test_without_a_vip_there_is_no_haproxy_or_keepalived(rack, tmp_path):
    reg, nodes = rack
    reg.kv.txn([], [(keys.CLUSTER, json.dumps({"name": "rack1"}).encode())])
    rec, systemd, stand, one_pass = agent_parts(reg, nodes, "n1", tmp_path)
    one_pass(rec)
    assert systemd.units["haproxy.service"]["active"] == "inactive"
    assert systemd.units["mariadb.service"]["active"] == "active"


def test_services_whose_units_the_image_lacks_are_not_this_nodes(rack, tmp_path):
    reg, nodes = rack
    rec, systemd, stand, one_pass = agent_parts(reg, nodes, "n1", tmp_path)
    del systemd.units["rabbitmq-server.service"]
    outcome = one_pass(rec)
    assert "rabbitmq" not in outcome.running and "rabbitmq-users" not in outcome.pending
    assert outcome.errors == {}


def test_a_controller_of_the_minimal_image_runs_only_what_that_image_carries(rack, tmp_path):
    """The minimal image has etcd and the join service, none of the control plane: the
    Galera check (whose units are its own files) is not brought up without MariaDB."""
    reg, nodes = rack
    rec, systemd, stand, one_pass = agent_parts(reg, nodes, "n1", tmp_path)
    for unit in ALL_UNITS[2:]:
        del systemd.units[unit]
    outcome = one_pass(rec)
    v = view.read(reg, nodes["n1"][0].id, {"interface": "eth0", "prefix": 24},
                  {"memcached_mib": 64, "innodb_buffer_pool_mib": 128, "rabbitmq_memory": 0.2})
    assert sorted(s.name for s in rec.desired(v)) == ["etcd", "hosts", "join", "sysctl"]
    assert not (tmp_path / "etc/systemd/system/rackforge-galeracheck.socket").exists()
    assert outcome.errors == {}


def test_a_service_whose_unit_file_it_writes_itself_is_brought_up(rack, tmp_path):
    """The Galera check's socket unit is one of its own configuration files: not installed
    before the agent writes it, and the service is this node's all the same."""
    reg, nodes = rack
    rec, systemd, stand, one_pass = agent_parts(reg, nodes, "n1", tmp_path)
    del systemd.units["rackforge-galeracheck.socket"]
    real_states = systemd.states

    def states(units):          # the unit appears once its file is written (daemon-reload)
        if (tmp_path / "etc/systemd/system/rackforge-galeracheck.socket").exists():
            systemd.install("rackforge-galeracheck.socket")
        return real_states(units)
    systemd.states = states
    one_pass(rec)
    assert systemd.units["rackforge-galeracheck.socket"]["active"] == "active"


def test_a_rotated_secret_is_rendered_restarted_and_applied_once(rack, tmp_path):
    reg, nodes = rack
    cat = catalogue.load(**hooks.names())
    rec1, systemd1, stand1, pass1 = agent_parts(reg, nodes, "n1", tmp_path / "n1")
    rec2, systemd2, stand2, pass2 = agent_parts(reg, nodes, "n2", tmp_path / "n2")
    rec4, systemd4, stand4, pass4 = agent_parts(reg, nodes, "n4", tmp_path / "n4")
    for rec, one_pass in ((rec1, pass1), (rec2, pass2), (rec4, pass4)):
        one_pass(rec)
    assert pass1(rec1).actions == [] and pass2(rec2).actions == []
    cnf = tmp_path / "n2/etc/mysql/mariadb.conf.d/99-rackforge.cnf"
    before = cnf.read_text()

    def runs():
        return [stand.calls.count(("task", "galera-users")) for stand in (stand1, stand2)]
    assert runs() == [1, 0]                                  # n1 came up first and set it
    keyring.rotate(reg.kv, cat.secrets, "mariadb-sst")
    n2 = pass2(rec2)
    assert runs() == [1, 1]                                  # applied here, once
    assert any(a.kind == "task" and "rotated" in a.detail for a in n2.actions)
    assert cnf.read_text() != before
    assert "/etc/mysql/mariadb.conf.d/99-rackforge.cnf" in [
        a.target for a in n2.actions if a.kind == "write"]
    assert ("step", "galera", True) in stand2.calls         # its start step sees the change
    n1 = pass1(rec1)                                         # the other controller: not again
    assert runs() == [1, 1] and n1.pending == {}
    assert [a.target for a in n1.actions if a.kind == "write"] == [
        "/etc/mysql/mariadb.conf.d/99-rackforge.cnf"]
    assert pass4(rec4).actions == []                         # a compute node never read it
    assert pass2(rec2).actions == [] and pass1(rec1).actions == []


def test_a_pass_leaves_a_failed_unit_to_the_restart_policy(rack, tmp_path):
    """memcached failed: the health loop restarts it with backoff and a limit; a pass
    (every 30 s, and on every change in etcd) does not start it behind the policy's back,
    nor a service the policy gave up on, until its configuration changes."""
    reg, nodes = rack
    rec, systemd, stand, one_pass = agent_parts(reg, nodes, "n1", tmp_path)
    one_pass(rec)
    systemd.units["memcached.service"]["active"] = "failed"
    systemd.units["mariadb.service"]["active"] = "failed"
    trackers = ok_trackers(rec.catalogue)
    trackers["memcached"].state = health.FAILED
    trackers["mariadb"].state, trackers["mariadb"].gave_up = health.FAILED, True
    calls, asked = len(systemd.calls), len(stand.calls)
    assert one_pass(rec, trackers).actions == []
    assert systemd.calls[calls:] == [] and ("step", "galera", False) not in stand.calls[asked:]
    (tmp_path / "etc/memcached.conf").write_text("-m 4096\n")    # an input changes
    again = one_pass(rec, trackers)
    assert [(a.kind, a.target) for a in again.actions] == [
        ("write", "/etc/memcached.conf"), ("start", "memcached.service")]


def test_a_crash_the_checks_have_not_seen_yet_is_left_to_them(rack, tmp_path):
    """MariaDB SIGKILLed while ok: the next pass does not bring it back unreported; its
    checks see it fail, the policy reports it once and asks for the pass that restarts
    it through its step (then the pass runs the step)."""
    reg, nodes = rack
    rec, systemd, stand, one_pass = agent_parts(reg, nodes, "n1", tmp_path)
    one_pass(rec)
    systemd.units["mariadb.service"]["active"] = "failed"
    trackers = ok_trackers(rec.catalogue)
    asked = len(stand.calls)
    assert one_pass(rec, trackers).actions == []
    assert ("step", "galera", False) not in stand.calls[asked:]
    trackers["mariadb"].state = health.FAILED          # three failed checks later
    one_pass(rec, trackers)
    assert ("step", "galera", False) in stand.calls[asked:]
    assert systemd.units["mariadb.service"]["active"] == "active"


def test_a_one_off_pass_beside_the_agent_leaves_its_published_states_alone(rack, tmp_path):
    """'rackforge nodeagent reconcile --once' runs beside the node's agent: the agent's
    states and heartbeat stay as the agent published them, under the agent's lease."""
    reg, nodes = rack
    systemd = FakeSystemd(ALL_UNITS)
    running = make_agent(reg, nodes, "n1", tmp_path, systemd)
    running.keep_lease()
    running.reconcile()
    published = {e.key: (e.value, e.lease) for e in reg.kv.get_prefix(keys.HEALTH)}
    assert published and all(lease == running.lease for _, lease in published.values())
    once = make_agent(reg, nodes, "n1", tmp_path, systemd)
    once.publishes = False
    once.lease = reg.kv.lease_grant(daemon.LEASE_TTL)
    once.reconcile()
    reg.kv.lease_revoke(once.lease)
    assert {e.key: (e.value, e.lease) for e in reg.kv.get_prefix(keys.HEALTH)} == published
    assert reg.kv.get(keys.HEARTBEATS + nodes["n1"][0].id) is not None


def test_the_router_id_is_the_clusters_own_or_one_of_its_name():
    assert view.vrid("rack1") == view.vrid("rack1", None) == view.vrid("rack1", 0)
    assert 1 <= view.vrid("rack1") <= 254 and view.vrid("rack1") != view.vrid("rack2")
    assert view.vrid("rack1", 77) == 77
    assert view.vrid("rack1", "77") == view.vrid("rack1", True) == view.vrid("rack1")


def make_agent(reg, nodes, name, root, systemd, stand=None):

    node, key = nodes[name]
    agent = daemon.Agent(reg, node.id, key, catalogue.load(**hooks.names()), systemd,
                         stand or StandIns(), settings={"memcached_mib": 64,
                                                        "innodb_buffer_pool_mib": 128,
                                                        "rabbitmq_memory": 0.2},
                         root=str(root))
    agent.facts = {"interface": "eth0", "prefix": 24, "cpus": 2, "memory_mib": 4096}
    return agent


def test_a_service_that_waits_again_once_up_is_still_checked_and_published(rack, tmp_path):
    """MariaDB was ok, then its step waits (a restart in turn) while it has lost the
    Primary component: peers must read 'failed', not the 'ok' of before."""
    reg, nodes = rack
    stand = StandIns()
    agent = make_agent(reg, nodes, "n1", tmp_path, FakeSystemd(ALL_UNITS), stand)
    agent.keep_lease()
    for _ in range(6):          # a service starts once what it requires is ok: a few passes
        agent.reconcile()
        agent.check_due(force=True)
    assert "mariadb" not in agent.last_outcome.pending     # (HAProxy's HTTP check is real)
    node = nodes["n1"][0]
    assert health.read_all(reg.kv)[node.id]["mariadb"]["state"] == health.OK

    def waiting(ctx):
        raise reconcile.Waiting("waiting for another controller's turn to join")
    stand.STEPS["galera"] = waiting
    stand.CHECKS["galera"] = lambda v, s: health.Result(health.FAILED, "not in a Primary "
                                                        "component (non-Primary)")
    agent.reconcile()
    assert "mariadb" in agent.last_outcome.pending
    for _ in range(3):                                  # three in a row make a failure
        agent.check_due(force=True)
    published = health.read_all(reg.kv)[node.id]["mariadb"]
    assert published["state"] == health.FAILED and "Primary" in published["error"]


def test_a_service_without_a_check_waits_and_comes_back_with_what_it_requires(rack, tmp_path):
    """mariadb-users (a task, no unit, no check) while MariaDB restarts: pending, not
    failed, and ok again once MariaDB is (it was left failed for good)."""
    reg, nodes = rack
    stand = StandIns()
    agent = make_agent(reg, nodes, "n1", tmp_path, FakeSystemd(ALL_UNITS), stand)
    agent.keep_lease()
    node = nodes["n1"][0]

    def settle():
        for _ in range(6):
            agent.reconcile()
            agent.check_due(force=True)
        return {s: r["state"] for s, r in health.read_all(reg.kv)[node.id].items()}
    assert settle()["mariadb-users"] == health.OK
    stand.CHECKS["galera"] = lambda v, s: health.Result(health.FAILED, "mariadb is failed")
    states = settle()
    assert states["mariadb"] == health.FAILED and states["mariadb-users"] == health.PENDING
    stand.CHECKS["galera"] = lambda v, s: health.Result(health.OK)
    assert settle()["mariadb-users"] == health.OK
