"""The RabbitMQ start step's decisions, with rabbitmqctl answering as RabbitMQ 4.0 does:
when a controller waits for the first one, when it joins (and grows every quorum queue
onto itself), and that a failed join leaves the broker serving."""

import json
import subprocess
from types import SimpleNamespace

import pytest
from fakesystemd import FakeSystemd

from rackforge.kvstore import MemoryKV
from rackforge.nodeagent import rabbit
from rackforge.nodeagent.reconcile import StepContext, Waiting

NODES = [SimpleNamespace(id="n1", name="node1"), SimpleNamespace(id="n2", name="node2"),
         SimpleNamespace(id="n3", name="node3")]


class Ctl:
    """rabbitmqctl: cluster_status from a member list and the running nodes; every call
    recorded; ``fail`` names the commands that exit non-zero."""

    VERBS = ("cluster_status", "stop_app", "start_app", "join_cluster", "grow")

    def __init__(self, members, running, fail=()):
        self.members, self.running, self.fail = members, running, fail
        self.calls, self.argvs = [], []

    def __call__(self, argv, input=None, **kw):
        verb = next(a for a in argv if a in self.VERBS)
        self.calls.append(verb)
        self.argvs.append(argv)
        if verb in self.fail:
            return subprocess.CompletedProcess(argv, 69, "", "Error: %s failed" % verb)
        out = ""
        if verb == "cluster_status":        # RabbitMQ 4.0 --formatter json, trimmed
            out = json.dumps({"cluster_name": "rabbit@node1", "alarms": [],
                              "disk_nodes": ["rabbit@%s" % n for n in self.members],
                              "running_nodes": ["rabbit@%s" % n for n in self.running],
                              "partitions": {}})
        return subprocess.CompletedProcess(argv, 0, out, "")


def step(tmp_path, ctl, me, active=False, data=False, grown=False):
    if grown:
        tmp_path.mkdir(parents=True, exist_ok=True)
        (tmp_path / "grown").write_text("1\n")
    if data:
        (tmp_path / ("rabbit@" + me.name)).mkdir()
        (tmp_path / ("rabbit@" + me.name) / "cluster_nodes.config").write_text("[]")
    systemd = FakeSystemd([rabbit.UNIT])
    if active:
        systemd.units[rabbit.UNIT]["active"] = "active"
    view = SimpleNamespace(controllers=NODES, node_id=me.id, name=me.name)
    ctx = StepContext(service=None, view=view, systemd=systemd, kv=MemoryKV(), tasks=None,
                      changed=False, dry_run=False, context={})
    broker = rabbit.Rabbit(me.id, run=ctl, data=tmp_path, grown=tmp_path / "grown")
    return broker.step(ctx), systemd, lambda: broker.step(ctx)


def test_a_new_controller_waits_for_the_first_one(tmp_path):
    with pytest.raises(Waiting, match="node1"):
        step(tmp_path, Ctl([], []), NODES[1])


def test_a_member_starts_at_once_after_a_whole_rack_power_loss(tmp_path):
    """Every broker waits for its peers when it starts after a crash: waiting for the
    first controller's health here would be a deadlock."""
    ctl = Ctl(["node1", "node2", "node3"], ["node2"])
    actions, systemd, _ = step(tmp_path, ctl, NODES[1], data=True)
    assert ("start", rabbit.UNIT) in systemd.calls
    assert "join_cluster" not in ctl.calls and "stop_app" not in ctl.calls


def test_a_member_whose_first_controller_is_down_does_not_join_again(tmp_path):
    ctl = Ctl(["node1", "node2", "node3"], ["node2", "node3"])
    actions, _, again = step(tmp_path, ctl, NODES[2], active=True, data=True, grown=True)
    assert actions == [] and ctl.calls == ["cluster_status"]
    assert again() == [] and ctl.calls == ["cluster_status"]    # looked once, not every pass


def test_a_member_joined_by_peer_discovery_grows_the_quorum_queues_once(tmp_path):
    """A controller that joined by itself at its first start (its list names the first
    controller) or again after a factory reset: the queues declared before it get a
    replica on it, once; a grow that failed is made again on the next pass."""
    ctl = Ctl(["node1", "node3"], ["node1", "node3"], fail=("grow",))
    with pytest.raises(rabbit.RabbitError, match="rabbitmq-queues grow"):
        step(tmp_path, ctl, NODES[2], active=True, data=True)
    assert not (tmp_path / "grown").exists()
    broker = rabbit.Rabbit("n3", run=ctl, data=tmp_path, grown=tmp_path / "grown")
    systemd = FakeSystemd([rabbit.UNIT])
    systemd.units[rabbit.UNIT]["active"] = "active"
    view = SimpleNamespace(controllers=NODES, node_id="n3", name="node3")
    ctx = StepContext(service=None, view=view, systemd=systemd, kv=MemoryKV(), tasks=None,
                      changed=False, dry_run=False, context={})
    broker.member = True                    # as the failed pass left it
    ctl.fail, ctl.calls = (), []
    assert [a.detail for a in broker.step(ctx)] == ["quorum queues grown onto it"]
    assert ctl.calls == ["grow"] and (tmp_path / "grown").exists()
    assert broker.step(ctx) == [] and ctl.calls == ["grow"]         # once


def test_a_node_that_came_up_alone_joins_and_a_failed_join_leaves_it_serving(tmp_path):
    ctl = Ctl(["node2"], ["node2"])
    actions, _, _ = step(tmp_path, ctl, NODES[1], active=True, data=True, grown=True)
    assert ctl.calls == ["cluster_status", "stop_app", "join_cluster", "start_app", "grow"]
    # a marker of an earlier membership does not hold: the queues grow onto it again
    assert [a.detail for a in actions[-2:]] == ["joined node1's cluster",
                                                "quorum queues grown onto it"]
    # the quorum queues declared before the join get a replica on it
    assert ctl.argvs[-1][-4:] == [rabbit.QUEUES, "grow", "rabbit@node2", "all"]
    failing = Ctl(["node2"], ["node2"], fail=("join_cluster",))
    with pytest.raises(rabbit.RabbitError, match="join_cluster"):
        step(tmp_path / "again", failing, NODES[1], active=True)
    assert failing.calls[-1] == "start_app"


def conf(me):
    """rabbitmq.conf as the catalogue renders it on ``me`` (a node of ``NODES``)."""
    from test_ovn import CONTROLLERS, view
    from rackforge.nodeagent import catalogue, hooks, render

    cat = catalogue.load(**hooks.names())
    v = view(me)
    v.settings["rabbitmq_memory"] = 0.2
    context = v.context({"rabbitmq-cookie": "c"})
    config = next(c for c in cat.by_name["rabbitmq"].configs if c.path.endswith(".conf"))
    listed = [line.split(" = ")[1] for line in
              render.render(render.environment(), config, context).splitlines()
              if line.startswith("cluster_formation.classic_config.nodes.")]
    return listed, ["rabbit@" + p.name for p in CONTROLLERS]


def test_peer_discovery_lists_the_first_controller_and_this_node_only():
    # RabbitMQ 4.0 wants two reachable nodes of its list before it clusters: with every
    # controller listed, the first broker retries 30 times while the others wait for it
    listed, names = conf("n1")
    assert listed == names[:1]
    listed, names = conf("n2")
    assert listed == [names[0], names[1]]
