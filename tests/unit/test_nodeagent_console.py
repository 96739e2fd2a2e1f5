"""The console's status page: the lines from a status document, and the app headless with
Textual's pilot against a fake local API (an answer, an agent away, a refresh)."""

import pytest
from pilot import run_app, screen_text

from rackforge.nodeagent import consoleview, localapi

DOC = {
    "node": {"id": "n2", "name": "node2", "state": "active", "version": "0.1.0",
             "profile": "hci", "address": "10.0.0.12", "bmc": "10.1.0.12",
             "uptime_s": 3723.5, "roles": ["controller", "compute", "storage"],
             "reasons": ["controller: slot 2 of the controllers (elected in join order)",
                         "compute too: the rack is converged",
                         "storage: it has disks for Ceph"]},
    "unhealthy": {"rabbitmq": {"state": "failed",
                               "error": "AMQP port 10.0.0.12:5672: Connection refused"}},
    "cluster": {"etcd": {"members": [{"reachable": True}, {"reachable": True},
                                     {"reachable": False}]},
                "vip": {"address": "10.0.0.100", "holders": ["node1"]},
                "galera": {"sizes": {"node1": 3, "node2": 3, "node3": 3}},
                "rabbitmq": {"running": {"node1": 2, "node2": None, "node3": 2}},
                "ceph": {"health": "HEALTH_WARN", "quorum": ["node1", "node2", "node3"]},
                "problems": ["node node2: service rabbitmq is failed: AMQP port "
                             "10.0.0.12:5672: Connection refused"]},
}


def test_the_page_says_who_how_to_reach_it_quorum_and_what_is_wrong():
    text = "\n".join(consoleview.lines(DOC))
    assert text.splitlines()[0] == \
        "node2  (active)  rackforge 0.1.0, profile hci, up 1 h 02 min"
    assert "roles: controller, compute, storage" in text
    assert "  controller: slot 2 of the controllers (elected in join order)" in text
    assert "management 10.0.0.12   BMC 10.1.0.12" in text
    assert "VIP 10.0.0.100 held by node1" in text
    assert "cluster: etcd 2/3, Galera 3/3, RabbitMQ 2/3, Ceph HEALTH_WARN, 3 mons" in text
    assert "not ok on this node:\n  rabbitmq failed: AMQP port 10.0.0.12:5672: " \
           "Connection refused" in text
    assert "problems in the cluster (1):" in text
    assert all(len(line) <= consoleview.WIDTH and line.isascii() for line in text.splitlines())


def test_without_the_registry_the_page_says_so_and_still_shows_the_node():
    doc = {"node": {"name": None, "address": "10.0.0.12", "version": "0.1.0",
                    "profile": "hci", "uptime_s": 59},
           "cluster": {"error": "the registry does not answer: timed out"}}
    out = consoleview.lines(doc)
    assert out[0].startswith("this node  (?)") and out[0].endswith("up 0 min")
    assert "management 10.0.0.12   BMC unknown" in out
    assert out[-1] == "cluster: the registry does not answer: timed out"


def test_many_problems_are_capped_and_long_lines_cut():
    problems = ["p%d " % i + "x" * 100 for i in range(12)]
    doc = {"node": {"name": "node1"}, "cluster": {"problems": problems}}
    out = consoleview.lines(doc)
    assert "problems in the cluster (12):" in out
    assert out[-1] == "  ... and 4 more: rackforge cluster status"
    assert all(len(line) <= consoleview.WIDTH for line in out)
    assert out[-2].endswith("...")


class FakeClient:
    def __init__(self, answers):
        self.answers = list(answers)
        self.asked = 0

    def get(self, path):
        assert path == "/v1/status"
        self.asked += 1
        answer = self.answers[min(self.asked, len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer


def run_console(client, script):
    pytest.importorskip("textual")
    from rackforge.nodeagent import console

    async def first_status(app):
        await app.workers.wait_for_complete()
    return run_app(console.ConsoleApp(client, refresh_every=3600, clock=lambda: 0), script,
                   settle=first_status)


def test_the_console_shows_the_agents_status_and_keeps_it_when_the_agent_goes():
    away = localapi.LocalApiError(path="/run/rackforge-nodeagent/api.sock",
                                  detail="no socket: is rackforge-nodeagent running?")
    client = FakeClient([DOC, away])
    seen = []

    async def script(pilot):
        seen.append(screen_text(pilot.app))
        await pilot.press("f5")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        seen.append(screen_text(pilot.app))

    run_console(client, script)
    assert client.asked == 2
    assert "rackforge console  node2" in seen[0]
    assert "VIP 10.0.0.100 held by node1" in seen[0]
    assert "local API (/run/rackforge-nodeagent/api.sock): no socket: is" in seen[1]
    assert "VIP 10.0.0.100 held by node1" in seen[1]        # the last good status stays
