"""Five nodes form a cluster on real systemd: ``systemd-nspawn`` containers of the built image.

Every node boots the ``minimal`` image's root file system (its own overlay)
on a bridge in a network namespace this test creates; ``rackforge-firstboot``
runs from its unit in each.  Node 1 is the seed (etcd with TLS, the join
service); a token made on it with ``rackforge cluster token create`` lets
nodes 2-5 join.  Checked:

- exactly three controllers, all three voting etcd members, the others
  clients; every node active, with its role, in ``rackforge node list
  --json`` on a controller that is not the seed;
- node 3 loses power in the middle of its join (after the seed admitted it,
  before its journal says so: the agent's ``RACKFORGE_FIRSTBOOT_BREAK`` drill)
  and, booted again, resumes the join and ends joined once: one record, the
  token spent once for it;
- a sixth node with a wrong token is refused: nothing about it in the
  registry, its console banner says why; at the end, given a new token with
  ``rackforge firstboot join`` (the console's "Join with a new token"), it
  resumes its join step and joins;
- a controller reset to its factory state (``rackforge firstboot
  factory-reset``, the console's "Reset") leaves the cluster (its records, its
  etcd member), is erased, waits for join settings, and joins again with a new
  token, as a controller in its freed place;
- every controller serves joins: with the seed powered off, a seventh node
  joins through another controller (its join bundle lists all three);
- no node's private key was made off the node: each key is on its node only,
  never in a join answer nor on the seed's disk; each node has ssh host keys
  of its own; the image's presets kept networkd and the role units off.
"""

import json
import re

import pytest
from netns import wait_until
from nspawn import rack

from rackforge.firstboot import journal

pytestmark = pytest.mark.integration

SUBNET = "10.77.3"
JOIN_TIMEOUT = 420         # boot + inventory + network check + join + etcd learner catch-up


def address(i):
    return "%s.%d" % (SUBNET, 10 + i)


def management(i):
    return "management: {interface: host0, address: %s/24}\n" % address(i)


def join_text(bundle):
    return ("join: {endpoints: %s, token: '%s', ca_sha256: '%s'}\n"
            % (json.dumps(bundle["endpoints"]), bundle["token"], bundle["ca_sha256"]))


def private_keys(node):
    """{path: PEM} of every private key in the node's own writes (its overlay's upper)."""
    out = {}
    for p in node.upper.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink() and p.stat().st_size < 65536:
                data = p.read_bytes()
        except OSError:
            continue
        else:
            if p.is_file() and b"PRIVATE KEY-----" in data:
                out[str(p.relative_to(node.upper))] = data
    return out


def done(node):
    return node.path("/var/lib/rackforge/firstboot.done").exists()


def firstboot_log(node):
    """What rackforge-firstboot said in this boot (its journal)."""
    return node.journal("rackforge-firstboot.service")


def wait_done(node, timeout=JOIN_TIMEOUT):
    def finished():
        if node.proc is not None and node.proc.poll() is not None:
            raise AssertionError("%s stopped:\n%s" % (node.name, node.console_text()[-3000:]))
        if done(node):
            return True
        log = firstboot_log(node)
        if "not joined:" in log or "Failed with result" in log:
            raise AssertionError("%s did not join:\n%s" % (node.name, log[-3000:]))
        return False
    try:
        wait_until(finished, timeout, "%s's first boot" % node.name, interval=1)
    except AssertionError:
        print(firstboot_log(node)[-4000:])
        print(node.journal("rackforge-etcd.service")[-3000:])
        raise


def node_list(node):
    return {n["name"]: n for n in json.loads(node.run("rackforge", "node", "list",
                                                      "--json").stdout)}


def test_five_nodes_three_controllers_interrupted_join_and_bad_token(image_root, tmp_path):
    with rack(image_root, tmp_path / "nodes") as node:
        seed = node("node1")
        seed.mount()
        seed.write("/etc/hostname", "node1\n", mode=0o644)
        seed.write("/etc/rackforge/bootstrap.yaml",
                   "seed: true\ncluster: rack1\nvip: %s.100\n" % SUBNET + management(1))
        seed.boot()
        wait_done(seed)
        assert seed.run("systemctl", "is-active", "rackforge-etcd.service",
                        "rackforge-join.service").stdout.split() == ["active", "active"]
        bundle = json.loads(seed.run("rackforge", "cluster", "token", "create", "--uses", "4",
                                     "--json").stdout)
        assert bundle["endpoints"] == ["https://%s:9443" % address(1)]
        join = join_text(bundle)

        joiners = {}
        for i in range(2, 6):
            n = joiners[i] = node("node%d" % i)
            n.mount()
            n.write("/etc/hostname", "node%d\n" % i, mode=0o644)
            n.write("/etc/rackforge/bootstrap.yaml", join + management(i))
        # node 3 stops after the seed answered its join, before recording it
        drill = "/etc/systemd/system/rackforge-firstboot.service.d/break.conf"
        joiners[3].write(drill, "[Service]\nEnvironment=%s=join\n" % journal.BREAK_ENV,
                         mode=0o644)
        bad = node("node6")
        bad.mount()
        bad.write("/etc/hostname", "node6\n", mode=0o644)
        wrong = bundle["token"].split(".")[0] + ".0000000000000000"
        bad.write("/etc/rackforge/bootstrap.yaml",
                  join.replace(bundle["token"], wrong) + management(6))

        for n in list(joiners.values()) + [bad]:
            n.boot()

        # -- the interrupted join ----------------------------------------------------
        n3 = joiners[3]
        wait_until(lambda: "break after step join" in firstboot_log(n3), JOIN_TIMEOUT,
                   "node3 to stop after its join", interval=1)
        assert "node3" in node_list(seed)            # the seed admitted it ...
        step = json.loads(n3.path("/var/lib/rackforge/firstboot/steps/03-join.json")
                          .read_text())
        assert step["status"] == "started"          # ... its journal does not know yet
        n3.power_cut()
        n3.path(drill).unlink()
        n3.boot()

        for n in joiners.values():
            wait_done(n)
        assert re.search(r"step join: resuming \(attempt 2\)", firstboot_log(n3))

        # -- the wrong token -------------------------------------------------------
        wait_until(lambda: "not joined:" in firstboot_log(bad), 120,
                   "node6 to give up", interval=1)
        log = firstboot_log(bad)
        assert "refused the join" in log and wrong not in log
        banner = bad.path("/etc/issue.d/rackforge-firstboot.issue").read_text()
        assert banner.startswith("rackforge first boot: not joined:")
        assert not done(bad)

        # -- the cluster, seen from a controller that is not the seed ---------------
        controllers = [n for n in joiners.values()
                       if "joined as controller" in n.path(
                           "/etc/issue.d/rackforge-firstboot.issue").read_text()]
        assert len(controllers) == 2
        listing = node_list(controllers[0])
        assert sorted(listing) == ["node1", "node2", "node3", "node4", "node5"]
        roles = sorted(v["role"].split(",")[0] for v in listing.values())
        assert roles == ["compute", "compute", "controller", "controller", "controller"]
        assert all(v["state"] == "active" for v in listing.values())
        assert listing["node3"]["addresses"] == [address(3)]

        members = json.loads(seed.run(
            "PYTHONPATH=/usr/lib/rackforge", "python3", "-c",
            "import json; from rackforge import registry; "
            "print(json.dumps(registry.connect().kv.members()))").stdout)
        assert sorted(m["name"] for m in members) == sorted(
            n for n, v in listing.items() if v["role"].startswith("controller"))
        assert not any(m.get("isLearner") for m in members)

        tokens = json.loads(seed.run("rackforge", "cluster", "token", "list",
                                     "--json").stdout)
        assert [(t["used"], t["uses"]) for t in tokens] == [(4, 4)]
        for n in joiners.values():
            enabled = n.run("systemctl", "is-enabled", "rackforge-nodeagent.service")
            assert enabled.stdout.strip() == "enabled"

        # -- keys: each made on its node, and stayed there ---------------------------
        nodes = [seed] + list(joiners.values())
        node_keys = {n.name: n.path("/var/lib/rackforge/pki/node.key").read_bytes()
                     for n in nodes}
        assert len(set(node_keys.values())) == 5
        on_seed = private_keys(seed)
        assert not [p for p, k in on_seed.items()
                    if any(k == node_keys[o] for o in node_keys if o != "node1")]
        host_keys = {n.run("cat", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1]
                     for n in nodes}
        assert len(host_keys) == 5                       # made on each node, not baked in
        for i, n in ((1, seed), (4, joiners[4])):
            # the image's presets held through the first boot's preset-all (without them
            # systemd enabled ~50 units, Debian's own etcd.service among them) ...
            state = n.run("systemctl", "is-enabled", "etcd.service", check=False)
            assert state.stdout.strip() == "disabled", (n.name, state.stdout)
            # ... and hand-over kept the management address for every later boot
            kept = n.path("/etc/systemd/network/10-rackforge-host0.network").read_text()
            assert "Address=%s/24" % address(i) in kept
            assert n.run("systemctl", "is-enabled", "systemd-networkd.service").stdout.strip() \
                == "enabled"

        # -- the node agents run what these nodes' roles and image carry ------------
        def agent_reports(n, want):
            res = n.run("rackforge", "node", "services", n.name, "--json", check=False)
            found = json.loads(res.stdout or "{}").get("services", {}) if res.returncode == 0 \
                else {}
            return {s: r.get("state") for s, r in found.items()} == want
        wait_until(lambda: agent_reports(seed, {"etcd": "ok", "join": "ok", "hosts": "ok",
                                                "sysctl": "ok"}), 120,
                   "node1's agent to report its services ok", interval=2)
        compute = next(n for n in joiners.values() if n not in controllers)
        wait_until(lambda: agent_reports(compute, {"hosts": "ok"}), 120,
                   "%s's agent (a compute node) to report its services" % compute.name,
                   interval=2)
        assert "%s\tnode3" % address(3) in seed.path("/etc/hosts").read_text()

        # -- every controller serves joins: the seed powered off ------------------
        ctl = controllers[0]
        assert ctl.run("systemctl", "is-active", "rackforge-join.service").stdout.strip() \
            == "active"
        bundle = json.loads(ctl.run("rackforge", "cluster", "token", "create",
                                    "--json").stdout)
        assert sorted(bundle["endpoints"]) == sorted(
            "https://%s:9443" % address(i) for i in [1] + [int(c.name[4:]) for c in controllers])
        # the seed first in the list, as an operator would copy it
        bundle["endpoints"].sort(key=lambda e: e != "https://%s:9443" % address(1))
        seed.power_cut()
        late = node("node7")
        late.mount()
        late.write("/etc/hostname", "node7\n", mode=0o644)
        late.write("/etc/rackforge/bootstrap.yaml", join_text(bundle) + management(7))
        late.boot()
        wait_done(late)
        assert "joined as compute" in late.path("/etc/issue.d/rackforge-firstboot.issue") \
            .read_text()
        listing = node_list(ctl)
        assert listing["node7"]["state"] == "active" and listing["node7"]["role"] == "compute"
        served = [c.name for c in controllers
                  if "node node7" in c.journal("rackforge-join.service")]
        assert len(served) == 1, served

        # -- node6, refused for its wrong token, joins with a new one ----------------
        # (``rackforge firstboot join``: what the console's "Join with a new token" does)
        assert bad.run("rackforge", "firstboot", "join", "--endpoint", bundle["endpoints"][0],
                       "--ca-sha256", bundle["ca_sha256"], "--token-file", "-",
                       input="\n", check=False).returncode == 2   # no token: nothing changes
        fresh = json.loads(ctl.run("rackforge", "cluster", "token", "create", "--json").stdout)
        argv = ["rackforge", "firstboot", "join", "--ca-sha256", fresh["ca_sha256"],
                "--token-file", "-"]
        fresh["endpoints"].sort(key=lambda e: e != "https://%s:9443" % address(1))
        for endpoint in fresh["endpoints"]:          # the seed's first: it is off
            argv += ["--endpoint", endpoint]
        assert "join settings replaced" in bad.run(*argv, input=fresh["token"] + "\n").stdout
        wait_until(lambda: done(bad), JOIN_TIMEOUT, "node6 to join with its new token",
                   interval=1)
        assert "joined as compute" in bad.path("/etc/issue.d/rackforge-firstboot.issue") \
            .read_text()
        assert re.search(r"step join: resuming \(attempt 2\)", firstboot_log(bad))
        assert node_list(ctl)["node6"]["state"] == "active"
        assert fresh["token"] not in firstboot_log(bad) + ctl.journal("rackforge-join.service")
        kept = bad.path("/etc/rackforge/bootstrap.yaml")
        assert kept.stat().st_mode & 0o777 == 0o600 and "address: %s/24" % address(6) in \
            kept.read_text()

        # -- a controller reset to its factory state, then joined again ---------------
        # (``rackforge firstboot factory-reset``: what the console's "Reset" does)
        seed.boot()                 # its etcd member back: the others keep a quorum
        gone = controllers[1]
        wrong = gone.run("rackforge", "firstboot", "factory-reset", "--confirm", "node0",
                         check=False)
        assert wrong.returncode == 2 and "host name (%s)" % gone.name in wrong.stderr

        said = []                   # every attempt's lines: a refused leave resumes

        def reset():
            res = gone.run("rackforge", "firstboot", "factory-reset", "--confirm", gone.name,
                           check=False)
            said.append(res.stdout + res.stderr)        # a refusal names the plan there
            if res.returncode != 0 and "without a quorum" not in res.stderr:
                raise AssertionError(res.stdout + res.stderr)
            return res.returncode == 0 and res
        res = wait_until(reset, 180, "%s's factory reset (the seed's etcd back)" % gone.name,
                         interval=2)
        assert "leaves cluster rack1" in "".join(said) and "factory reset: done" in res.stdout
        assert gone.name not in node_list(ctl)
        members = json.loads(ctl.run(
            "PYTHONPATH=/usr/lib/rackforge", "python3", "-c",
            "import json; from rackforge import registry; "
            "print(json.dumps(registry.connect().kv.members()))").stdout)
        assert sorted(m["name"] for m in members) == sorted(["node1", ctl.name])
        assert list(gone.path("/var/lib/rackforge").iterdir()) == []
        assert not gone.path("/var/lib/etcd/rackforge").exists()
        assert not gone.path("/etc/rackforge/etcd").exists()
        assert "join:" not in gone.path("/etc/rackforge/bootstrap.yaml").read_text()
        assert gone.run("systemctl", "is-enabled", "rackforge-etcd.service",
                        "rackforge-nodeagent.service", check=False).stdout.split() == \
            ["disabled", "disabled"]
        wait_until(lambda: "join' is missing" in firstboot_log(gone), 60,
                   "%s's first boot to wait for join settings" % gone.name, interval=1)
        again = json.loads(ctl.run("rackforge", "cluster", "token", "create", "--json").stdout)
        # its join service left the cluster's list with it (a listed endpoint's address
        # may not join)
        assert sorted(again["endpoints"]) == sorted(
            "https://%s:9443" % address(i) for i in (1, int(ctl.name[4:])))
        argv = ["rackforge", "firstboot", "join", "--ca-sha256", again["ca_sha256"],
                "--token-file", "-"] + [a for e in again["endpoints"]
                                        for a in ("--endpoint", e)]
        assert "join settings replaced" in gone.run(*argv, input=again["token"] + "\n").stdout
        wait_until(lambda: done(gone), JOIN_TIMEOUT, "%s to join again" % gone.name,
                   interval=1)
        listing = node_list(ctl)
        assert listing[gone.name]["state"] == "active"
        assert listing[gone.name]["role"].startswith("controller")    # its place was free
        members = json.loads(ctl.run(
            "PYTHONPATH=/usr/lib/rackforge", "python3", "-c",
            "import json; from rackforge import registry; "
            "print(json.dumps(registry.connect().kv.members()))").stdout)
        assert sorted(m["name"] for m in members) == sorted(["node1", ctl.name, gone.name])
        assert not any(m.get("isLearner") for m in members)
