"""aio: one node of the built hci image with the aio profile's cluster policy (one
controller), seeded with a VIP.  Every foundation service comes up ok on it, keepalived
holds the VIP with no VRRP peer, and after a power cut the only controller bootstraps
Galera from its own data at once, with every row there."""

import json

import harack
import pytest
from netns import wait_until
from nspawn import rack

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

FOUNDATION = ("mariadb", "rabbitmq", "memcached", "haproxy", "keepalived", "etcd", "join",
              "hosts", "sysctl")


def test_one_node_runs_everything_and_comes_back_from_a_power_cut(hci_root, tmp_path):
    with rack(hci_root, tmp_path / "aio") as node:
        aio, = harack.form(node, 1, controllers=1)
        seconds = harack.wait_converged(aio, want_nodes=1)
        print("aio converged %.0f s after its first boot" % seconds)
        rc, data = harack.status(aio)
        services = data["services"]["node1"]
        assert {s: services[s]["state"] for s in FOUNDATION} == {s: "ok" for s in FOUNDATION}
        assert harack.vip_holders([aio]) == ["node1"]
        keepalived = aio.path("/etc/keepalived/keepalived.conf").read_text()
        assert "unicast_peer" not in keepalived
        assert harack.wsrep(aio, "wsrep_cluster_size") == "1"
        rabbit = json.loads(aio.run("rabbitmqctl", "--formatter", "json",
                                    "cluster_status").stdout)
        assert rabbit["running_nodes"] == ["rabbit@node1"]
        harack.sql(aio, "CREATE DATABASE probe; CREATE TABLE probe.t (v INT); "
                        "INSERT INTO probe.t VALUES (1), (2), (3)")

        aio.power_cut()
        aio.boot()
        aio.wait_booted()
        wait_until(lambda: harack.galera_synced(aio, 1), 600,
                   "the only controller's Galera to bootstrap again", interval=2)
        assert harack.sql(aio, "SELECT COUNT(*), SUM(v) FROM probe.t") == [["3", "6"]]
        log = aio.journal("rackforge-nodeagent.service")
        assert "re-formed the cluster from node1 (epoch 2)" in log, log[-3000:]
        harack.wait_converged(aio, want_nodes=1)
