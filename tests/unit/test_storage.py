"""Data disk selection from inventories and recorded blkid/wipefs output."""

import json
from types import SimpleNamespace
from pathlib import Path

import pytest

from probes import recorded, Runner, no_real_commands  # noqa: F401 (autouse)
from rackforge import registry
from rackforge.firstboot import storage
from rackforge.firstboot.inventory import BMC, CPU, BlockDevice, Inventory, Memory, SystemVendor
from rackforge.firstboot.storage import StoragePolicy

GIB = 1 << 30


def disk(name, gib=100, **kw):
    return BlockDevice(name=name, path="/dev/" + name, size=gib * GIB, **kw)


def inv(*disks):
    return Inventory(cpu=CPU(model=None, count=1, architecture="x86_64"),
                     memory=Memory(total_bytes=GIB), disks=list(disks), interfaces=[],
                     system_vendor=SystemVendor(), bmc=BMC())


@pytest.mark.parametrize("name,expected", [
    ("empty", []), ("ext4", ["ext4"]), ("gpt", ["PMBR", "gpt"]), ("mbr", ["dos"]),
    ("lvm", ["LVM2_member"]), ("ceph", ["ceph_bluestore"])])
def test_probe_recorded_signatures(name, expected):
    assert storage.probe_signatures("/dev/sdb", Runner({"/dev/sdb": name})) == expected


def test_probe_failures():
    with pytest.raises(storage.ProbeFailed, match="wipefs exited 1"):
        storage.probe_signatures("/dev/sdq", Runner({"/dev/sdq": "missing"}))
    with pytest.raises(storage.ProbeFailed, match="not installed"):
        storage.probe_signatures("/dev/sdb", lambda argv: (127, ""))
    with pytest.raises(storage.ProbeFailed, match="blkid exited 4"):
        storage.probe_signatures("/dev/sdb", lambda argv: (0, "") if argv[0] == "wipefs"
                                 else (4, ""))
    with pytest.raises(storage.ProbeFailed, match="unreadable"):
        storage.probe_signatures("/dev/sdb", lambda argv: (0, "{not json"))


def test_blkid_alone_sees_a_signature():
    """wipefs saw nothing, blkid saw a table: the disk is not empty."""
    def run(argv):
        return recorded("mbr" if argv[0] == "blkid" else "empty", argv[0])
    assert storage.probe_signatures("/dev/sdb", run) == ["dos"]


def test_rules_without_signatures():
    inventory = inv(disk("nvme0n1", system=True), disk("sda"), disk("sdb", gib=10),
                    disk("sdc", removable=True), disk("sdd", read_only=True),
                    BlockDevice(name="sr0", path="/dev/sr0", size=GIB, type="rom"),
                    disk("sde", gib=20))
    run = Runner({})
    sel = storage.select(inventory, StoragePolicy(min_disk_gib=20), run=run)
    assert [d.name for d in sel.disks] == ["sda", "sde"]
    why = {s.name: s.reason for s in sel.skipped}
    assert why == {"nvme0n1": "holds the running system",
                   "sdb": "smaller than storage.min_disk_gib (10.0 GiB < 20 GiB)",
                   "sdc": "removable", "sdd": "read-only", "sr0": "not a disk (rom)"}
    # only the candidates were probed
    assert {argv[-1] for argv in run.calls} == {"/dev/sda", "/dev/sde"}


def test_signatures_refused_under_never():
    shapes = {"/dev/sda": "ext4", "/dev/sdb": "gpt", "/dev/sdc": "lvm", "/dev/sdd": "ceph",
              "/dev/sde": "mbr", "/dev/sdf": "empty", "/dev/sdg": "missing"}
    inventory = inv(*[disk(p[5:]) for p in shapes])
    sel = storage.select(inventory, StoragePolicy(), run=Runner(shapes))
    assert [d.name for d in sel.disks] == ["sdf"]
    assert not sel.disks[0].wipe
    why = {s.name: s.reason for s in sel.skipped}
    assert why["sda"].startswith("carries ext4 (storage.wipe is never; set wipe: force")
    assert "ceph_bluestore" in why["sdd"] and "LVM2_member" in why["sdc"]
    assert "dos" in why["sde"] and "PMBR, gpt" in why["sdb"]
    assert why["sdg"].startswith("could not read the signatures of /dev/sdg")


def test_force_picks_them_marked_for_wiping_but_never_an_unreadable_disk():
    shapes = {"/dev/sda": "ext4", "/dev/sdb": "ceph", "/dev/sdc": "empty",
              "/dev/sdd": "missing"}
    inventory = inv(*[disk(p[5:]) for p in shapes], disk("vda", system=True))
    sel = storage.select(inventory, StoragePolicy(wipe="force"), run=Runner(shapes))
    got = {d.name: (d.wipe, d.signatures) for d in sel.disks}
    assert got == {"sda": (True, ["ext4"]), "sdb": (True, ["ceph_bluestore"]),
                   "sdc": (False, [])}
    assert {s.name for s in sel.skipped} == {"sdd", "vda"}


def test_stable_ids():
    assert storage.stable_id(disk("a", wwn="0x5000c5", serial="S1", by_path="/p")) == \
        "wwn:0x5000c5"
    assert storage.stable_id(disk("a", serial="S1", by_path="/p")) == "serial:S1"
    assert storage.stable_id(disk("a", by_path="/dev/disk/by-path/pci-0")) == \
        "by-path:/dev/disk/by-path/pci-0"
    assert storage.stable_id(disk("a")) == "path:/dev/a"


def test_recorded_server_shape(tmp_path):
    """Dell-like server: NVMe RAID1 system, 4 x 8 TB HDD, a USB stick."""
    from inventory_samples import load

    from rackforge.firstboot import inventory
    inventory_ = inventory.collect(load(Path(__file__).parent / "samples" / "inventory" /
                                        "server-2nvme-4hdd", tmp_path))
    sel = storage.select(inventory_, StoragePolicy(),
                         run=Runner({"/dev/sdd": "lvm"}))
    assert [d.name for d in sel.disks] == ["sda", "sdb", "sdc"]
    assert sel.disks[0].stable_id == "wwn:0x5000c500c1a2b3c0"
    assert sel.disks[0].by_path == "/dev/disk/by-path/pci-0000:00:17.0-ata-1.0"
    assert sel.disks[0].serial == "WKD0A1B0" and sel.disks[0].rotational
    why = {s.name: s.reason for s in sel.skipped}
    assert why["sde"] == "removable" and "system" in why["nvme0n1"]
    assert "LVM2_member" in why["sdd"]


@pytest.mark.parametrize("kw,key", [({"wipe": "always"}, "wipe"), ({"min_disk_gib": 0},
                                    "min_disk_gib"), ({"min_disk_gib": "20"}, "min_disk_gib")])
def test_bad_policy(kw, key):
    with pytest.raises(storage.StoragePolicyError, match="storage.%s" % key):
        StoragePolicy(**kw)


def test_policy_from_the_hci_profile(real_profiles):
    assert StoragePolicy.from_profile(real_profiles("hci")) == StoragePolicy(20, "never")


def test_recorded_in_the_registry():
    reg = registry.MemoryRegistry()
    node = reg.create_node(registry.Node(name="r1n4"))
    sel = storage.select(inv(disk("sdb", wwn="0x50", serial="X")), run=Runner({}),
                         clock=lambda: 42.0)
    storage.record(reg, node.id, sel)
    stored = reg.get_node(node.id).boot["storage"]
    assert stored["disks"][0]["stable_id"] == "wwn:0x50"
    assert stored["policy"] == {"min_disk_gib": 20, "wipe": "never", "file_disks": 0,
                                "file_disk_gib": 8, "test_devices": []}
    assert stored["decided"] == 42.0


def test_a_profiles_file_disks_and_test_devices_go_through_the_same_choice(tmp_path):
    """Files made sparse in the data directory, and loop devices the test bed named, are
    chosen like disks: probed for signatures, refused when they carry one."""
    loop = tmp_path / "loop7"               # stands in for /dev/loop7 (read for its size)
    with open(loop, "wb") as f:
        f.truncate(4 << 30)
    policy = storage.StoragePolicy(file_disks=2, file_disk_gib=4, test_devices=(str(loop),))
    sigs = {str(loop): json.dumps({"signatures": [{"type": "BlueStore"}]})}

    def run(argv):
        if argv[0] == "wipefs":
            return 0, sigs.get(argv[-1], "")
        return 2, ""
    inv = SimpleNamespace(disks=[])
    sel = storage.select(inv, policy, run=run, folder=str(tmp_path / "disks"))
    assert [(d.name, d.kind, d.stable_id, d.size) for d in sel.disks] == [
        ("file0", "file", "file:%s/disks/disk0.img" % tmp_path, 4 << 30),
        ("file1", "file", "file:%s/disks/disk1.img" % tmp_path, 4 << 30)]
    assert [s.reason for s in sel.skipped] == [
        "carries BlueStore (storage.wipe is never; set wipe: force to reuse it)"]
    again = storage.select(inv, policy, run=lambda argv: (0, ""), folder=str(tmp_path / "disks"))
    assert [d.kind for d in again.disks] == ["file", "file", "disk"]    # a loop: a block device
    assert (tmp_path / "disks" / "disk0.img").stat().st_blocks == 0      # sparse, made once
