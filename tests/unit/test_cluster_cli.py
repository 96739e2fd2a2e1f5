"""``rackforge cluster``, ``node`` and ``firstboot`` commands on the in-memory registry."""

import json

import lifecycle
import pytest

from rackforge import __version__, cli, registry
from rackforge import keys
from rackforge.cluster import ca, cli as cluster_cli, roles, tokens
from rackforge.firstboot import storage
from rackforge.firstboot.inventory import BlockDevice, Inventory

ENDPOINT = "https://10.0.0.1:9443"


@pytest.fixture
def reg(tmp_path, monkeypatch):
    reg = registry.MemoryRegistry()
    monkeypatch.setattr(cluster_cli, "_connect_registry", lambda args: reg)
    monkeypatch.setenv("RACKFORGE_STATE", str(tmp_path / "state"))
    return reg


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def snapshot(reg):
    return [(e.key, e.value) for e in reg.kv.get_prefix("/")]


def test_firstboot_run_keeps_its_journal_line(capsys):
    rc, out, _ = run(capsys, "firstboot", "run")
    assert rc == 0
    assert out.startswith("rackforge-firstboot: rackforge %s first-boot agent" % __version__)


def test_nodeagent_on_a_node_that_has_not_joined_says_so_in_one_line(
        capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("RACKFORGE_STATE", str(tmp_path / "empty"))
    for argv in (["nodeagent", "run"], ["nodeagent", "reconcile", "--once"]):
        rc, out, err = run(capsys, *argv)
        assert rc == 2 and err.count("\n") == 1 and "has not finished first boot" in err


def test_firstboot_inventory(capsys, monkeypatch):
    from rackforge.firstboot import inventory
    inv = Inventory.from_dict({
        "cpu": {"model": "Xeon", "count": 8, "architecture": "x86_64"},
        "memory": {"total_bytes": 64 << 30}, "interfaces": [],
        "disks": [{"name": "sda", "path": "/dev/sda", "size": 100 << 30, "system": True}],
        "system_vendor": {"manufacturer": "Dell"}, "bmc": {"address": "10.1.0.5"}})
    monkeypatch.setattr(inventory, "collect", lambda sources=None: inv)
    rc, out, _ = run(capsys, "firstboot", "inventory", "--json")
    assert rc == 0 and Inventory.from_dict(json.loads(out)) == inv
    rc, out, _ = run(capsys, "firstboot", "inventory")
    assert "8 x Xeon" in out and "sda" in out and "system" in out and "10.1.0.5" in out


def test_token_create_needs_a_ca_and_writes_nothing_without(reg, capsys):
    rc, out, err = run(capsys, "cluster", "token", "create", "--endpoint", ENDPOINT)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "rackforge cluster ca init" in err
    assert snapshot(reg) == []


def test_token_create_list_delete(reg, capsys):
    assert run(capsys, "cluster", "ca", "init", "--cluster", "r1")[0] == 0
    pin = ca.CertificateAuthority.load().pin
    rc, out, err = run(capsys, "cluster", "token", "create", "--endpoint", ENDPOINT,
                       "--uses", "3", "--ttl", "30m", "--description", "rack 1", "--json")
    assert rc == 0, err
    bundle = json.loads(out)
    assert bundle == {"endpoints": [ENDPOINT], "token": bundle["token"], "ca_sha256": pin}
    token_id, secret = bundle["token"].split(".")
    record = tokens.TokenStore(reg.kv).get(token_id)
    assert record.uses == 3 and record.expires - record.created == 1800

    rc, out, _ = run(capsys, "cluster", "token", "list")
    assert token_id in out and "valid" in out and "0/3" in out and "rack 1" in out
    assert secret not in out
    rc, out, _ = run(capsys, "cluster", "token", "list", "--json")
    assert json.loads(out)[0]["id"] == token_id and secret not in out and "hash" not in out

    rc, out, _ = run(capsys, "cluster", "token", "delete", token_id)
    assert rc == 0 and "deleted join token %s" % token_id in out
    rc, _, err = run(capsys, "cluster", "token", "delete", token_id)
    assert rc == 2 and "no join token" in err


def test_token_create_text_and_every_controllers_endpoint_from_the_cluster_record(reg, capsys):
    """A compute node has no CA of its own: the pin comes from the cluster record."""
    other = "https://10.0.0.2:9443"
    reg.kv.txn([], [(tokens.CLUSTER_KEY, json.dumps({
        "join_endpoints": [ENDPOINT, other], "ca_sha256": "sha256:" + "ab" * 32}).encode())])
    rc, out, _ = run(capsys, "cluster", "token", "create")
    assert rc == 0
    assert "endpoints: %s, %s" % (ENDPOINT, other) in out
    assert "ca_sha256: sha256:" + "ab" * 32 in out
    assert "uses: 1" in out


@pytest.mark.parametrize("argv,words", [
    (["--ttl", "3d"], "--ttl"), (["--uses", "0"], "--uses"),
    (["--endpoint", "http://x:1"], "https"), ([], "--endpoint")])
def test_token_create_refusals_write_nothing(reg, capsys, argv, words):
    run(capsys, "cluster", "ca", "init")
    rc, out, err = run(capsys, "cluster", "token", "create", *argv)
    assert rc == 2 and out == "" and words in err and err.count("\n") == 1
    assert snapshot(reg) == []


def test_ca_init_is_idempotent_and_show(reg, capsys):
    _, first, _ = run(capsys, "cluster", "ca", "init")
    _, second, _ = run(capsys, "cluster", "ca", "init")
    assert "created" in first and "kept" in second
    assert first.splitlines()[-1] == second.splitlines()[-1]
    rc, out, _ = run(capsys, "cluster", "ca", "show")
    assert rc == 0 and first.splitlines()[-1] in out and "rackforge cluster CA" in out


def _populate(reg):
    a = lifecycle.create(reg, "active", name="r1n1", macs=["52:54:00:00:00:01"],
                         bmc={"address": "10.1.0.11", "password": "gAAAA-secret"},
                         boot={"addresses": ["10.0.0.11/24"]})
    b = reg.create_node(registry.Node(name="r1n2", state="enrolled"))
    inv = Inventory.from_dict({
        "cpu": {"model": None, "count": 1, "architecture": "x86_64"},
        "memory": {"total_bytes": 1}, "interfaces": [], "system_vendor": {}, "bmc": {},
        "disks": [BlockDevice("sdb", "/dev/sdb", 200 << 30, wwn="0x5000").__dict__]})
    sel = storage.select(inv, run=lambda argv: (0, "") if argv[0] == "wipefs" else (2, ""))
    storage.record(reg, a.id, sel)
    election = roles.RoleElection(reg.kv)
    roles.record_role(reg, a.id, election.decide(a.id, storage=True))
    election.decide(b.id)
    reg.kv.txn([], [(keys.HEARTBEATS + a.id, json.dumps({"time": 1e9}).encode())])
    return a, b


def test_node_list_and_show(reg, capsys):
    a, b = _populate(reg)
    rc, out, _ = run(capsys, "node", "list", "--json")
    assert rc == 0
    nodes = {n["name"]: n for n in json.loads(out)}
    assert nodes["r1n1"]["role"] == "controller,storage"
    assert nodes["r1n1"]["state"] == "active"
    assert nodes["r1n1"]["addresses"] == ["10.0.0.11/24"]
    assert nodes["r1n1"]["disks"][0]["stable_id"] == "wwn:0x5000"
    assert nodes["r1n1"]["heartbeat"] == 1e9
    assert nodes["r1n2"]["role"] == "controller" and nodes["r1n2"]["heartbeat"] is None
    assert "gAAAA-secret" not in out

    rc, out, _ = run(capsys, "node", "list")
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "STATE", "ADDRESSES", "DISKS", "HEARTBEAT"]
    assert "controller,storage" in lines[1] and "bmc:10.1.0.11" in lines[1]
    assert "sdb" in lines[1] and "ago" in lines[1] and "never" in lines[2]

    rc, out, _ = run(capsys, "node", "show", "52:54:00:00:00:01", "--json")
    assert json.loads(out)["id"] == a.id and "gAAAA-secret" not in out
    rc, out, _ = run(capsys, "node", "show", "r1n1")
    assert "controller,storage" in out and "wwn:0x5000" in out and "gAAAA" not in out


def test_node_show_unknown_and_empty_list(reg, capsys):
    rc, out, _ = run(capsys, "node", "list")
    assert rc == 0 and "no nodes" in out
    rc, out, err = run(capsys, "node", "show", "nope")
    assert rc == 2 and "no node 'nope'" in err and err.count("\n") == 1


def test_unreachable_registry_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RACKFORGE_ETCD", raising=False)
    rc, _, err = run(capsys, "node", "list", "--etcd", "ftp://nowhere")
    assert rc == 2 and err.count("\n") == 1 and "--etcd" in err
