"""Ceph as the node agent runs it: sizing, the pool commands, the health read from Ceph's
own status, OSD records, the disk guard, activation and the replace sequence, against
scripted commands and the in-memory registry."""

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import agentrack
import pytest
from fakesystemd import FakeSystemd

from rackforge import keys
from rackforge.nodeagent import ceph, cephconf, disks, health, keyring, osd
from rackforge.nodeagent.reconcile import StepContext

SAMPLES = Path(__file__).parent / "samples" / "ceph"
FSID = "a34718ed-9b12-418e-b3ca-16d61f6a1c55"      # the recorded samples'
LABEL = json.loads((SAMPLES / "show-label.json").read_text())
GIB = 1 << 30


# -- sizing ---------------------------------------------------------------------------------
@pytest.mark.parametrize("hosts, size, least, domain", [
    (1, 1, 1, "osd"), (2, 2, 1, "host"), (3, 3, 2, "host"), (12, 3, 2, "host")])
def test_pools_follow_the_hosts_with_osds(hosts, size, least, domain):
    assert cephconf.pool_size(hosts) == size
    assert cephconf.min_size(size) == least
    assert cephconf.failure_domain(hosts) == domain


@pytest.mark.parametrize("memory_gib, osds, want_mib", [
    (8, 1, 1638), (8, 4, 896), (64, 1, 13107), (64, 4, 3276), (16, 2, 1638)])
def test_osd_memory_target_is_a_fifth_of_ram_over_the_osds_never_below_cephs_floor(
        memory_gib, osds, want_mib):
    assert cephconf.osd_memory_target_mib(memory_gib * 1024, osds) == want_mib
    assert cephconf.osd_memory_target_mib(memory_gib * 1024, osds, configured=1024) == 1024


def test_mon_memory_target_within_bounds():
    assert cephconf.mon_memory_target_mib(8 * 1024) == 512
    assert cephconf.mon_memory_target_mib(24 * 1024) == 1228
    assert cephconf.mon_memory_target_mib(64 * 1024) == 2048


def view(**kw):
    base = dict(is_controller=True, address="10.0.0.11", mons=[], settings={},
                facts={"memory_mib": 16384, "prefix": 24}, disks=[{}])
    base.update(kw)
    return SimpleNamespace(**base)


def test_mon_host_lists_the_monitors_made_or_the_first_controller_itself():
    assert cephconf.mon_host(view()) == "[v2:10.0.0.11:3300,v1:10.0.0.11:6789]"
    assert cephconf.mon_host(view(is_controller=False)) == ""
    mons = [{"name": "n1", "address": "10.0.0.11"}, {"name": "n2", "address": "10.0.0.12"}]
    assert cephconf.mon_host(view(address="10.0.0.13", mons=mons)) == (
        "[v2:10.0.0.11:3300,v1:10.0.0.11:6789],[v2:10.0.0.12:3300,v1:10.0.0.12:6789]")
    ctx = cephconf.context(view())
    assert ctx["public_network"] == "10.0.0.0/24"
    assert ctx["osd_memory_target"] == 3276 * cephconf.MIB


def test_pool_commands_size_every_pool_and_allow_one_copy_only_for_one_host():
    one = pool_cmds = ceph.pool_commands(1, [".mgr"])
    assert ["config", "set", "global", "mon_allow_pool_size_one", "true"] in one
    assert ["osd", "pool", "set", ".mgr", "size", "1", "--yes-i-really-mean-it"] in one
    assert ["osd", "pool", "application", "enable", ".mgr", "mgr"] in one     # tagged again
    assert ["osd", "pool", "set", "vms", "crush_rule", "replicated_osd"] in one
    three = ceph.pool_commands(3, ["images", "volumes", "vms", "backups"])
    assert ["config", "set", "global", "mon_allow_pool_size_one", "false"] in three
    assert not any(c[:3] == ["osd", "pool", "create"] for c in three)
    for pool in cephconf.POOLS:
        assert ["osd", "pool", "set", pool, "size", "3"] in three
        assert ["osd", "pool", "set", pool, "min_size", "2"] in three
        assert ["osd", "pool", "set", pool, "crush_rule", "replicated_host"] in three
        assert ["osd", "pool", "application", "enable", pool, "rbd"] in three
    assert not any(".mgr" in c for c in three)       # not there yet: the mgr makes it
    created = [c[3] for c in pool_cmds if c[:3] == ["osd", "pool", "create"]]
    assert created == list(cephconf.POOLS)


def test_client_keys_carry_caps_limited_to_their_pools():
    secrets = {"ceph-%s-key" % c: "KEY-%s" % c for c in ("glance", "cinder", "nova")}
    text = ceph.client_keyring(secrets)
    sections = {}
    for block in text.split("[client.")[1:]:
        name, _, body = block.partition("]")
        sections[name] = body
    assert 'caps osd = "profile rbd pool=images"' in sections["glance"]
    assert "volumes" not in sections["glance"] and "vms" not in sections["glance"]
    assert 'profile rbd-read-only pool=images' in sections["nova"]
    assert "volumes" not in sections["nova"]
    assert 'caps mon = "profile rbd"' in sections["cinder"]
    assert "allow *" not in text


# -- health ---------------------------------------------------------------------------------
def sample(name):
    return json.loads((SAMPLES / name).read_text())


def test_health_ok_degraded_and_one_copy_by_design():
    ok = ceph.summarize(sample("status-ok.json"), 4)
    assert ok.state == health.OK and ok.detail["osds"] == {"total": 4, "up": 4, "in": 4}
    assert ok.detail["quorum"] == ["node1", "node4", "node2"]
    bad = ceph.summarize(sample("status-degraded.json"), 4)
    assert bad.state == health.DEGRADED and "PG_DEGRADED Degraded data redundancy" in bad.error
    aio = ceph.summarize(sample("status-aio.json"), 1)
    assert aio.state == health.OK and "one copy by design" in aio.detail["note"]
    assert aio.detail["health"] == "HEALTH_WARN"      # said as it is, not muted
    # the same warning with two storage hosts is a real one
    assert ceph.summarize(sample("status-aio.json"), 2).state == health.DEGRADED


def test_admin_socket_protocol(tmp_path):
    import socket
    import struct
    import threading
    path = tmp_path / "ceph-mon.n1.asok"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    got = {}

    def serve():
        conn, _ = server.accept()
        data = b""
        while not data.endswith(b"\0"):
            data += conn.recv(100)
        got["asked"] = json.loads(data[:-1])
        body = json.dumps({"state": "peon"}).encode()
        conn.sendall(struct.pack(">I", len(body)) + body)
        conn.close()
    t = threading.Thread(target=serve)
    t.start()
    assert ceph.asok(path, "mon_status") == {"state": "peon"}
    t.join()
    server.close()
    assert got["asked"] == {"prefix": "mon_status"}


# -- scripted commands ------------------------------------------------------------------------
class Script:
    """A command runner answering from a table: ``{(argv prefix): (rc, stdout, stderr)}`` or
    a callable; every call recorded (argv, stdin)."""

    def __init__(self, answers=None):
        self.answers = dict(answers or {})
        self.calls = []

    def __call__(self, argv, input=None, **kw):
        self.calls.append((list(argv), input))
        for prefix, answer in sorted(self.answers.items(), key=lambda kv: -len(kv[0])):
            if tuple(argv[:len(prefix)]) == prefix:
                if callable(answer):
                    answer = answer(argv, input)
                rc, out, err = answer
                return subprocess.CompletedProcess(argv, rc, out, err)
        return subprocess.CompletedProcess(argv, 0, "", "")

    def ran(self, *prefix):
        return [a for a, _ in self.calls if tuple(a[:len(prefix)]) == prefix]


def file_disk(path):
    return {"name": "file0", "path": str(path), "stable_id": "file:%s" % path,
            "kind": "file", "wipe": False, "serial": None, "wwn": None, "by_path": None}


@pytest.fixture
def rack(tmp_path):
    return agentrack.make(tmp_path, count=4)


def osds_for(rack, tmp_path, script, name="n4"):
    reg, nodes = rack
    node, _ = nodes[name]
    return osd.Osds(node.id, reg.kv, run=script, root=tmp_path / "root"), node


def no_label(argv, stdin):
    return 1, "", "unable to read label"


def test_a_disk_with_a_foreign_signature_is_refused_unless_wipe_force(rack, tmp_path):
    disk = tmp_path / "disk0.img"
    disk.write_bytes(b"\0" * 4096)
    script = Script({("ceph-bluestore-tool", "show-label"): no_label,
                     ("wipefs", "--no-act"): (0, json.dumps({"signatures": [
                         {"type": "ext4", "offset": "0x438"}]}), ""),
                     ("blkid",): (2, "", "")})
    osds, _ = osds_for(rack, tmp_path, script)
    with pytest.raises(osd.DiskRefused, match="carries ext4; it is not wiped: set "
                       "storage.wipe: force"):
        osds.check_disk(file_disk(disk), str(disk), FSID, set())
    forced = dict(file_disk(disk), wipe=True)
    assert osds.check_disk(forced, str(disk), FSID, set()) == ("wipe", "ext4")


def test_a_label_of_this_cluster_is_adopted_when_known_and_wiped_when_stale(rack, tmp_path):
    disk = tmp_path / "disk0.img"
    label = dict(next(iter(LABEL.values())))
    shown = (0, json.dumps({str(disk): label}), "")
    script = Script({("ceph-bluestore-tool", "show-label"): shown})
    osds, _ = osds_for(rack, tmp_path, script)
    what, found = osds.check_disk(file_disk(disk), str(disk), FSID, {label["osd_uuid"]})
    assert what == "adopt" and found["whoami"] == "0"
    assert osds.check_disk(file_disk(disk), str(disk), FSID, set())[0] == "wipe"
    other = dict(label, ceph_fsid="00000000-0000-0000-0000-000000000000")
    script.answers[("ceph-bluestore-tool", "show-label")] = (0, json.dumps({str(disk): other}),
                                                             "")
    script.answers[("wipefs", "--no-act")] = (0, "", "")
    script.answers[("blkid",)] = (2, "", "")
    with pytest.raises(osd.DiskRefused, match="another Ceph cluster"):
        osds.check_disk(file_disk(disk), str(disk), FSID, set())


def test_a_file_osd_is_made_recorded_and_started(rack, tmp_path, monkeypatch):
    monkeypatch.setattr(osd.shutil, "chown", lambda *a, **k: None)
    disk = tmp_path / "disk0.img"
    with open(disk, "wb") as f:
        f.truncate(8 * GIB)
    made = {}

    def osd_new(argv, stdin):
        made["secret"] = json.loads(stdin)["cephx_secret"]
        return 0, "7\n", ""

    def label(argv, stdin):
        if "uuid" not in made:
            return 1, "", "no label"
        return 0, json.dumps({str(disk): {"osd_uuid": made["uuid"], "ceph_fsid": FSID,
                                          "whoami": "7"}}), ""

    def mkfs(argv, stdin):
        made["uuid"] = argv[argv.index("--osd-uuid") + 1]
        return 0, "", ""
    script = Script({("ceph-bluestore-tool", "show-label"): label, ("wipefs",): (0, "", ""),
                     ("blkid",): (2, "", ""), ("ceph", "--connect-timeout"): osd_new,
                     ("ceph-osd",): mkfs})
    osds, node = osds_for(rack, tmp_path, script)
    systemd = FakeSystemd(["ceph.target", "ceph-osd.target", "ceph-osd@7.service"])
    ctx = StepContext(service=SimpleNamespace(name="ceph-osd"),
                      view=SimpleNamespace(name="n4", disks=[file_disk(disk)]),
                      systemd=systemd, kv=None, tasks=None, changed=False, dry_run=False,
                      context={"secrets": {"ceph-fsid": FSID}})
    actions = osds.step(ctx)
    assert [a.line() for a in actions][0] == "step osd.7 (ceph-osd): made on %s" % disk
    new = script.ran("ceph", "--connect-timeout", "15", "--name", "client.bootstrap-osd")
    assert new and new[0][5:8] == ["--keyring", str(tmp_path / "root/var/lib/ceph/bootstrap-"
                                                    "osd/ceph.keyring"), "osd"]
    assert made["secret"] not in " ".join(" ".join(a) for a, _ in script.calls)   # stdin only
    keyring_file = tmp_path / "root/var/lib/ceph/osd/ceph-7/keyring"
    assert made["secret"] in keyring_file.read_text()
    assert oct(keyring_file.stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "root/var/lib/ceph/osd/ceph-7/block").resolve() == disk
    record = json.loads((tmp_path / "root/var/lib/rackforge/ceph/osds/7.json").read_text())
    assert (record["id"], record["uuid"], record["node"]) == (7, made["uuid"], node.id)
    stored = json.loads(rack[0].kv.get(keys.CEPH_OSDS + "7").value)
    assert stored == record
    assert ("start", "ceph-osd@7.service") in systemd.calls
    # a second pass makes nothing and starts nothing
    systemd.calls.clear()
    assert osds.step(ctx) == [] and systemd.calls == []


def test_activation_refuses_a_swapped_disk_and_links_the_right_one(tmp_path, monkeypatch):
    monkeypatch.setattr(osd.shutil, "chown", lambda *a, **k: None)
    disk = tmp_path / "disk0.img"
    disk.write_bytes(b"x")
    label = dict(next(iter(LABEL.values())))
    shown = (0, json.dumps({str(disk): label}), "")
    script = Script({("ceph-bluestore-tool", "show-label"): shown})
    osds = osd.Osds(None, None, run=script, root=tmp_path)
    rec = osd.record_for(0, label["osd_uuid"], FSID, "nid", "n4", file_disk(disk), str(disk))
    osds.keep(rec)
    (tmp_path / "var/lib/ceph/osd/ceph-0").mkdir(parents=True)
    assert osds.activate(0) == str(disk)
    assert (tmp_path / "var/lib/ceph/osd/ceph-0/block").resolve() == disk
    script.answers[("ceph-bluestore-tool", "show-label")] = (
        0, json.dumps({str(disk): dict(label, osd_uuid="another")}), "")
    with pytest.raises(osd.WrongDisk, match="carries OSD another, not this OSD"):
        osds.activate(0)
    with pytest.raises(osd.DiskMissing, match="no record"):
        osds.activate(9)


def test_a_real_disk_is_found_by_wwn_then_slot():
    disk = {"path": "/dev/sdb", "wwn": "0x5000c5", "by_path": "/dev/disk/by-path/pci-0:1",
            "stable_id": "wwn:0x5000c5"}
    assert osd.device_of(disk, exists=lambda p: True) == "/dev/disk/by-id/wwn-0x5000c5"
    assert osd.device_of(disk, exists=lambda p: "by-path" in p) == disk["by_path"]
    with pytest.raises(osd.DiskMissing, match="wwn-0x5000c5, /dev/disk/by-path"):
        osd.device_of(disk, exists=lambda p: False)


def test_cephx_keys_have_cephs_shape():
    import base64
    raw = base64.b64decode(keyring.cephx_key(now=1764453000.5))
    assert len(raw) == 28 and raw[:2] == b"\x01\x00" and raw[-18:-16] == b"\x10\x00"


# -- the replace sequence ------------------------------------------------------------------------
class ScriptedCeph:
    """``ceph`` as DiskJob calls it: answers from the state of a tiny cluster."""

    def __init__(self, safe_after=0, ok_to_stop=True):
        self.calls = []
        self.osds = {5: {"osd": 5, "up": 1, "in": 1}}
        self.safe_after = safe_after
        self.ok_to_stop = ok_to_stop

    def __call__(self, *args, fmt=True, check=True, **kw):
        self.calls.append(list(args))
        rc, out = 0, ""
        if args[:2] == ("osd", "dump"):
            return {"osds": list(self.osds.values())}
        if args[:2] == ("osd", "ok-to-stop"):
            rc = 0 if self.ok_to_stop else 16
            out = "" if rc == 0 else "Error EBUSY: unsafe to stop osd(s) at this time (8 PGs)"
        if args[:2] == ("osd", "safe-to-destroy"):
            self.safe_after -= 1
            rc = 0 if self.safe_after < 0 else 16
            out = "Error EBUSY: 12 pgs not clean" if rc else ""
        if args[:2] == ("osd", "out"):
            self.osds[5]["in"] = 0
        if args[:2] == ("osd", "destroy"):
            self.osds[5]["up"] = 0
        if args[:2] == ("osd", "in"):
            self.osds[5].update(up=1, **{"in": 1})
        return subprocess.CompletedProcess(list(args), rc, "", out)


def job_for(rack, scripted, agent_answer="done"):
    reg, nodes = rack
    node, _ = nodes["n4"]
    rec = {"id": 5, "uuid": "u-old", "node": node.id, "disk": "file:/d/disk0.img",
           "path": "/d/disk0.img", "kind": "file"}
    reg.kv.txn([], [(keys.CEPH_OSDS + "5", json.dumps(rec).encode())])
    lines, clock = [], [0.0]

    def sleep(s):       # the node's agent answers while the operator waits
        clock[0] += s
        entry = reg.kv.get(keys.CEPH_REQUESTS + "5")
        req = json.loads(entry.value) if entry else {}
        answer = {"stopping": "stopped", "destroyed": agent_answer}.get(req.get("state"))
        if answer:
            reg.kv.txn([], [(keys.CEPH_REQUESTS + "5", json.dumps(
                dict(req, state=answer, error="disk0.img is not there")).encode())])
    job = disks.DiskJob(reg.kv, registry=reg, ceph=scripted, say=lines.append,
                        clock=lambda: clock[0], sleep=sleep)
    return job, node, rec, lines


def test_replace_takes_the_osd_out_waits_until_safe_destroys_and_brings_it_in(rack):
    scripted = ScriptedCeph(safe_after=3)
    job, node, rec, lines = job_for(rack, scripted)
    assert disks.find(rack[0].kv, node, "osd.5") == rec
    assert job.run(node, rec, "replace", timeout=600) == 0
    order = [c[:2] for c in scripted.calls if c[:2] != ["osd", "dump"]]
    assert order == [["osd", "ok-to-stop"], ["osd", "out"]] + [["osd", "safe-to-destroy"]] * 4 \
        + [["osd", "destroy"], ["osd", "in"]]       # destroyed only once its node stopped it
    assert ["osd", "destroy", "5", "--yes-i-really-mean-it"] in scripted.calls
    assert lines[-1] == "osd.5 is up and in again, on the new disk; Ceph fills it back"
    req = json.loads(rack[0].kv.get(keys.CEPH_REQUESTS + "5").value)
    assert req["state"] == "done" and req["disk_record"] == rec


def test_replace_is_refused_when_ceph_says_stopping_is_unsafe(rack):
    scripted = ScriptedCeph(ok_to_stop=False)
    job, node, rec, _ = job_for(rack, scripted)
    with pytest.raises(disks.Refused, match="replace osd.5: Ceph says stopping it is not "
                       "safe now .*8 PGs"):
        job.run(node, rec, "replace")
    assert ["osd", "out", "5"] not in scripted.calls
    assert rack[0].kv.get(keys.CEPH_REQUESTS + "5") is None


def test_replace_stops_before_destroying_when_never_safe_and_resumes_later(rack):
    scripted = ScriptedCeph(safe_after=10 ** 6)
    job, node, rec, lines = job_for(rack, scripted)
    with pytest.raises(disks.Refused, match="still not safe to destroy after 60s .*12 pgs not "
                       "clean.*run the command again"):
        job.run(node, rec, "replace", timeout=60)
    assert not any(c[:2] == ["osd", "destroy"] for c in scripted.calls)
    assert any("12 pgs not clean" in line for line in lines)      # progress while it waited
    scripted.safe_after = 0
    assert job.run(node, rec, "replace", timeout=60) == 0         # resumed, not asked again
    assert [c[:2] for c in scripted.calls].count(["osd", "ok-to-stop"]) == 1


def test_a_failed_node_half_is_said_in_one_line(rack):
    job, node, rec, _ = job_for(rack, ScriptedCeph(), agent_answer="failed")
    with pytest.raises(disks.Refused, match="node n4: disk0.img is not there; fix it"):
        job.run(node, rec, "replace", timeout=60)


def test_remove_purges_and_drops_the_disk(rack):
    reg = rack[0]
    scripted = ScriptedCeph()
    job, node, rec, _ = job_for(rack, scripted)
    reg.update_node(node.id, lambda n: n.boot.update(storage={"disks": [
        {"stable_id": "file:/d/disk0.img"}, {"stable_id": "wwn:0x1"}]}))
    assert job.run(node, rec, "remove", timeout=60) == 0
    assert ["osd", "purge", "5", "--yes-i-really-mean-it"] in scripted.calls
    assert not any(c[:2] == ["osd", "destroy"] for c in scripted.calls)
    assert reg.kv.get(keys.CEPH_OSDS + "5") is None
    assert [d["stable_id"] for d in reg.get_node(node.id).boot["storage"]["disks"]] \
        == ["wwn:0x1"]


def test_the_node_half_makes_the_osd_again_with_the_same_id(rack, tmp_path, monkeypatch):
    monkeypatch.setattr(osd.shutil, "chown", lambda *a, **k: None)
    reg, nodes = rack
    disk = tmp_path / "disk0.img"
    with open(disk, "wb") as f:
        f.truncate(8 * GIB)
    asked = {}

    def osd_new(argv, stdin):
        asked["argv"] = argv
        return 0, "5\n", ""
    script = Script({("ceph-bluestore-tool", "show-label"): no_label, ("wipefs",): (0, "", ""),
                     ("blkid",): (2, "", ""), ("ceph", "--connect-timeout"): osd_new})
    osds, node = osds_for(rack, tmp_path, script)
    rec = osd.record_for(5, "u-old", FSID, node.id, "n4", file_disk(disk), str(disk))
    osds.keep(rec)
    req = {"osd": 5, "node": node.id, "action": "replace", "disk": rec["disk"],
           "disk_record": rec, "state": "stopping", "wipe": False}
    reg.kv.txn([], [(keys.CEPH_REQUESTS + "5", json.dumps(req).encode())])
    systemd = FakeSystemd(["ceph.target", "ceph-osd.target", "ceph-osd@5.service"])
    systemd.units["ceph-osd@5.service"].update(active="active", enabled="enabled")
    ctx = StepContext(service=SimpleNamespace(name="ceph-osd"),
                      view=SimpleNamespace(name="n4", disks=[file_disk(disk)]),
                      systemd=systemd, kv=None, tasks=None, changed=False, dry_run=False,
                      context={"secrets": {"ceph-fsid": FSID}})
    osds.step(ctx)      # stopped, and nothing made while Ceph has not destroyed it
    assert systemd.calls == [("stop", "ceph-osd@5.service"), ("disable", "ceph-osd@5.service")]
    assert json.loads(reg.kv.get(keys.CEPH_REQUESTS + "5").value)["state"] == "stopped"
    assert "argv" not in asked
    reg.kv.txn([], [(keys.CEPH_REQUESTS + "5", json.dumps(dict(req, state="destroyed"))
                     .encode())])
    osds.step(ctx)
    assert asked["argv"][-4:-2] == ["-i", "-"] and asked["argv"][-5] == "5"    # the same id
    assert systemd.units["ceph-osd@5.service"] == {"active": "active", "enabled": "enabled"}
    answered = json.loads(reg.kv.get(keys.CEPH_REQUESTS + "5").value)
    assert answered["state"] == "done"
    assert json.loads(reg.kv.get(keys.CEPH_OSDS + "5").value)["uuid"] != "u-old"


def test_a_failed_mkfs_retried_asks_ceph_for_the_same_osd_not_a_new_id(rack, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setattr(osd.shutil, "chown", lambda *a, **k: None)
    disk = tmp_path / "disk0.img"
    with open(disk, "wb") as f:
        f.truncate(8 * GIB)
    asked, mkfs = [], {"rc": 250}

    def osd_new(argv, stdin):
        asked.append((argv[argv.index("new") + 1], json.loads(stdin)["cephx_secret"]))
        return 0, "2\n", ""
    script = Script({("ceph-bluestore-tool", "show-label"): no_label, ("wipefs",): (0, "", ""),
                     ("blkid",): (2, "", ""), ("ceph", "--connect-timeout"): osd_new,
                     ("ceph-osd",): lambda argv, stdin: (mkfs["rc"], "", "Permission denied")})
    osds, _ = osds_for(rack, tmp_path, script)
    v = SimpleNamespace(name="n4")
    with pytest.raises(ceph.CephFailed, match="ceph-osd --mkfs: exit 250: Permission denied"):
        osds.make(file_disk(disk), FSID, v)
    mkfs["rc"] = 0
    assert osds.make(file_disk(disk), FSID, v)["id"] == 2
    assert len(asked) == 2 and asked[0] == asked[1]       # the same uuid and key again
    assert list((tmp_path / "root/var/lib/rackforge/ceph/osds").glob("making-*.intent")) == []


def test_a_monitor_with_a_cluster_log_message_stuck_is_restarted_once_an_hour(monkeypatch):
    answers = {"mon_status": {"state": "peon", "quorum": [0, 1, 2],
                              "monmap": {"mons": [{}, {}, {}]}},
               "ops": {"ops": [{"description": "log(1 entries from seq 2 at ...)",
                                "age": 942.4},
                               {"description": "mon_command(status)", "age": 2000.0}]}}
    monkeypatch.setattr(ceph, "asok", lambda path, prefix, **kw: answers[prefix])
    now = [10000.0]
    hooks = ceph.CephHooks("n1", kv=None, clock=lambda: now[0])
    systemd = FakeSystemd(["ceph-mon@node1.service"])
    assert hooks.stuck_log_op("node1") == 942.4
    actions = hooks.unstick_mon(systemd, "node1")
    assert [(a.kind, a.target) for a in actions] == [("restart", "ceph-mon@node1.service")]
    assert systemd.calls == [("restart", "ceph-mon@node1.service")]
    now[0] += 600
    assert hooks.unstick_mon(systemd, "node1") == []            # not again within the hour
    now[0] += 3600
    answers["mon_status"]["quorum"] = [0, 1]                   # a monitor down: not now
    assert hooks.unstick_mon(systemd, "node1") == []
    answers["mon_status"]["quorum"] = [0, 1, 2]
    answers["ops"]["ops"][0]["age"] = 100.0                   # young: Ceph may finish it
    assert hooks.unstick_mon(systemd, "node1") == []
    assert systemd.calls == [("restart", "ceph-mon@node1.service")]
