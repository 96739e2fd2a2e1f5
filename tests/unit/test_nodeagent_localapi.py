"""The node agent's local API on a real unix socket (root only, one error line, 0600), and the
status document the console reads, over the in-memory registry of a recorded rack."""

import json
import os
import stat

import agentrack
import pytest

from rackforge import keys
from rackforge.kvstore import RegistryUnavailable
from rackforge.nodeagent import localapi, nodestatus


@pytest.fixture
def served(tmp_path):
    apis = []

    def serve(routes, uids=(os.getuid(),)):
        api = localapi.LocalApi(routes, path=tmp_path / "run" / "agent.sock",
                                allowed_uids=uids).start()
        apis.append(api)
        return api, localapi.Client(api.path, timeout=5)
    yield serve
    for api in apis:
        api.stop()


def test_the_status_comes_back_over_a_socket_only_its_owner_opens(served):
    api, client = served({("GET", "/v1/status"): lambda: {"node": {"name": "n1"}}})
    assert client.get("/v1/status") == {"node": {"name": "n1"}}
    assert stat.S_IMODE(os.stat(api.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(api.path.parent).st_mode) == 0o700


def test_a_peer_that_is_not_allowed_is_refused(served):
    _, client = served({("GET", "/v1/status"): lambda: {}}, uids=(os.getuid() + 1,))
    with pytest.raises(localapi.LocalApiError, match="root only"):
        client.get("/v1/status")


def test_errors_are_one_line_and_the_server_goes_on(served):
    def down():
        raise RegistryUnavailable(endpoint="https://10.0.0.11:2379", detail="refused")

    def bug():
        raise KeyError("x")
    _, client = served({("GET", "/v1/down"): down, ("GET", "/v1/bug"): bug,
                        ("POST", "/v1/echo"): lambda body: body})
    with pytest.raises(localapi.LocalApiError, match="registry") as exc:
        client.get("/v1/down")
    assert "\n" not in str(exc.value)
    with pytest.raises(localapi.LocalApiError, match="KeyError"):
        client.get("/v1/bug")
    with pytest.raises(localapi.LocalApiError, match="no GET /v1/nothing"):
        client.get("/v1/nothing")
    assert client.post("/v1/echo", {"a": 1}) == {"a": 1}


def test_no_agent_says_where_to_look(tmp_path):
    with pytest.raises(localapi.LocalApiError, match="systemctl status rackforge-nodeagent"):
        localapi.Client(tmp_path / "none.sock").get("/v1/status")


def test_a_killed_agents_socket_is_replaced(served, tmp_path):
    stale = tmp_path / "run" / "agent.sock"
    stale.parent.mkdir()
    stale.write_text("left behind")
    _, client = served({("GET", "/v1/status"): lambda: {"ok": True}})
    assert client.get("/v1/status") == {"ok": True}


def publish(reg, node, service, record):
    reg.kv.txn([], [(keys.HEALTH + "%s/%s" % (node.id, service), json.dumps(record).encode())])


def test_the_document_has_the_node_why_its_roles_and_what_is_not_ok(tmp_path):
    reg, nodes = agentrack.make(tmp_path, count=4)
    n2, n4 = nodes["n2"][0], nodes["n4"][0]
    for name in ("n1", "n2", "n3", "n4"):
        publish(reg, nodes[name][0], "hosts", {"state": "ok", "since": 1})
    publish(reg, nodes["n1"][0], "keepalived", {"state": "ok", "detail": {"vip": True}})
    publish(reg, n2, "rabbitmq", {"state": "failed", "error": "AMQP port 10.0.0.12:5672: "
                                  "Connection refused"})
    reg.update_node(n2.id, lambda node: setattr(node, "bmc", {"address": "10.1.0.12"}))
    uptime = tmp_path / "uptime"
    uptime.write_text("3723.51 7000.00\n")
    doc = nodestatus.document(reg, n2.id, "hci", "10.0.0.12", 2 << 30, proc_uptime=uptime)
    me = doc["node"]
    assert (me["name"], me["state"], me["address"], me["bmc"], me["profile"]) == \
        ("n2", "active", "10.0.0.12", "10.1.0.12", "hci")
    assert me["roles"][0] == "controller" and me["uptime_s"] == 3723.51
    assert me["reasons"][0].startswith("controller: slot 2 of the controllers")
    assert doc["unhealthy"] == {"rabbitmq": {"state": "failed", "error":
                                             "AMQP port 10.0.0.12:5672: Connection refused"}}
    assert any("node n2: service rabbitmq is failed" in p for p in doc["cluster"]["problems"])
    assert doc["cluster"]["vip"] == {"address": "10.0.0.100", "holders": ["n1"]}
    compute = nodestatus.document(reg, n4.id, "hci", "10.0.0.14", 2 << 30)["node"]
    assert compute["roles"][0] == "compute"
    assert compute["reasons"][0].startswith("compute:")


def test_without_the_registry_the_node_part_still_answers(tmp_path):
    class Away:
        def get_node(self, node_id):
            raise RegistryUnavailable(endpoint="https://10.0.0.11:2379", detail="timed out")
        kv = None
    doc = nodestatus.document(Away(), "id-1", "hci", "10.0.0.12", 2 << 30)
    assert doc["node"]["address"] == "10.0.0.12" and doc["node"]["profile"] == "hci"
    assert doc["cluster"]["error"].startswith("the registry does not answer")


def test_the_agents_api_serves_every_path_the_console_asks(tmp_path, monkeypatch):
    """``daemon.local_api`` as the agent starts it: every path the console asks is
    routed; status, services, BMC answer; a network change left pending by a killed
    agent is rolled back at the start."""
    from types import SimpleNamespace

    from test_nodeagent_bmcinband import Bmc

    from rackforge.nodeagent import bmcinband, daemon, netchange
    monkeypatch.setenv("RACKFORGE_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("RACKFORGE_NODE_PROFILE", str(tmp_path / "profile.json"))
    reg, nodes = agentrack.make(tmp_path, count=2)
    n1 = nodes["n1"][0]
    kept = {"interface": "eno1", "address": "10.0.0.11/24"}
    applied = []
    network = netchange.NetworkChange(apply=lambda spec, old: applied.append(spec),
                                      keep=kept.update,
                                      current=lambda: dict(kept))
    (tmp_path / "state").mkdir()
    netchange.pending_file().write_text(json.dumps({
        "spec": dict(kept, address="10.0.0.61/24"), "previous": kept, "deadline": 0}))
    svc = SimpleNamespace(units=("rabbitmq-server.service",))
    agent = SimpleNamespace(node_id=n1.id, view=None, trackers={
        "rabbitmq": SimpleNamespace(service=svc, state="failed", error="refused")})
    api = daemon.local_api(agent, reg, path=tmp_path / "api.sock", network=network,
                           bmc=bmcinband.InbandBmc(Bmc().command),
                           allowed_uids=(os.getuid(),))
    try:
        client = localapi.Client(api.path, timeout=10)
        assert applied == [kept] and client.get("/v1/network")["pending"] is None
        assert client.get("/v1/status")["node"]["name"] == "n1"
        assert client.get("/v1/services")["services"] == [
            {"name": "nodeagent", "units": ["rackforge-nodeagent.service"], "state": "ok",
             "error": ""},
            {"name": "rabbitmq", "units": ["rabbitmq-server.service"], "state": "failed",
             "error": "refused"}]
        assert client.get("/v1/bmc")["address"] == "10.1.0.12/24"
        paths = {(m, p) for m, p in api.routes}
        assert paths == {("GET", "/v1/status"), ("GET", "/v1/services"), ("GET", "/v1/lldp"),
                         ("GET", "/v1/nettest"), ("GET", "/v1/bmc"), ("POST", "/v1/bmc"),
                         ("POST", "/v1/bmc/password"), ("GET", "/v1/network"),
                         ("POST", "/v1/network"), ("POST", "/v1/network/confirm"),
                         ("POST", "/v1/network/rollback")}
    finally:
        api.stop()
