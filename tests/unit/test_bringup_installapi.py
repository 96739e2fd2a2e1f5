"""The install API (``/v1/install``, ``/v1/install/report``) and the token it binds to one
node, on the in-memory registry with the real join service; one pass over HTTPS."""

import http.client
import json
import ssl

import lifecycle
import pytest
from bringupsim import World, fake_identity

from rackforge import keys, states
from rackforge.bringup import installapi
from rackforge.cluster import join, joinserver, tokens

ADDRESS = "10.0.0.21"


@pytest.fixture
def world(tmp_path, monkeypatch):
    return World(tmp_path, monkeypatch)


def enrolled(world, address=ADDRESS, state="installing", name=None):
    """A node as ``bmc enroll`` leaves it (BMC, MACs and serial from the BMC), moved on."""
    mac, serial = fake_identity(address)
    return lifecycle.create(world.registry, state, name=name or "n%s" % address.split(".")[3],
                            macs=[mac], bmc={"driver": "fake", "address": address, "port": 623},
                            inventory={"serial": serial, "macs": [mac]})


def ask(world, address=ADDRESS, target=None, **override):
    """``/v1/install`` as the installer on ``address`` asks it (one more NIC than
    the BMC knows of), with ``override``'s fields."""
    mac, serial = fake_identity(address)
    body = {"node": (target or world.node(address)).id,
            "macs": [mac, "52:54:00:99:99:99"], "serial": serial}
    body.update(override)
    return world.install.install(body, "10.0.1.9")


def dump(world):
    return b"\n".join(e.key.encode() + b"=" + e.value for e in world.kv.get_prefix("/"))


def test_the_right_node_gets_its_answer_and_a_bound_one_use_token(world):
    node = enrolled(world)
    got = ask(world, target=node)
    answer, report = got["answer"], got["report"]
    mac, serial = fake_identity(ADDRESS)
    token = answer["cluster"]["join"]["token"]
    assert answer == {"version": 1, "hostname": node.name,
                      "disk": {"match": {"size": "largest"}, "wipe": "never"},
                      "network": {"interface": "mac:" + mac, "address": "dhcp"},
                      "cluster": {"join": {"endpoints": ["https://10.0.0.1:9443"],
                                           "token": token,
                                           "ca_sha256": world.authority.pin}}}
    record = tokens.TokenStore(world.kv).get(token.split(".")[0])
    assert record.uses == 1 and record.bound == {"node": node.id, "name": node.name,
                                                 "macs": [mac], "serial": serial}
    stored = dump(world)                       # no secret in clear in the registry
    assert token.split(".")[1].encode() not in stored and report.encode() not in stored
    install = json.loads(world.kv.get(keys.BRINGUP_INSTALL + node.id).value)
    assert install["token"] == record.id and install["report"] == tokens.hash_secret(report)


def test_rack_ups_disk_settings_are_the_answers(world):
    from rackforge.bringup import progress
    node = enrolled(world)
    disk = {"match": {"serial": "S3Z*", "size": "largest"}, "wipe": "force"}
    progress.ProgressStore(world.kv).update(node.id, lambda p: None, create=lambda: (
        progress.Progress(node=node.id, disk=disk)))
    assert ask(world, target=node)["answer"]["disk"] == disk


@pytest.mark.parametrize("case", ["wrong macs", "wrong serial", "unknown node", "bad id",
                                  "enrolled", "installed", "active", "no bmc"])
def test_anything_else_is_403_with_the_same_line_and_writes_nothing(world, case):
    node = enrolled(world, state={"enrolled": "enrolled", "installed": "installed",
                                  "active": "active"}.get(case, "installing"))
    if case == "no bmc":
        world.registry.update_node(node.id, lambda n: setattr(n, "bmc", {}))
    before = dump(world)
    override = {"wrong macs": {"macs": ["52:54:00:00:00:99"]},
                "wrong serial": {"serial": "FAKE9999"},
                "unknown node": {"node": "0" * 8 + "-0000-4000-8000-" + "0" * 12},
                "bad id": {"node": "../../etc/passwd"}}.get(case, {})
    with pytest.raises(installapi.InstallRefused) as err:
        ask(world, target=node, **override)
    assert str(err.value) == str(installapi.InstallRefused())
    assert installapi.status_of(err.value) == 403
    assert dump(world) == before


def test_a_discovered_machine_is_refused_and_no_token_path_reaches_it(world):
    mac, serial = fake_identity("10.0.0.31")
    found = lifecycle.create(world.registry, "discovered", name="stray",
                             macs=[mac], inventory={"system_vendor": {"serial_number": serial}})
    assert found.state == "discovered" and states.boot("discovered") == states.DISCOVER
    with pytest.raises(installapi.InstallRefused):
        world.install.install({"node": found.id, "macs": [mac], "serial": serial}, "10.0.1.9")
    assert world.kv.get_prefix(keys.TOKENS) == []          # no token was ever made for it
    # even moved to installing by hand, it has no BMC enrolment to match: still refused
    world.registry.transition(found.id, "installing", states.OPERATOR, frm="discovered")
    with pytest.raises(installapi.InstallRefused):
        world.install.install({"node": found.id, "macs": [mac], "serial": serial}, "10.0.1.9")
    assert world.kv.get_prefix(keys.TOKENS) == []
    # and another node's bound token does not admit it
    other = enrolled(world)
    token = ask(world, target=other)["answer"]["cluster"]["join"]["token"]
    stray = world.machine("10.0.0.31")
    with pytest.raises(tokens.TokenBoundElsewhere):
        stray.join(found, token=token, name="stray")
    assert world.registry.get_node(found.id).state == "installing"


def installed_with_token(world, address=ADDRESS, name=None):
    node = enrolled(world, address, name=name)
    got = ask(world, address, target=node)
    world.install.report({"node": node.id, "report": got["report"], "result": "installed"})
    return world.registry.get_node(node.id), got["answer"]["cluster"]["join"]["token"]


def test_the_bound_token_admits_its_node_and_moves_it_installed_to_joining(world):
    node, token = installed_with_token(world)
    assert node.state == "installed"
    machine = world.machine(ADDRESS)
    answer = machine.join(node, token=token, name=node.name)
    after = world.registry.get_node(node.id)
    assert answer["node_id"] == node.id and after.state == "joining"
    assert after.bmc == node.bmc and after.key is not None and after.role
    assert tokens.TokenStore(world.kv).get(token.split(".")[0]).used == 1
    # resumed after a power cut (same key): the same node, nothing spent again
    again = machine.join(after, token=token, name=node.name)
    assert again["node_id"] == node.id
    assert tokens.TokenStore(world.kv).get(token.split(".")[0]).used == 1


@pytest.mark.parametrize("who", ["another node's name", "other macs", "other serial",
                                 "a new name"])
def test_the_bound_token_is_refused_for_any_other_identity(world, who):
    node, token = installed_with_token(world)
    other, _ = installed_with_token(world, "10.0.0.22")
    machine = world.machine(ADDRESS)
    mac, serial = fake_identity(ADDRESS)
    name, inventory = node.name, machine.inventory()
    if who == "another node's name":
        name = other.name
        inventory = world.machine("10.0.0.22").inventory()
    elif who == "other macs":
        inventory["interfaces"][0]["mac"] = "52:54:00:00:00:77"
    elif who == "other serial":
        inventory["system_vendor"]["serial_number"] = "FAKE7777"
    else:
        name = "newcomer"
        inventory["interfaces"][0]["mac"] = "52:54:00:00:00:78"
    before = dump(world)
    with pytest.raises(tokens.TokenBoundElsewhere) as err:
        machine.join(node, token=token, name=name, inventory=inventory)
    assert join.refusal_status(err.value) == 403
    assert dump(world) == before
    assert world.registry.get_node(node.id).state == "installed"


def test_a_bound_token_does_not_admit_its_node_before_its_install_is_done(world):
    node = enrolled(world)
    token = ask(world, target=node)["answer"]["cluster"]["join"]["token"]
    with pytest.raises(states.InvalidTransition):
        world.machine(ADDRESS).join(node, token=token, name=node.name)
    assert world.registry.get_node(node.id).state == "installing"


def test_a_new_call_revokes_the_previous_token(world):
    node = enrolled(world)
    first = ask(world, target=node)["answer"]["cluster"]["join"]["token"]
    got = ask(world, target=node)
    second = got["answer"]["cluster"]["join"]["token"]
    assert first != second
    ids = [e.key[len(keys.TOKENS):] for e in world.kv.get_prefix(keys.TOKENS)]
    assert ids == [second.split(".")[0]]
    world.install.report({"node": node.id, "report": got["report"], "result": "installed"})
    with pytest.raises(tokens.TokenRefused):
        world.machine(ADDRESS).join(node, token=first, name=node.name)
    assert world.machine(ADDRESS).join(node, token=second, name=node.name)["node_id"] == node.id


def test_the_report_moves_the_state_by_compare_and_set(world):
    node = enrolled(world)
    got = ask(world, target=node)
    with pytest.raises(installapi.ReportRefused):
        world.install.report({"node": node.id, "report": "x" * 32, "result": "installed"})
    reason = "no disk matches\x1b[31m " + "x" * 500
    answer = world.install.report({"node": node.id, "report": got["report"],
                                   "result": "failed", "reason": reason})
    assert answer == {"node": node.id, "state": "failed"}
    failed = world.registry.get_node(node.id)
    assert failed.boot["error"].startswith("install failed: no disk matches\\x1b[31m x")
    assert len(failed.boot["error"]) <= len("install failed: ") + installapi.MAX_REASON
    assert "\x1b" not in failed.boot["error"]
    assert world.kv.get_prefix(keys.TOKENS) == []             # the failed install's token
    # the same report again: the same answer; another result: 409
    assert world.install.report({"node": node.id, "report": got["report"],
                                 "result": "failed"})["state"] == "failed"
    with pytest.raises(states.InvalidTransition) as err:
        world.install.report({"node": node.id, "report": got["report"],
                              "result": "installed"})
    assert installapi.status_of(err.value) == 409


@pytest.mark.parametrize("body", [[], {"node": 5, "macs": ["52:54:00:00:00:01"]},
                                  {"node": "n", "macs": []},
                                  {"node": "n", "macs": ["not-a-mac"]},
                                  {"node": "n", "macs": ["52:54:00:00:00:01"], "serial": 7},
                                  {"node": "n", "macs": ["52:54:00:00:00:01"], "token": "x"}])
def test_a_malformed_request_is_400(world, body):
    with pytest.raises(installapi.BadInstallRequest) as err:
        world.install.handle(installapi.INSTALL, json.dumps(body).encode())
    assert installapi.status_of(err.value) == 400


# -- over HTTPS, on the join service ---------------------------------------------------------
def post(server, world, path, body):
    context = ssl.create_default_context(cadata=world.authority.cert_pem.decode())
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=10)
    try:
        data = json.dumps(body).encode()
        conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_the_join_service_serves_the_install_api_and_throttles_guessers(world, tmp_path):
    node = enrolled(world)
    mac, serial = fake_identity(ADDRESS)
    with joinserver.JoinServer(world.join, "127.0.0.1", 0, cert_dir=tmp_path / "srv",
                               install=world.install) as server:
        status, got = post(server, world, "/v1/install",
                           {"node": node.id, "macs": [mac], "serial": serial})
        assert status == 200 and got["answer"]["hostname"] == node.name
        status, got = post(server, world, "/v1/install/report",
                           {"node": node.id, "report": got["report"], "result": "installed"})
        assert (status, got) == (200, {"node": node.id, "state": "installed"})
        refusals = [post(server, world, "/v1/install", {"node": node.id, "macs": [mac],
                                                        "serial": serial})
                    for _ in range(joinserver.REFUSALS_ALLOWED + 1)]
        assert refusals[0] == (403, {"error": str(installapi.InstallRefused())})
        assert refusals[-1][0] == 429
    with joinserver.JoinServer(world.join, "127.0.0.1", 0, cert_dir=tmp_path / "srv2") \
            as server:
        assert post(server, world, "/v1/install", {"node": node.id})[0] == 404


def test_an_unbound_token_still_admits_new_nodes_only(world):
    """An unbound token still admits new nodes only (the join path is unchanged)."""
    token, _ = tokens.TokenStore(world.kv).create()
    machine = world.machine("10.0.0.41")
    answer = machine.join(None, token=token, name="fresh")
    assert world.registry.get_node(answer["node_id"]).state == "joining"
    node, _ = installed_with_token(world, "10.0.0.42")
    token, _ = tokens.TokenStore(world.kv).create()
    with pytest.raises(join.NodeTaken):
        world.machine("10.0.0.42").join(node, token=token, name=node.name)


def test_a_caller_on_this_controllers_network_keeps_its_lease_as_static(world, caplog):
    import ipaddress

    from rackforge.bringup import addressing
    world.install.network = lambda: addressing.LocalNetwork(
        ipaddress.IPv4Interface("10.0.1.1/24"), ipaddress.IPv4Address("10.0.1.254"))
    node = enrolled(world)
    mac, serial = fake_identity(ADDRESS)
    assert ask(world, target=node)["answer"]["network"] == {
        "interface": "mac:" + mac, "address": "10.0.1.9/24", "gateway": "10.0.1.254"}
    install = json.loads(world.kv.get(keys.BRINGUP_INSTALL + node.id).value)
    assert install["mac"] == mac and install["address"] == "10.0.1.9"
    assert addressing.reservations(world.kv) == {mac: "10.0.1.9"}
    # from another network (routed): DHCP, said in the journal, and nothing reserved
    caplog.set_level("WARNING")
    got = world.install.install({"node": node.id, "macs": [mac], "serial": serial}, "10.7.0.9")
    assert got["answer"]["network"] == {"interface": "mac:" + mac, "address": "dhcp"}
    assert "keeps DHCP" in caplog.text and "compute node" in caplog.text
    assert addressing.reservations(world.kv) == {}


def test_the_interface_is_the_enrolled_mac_that_network_booted(world):
    mac, serial = fake_identity(ADDRESS)
    second = "52:54:00:77:00:02"
    node = lifecycle.create(world.registry, "installing", name="n21", macs=[mac, second],
                            bmc={"driver": "fake", "address": ADDRESS, "port": 623},
                            inventory={"serial": serial, "macs": [mac, second]})
    body = {"node": node.id, "macs": [mac, second], "serial": serial}
    assert world.install.install(body, "10.0.1.9")["answer"]["network"]["interface"] == \
        "mac:" + mac                                   # no boot recorded: the first one
    world.registry.record_boot(mac, decision="install", node="n21")
    world.registry.record_boot(second, decision="install", node="n21")   # the later boot
    world.registry.record_boot(mac, decision="install", node="someone-else")
    assert world.install.install(body, "10.0.1.9")["answer"]["network"]["interface"] == \
        "mac:" + second
