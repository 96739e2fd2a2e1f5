"""Ceph on a 3+1 rack of the built hci image (nspawn nodes on real systemd), each node with
one data disk (a file in its data directory: the test profile says so) and
``openstack.enabled: false`` (Ceph under the foundation alone; the cloud is test_cloud.py's).

Checked, in order, on one rack:

1. HEALTH_OK with three monitors in quorum and four OSDs up and in, the pools
   sized 3/2 on the host failure domain, every OSD recorded with its node;
2. an object written with the nova key on the compute node reads back on a
   controller; the glance key cannot write the volumes pool nor read vms, nova
   and cinder cannot write images, nova cannot write volumes, and a compute node
   holds no admin key;
3. the compute node (a storage node) loses power: Ceph degrades, the object
   still reads; booted again, HEALTH_OK by itself (its OSD re-activated at boot);
4. a controller loses power: the other two monitors keep the quorum and I/O
   goes on; booted again, HEALTH_OK;
5. a disk is replaced in place with one command: the new OSD has the old id,
   the object is still there, HEALTH_OK;
6. the whole rack loses power and comes back: HEALTH_OK with no one's help.
"""

import json
import time

import harack
import pytest
from netns import wait_until
from nspawn import rack

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

HEALTHY_TIMEOUT = 900


@pytest.fixture(scope="module")
def ceph_rack(hci_root, tmp_path_factory):
    with rack(hci_root, tmp_path_factory.mktemp("ceph")) as node:
        nodes = harack.form(node, 4, openstack={"enabled": False})   # the foundation alone
        yield {n.name: n for n in nodes}


def ceph(node, *argv, check=True):
    res = node.run("ceph", "--connect-timeout", "20", *argv, "--format", "json",
                   check=check, timeout=120)
    return json.loads(res.stdout) if res.returncode == 0 and res.stdout.strip() else None


def status(node):
    try:
        return ceph(node, "status", check=False) or {}
    except (ValueError, RuntimeError):
        return {}


def settled(s):
    """Every PG active+clean as the active manager reports it (just after a restart the
    monitors' last maps still say all is well)."""
    pgmap = s.get("pgmap") or {}
    clean = sum(p["count"] for p in pgmap.get("pgs_by_state") or []
                if p["state_name"] == "active+clean")
    return (s.get("mgrmap") or {}).get("available") and pgmap.get("num_pgs") \
        and clean == pgmap["num_pgs"]


def wait_health(node, want="HEALTH_OK", timeout=HEALTHY_TIMEOUT, after_epoch=0):
    """Until Ceph says ``want`` with every PG clean and (``after_epoch``) every OSD booted
    again since that osdmap epoch."""
    last = {}

    def reached():
        last["s"] = status(node)
        if after_epoch:
            osds = (ceph(node, "osd", "dump", check=False) or {}).get("osds") or []
            if len(osds) != 4 or any(o["up_from"] <= after_epoch or not o["up"]
                                     for o in osds):
                return False
        return (last["s"].get("health") or {}).get("status") == want and settled(last["s"])
    start = time.monotonic()
    try:
        wait_until(reached, timeout, "Ceph %s seen from %s" % (want, node.name), interval=5)
    except AssertionError:
        print(json.dumps((last.get("s") or {}).get("health"), indent=1)[-4000:])
        raise
    return time.monotonic() - start


def osdmap(node):
    s = status(node).get("osdmap") or {}
    return s.get("num_osds"), s.get("num_up_osds"), s.get("num_in_osds")


def test_health_ok_with_three_monitors_and_four_osds(ceph_rack):
    seconds = harack.wait_converged(ceph_rack["node1"], want_nodes=4)
    print("converged %.0f s after the joins" % seconds)
    rc, data = harack.status(ceph_rack["node1"])
    assert rc == 0 and data["problems"] == []
    assert data["ceph"]["health"] == "HEALTH_OK"
    c1 = harack.controllers(ceph_rack)[0]
    s = status(c1)
    assert s["health"]["status"] == "HEALTH_OK"
    assert sorted(s["quorum_names"]) == sorted(n.name for n in harack.controllers(ceph_rack))
    assert osdmap(c1) == (4, 4, 4)
    pools = {p["pool_name"]: p for p in ceph(c1, "osd", "pool", "ls", "detail")}
    for name in ("images", "volumes", "vms", "backups", ".mgr"):
        assert (pools[name]["size"], pools[name]["min_size"]) == (3, 2), name
    assert set(pools["vms"]["application_metadata"]) == {"rbd"}
    rules = {r["rule_id"]: r["rule_name"] for r in ceph(c1, "osd", "crush", "rule", "dump")}
    assert rules[pools["vms"]["crush_rule"]] == "replicated_host"
    # every OSD under its own node's CRUSH host, recorded in etcd with its node
    tree = ceph(c1, "osd", "tree")
    hosts = {n["name"]: n["children"] for n in tree["nodes"] if n["type"] == "host"}
    assert sorted(hosts) == sorted(ceph_rack)
    listing = json.loads(c1.run("rackforge", "node", "disk", "list", "node4",
                                "--json").stdout)["osds"]
    assert len(listing) == 1 and listing[0]["id"] in hosts["node4"]
    # monitors and OSDs come back at boot without the agent: their units are enabled
    for n in harack.controllers(ceph_rack):
        assert n.run("systemctl", "is-enabled", "ceph-mon@%s.service" % n.name).stdout \
            .strip() == "enabled"
    osd_id = listing[0]["id"]
    assert ceph_rack["node4"].run("systemctl", "is-enabled", "ceph-osd@%d.service"
                                  % osd_id).stdout.strip() == "enabled"


PROBE = "probe-object-written-from-compute"


def test_keys_are_limited_to_their_pools(ceph_rack):
    comp, c1 = harack.compute(ceph_rack), harack.controllers(ceph_rack)[0]
    comp.run("sh", "-c", "echo %s > /tmp/probe" % PROBE)
    comp.run("rados", "--id", "nova", "-p", "vms", "put", "probe", "/tmp/probe")
    got = c1.run("rados", "-p", "vms", "get", "probe", "-").stdout
    assert got.strip() == PROBE
    c1.run("sh", "-c", "echo no > /tmp/no")
    refused = c1.run("rados", "--id", "glance", "-p", "volumes", "put", "x", "/tmp/no",
                     check=False)
    assert refused.returncode != 0 and "Operation not permitted" in refused.stderr
    for key, pool in (("nova", "images"), ("cinder", "images"), ("nova", "volumes")):
        refused = comp.run("rados", "--id", key, "-p", pool, "put", "x", "/tmp/probe",
                           check=False)
        assert refused.returncode != 0 and "Operation not permitted" in refused.stderr, \
            (key, pool)
    refused = c1.run("rados", "--id", "glance", "-p", "vms", "ls", check=False)
    assert refused.returncode != 0, "glance may not read the vms pool"
    # glance may use images; nova may read them
    c1.run("rados", "--id", "glance", "-p", "images", "put", "img", "/tmp/no")
    assert comp.run("rados", "--id", "nova", "-p", "images", "get", "img", "-").stdout \
        .strip() == "no"
    assert not comp.path("/etc/ceph/ceph.client.admin.keyring").exists()
    refused = comp.run("ceph", "--connect-timeout", "10", "status", check=False)
    assert refused.returncode != 0


def test_a_storage_node_power_cut_degrades_and_heals(ceph_rack):
    comp, c1 = harack.compute(ceph_rack), harack.controllers(ceph_rack)[0]
    comp.power_cut()

    def degraded():
        total, up, _ = osdmap(c1)
        return total == 4 and up == 3
    wait_until(degraded, 120, "Ceph to see the compute node's OSD down", interval=3)
    assert c1.run("rados", "-p", "vms", "get", "probe", "-", timeout=60).stdout.strip() \
        == PROBE
    comp.boot()
    seconds = wait_health(c1)
    print("HEALTH_OK %.0f s after the storage node's boot" % seconds)
    assert osdmap(c1) == (4, 4, 4)


def test_a_controller_power_cut_keeps_the_monitor_quorum(ceph_rack):
    ctrl = harack.controllers(ceph_rack)
    victim, other = ctrl[-1], ctrl[0]
    victim.power_cut()

    def quorum_of_two():
        return sorted(status(other).get("quorum_names") or []) == sorted(
            n.name for n in ctrl if n is not victim)
    wait_until(quorum_of_two, 120, "a quorum of the two others", interval=3)
    other.run("sh", "-c", "echo during > /tmp/during")
    other.run("rados", "-p", "vms", "put", "during", "/tmp/during", timeout=90)
    assert other.run("rados", "-p", "vms", "get", "probe", "-").stdout.strip() == PROBE
    victim.boot()
    wait_health(other)
    assert len(status(other)["quorum_names"]) == 3


def test_a_disk_is_replaced_in_place_with_one_command(ceph_rack):
    comp, c1 = harack.compute(ceph_rack), harack.controllers(ceph_rack)[0]
    rec = json.loads(c1.run("rackforge", "node", "disk", "list", comp.name,
                            "--json").stdout)["osds"][0]
    osd_id = rec["id"]
    # the disk dies: its OSD goes down; a blank disk takes its slot
    comp.run("systemctl", "stop", "ceph-osd@%d.service" % osd_id)
    blank = "rm -f {0} && truncate -s {1}G {0}".format(rec["path"], harack.FILE_DISK_GIB)
    comp.run("sh", "-c", blank)
    out = c1.run("rackforge", "node", "disk", "replace", comp.name, "osd.%d" % osd_id,
                 "--timeout", "900", timeout=2000)
    print(out.stdout)
    assert "up and in again" in out.stdout
    after = json.loads(c1.run("rackforge", "node", "disk", "list", comp.name,
                              "--json").stdout)["osds"]
    assert [r["id"] for r in after] == [osd_id] and after[0]["uuid"] != rec["uuid"]
    wait_health(c1)
    assert osdmap(c1) == (4, 4, 4)
    assert c1.run("rados", "-p", "vms", "get", "probe", "-").stdout.strip() == PROBE


def test_the_whole_rack_comes_back_healthy_by_itself(ceph_rack):
    nodes = list(ceph_rack.values())
    c1 = harack.controllers(ceph_rack)[0]       # the registry does not answer once they are off
    epoch = ceph(c1, "osd", "dump")["epoch"]
    for n in nodes:
        n.power_cut()
    for n in reversed(nodes):
        n.boot()
    for n in nodes:
        n.wait_booted()
    seconds = wait_health(c1, after_epoch=epoch)
    print("HEALTH_OK %.0f s after the rack's boot" % seconds)
    assert osdmap(c1) == (4, 4, 4)
    assert c1.run("rados", "-p", "vms", "get", "probe", "-").stdout.strip() == PROBE
    assert c1.run("rados", "-p", "vms", "get", "during", "-").stdout.strip() == "during"
