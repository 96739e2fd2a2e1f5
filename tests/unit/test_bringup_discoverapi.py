"""The discovery API (``/v1/discover``): a machine nobody enrolled is recorded once, with its
inventory, never gets a token, is bounded in number and shape, and is adopted by its BMC's
enrolment; on the in-memory registry with the real join service, one pass over HTTPS."""

import http.client
import json
import logging
import ssl

import pytest
from bringupsim import PASSWORD, World, fake_identity

from rackforge import keys
from rackforge.bmc import base, credentials
from rackforge.bmc import cli as bmc_cli
from rackforge.bringup import discoverapi, installapi
from rackforge.cluster import join, joinserver, tokens
from test_bringup_installapi import dump, enrolled, installed_with_token

STRAY = "10.0.0.31"


@pytest.fixture
def world(tmp_path, monkeypatch):
    return World(tmp_path, monkeypatch)


def body(address=STRAY, **override):
    """What the live appliance on ``address`` sends: its MACs, serial and inventory."""
    mac, serial = fake_identity(address)
    out = {"macs": [mac, "52:54:00:99:99:%02x" % int(address.rsplit(".", 1)[1])],
           "serial": serial,
           "inventory": {"cpu": {"model": "Xeon", "count": 8, "architecture": "x86_64",
                                 "flags": ["vmx", "lm"]},
                         "memory": {"total_bytes": 64 << 30, "physical_mb": None},
                         "disks": [{"name": "sda", "path": "/dev/sda", "size": 480 << 30,
                                    "type": "disk", "rotational": False, "serial": "S1"}],
                         "interfaces": [{"name": "eno1", "mac": mac, "kind": "physical",
                                         "carrier": True, "lldp": None}],
                         "system_vendor": {"manufacturer": "Fake", "serial_number": serial},
                         "bmc": {"address": None, "mac": None},
                         "boot_mode": "uefi", "hostname": "debian"}}
    out.update(override)
    return out


def discovered(world):
    return [n for n in world.registry.list_nodes() if n.state == "discovered"]


def test_a_machine_is_recorded_discovered_with_its_inventory_and_nothing_secret(world):
    answer = world.discover.discover(body(), "10.0.1.31")
    node = world.registry.get_node(answer["node"])
    assert answer == {"node": node.id, "state": "discovered"}
    mac, serial = fake_identity(STRAY)
    assert node.macs == sorted([mac, "52:54:00:99:99:1f"]) and not node.bmc
    assert node.inventory == {"host": body()["inventory"]}
    assert node.boot["discovered"]["address"] == "10.0.1.31"
    assert node.boot["discovered"]["serial"] == serial
    assert node.name.startswith("node-") and node.role is None and node.key is None
    # no token, no install record, no certificate: nothing that could let it join
    for prefix in (keys.TOKENS, keys.BRINGUP_INSTALL, keys.NODE_CERTS, keys.SECRETS):
        assert world.kv.get_prefix(prefix) == []
    assert set(answer) == {"node", "state"}


def test_the_same_machine_again_is_not_recorded_twice(world):
    first = world.discover.discover(body(), "10.0.1.31")
    before = dump(world)
    # rebooted into discovery: one MAC is enough, its address and inventory may change
    mac, _ = fake_identity(STRAY)
    again = world.discover.discover(body(macs=[mac.upper()], inventory={}), "10.0.1.77")
    assert again == first and dump(world) == before
    assert len(world.registry.list_nodes()) == 1


@pytest.mark.parametrize("state", ["enrolled", "failed", "active"])
def test_a_node_the_registry_holds_is_answered_with_its_state_and_writes_nothing(world, state):
    node = enrolled(world, STRAY, state=state)
    before = dump(world)
    assert world.discover.discover(body(), "10.0.1.31") == {"node": node.id, "state": state}
    assert dump(world) == before


def test_a_discovered_machine_never_gets_a_token_nor_joins_with_one(world):
    found = world.registry.get_node(world.discover.discover(body(), "10.0.1.31")["node"])
    mac, serial = fake_identity(STRAY)
    with pytest.raises(installapi.InstallRefused) as err:        # the install API: 403
        world.install.install({"node": found.id, "macs": [mac], "serial": serial}, "10.0.1.31")
    assert installapi.status_of(err.value) == 403
    assert world.kv.get_prefix(keys.TOKENS) == []
    machine = world.machine(STRAY)
    # another node's bound token: refused like a wrong token, nothing written
    _, token = installed_with_token(world, "10.0.0.22")
    before = dump(world)
    with pytest.raises(tokens.TokenBoundElsewhere):
        machine.join(found, token=token, name=found.name)
    # even an operator's unbound token (it cannot get one) does not take its record
    unbound, _ = tokens.TokenStore(world.kv).create()
    with pytest.raises(join.NodeTaken):
        machine.join(found, token=unbound, name="stray")
    assert world.registry.get_node(found.id).state == "discovered"
    assert world.kv.get(keys.NODE_CERTS + found.id) is None
    assert dump(world).replace(b"\n", b"").count(b"/rackforge/pki/") == \
        before.replace(b"\n", b"").count(b"/rackforge/pki/")


def test_the_number_of_discovered_records_is_capped(world, caplog):
    now = [0.0]
    service = discoverapi.DiscoverService(world.registry, limit=3, monotonic=lambda: now[0])
    for i in range(3):
        service.discover(body("10.0.0.%d" % (40 + i)), "10.0.1.9")
    before = dump(world)
    with caplog.at_level(logging.WARNING, logger=discoverapi.LOG.name):
        for i in range(2):
            with pytest.raises(discoverapi.DiscoveryFull) as err:
                service.discover(body("10.0.0.%d" % (50 + i)), "10.0.1.9")
    assert str(err.value).startswith("discovery full: 3 machines are discovered")
    assert discoverapi.status_of(err.value) == 503 and err.value.retryable
    assert dump(world) == before
    assert len([r for r in caplog.records if "discovery of a machine" in r.message]) == 1
    # one already recorded is still answered
    assert service.discover(body("10.0.0.40"), "10.0.1.9")["state"] == "discovered"
    # a place freed (the operator removed one): taken once the count is read again
    world.registry.delete_node(discovered(world)[0].id)
    with pytest.raises(discoverapi.DiscoveryFull):
        service.discover(body("10.0.0.50"), "10.0.1.9")
    now[0] += discoverapi.FULL_RECHECK
    assert service.discover(body("10.0.0.50"), "10.0.1.9")["state"] == "discovered"
    assert len(discovered(world)) == 3
    # other states do not count: the rack's own nodes never fill discovery
    enrolled(world, "10.0.0.60")
    assert service.count() == 3


def test_the_cap_holds_across_two_join_services(world):
    """Two controllers discovering at once cannot both take the last place: each record
    rewrites the discovery key, compared in the same transaction."""
    a = discoverapi.DiscoverService(world.registry, limit=1)
    b = discoverapi.DiscoverService(world.registry, limit=1)
    counted = a.count

    def racing():
        seen = counted()
        if not discovered(world):       # b records one between a's count and a's write
            b.discover(body("10.0.0.45"), "10.0.1.9")
        return seen
    a.count = racing
    with pytest.raises(discoverapi.DiscoveryFull):
        a.discover(body("10.0.0.44"), "10.0.1.9")
    assert len(discovered(world)) == 1


@pytest.mark.parametrize("sent", [
    [], "x", {"macs": []}, {"macs": ["52:54:00:00:00:01"], "token": "abcdef.0123456789abcdef"},
    {"macs": ["not-a-mac"]}, {"macs": ["01:00:5e:00:00:01"]}, {"macs": ["00:00:00:00:00:00"]},
    {"macs": ["52:54:00:00:00:%02x" % i for i in range(65)]},
    {"macs": ["52:54:00:00:00:01"], "serial": "s" * 129},
    {"macs": ["52:54:00:00:00:01"], "serial": 7},
    {"macs": ["52:54:00:00:00:01"], "inventory": []},
    {"macs": ["52:54:00:00:00:01"], "inventory": {"disks": [
        {k: "x" * 200 for k in ("name", "path", "model", "vendor", "serial", "wwn", "by_path",
                                "bus", "type")} for _ in range(64)]}}])
def test_a_malformed_request_is_400_and_writes_nothing(world, sent):
    before = dump(world)
    with pytest.raises(discoverapi.BadDiscoverRequest) as err:
        world.discover.handle(discoverapi.DISCOVER, json.dumps(sent).encode())
    assert discoverapi.status_of(err.value) == 400
    assert dump(world) == before


def test_only_the_inventorys_own_fields_are_kept_each_of_its_type():
    sent = {"cpu": {"count": True, "model": "Xeon\x1b[31m\n  Gold", "flags": ["vmx"] * 40,
                    "secret": "x"},
            "memory": {"total_bytes": -1, "physical_mb": 2 ** 70},
            "disks": [{"name": "sda", "size": "1", "extra": {"deep": [1, 2]}}, "junk",
                      {"name": ["a"]}] + [{"name": "d"}] * 80,
            "interfaces": [{"name": "eno1", "members": ["a"] * 30,
                            "lldp": {"vlan": 5, "port_id": 9, "x": 1}}],
            "hostname": "h" * 500, "password": "x", "boot_mode": {"a": 1}}
    kept = discoverapi.shaped(sent, discoverapi.SHAPE)
    assert kept["cpu"] == {"count": None, "model": "Xeon\\x1b[31m Gold", "flags": ["vmx"] * 32}
    assert kept["memory"] == {"total_bytes": None, "physical_mb": None}
    assert kept["disks"][0] == {"name": "sda", "size": None}
    assert kept["disks"][1] == {"name": None} and len(kept["disks"]) == 63
    assert kept["interfaces"][0]["members"] == ["a"] * 16
    assert kept["interfaces"][0]["lldp"] == {"vlan": 5, "port_id": None}
    assert kept["hostname"] == "h" * discoverapi.MAX_TEXT and kept["boot_mode"] is None
    assert "password" not in kept


# -- adopted by its BMC's enrolment --------------------------------------------------------
def enroll(world, address, name=None):
    bmc = base.BMC(address=address, username="admin", password=PASSWORD, driver="fake")
    return bmc_cli.enroll_one(world.registry, world.key, bmc_cli.enrolled_bmcs(world.registry),
                              world.fake, bmc, name)


def test_enrolling_its_bmc_adopts_the_discovered_machine_keeping_its_inventory(world):
    found = world.registry.get_node(world.discover.discover(body(), "10.0.1.31")["node"])
    node, inv, created = enroll(world, STRAY)
    assert created and node.id == found.id and node.state == "enrolled"
    assert node.name == "node-fake0031"                 # as a new enrolment is named
    assert node.inventory["host"] == found.inventory["host"]
    assert node.inventory["serial"] == inv.serial and node.inventory["macs"] == inv.macs
    assert node.macs == found.macs and node.boot["discovered"] == found.boot["discovered"]
    assert node.bmc["address"] == STRAY and PASSWORD not in json.dumps(node.bmc)
    assert credentials.decrypt(node.bmc["password"], world.key) == PASSWORD
    assert len(world.registry.list_nodes()) == 1
    # enrolling the same BMC again updates in place, as before
    again, _, created = enroll(world, STRAY)
    assert not created and again.id == found.id and again.inventory["host"]


def test_an_adopted_machine_keeps_its_given_name_and_without_a_serial_its_own(world):
    found = world.registry.get_node(world.discover.discover(body(), "10.0.1.31")["node"])
    assert enroll(world, STRAY, name="rack1-n31")[0].name == "rack1-n31"
    other = world.registry.get_node(world.discover.discover(body("10.0.0.32"), "x")["node"])
    reported = world.fake.inventory.get_inventory

    def no_serial(bmc):
        inv = reported(bmc)
        inv.serial = None
        return inv
    world.fake.inventory.get_inventory = no_serial
    assert enroll(world, "10.0.0.32")[0].name == other.name
    assert found.id != other.id


def test_the_bmc_enroll_command_says_it_adopted_the_discovered_one(world, capsys, monkeypatch):
    from rackforge import cli
    from rackforge.bmc import drivers

    world.discover.discover(body(), "10.0.1.31")
    monkeypatch.setattr(drivers, "get_driver", lambda name: world.fake)
    monkeypatch.setattr(bmc_cli, "_connect_registry", lambda args: world.registry)
    monkeypatch.setenv(credentials.DEFAULT_PASSWORD_ENV, PASSWORD)
    assert cli.main(["bmc", "enroll", STRAY, "--user", "admin", "--driver", "fake"]) == 0
    out = capsys.readouterr().out
    assert "enrolled node-fake0031" in out and "(the machine discovered before)" in out


def test_an_unenrolled_pxe_machine_is_discovered_never_joins_and_rack_up_installs_it(world):
    from test_bringup_rack import rack_up

    machine = world.machine(STRAY)
    world.fake.rack.power[STRAY] = "on"                  # someone powered it on
    for _ in range(5):
        world.tick()
    node, = world.registry.list_nodes()
    assert node.state == "discovered" and machine.boots == ["discover"] * 5
    assert machine.discovered == {"node": node.id, "state": "discovered"}
    assert world.kv.get_prefix(keys.TOKENS) == [] and machine.answer is None
    assert node.inventory["host"]["system_vendor"]["serial_number"] == machine.serial
    # the operator brings its BMC up: adopted, installed and joined as that same record
    trackers, ok, out, _ = rack_up(world, [STRAY])
    assert ok, out
    after = world.registry.get_node(node.id)
    assert after.state == "active" and len(world.registry.list_nodes()) == 1
    assert after.boot["discovered"] == node.boot["discovered"]


def test_a_discovered_machine_shows_in_rack_status_and_node_list(world):
    from rackforge.bringup import display
    from rackforge.cluster import cli as cluster_cli

    found = world.registry.get_node(world.discover.discover(body(), "10.0.1.31")["node"])
    rows = display.status(world.registry)
    assert rows["totals"] == {"discovered": 1}
    assert rows["nodes"][0]["name"] == found.name and rows["nodes"][0]["bmc"] is None
    view = cluster_cli.node_view(world.registry, found)
    assert view["state"] == "discovered" and view["macs"] == found.macs


# -- over HTTPS, on the join service ---------------------------------------------------------
def post(server, world, path, data):
    context = ssl.create_default_context(cadata=world.authority.cert_pem.decode())
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=10)
    try:
        raw = data if isinstance(data, bytes) else json.dumps(data).encode()
        conn.request("POST", path, body=raw, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def oversized(server, world):
    """A request that says its body is one byte over the limit (and sends a little)."""
    context = ssl.create_default_context(cadata=world.authority.cert_pem.decode())
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=10)
    try:
        conn.putrequest("POST", "/v1/discover")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(discoverapi.MAX_BODY + 1))
        conn.endheaders(b"{}")
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_the_join_service_serves_discovery_with_its_limits(world, tmp_path):
    with joinserver.JoinServer(world.join, "127.0.0.1", 0, cert_dir=tmp_path / "srv",
                               install=world.install, discover=world.discover) as server:
        status, got = post(server, world, "/v1/discover", body())
        assert status == 200 and got["state"] == "discovered"
        assert post(server, world, "/v1/discover", body()) == (200, got)
        # the install API beside it still refuses the discovered machine
        mac, serial = fake_identity(STRAY)
        status, _ = post(server, world, "/v1/install",
                         {"node": got["node"], "macs": [mac], "serial": serial})
        assert status == 403
        # a body over 256 KiB is refused unread
        status, err = oversized(server, world)
        assert status == 400 and "256 KiB" in err["error"]
        # garbage counts like refused tokens: the address is turned away
        answers = [post(server, world, "/v1/discover", {"macs": "x"})
                   for _ in range(joinserver.REFUSALS_ALLOWED)]
        assert answers[0][0] == 400 and answers[-1][0] == 429
        assert post(server, world, "/v1/discover", body("10.0.0.33"))[0] == 429
    assert len(world.registry.list_nodes()) == 1
    with joinserver.JoinServer(world.join, "127.0.0.1", 0, cert_dir=tmp_path / "srv2",
                               install=world.install) as server:
        assert post(server, world, "/v1/discover", body())[0] == 404


def test_a_full_discovery_is_503_over_https(world, tmp_path):
    service = discoverapi.DiscoverService(world.registry, limit=0)
    with joinserver.JoinServer(world.join, "127.0.0.1", 0, cert_dir=tmp_path / "srv",
                               discover=service) as server:
        status, err = post(server, world, "/v1/discover", body())
        assert status == 503 and err["error"].startswith("discovery full")
    assert world.registry.list_nodes() == []
