"""``rackforge firstboot run``: bootstrap -> journal steps, on the in-memory registry."""

import json

import pytest

from rackforge import __version__, errors, keys, registry
from rackforge.cluster import join, tokens
from rackforge.firstboot import agent, bootstrap, cli as fb_cli, journal
from rackforge.firstboot.inventory import Inventory

LINE = "rackforge-firstboot: rackforge %s first-boot agent" % __version__


def inv(i, data_disk=True):
    disks = [{"name": "sda", "path": "/dev/sda", "size": 100 << 30, "system": True}]
    if data_disk:
        disks.append({"name": "sdb", "path": "/dev/sdb", "size": 500 << 30, "wwn": "0x5%d" % i,
                      "serial": "S%d" % i})
    return Inventory.from_dict({
        "cpu": {"model": "Xeon", "count": 8, "architecture": "x86_64"},
        "memory": {"total_bytes": 64 << 30}, "disks": disks, "system_vendor": {}, "bmc": {},
        "interfaces": [{"name": "eth0", "mac": "52:54:00:00:01:%02x" % i,
                        "kind": "physical"}]}).to_dict()


@pytest.fixture
def world(tmp_path, monkeypatch):
    """One shared registry; each node has its own state dir (set per call)."""
    reg = registry.MemoryRegistry()
    calls = {"etcd": 0, "network": [], "nodeagent": 0, "console": 0, "joins": 0,
             "members": [],
             "join_server": 0, "clients": {}, "answers": [], "in_use": set(),
             "persisted": []}
    return tmp_path, reg, calls


def env_for(reg, calls, i, data_disk=True, service=None, hostname=None):
    def start_etcd(name, address, cluster, pems, tls):
        assert pems[0].startswith(b"-----BEGIN CERTIFICATE") and b"PRIVATE KEY" in pems[2]
        calls["etcd"] += 1
        return ["https://%s:2379" % address]

    def join_etcd(name, address, cluster, pems, endpoints, reg_):
        assert cluster == "rack1" and b"PRIVATE KEY" in pems[2]
        calls["members"].append(name)
        return endpoints + ["https://%s:2379" % address]

    def join_client(**kw):
        """What the join service does with the client's request (no HTTP)."""
        calls["joins"] += 1
        assert "key" not in kw and b"PRIVATE" not in kw["csr_pem"]
        body = {"name": kw["name"], "csr": kw["csr_pem"].decode(),
                "inventory": kw["inventory"]}
        if kw["role"]:
            body["role"] = kw["role"]
        try:
            answer = service.join(join.parse_request(body, kw["source"], token=kw["token"]))
        except errors.RackforgeError as exc:
            raise join.JoinRefused(endpoint=kw["endpoints"][0], detail=str(exc)) from None
        assert "key" not in answer
        calls["answers"].append(answer)
        return answer

    return agent.Env(collect_inventory=lambda: inv(i, data_disk),
                     apply_network=lambda spec: calls["network"].append(spec.address),
                     start_etcd=start_etcd, join_etcd=join_etcd,
                     write_client=lambda eps, tls: calls["clients"].__setitem__(i, eps),
                     start_join_server=lambda ctx: calls.__setitem__(
                         "join_server", calls["join_server"] + 1),
                     connect_registry=lambda eps, tls: reg,
                     join_client=join_client,
                     storage_run=lambda argv: (0, "") if argv[0] == "wipefs" else (2, ""),
                     enable_nodeagent=lambda ctx: calls.__setitem__(
                         "nodeagent", calls["nodeagent"] + 1),
                     start_console=lambda say: calls.__setitem__(
                         "console", calls["console"] + 1),
                     address_in_use=lambda spec, address: address in calls["in_use"],
                     persist_network=lambda spec: calls["persisted"].append(spec.address),
                     hostname=hostname or "node%d.rack" % i)


def use_state(monkeypatch, tmp_path, name, text):
    state = tmp_path / name
    state.mkdir(exist_ok=True)
    monkeypatch.setenv("RACKFORGE_STATE", str(state))
    monkeypatch.setenv("RACKFORGE_CONFIG", str(state / "etc"))
    (state / "bootstrap.yaml").write_text(text)
    monkeypatch.setenv("RACKFORGE_BOOTSTRAP", str(state / "bootstrap.yaml"))
    return state


def run_cli(capsys, env):
    rc = fb_cli.cmd_firstboot_run(None, env=env)
    out = capsys.readouterr().out
    assert out.startswith(LINE)
    return rc, out


def seed_then_joins(world, monkeypatch, capsys, count=4):
    tmp_path, reg, calls = world
    use_state(monkeypatch, tmp_path, "n1", "seed: true\ncluster: rack1\nvip: 10.0.0.100\n"
                                           "management: {interface: eth0, "
                                           "address: 10.0.0.1/24}\n")
    rc, out = run_cli(capsys, env_for(reg, calls, 1))
    assert rc == 0, out
    assert "node node1 is controller,storage" in out
    from rackforge.cluster import ca
    authority = ca.CertificateAuthority.load()
    cluster = json.loads(reg.kv.get(keys.CLUSTER).value)
    assert cluster["join_endpoints"] == ["https://10.0.0.1:9443"]
    assert cluster["ca_sha256"] == authority.pin and cluster["vip"] == "10.0.0.100"
    seed = json.loads((tmp_path / "n1" / "node.json").read_text())
    identity = (seed["node_id"], ca.load_key((tmp_path / "n1/pki/node.key").read_bytes()))
    service = join.JoinService(reg, authority, ["https://10.0.0.1:2379"], identity=identity)
    token, _ = tokens.TokenStore(reg.kv).create(uses=count)
    text = ("join: {endpoint: 'https://10.0.0.1:9443', token: %s, ca_sha256: '%s'}\n"
            % (token, authority.pin))
    text += "management: {interface: eth0, address: 10.0.0.%d/24}\n"
    return service, token, text


def test_no_bootstrap_exits_0_quickly_and_says_it_waits(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RACKFORGE_STATE", str(tmp_path))
    monkeypatch.setenv("RACKFORGE_BOOTSTRAP", str(tmp_path / "missing.yaml"))
    rc, out = run_cli(capsys, None)
    assert rc == 0 and "waiting for one" in out and out.count("\n") == 2
    assert not journal.steps_dir(tmp_path).exists()


def test_bad_bootstrap_is_one_line_and_writes_nothing(world, monkeypatch, capsys):
    tmp_path, reg, calls = world
    state = use_state(monkeypatch, tmp_path, "n1", "seed: true\n")
    rc, out = run_cli(capsys, env_for(reg, calls, 1))
    assert rc == 2 and "not joined: bootstrap file" in out and "'cluster' is missing" in out
    assert out.count("\n") == 2 and not journal.steps_dir(state).exists()
    assert list(reg.kv.get_prefix("/")) == [] and calls["console"] == 0
    # the console banner says why the node stays unjoined
    issue = (tmp_path / "issue.d" / fb_cli.BANNER).read_text()
    assert issue.startswith("rackforge first boot: not joined: bootstrap file") \
        and "'cluster' is missing" in issue


def test_seed_and_four_joins_form_the_cluster(world, monkeypatch, capsys):
    tmp_path, reg, calls = world
    service, token, text = seed_then_joins(world, monkeypatch, capsys)
    for i in range(2, 6):
        state = use_state(monkeypatch, tmp_path, "n%d" % i, text % i)
        rc, out = run_cli(capsys, env_for(reg, calls, i, data_disk=(i != 5), service=service))
        assert rc == 0, out
        assert journal.done_marker(state).is_file()
        node = json.loads((state / "node.json").read_text())
        assert token not in (state / "firstboot/steps/03-join.json").read_text()
        assert (state / "pki/node.key").stat().st_mode & 0o077 == 0
        assert node["name"] == "node%d" % i
    assert (tmp_path / "issue.d" / fb_cli.BANNER).read_text() == \
        "rackforge first boot: node node5 joined as compute\n\n"
    nodes = {n.name: n for n in reg.list_nodes()}
    assert sorted(nodes) == ["node1", "node2", "node3", "node4", "node5"]
    assert [nodes["node%d" % i].role for i in range(1, 6)] == [
        "controller,storage", "controller,storage", "controller,storage", "compute,storage",
        "compute"]
    assert all(n.state == "active" and n.boot["desired"]["role"] for n in nodes.values())
    assert nodes["node2"].boot["storage"]["disks"][0]["name"] == "sdb"
    # every controller serves joins: the seed and the two that joined as controllers
    assert (calls["etcd"], calls["join_server"], calls["nodeagent"], calls["joins"]) == \
        (1, 3, 5, 4)
    # tty1's console started as each first boot began (hand-over enables it for good)
    assert calls["console"] == 5
    cluster = json.loads(reg.kv.get(keys.CLUSTER).value)
    assert cluster["join_endpoints"] == ["https://10.0.0.%d:9443" % i for i in (1, 2, 3)]
    for i in (2, 3):     # each got the CA's key, sealed for it, and keeps it 0600
        key = tmp_path / ("n%d" % i) / "ca" / "ca.key"
        assert key.read_bytes() == (tmp_path / "n1/ca/ca.key").read_bytes()
        assert key.stat().st_mode & 0o077 == 0
    assert not (tmp_path / "n4" / "ca").exists()
    # no node's private key left its node: not in any answer, not on the seed
    node_keys = {i: (tmp_path / ("n%d" % i) / "pki/node.key").read_bytes() for i in range(1, 6)}
    assert len(set(node_keys.values())) == 5
    assert not any("PRIVATE" in json.dumps(a) for a in calls["answers"])
    on_seed = b"".join(p.read_bytes() for p in (tmp_path / "n1").rglob("*") if p.is_file())
    assert not any(node_keys[i] in on_seed for i in range(2, 6))
    assert calls["network"] == ["10.0.0.%d/24" % i for i in range(1, 6)]
    # ... and kept for every later boot, at hand-over
    assert calls["persisted"] == ["10.0.0.%d/24" % i for i in range(1, 6)]
    # the two joining controllers become etcd members; compute nodes are clients
    assert calls["members"] == ["node2", "node3"]
    assert calls["clients"][3] == ["https://10.0.0.1:2379", "https://10.0.0.3:2379"]
    assert calls["clients"][4] == ["https://10.0.0.1:2379"]
    from rackforge.cluster import roles
    decisions = {d.node: d for d in roles.RoleElection(reg.kv).decisions()}
    assert [decisions[nodes["node%d" % i].id].storage for i in range(1, 6)] == [
        True, True, True, True, False]
    # run again: the done marker keeps first boot from doing anything
    rc, out = run_cli(capsys, env_for(reg, calls, 5, service=service))
    assert rc == 0 and "already completed" in out and calls["joins"] == 4


def test_join_killed_after_the_seed_answered_resumes_as_the_same_node(world, monkeypatch,
                                                                      capsys):
    tmp_path, reg, calls = world
    service, token, text = seed_then_joins(world, monkeypatch, capsys, count=2)
    state = use_state(monkeypatch, tmp_path, "n2", text % 2)
    env = env_for(reg, calls, 2, service=service)
    real = env.join_client

    class PowerCut(BaseException):
        pass

    def answered_then_killed(**kw):
        real(**kw)
        raise PowerCut()
    env.join_client = answered_then_killed
    with pytest.raises(PowerCut):
        fb_cli.cmd_firstboot_run(None, env=env)
    capsys.readouterr()
    assert journal.state(agent.build_steps(bootstrap.load(cmdline=""), env), base=state)[2] \
        == ("join", "started")
    rc, out = run_cli(capsys, env_for(reg, calls, 2, service=service))
    assert rc == 0, out
    assert "step join: resuming" in out
    assert [n.name for n in reg.list_nodes()] == ["node1", "node2"]
    assert tokens.TokenStore(reg.kv).get(token.split(".")[0]).used == 1
    assert reg.find_node("node2").role == "controller,storage"


def test_wrong_token_leaves_the_node_unjoined_and_resumable(world, monkeypatch, capsys):
    tmp_path, reg, calls = world
    service, token, text = seed_then_joins(world, monkeypatch, capsys)
    text = text % 2
    bad = text.replace(token, token.split(".")[0] + ".0000000000000000")
    state = use_state(monkeypatch, tmp_path, "n2", bad)
    before = [(e.key, e.value) for e in reg.kv.get_prefix("/")]
    rc, out = run_cli(capsys, env_for(reg, calls, 2, service=service))
    assert rc == 1 and "not joined: first boot step 'join' failed" in out
    assert "0000000000000000" not in out
    assert [(e.key, e.value) for e in reg.kv.get_prefix("/")] == before
    assert not journal.done_marker(state).exists()
    # the operator fixes the token: first boot resumes at the join
    use_state(monkeypatch, tmp_path, "n2", text)
    rc, out = run_cli(capsys, env_for(reg, calls, 2, service=service))
    assert rc == 0 and "step inventory" not in out and "node node2 is controller" in out


@pytest.mark.parametrize("text, words", [
    ("seed: true\ncluster: rack1\nmanagement: {interface: eth0, address: 10.0.0.1/24}\n",
     "the profile has 3 controllers, so the seed's bootstrap file needs 'vip: ADDRESS'"),
    ("seed: true\ncluster: rack1\nvip: 10.0.0.99\n"
     "management: {interface: eth0, address: 10.0.0.1/24}\n",
     "10.0.0.99 answers ARP on eth0: another machine uses it"),
])
def test_the_vip_is_checked_before_anything_starts(world, monkeypatch, capsys, text, words):
    tmp_path, reg, calls = world
    calls["in_use"].add("10.0.0.99")
    state = use_state(monkeypatch, tmp_path, "n1", text)
    rc, out = run_cli(capsys, env_for(reg, calls, 1))
    assert rc != 0 and words in out
    assert not (state / "ca").exists() and list(reg.kv.get_prefix("/")) == []
    assert calls["etcd"] == 0
