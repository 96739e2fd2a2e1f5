"""aio: one node of the built hci image with the aio profile's cluster policy (one
controller), seeded with a VIP, its data disk a loop device of the host (a block device:
``ceph-volume raw``, the path a real disk takes).  Every foundation service comes up ok
on it, keepalived holds the VIP with no VRRP peer, Ceph runs one monitor and one raw
OSD with one copy (and says why it warns), and after a power cut the only controller
bootstraps Galera from its own data at once, with every row there, and the raw OSD
comes back by itself."""

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
        aio, = harack.form(node, 1, controllers=1, disks="loop")
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
        # Ceph: one monitor, one OSD made by ceph-volume raw on the loop device, one copy
        assert data["ceph"]["quorum"] == ["node1"] and data["ceph"]["osds"]["up"] == 1
        assert "one copy by design" in data["ceph"].get("note", "") \
            or data["ceph"]["health"] == "HEALTH_OK"
        osd_rec = json.loads(aio.run("rackforge", "node", "disk", "list", "node1",
                                     "--json").stdout)["osds"][0]
        assert osd_rec["device"] == aio.devices[0] and osd_rec["kind"] == "disk"
        listed = json.loads(aio.run("env", "CEPH_VOLUME_ALLOW_LOOP_DEVICES=1", "ceph-volume",
                                    "raw", "list", aio.devices[0], "--format", "json").stdout)
        assert [v["osd_id"] for v in listed.values()] == [osd_rec["id"]]
        pools = {p["pool_name"]: p["size"] for p in json.loads(aio.run(
            "ceph", "osd", "pool", "ls", "detail", "--format", "json").stdout)}
        assert pools["vms"] == 1 and pools[".mgr"] == 1
        aio.run("sh", "-c", "echo aio > /tmp/o && rados -p vms put o /tmp/o")

        aio.power_cut()
        aio.boot()
        aio.wait_booted()
        wait_until(lambda: harack.galera_synced(aio, 1), 600,
                   "the only controller's Galera to bootstrap again", interval=2)
        assert harack.sql(aio, "SELECT COUNT(*), SUM(v) FROM probe.t") == [["3", "6"]]
        log = aio.journal("rackforge-nodeagent.service")
        assert "re-formed the cluster from node1 (epoch 2)" in log, log[-3000:]
        harack.wait_converged(aio, want_nodes=1)
        # the raw OSD came back at boot (rackforge-ceph-osd@N, then ceph-osd@N)
        unit = "rackforge-ceph-osd@%d.service" % osd_rec["id"]
        assert aio.run("systemctl", "is-active", unit).stdout.strip() == "active"
        assert aio.run("rados", "-p", "vms", "get", "o", "-").stdout.strip() == "aio"
