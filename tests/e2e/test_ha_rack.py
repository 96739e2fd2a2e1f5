"""The HA foundation on a 3+1 rack of the built hci image (nspawn nodes on real systemd).

Node 1 seeds the cluster with a VIP; nodes 2-4 join with a token; the profile has
``openstack.enabled: false`` (the foundation alone; the cloud is test_cloud.py's).  The node
agents then bring up etcd, the join service, memcached, MariaDB Galera,
RabbitMQ, HAProxy and keepalived on the three controllers, and the
compute node runs what its role needs.  Checked, in order, on one rack:

1. ``cluster status --json`` has no problem; Galera has 3 members on every
   controller and a write through the VIP lands; RabbitMQ runs 3 nodes;
   exactly one controller holds the VIP; memcached answers on each;
2. ``cluster secret rotate``: a new SST password reaches every controller's
   MariaDB by a rolling restart, a new broker password is set in RabbitMQ by
   its task; then no service secret (nor a Ceph key) is in an etcd value, a
   journal or any process's argv;
3. mariadb SIGKILLed on a controller: its agent restarts it and says so once;
4. the VIP holder loses power: the VIP answers from another controller and
   writes through it resume; booted again, Galera is back to 3 and caught up;
5. every controller loses power and they come back in a shuffled order:
   Galera re-forms by itself and every row written before is there.
"""

import json
import random
import time

import harack
import pytest
from netns import wait_until
from nspawn import rack

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

PROBE_USER, PROBE_PASSWORD = "probe", "probe-password-not-a-secret"


@pytest.fixture(scope="module")
def ha(hci_root, tmp_path_factory):
    with rack(hci_root, tmp_path_factory.mktemp("ha")) as node:
        nodes = harack.form(node, 4, openstack={"enabled": False})   # the foundation alone
        yield {n.name: n for n in nodes}


def write_rows(ha, through, count, start=0):
    for i in range(start, start + count):
        harack.sql(harack.compute(ha), "INSERT INTO probe.t (v) VALUES (%d)" % i, host=through,
                   user=PROBE_USER, password=PROBE_PASSWORD)


def test_the_rack_converges_with_every_foundation_service_ok(ha):
    seconds = harack.wait_converged(ha["node1"], want_nodes=4)
    print("converged %.0f s after the joins" % seconds)
    rc, data = harack.status(ha["node1"])
    assert rc == 0 and data["problems"] == []
    foundation = ("mariadb", "rabbitmq", "memcached", "haproxy", "keepalived", "etcd", "join")
    for n in harack.controllers(ha):
        services = data["services"][n.name]
        assert {s: services[s]["state"] for s in foundation} == {s: "ok" for s in foundation}
        assert harack.wsrep(n, "wsrep_cluster_size") == "3"
        out = n.run("rabbitmqctl", "--formatter", "json", "cluster_status").stdout
        assert len(json.loads(out)["running_nodes"]) == 3
        version = n.run("bash", "-c", "exec 3<>/dev/tcp/%s/11211; printf 'version\\r\\n' >&3;"
                        " head -1 <&3" % harack.address(int(n.name[4:]))).stdout
        assert version.startswith("VERSION ")
    assert len(harack.vip_holders(harack.controllers(ha))) == 1
    assert data["vip"]["holders"] == harack.vip_holders(harack.controllers(ha))
    assert "mariadb" not in data["services"][harack.compute(ha).name]
    # a write through the VIP, from the compute node
    harack.sql(ha["node1"], "CREATE DATABASE IF NOT EXISTS probe; CREATE TABLE IF NOT EXISTS "
               "probe.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT); CREATE USER IF NOT EXISTS "
               "'%s'@'%%' IDENTIFIED BY '%s'; GRANT ALL ON probe.* TO '%s'@'%%'"
               % (PROBE_USER, PROBE_PASSWORD, PROBE_USER))
    write_rows(ha, harack.VIP, 5)
    for n in harack.controllers(ha):
        assert harack.sql(n, "SELECT COUNT(*) FROM probe.t") == [["5"]]


def started_at(node, unit):
    return node.run("systemctl", "show", "-P", "ActiveEnterTimestampMonotonic",
                    unit).stdout.strip()


def test_rotated_secrets_reach_every_controller_and_their_services(ha):
    ctrl = harack.controllers(ha)
    cnf = "/etc/mysql/mariadb.conf.d/99-rackforge.cnf"
    before = {n.name: (n.path(cnf).read_text(), started_at(n, "mariadb.service")) for n in ctrl}
    out = ha["node4"].run("rackforge", "cluster", "secret", "rotate", "mariadb-sst").stdout
    assert "version 2, sealed for 3 nodes" in out
    ha["node4"].run("rackforge", "cluster", "secret", "rotate", "rabbitmq-openstack")
    refused = ha["node1"].run("rackforge", "cluster", "secret", "rotate", "rabbitmq-cookie",
                              check=False)
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1

    def applied():      # new file, MariaDB restarted from it and Synced, on every controller
        return all(n.path(cnf).read_text() != before[n.name][0]
                   and started_at(n, "mariadb.service") != before[n.name][1]
                   and harack.galera_synced(n, 3) for n in ctrl)
    wait_until(applied, 900, "the new SST password on every controller", interval=3)
    harack.wait_converged(ha["node1"])
    assert harack.wsrep(ctrl[0], "wsrep_cluster_size") == "3"
    listing = json.loads(ha["node1"].run("rackforge", "cluster", "secret", "list",
                                         "--json").stdout)["secrets"]
    # the cloud's secrets are listed but never made: no OpenStack service runs here
    versions = {s["name"]: s["version"] for s in listing if s["version"] is not None}
    assert {name: v for name, v in versions.items() if not name.startswith("ceph-")} == {
        "mariadb-sst": 2, "rabbitmq-openstack": 2, "rabbitmq-cookie": 1, "keepalived-auth": 1}
    assert {v for name, v in versions.items() if name.startswith("ceph-")} == {1}
    # RabbitMQ takes the new broker password (read on the node, piped, never in argv)
    check = ctrl[0].run("sh", "-c", "python3 -c \"" + READ_SECRET % "rabbitmq-openstack" +
                        "\" | runuser -u rabbitmq -- env HOME=/var/lib/rabbitmq "
                        "rabbitmqctl authenticate_user openstack", check=False)
    assert check.returncode == 0, check.stderr


READ_SECRET = ("import json, sys; sys.path.insert(0, '/usr/lib/rackforge'); "
               "from rackforge import registry; "
               "from rackforge.nodeagent import catalogue, daemon, hooks, keyring; "
               "node = json.loads(daemon.node_file().read_text()); "
               "ring = keyring.Keyring(registry.connect().kv, node['node_id'], "
               "keyring.private_key(node['key']), catalogue.load(**hooks.names()).secrets); "
               "sys.stdout.write(ring.values(['%s']).popitem()[1])")


def test_no_secret_in_etcd_journals_or_argv(ha):
    node1 = ha["node1"]
    cnf = node1.path("/etc/mysql/mariadb.conf.d/99-rackforge.cnf").read_text()
    sst = cnf.split("wsrep_sst_auth = sst:")[1].split()[0]
    cookie = node1.path("/var/lib/rabbitmq/.erlang.cookie").read_text().strip()
    keepalived = node1.path("/etc/keepalived/keepalived.conf").read_text()
    auth = keepalived.split("auth_pass ")[1].split()[0]
    ceph_keys = [node1.path(f).read_text().split("key = ")[1].split()[0] for f in (
        "/etc/ceph/ceph.client.admin.keyring", "/var/lib/ceph/bootstrap-osd/ceph.keyring",
        "/etc/ceph/ceph.client.glance.keyring")]
    osd_dir = next(node1.path("/var/lib/ceph/osd").iterdir())     # fed to 'osd new' on stdin
    ceph_keys.append((osd_dir / "keyring").read_text().split("key = ")[1].split()[0])
    secrets = [s for s in (sst, cookie, auth, *ceph_keys) if len(s) >= 8]
    assert len(secrets) == 7
    assert harack.leaks(ha.values(), dict(enumerate(secrets)), node1) == []


def test_mariadb_killed_is_restarted_by_its_agent_and_reported_once(ha):
    victim = harack.controllers(ha)[-1]
    victim.run("systemctl", "kill", "--signal=KILL", "mariadb.service")
    wait_until(lambda: harack.galera_synced(victim, 3), 600,
               "%s's MariaDB back in the cluster" % victim.name, interval=2)
    harack.wait_converged(ha["node1"])
    log = victim.journal("rackforge-nodeagent.service")
    assert log.count("service mariadb failed") == 1, log[-3000:]
    services = json.loads(victim.run("rackforge", "node", "services", victim.name,
                                     "--json").stdout)["services"]
    assert services["mariadb"]["state"] == "ok" and services["mariadb"]["restarts"] == 1


def test_the_vip_moves_when_its_holder_loses_power_and_the_holder_catches_up(ha):
    holder_name, = harack.vip_holders(harack.controllers(ha))
    holder = ha[holder_name]
    others = [n for n in harack.controllers(ha) if n is not holder]
    cut = time.monotonic()
    holder.power_cut()
    wait_until(lambda: len(harack.vip_holders(others)) == 1, 60, "the VIP to move",
               interval=0.5)
    moved = time.monotonic() - cut

    def writes_resume():
        try:
            write_rows(ha, harack.VIP, 1, start=100)
            return True
        except RuntimeError:
            return False
    wait_until(writes_resume, 120, "writes through the VIP to resume", interval=1)
    print("VIP moved %.1f s after the power cut; writes resumed %.1f s after it"
          % (moved, time.monotonic() - cut))
    write_rows(ha, harack.VIP, 10, start=200)
    holder.boot()
    wait_until(lambda: harack.galera_synced(holder, 3), 900,
               "%s's Galera to catch up" % holder.name, interval=3)
    expected = harack.sql(others[0], "SELECT COUNT(*), SUM(v) FROM probe.t")
    assert harack.sql(holder, "SELECT COUNT(*), SUM(v) FROM probe.t") == expected
    assert harack.wsrep(holder, "wsrep_cluster_size") == "3"
    harack.wait_converged(ha["node1"])


def test_a_whole_rack_power_loss_reforms_galera_by_itself_with_nothing_lost(ha):
    expected = harack.sql(ha["node1"], "SELECT COUNT(*), SUM(v) FROM probe.t")
    ctrl = harack.controllers(ha)          # asked while the registry answers
    for n in ctrl:
        n.power_cut()
    order = list(ctrl)
    random.Random(20261129).shuffle(order)
    for n in order:
        n.boot()
        n.wait_booted()
    for n in ctrl:
        wait_until(lambda n=n: harack.galera_synced(n, 3), 900,
                   "%s in a 3-node Galera again" % n.name, interval=5)
    for n in ctrl:
        assert harack.sql(n, "SELECT COUNT(*), SUM(v) FROM probe.t") == expected
    harack.wait_converged(ha["node1"])
