"""The cloud: OpenStack on the rack, used the operator's way.  One node of the built hci
image with the aio profile, a loop device for Ceph and a link on the test bed's
provider network: token and catalogue, the tiny guest uploaded, a tenant network routed
to the provider network, a server ACTIVE whose console shows the address OVN's DHCP
gave it, a volume attached, a floating IP that answers ping from the provider side."""

import json
import time

import cloud
import guestimage
import harack
import pytest
from netns import wait_until
from nspawn import rack

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    return guestimage.build(tmp_path_factory.mktemp("guest"))


def test_aio_boots_a_vm_with_a_volume_and_a_floating_ip(hci_root, tmp_path, guest):
    with rack(hci_root, tmp_path / "aio") as node:
        aio, = harack.form(node, 1, controllers=1, disks="loop", provider=(1,))
        seconds = harack.wait_converged(aio, want_nodes=1)
        print("aio converged %.0f s after its first boot" % seconds)
        assert aio.path("/etc/openstack/clouds.yaml").exists()
        c = cloud.Cloud(aio)
        token = c.osc("token", "issue", "-f", "json")
        assert token["project_id"] and token["expires"]
        catalog = {s["Type"] if "Type" in s else s["type"]
                   for s in c.osc("catalog", "list", "-f", "json")}
        assert {"identity", "image", "placement", "compute", "network",
                "volumev3"} <= catalog
        timings = {}
        vm = cloud.boot_vm(c, guest, guestimage.MARKER, timings=timings)
        print("aio: %s" % {k: round(v) for k, v in timings.items()})
        assert vm["address"].startswith(cloud.TENANT_CIDR.rsplit(".", 1)[0])
        cloud.ping_from_provider(node.netns, vm["floating_ip"])


# -- 3 controllers + 1 compute: the same through the VIP, and a controller's power cut ----
@pytest.fixture(scope="module")
def cloud_rack(hci_root, tmp_path_factory):
    with rack(hci_root, tmp_path_factory.mktemp("cloud")) as node:
        nodes = harack.form(node, 4, provider=(1, 2, 3, 4),
                            openstack={"fernet_rotation": 300})
        seconds = harack.wait_converged(nodes[0], want_nodes=4)
        print("3+1 converged %.0f s after the joins" % seconds)
        yield {"nodes": {n.name: n for n in nodes}, "netns": node.netns}


def test_the_rack_boots_a_vm_through_the_vip(cloud_rack, guest):
    ctrl = harack.controllers(cloud_rack["nodes"])
    for n in ctrl:                  # the operator finds clouds.yaml on every controller
        assert "auth_url: http://%s:5000/v3" % harack.VIP in n.path(
            "/etc/openstack/clouds.yaml").read_text()
    c = cloud.Cloud(ctrl[-1])
    assert c.osc("server", "list", "-f", "json") == []

    def every_node_computes():          # converged: every node is a compute node
        listed = c.osc("compute", "service", "list", "--service", "nova-compute", "-f",
                       "json")
        return {s["Host"] for s in listed if s["State"] == "up"} == set(cloud_rack["nodes"])
    wait_until(every_node_computes, 600, "every node's nova-compute to be up", interval=10)
    timings = {}
    vm = cloud.boot_vm(c, guest, guestimage.MARKER, timings=timings)
    print("3+1: %s" % {k: round(v) for k, v in timings.items()})
    cloud.ping_from_provider(cloud_rack["netns"], vm["floating_ip"])


def test_no_openstack_secret_in_etcd_journals_or_argv(cloud_rack):
    """The cloud's passwords and keys as a controller's files hold them, looked for in
    etcd's raw values, every node's journal and every process's argv."""
    import configparser

    nodes = cloud_rack["nodes"]
    node = harack.controllers(nodes)[0]

    def ini(path):
        parser = configparser.RawConfigParser(strict=False, interpolation=None)
        parser.read_string(node.path(path).read_text())
        return parser
    nova, keystone = ini("/etc/nova/nova.conf"), ini("/etc/keystone/keystone.conf")
    horizon = node.path("/etc/openstack-dashboard/local_settings.py").read_text()
    fernet = node.path("/etc/keystone/fernet-keys/0").read_text().strip()
    secrets = {
        "admin": cloud.admin_password(node),
        "keystone-db": keystone.get("database", "connection").split(":")[2].split("@")[0],
        "nova-keystone": nova.get("keystone_authtoken", "password"),
        "memcache": nova.get("keystone_authtoken", "memcache_secret_key"),
        "metadata": nova.get("neutron", "metadata_proxy_shared_secret"),
        "horizon": horizon.split('SECRET_KEY = "')[1].split('"')[0],
        "fernet": fernet}
    assert all(len(v) >= 16 for v in secrets.values()), sorted(
        k for k, v in secrets.items() if len(v) < 16)
    assert harack.leaks(nodes.values(), secrets, node) == []


def test_the_api_answers_through_the_vip_while_a_controller_loses_power(cloud_rack, tmp_path):
    import apiloop

    nodes = cloud_rack["nodes"]
    ctrl = harack.controllers(nodes)
    holder_name, = harack.vip_holders(ctrl)
    victim = nodes[holder_name]                       # the worst case: the VIP's holder
    runner = harack.compute(nodes)
    password = cloud.admin_password(ctrl[0])
    # the stop file where the host's write shows inside the node (its /tmp is a tmpfs)
    stop, out = "/var/tmp/apiloop.stop", tmp_path / "apiloop.jsonl"
    proc = apiloop.start(runner, "http://" + harack.VIP, stop, password, out)
    try:
        wait_until(lambda: len(apiloop.results(out)) >= 20, 120,
                   "20 requests through the VIP before the cut", interval=1)
        cut = time.time()               # requests from here on count as during the cut
        victim.power_cut()

        def two_minutes_recorded():     # the loop's own lines span two minutes past the cut
            done = apiloop.results(out)
            return bool(done) and done[-1]["at"] - cut > 120
        wait_until(two_minutes_recorded, 300, "two minutes of requests after the cut",
                   interval=5)
    finally:
        runner.write(stop, "", mode=0o644)
        proc.wait(timeout=60)
    lines = apiloop.results(out)
    after = [r for r in lines if r["at"] >= cut]
    failed = [r for r in after if not r["ok"]]
    print("power cut of %s (the VIP's holder): %d requests before, %d after, %d failed "
          "(%s)" % (victim.name, len(lines) - len(after), len(after), len(failed),
                    ", ".join("%s %s" % (r["kind"], r["status"]) for r in failed[:20])))
    assert len(lines) - len(after) > 10 and all(r["ok"] for r in lines if r["at"] < cut)
    tail = after[-20:]
    assert len(tail) == 20 and all(r["ok"] for r in tail), tail
    victim.boot()
    harack.wait_converged(ctrl[0] if ctrl[0] is not victim else ctrl[1], want_nodes=4)
    # at boot, Debian's enabled OpenStack units want mysql and rabbitmq-server: systemd
    # skips those starts, and MariaDB and RabbitMQ start once the agent runs and says so
    lines = victim.run("journalctl", "-b", "--no-pager", "-o", "cat", "-u", "mariadb.service",
                       "-u", "rabbitmq-server.service", "-u", "rackforge-nodeagent.service",
                       check=False).stdout.splitlines()
    print("\n".join(line for line in lines if "Condition" in line or "Starting" in line))
    agent = next(i for i, line in enumerate(lines) if "Starting rackforge-nodeagent" in line)
    for unit in ("mariadb.service", "rabbitmq-server.service"):
        first = next(i for i, line in enumerate(lines) if "Starting %s" % unit in line)
        assert first > agent, (unit, lines[:first + 1])


def test_fernet_keys_are_identical_on_every_controller_after_a_rotation(cloud_rack):
    ctrl = [n for n in harack.controllers(cloud_rack["nodes"]) if n.leader() is not None]
    node = ctrl[0]

    def rotated():
        out = json.loads(node.run("rackforge", "cluster", "secret", "list", "--json").stdout)
        version = {s["name"]: s for s in out["secrets"]}["keystone-fernet"]["version"]
        return (version or 0) >= 2
    wait_until(rotated, 900, "a rotation of Keystone's token keys", interval=10)

    def same():
        sets = [{p.name: p.read_text() for p in n.path("/etc/keystone/fernet-keys").iterdir()}
                for n in ctrl]
        return all(s == sets[0] for s in sets) and len(sets[0]) >= 3
    wait_until(same, 120, "every controller to hold the same token keys", interval=3)
    c = cloud.Cloud(ctrl[1])
    assert c.osc("token", "issue", "-f", "json")["id"]


def test_horizon_logs_the_admin_in_from_a_real_browser_through_the_vip(cloud_rack):
    import horizon_login

    ctrl = harack.controllers(cloud_rack["nodes"])
    artifacts = harack.artifacts_dir()
    shot = artifacts / "horizon-admin.png"
    harack.operator_address(cloud_rack["netns"])        # the browser's seat on the network
    got = horizon_login.login(cloud_rack["netns"], "http://%s/horizon/" % harack.VIP,
                              cloud.admin_password(ctrl[0]), shot)
    print("horizon: %s; screenshot %s" % (got, shot))
    assert "OpenStack" in got["title"] or "Login" in got["title"]
    assert got["logged_in"] and "/horizon/" in got["landed"]
    assert shot.stat().st_size > 10000


def test_a_compute_node_drains_resets_and_joins_again(cloud_rack):
    """A compute node repurposed the operator's way: its VMs deleted, its OSD drained and
    removed from a controller, then the factory reset at the node (what the console's
    "Reset" does).  The cluster forgets it, none of the cloud's secrets stays on it, first
    boot waits; given a new token it joins again and its nova-compute comes back up."""
    nodes = cloud_rack["nodes"]
    ctrl = [n for n in harack.controllers(nodes) if n.leader() is not None]
    node = harack.compute(nodes)
    c = cloud.Cloud(ctrl[0])
    # none of the controllers' services ever started here (Debian's nova-compute and
    # metadata agent units want them; the agent writes its own)
    started = node.run("journalctl", "-b", "--no-pager", "-o", "cat", "-u", "mariadb.service",
                       "-u", "rabbitmq-server.service", "-u", "keystone.service",
                       check=False).stdout
    mnesia = node.path("/var/lib/rabbitmq/mnesia")          # the package's, empty
    assert "Starting" not in started and not (mnesia.is_dir() and any(mnesia.iterdir())), \
        started
    refused = node.run("rackforge", "firstboot", "factory-reset", "--confirm", node.name,
                       check=False)
    assert refused.returncode == 2 and ("virtual machine" in refused.stderr
                                        or "Ceph OSDs" in refused.stderr), refused.stderr
    for server in c.osc("server", "list", "--all-projects", "-f", "json"):
        c.osc("server", "delete", "--wait", server["ID"], timeout=600)
    wait_until(lambda: not node.run("sh", "-c", "ls /etc/libvirt/qemu/*.xml "
                                    "/run/libvirt/qemu/*.xml", check=False).stdout.strip(),
               120, "libvirt on %s to forget the deleted VMs" % node.name, interval=3)
    refused = node.run("rackforge", "firstboot", "factory-reset", "--confirm", node.name,
                       check=False)
    assert refused.returncode == 2 and "node disk remove" in refused.stderr, refused.stderr
    for rec in json.loads(ctrl[0].run("rackforge", "node", "disk", "list", node.name,
                                      "--json").stdout)["osds"]:
        out = ctrl[0].run("rackforge", "node", "disk", "remove", node.name,
                          "osd.%d" % rec["id"], "--timeout", "900", timeout=2000)
        print(out.stdout)

    def reset():
        res = node.run("rackforge", "firstboot", "factory-reset", "--confirm", node.name,
                       check=False, timeout=600)
        if res.returncode != 0 and "node disk remove" not in res.stderr:
            raise AssertionError(res.stdout + res.stderr)
        return res.returncode == 0 and res     # the agent forgets a removed OSD in its pass
    started = time.monotonic()
    res = wait_until(reset, 180, "%s's factory reset" % node.name, interval=5)
    print("factory reset of %s: %.0f s\n%s" % (node.name, time.monotonic() - started,
                                               res.stdout))
    assert "leaves cluster rack1" in res.stdout
    listing = json.loads(ctrl[0].run("rackforge", "node", "list", "--json").stdout)
    assert node.name not in {n["name"] for n in listing}
    for path in ("/etc/nova/nova-compute.conf", "/etc/ceph/ceph.client.nova.keyring",
                 "/etc/neutron/neutron_ovn_metadata_agent.ini",
                 "/var/lib/rackforge/node.json"):
        assert not node.path(path).exists(), path
    assert node.run("systemctl", "is-active", "nova-compute.service", "ovn-controller.service",
                    check=False).stdout.split() == ["inactive", "inactive"]
    wait_until(lambda: "join' is missing" in node.journal("rackforge-firstboot.service"), 120,
               "%s's first boot to wait for join settings" % node.name, interval=2)

    def forgotten():                # by a controller's agent, within its 5 minutes
        listed = c.osc("compute", "service", "list", "-f", "json")
        return node.name not in {s["Host"] for s in listed}
    wait_until(forgotten, 900, "the cloud to forget %s's services" % node.name, interval=10)
    seconds = harack.wait_converged(ctrl[0], want_nodes=3)
    print("the rack healthy without %s %.0f s after its services went" % (node.name, seconds))
    bundle = json.loads(ctrl[0].run("rackforge", "cluster", "token", "create",
                                    "--json").stdout)
    argv = ["rackforge", "firstboot", "join", "--ca-sha256", bundle["ca_sha256"],
            "--token-file", "-"]
    for endpoint in bundle["endpoints"]:
        argv += ["--endpoint", endpoint]
    assert "join settings replaced" in node.run(*argv, input=bundle["token"] + "\n").stdout
    wait_until(lambda: harack.firstboot_done(node), harack.FIRSTBOOT_TIMEOUT,
               "%s to join again" % node.name, interval=2)
    assert harack.roles(nodes)[node.name] == "compute"

    def computes_again():
        listed = c.osc("compute", "service", "list", "--service", "nova-compute", "-f",
                       "json")
        return any(s["Host"] == node.name and s["State"] == "up" for s in listed)
    wait_until(computes_again, 900, "%s's nova-compute to be up again" % node.name,
               interval=10)


def members(other):
    """What controller ``other`` says of its clusters: Galera's size, RabbitMQ's members,
    the OVN databases' servers, Ceph's monitors."""
    rabbit = json.loads(other.run("rabbitmqctl", "--formatter", "json", "cluster_status",
                                  timeout=120).stdout)
    servers = {}
    for db, ctl in (("OVN_Northbound", "ovnnb_db"), ("OVN_Southbound", "ovnsb_db")):
        status = other.run("ovn-appctl", "-t", "/var/run/ovn/%s.ctl" % ctl, "cluster/status",
                           db).stdout
        servers[db] = sorted(line.split("tcp:")[1].split(":")[0] for line in
                             status.split("Servers:")[1].splitlines() if "tcp:" in line)
    mons = json.loads(other.run("ceph", "mon", "dump", "--format", "json").stdout)
    return {"galera": harack.wsrep(other, "wsrep_cluster_size"),
            "rabbitmq": sorted(rabbit.get("disk_nodes") or []),
            "ovn": servers, "mons": sorted(m["name"] for m in mons["mons"])}


def test_a_controller_resets_leaving_its_clusters_and_joins_again(cloud_rack):
    """The first controller (the seed: RabbitMQ's first, OVN's creator, Ceph's first
    monitor) repurposed: its OSD drained and removed, then its factory reset.  It leaves
    Galera, RabbitMQ, OVN's RAFT databases and Ceph's monitors, which carry on with two
    while the cloud answers through the VIP; given a new token it joins again as a
    controller and each cluster has three members again."""
    nodes = cloud_rack["nodes"]
    node = nodes["node1"]
    others = [n for n in harack.controllers(nodes) if n.name != node.name]
    c = cloud.Cloud(others[0])
    before = members(others[0])
    assert before["galera"] == "3" and "rabbit@node1" in before["rabbitmq"]
    assert "node1" in before["mons"] and len(before["ovn"]["OVN_Northbound"]) == 3

    for server in c.osc("server", "list", "--all-projects", "-f", "json"):
        c.osc("server", "delete", "--wait", server["ID"], timeout=600)

    def osds_up(count):
        stat = json.loads(others[0].run("ceph", "osd", "stat", "--format", "json").stdout)
        return stat["num_up_osds"] == count and stat["num_in_osds"] == count
    # the compute node's disk came back with its join: four storage hosts, so the data of
    # this one has three others to go to
    wait_until(lambda: osds_up(4), 900, "four OSDs up and in", interval=10)
    for rec in json.loads(others[0].run("rackforge", "node", "disk", "list", node.name,
                                        "--json").stdout)["osds"]:
        print(others[0].run("rackforge", "node", "disk", "remove", node.name,
                            "osd.%d" % rec["id"], "--timeout", "900", timeout=2000).stdout)

    said = []                       # every attempt's lines (a retry resumes, not repeats)

    def reset():
        res = node.run("rackforge", "firstboot", "factory-reset", "--confirm", node.name,
                       check=False, timeout=1200)
        said.append(res.stdout)
        if res.returncode != 0 and not any(why in res.stderr for why in (
                "node disk remove", "must run", "not leaving",     # a pass, a peer's check,
                "without a quorum")):                               # etcd's own
            raise AssertionError(res.stdout + res.stderr)
        return res.returncode == 0 and res
    started = time.monotonic()
    res = wait_until(reset, 300, "%s's factory reset" % node.name, interval=5)
    print("factory reset of controller %s: %.0f s\n%s" % (
        node.name, time.monotonic() - started, res.stdout))
    for cluster in ("OVN's clustered databases", "RabbitMQ", "Galera", "a Ceph monitor"):
        assert "factory reset: leaving %s" % cluster in "".join(said), said
    after = members(others[0])
    print("without %s: %s" % (node.name, after))
    assert after["galera"] == "2" and "rabbit@node1" not in after["rabbitmq"]
    assert len(after["rabbitmq"]) == 2 and "node1" not in after["mons"]
    assert all(len(s) == 2 and harack.address(1) not in s for s in after["ovn"].values())
    for path in ("/var/lib/mysql/grastate.dat", "/var/lib/ovn/ovnnb_db.db",
                 "/var/lib/ovn/ovnsb_db.db", "/var/lib/ceph/mon/ceph-node1"):
        assert not node.path(path).exists(), path
    assert not any(node.path("/var/lib/rabbitmq/mnesia").iterdir())
    assert node.path("/var/lib/mysql/mysql").is_dir()        # made again for a join
    # the cloud carries on with two controllers
    assert c.osc("token", "issue", "-f", "json")["id"]
    c.osc("server", "list", "-f", "json")
    seconds = harack.wait_converged(others[0], want_nodes=3)
    print("the rack healthy with two controllers %.0f s after the reset" % seconds)

    def forgotten():                # its compute services, by a controller's agent
        listed = c.osc("compute", "service", "list", "-f", "json")
        return node.name not in {s["Host"] for s in listed}
    wait_until(forgotten, 900, "the cloud to forget %s's services" % node.name, interval=10)

    bundle = json.loads(others[0].run("rackforge", "cluster", "token", "create",
                                      "--json").stdout)
    argv = ["rackforge", "firstboot", "join", "--ca-sha256", bundle["ca_sha256"],
            "--token-file", "-"]
    for endpoint in bundle["endpoints"]:
        argv += ["--endpoint", endpoint]
    assert "join settings replaced" in node.run(*argv, input=bundle["token"] + "\n").stdout
    started = time.monotonic()
    wait_until(lambda: harack.firstboot_done(node), harack.FIRSTBOOT_TIMEOUT,
               "%s to join again" % node.name, interval=2)
    assert harack.roles(nodes)[node.name] == "controller"
    harack.wait_converged(others[0], want_nodes=4)
    print("%s a controller again, the rack converged %.0f s after its join"
          % (node.name, time.monotonic() - started))
    again = members(others[0])
    assert again["galera"] == "3" and "rabbit@node1" in again["rabbitmq"]
    assert len(again["rabbitmq"]) == 3 and "node1" in again["mons"]
    assert all(len(s) == 3 for s in again["ovn"].values())
    # quorum queues have a replica on it again (grown after its join)
    queues = json.loads(node.run("rabbitmqctl", "--formatter", "json", "list_queues", "name",
                                 "type", "members", timeout=120).stdout)
    quorum = [q for q in queues if q.get("type") == "quorum"]
    assert quorum and all("rabbit@node1" in q["members"] for q in quorum), quorum[:3]
    assert c.osc("token", "issue", "-f", "json")["id"]
