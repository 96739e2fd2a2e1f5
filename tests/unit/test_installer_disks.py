"""The installer's target disk and install plan, on recorded inventories and recorded
wipefs/blkid output (tests/unit/samples/inventory/, tests/unit/samples/storage/).

Shapes: ``server-2nvme-4hdd`` as recorded is an installed Dell (its NVMe RAID1 holds the
running system) with 4 identical HDDs and a USB stick that is *not* the boot medium;
``dell_from_usb`` is the same machine booted from that stick (the installer's case);
``live-iso`` booted a live ISO from a BMC's virtual CD (a USB CD-ROM); ``vm-virtio`` a
QEMU guest; ``firecracker-vm`` has its system disk and nothing else.
"""

import copy
import dataclasses
from pathlib import Path

import pytest
from inventory_samples import load

from probes import Runner, no_real_commands  # noqa: F401 (autouse)
from rackforge.firstboot import bootstrap, inventory, storage
from rackforge.installer import answer, disks, plan
from rackforge.installer.disks import DiskAnswer, MatchSpec

SAMPLES = Path(__file__).parent / "samples"
HDDS = ["wwn:0x5000c500c1a2b3c%d" % i for i in range(4)]
NVME0 = "wwn:eui.36344730528012340025384500000001"
USB_SERIAL = "4C530001230815116541"
TOKEN = "q7x2kd.9f3h1m0c8b7v6n5z"
PIN = "sha256:" + "5e" * 32


@pytest.fixture(scope="module")
def recorded_inventories(tmp_path_factory):
    """Each shape's inventory, collected once for the module."""
    tmp = tmp_path_factory.mktemp("inventory")
    return {p.name: inventory.collect(load(p, tmp / p.name))
            for p in sorted((SAMPLES / "inventory").iterdir()) if p.is_dir()}


@pytest.fixture
def shape(recorded_inventories):
    """``shape(name)``: a fresh copy of a recorded inventory (tests may change it)."""
    def collect(name):
        if name == "dell_from_usb":
            inv = collect("server-2nvme-4hdd")
            for d in inv.disks:
                d.system = d.name == "sde"
            return inv
        return copy.deepcopy(recorded_inventories[name])
    return collect


def pick(inv, *specs, wipe="never", run=None, listed=None):
    listed = len(specs) > 1 if listed is None else listed
    return disks.choose(DiskAnswer(list(specs), wipe=wipe, listed=listed), inv, run=run)


# -- candidates ---------------------------------------------------------------------------
def test_the_usb_boot_medium_is_left_out_as_the_boot_medium(shape):
    pool, excluded = disks.candidates(shape("dell_from_usb"))
    assert [(x.name, x.stable_id) for x in excluded] == [("sde", "serial:" + USB_SERIAL)]
    assert excluded[0].reason.startswith("the boot medium")
    assert [d.name for d in pool] == ["nvme0n1", "nvme1n1", "sda", "sdb", "sdc", "sdd"]


def test_the_boot_medium_is_never_picked_even_named_exactly(shape):
    with pytest.raises(disks.NoDiskMatches) as e:
        pick(shape("dell_from_usb"), MatchSpec(serial=USB_SERIAL))
    assert "sde (the boot medium)" in str(e.value)


def test_live_iso_virtual_cd_and_squashfs_are_the_boot_medium(shape):
    pool, excluded = disks.candidates(shape("live-iso"))
    assert {x.name: x.reason.split(" (")[0] for x in excluded} == {
        "loop0": "the boot medium", "sr0": "the boot medium"}
    assert [d.name for d in pool] == ["sda", "sdb"]


def test_cd_drive_and_read_only_disk_are_left_out(shape):
    inv = shape("vm-virtio")
    inv.disks.append(dataclasses.replace(inv.disks[-1], name="vdc", path="/dev/vdc",
                                         serial="ro1", read_only=True))
    pool, excluded = disks.candidates(inv)
    reasons = {x.name: x.reason for x in excluded}
    assert reasons["sr0"] == "a CD/DVD drive" and reasons["vdc"] == "read-only"
    assert reasons["vda"].startswith("the boot medium")
    assert [d.name for d in pool] == ["vdb"]


def test_no_candidate_at_all_is_an_error(shape):
    with pytest.raises(disks.NoCandidates, match=r"vda: the boot medium"):
        pick(shape("firecracker-vm"), MatchSpec(size="largest"))


# -- matching ----------------------------------------------------------------------------------
def test_unique_match_by_serial(shape):
    choice = pick(shape("server-2nvme-4hdd"), MatchSpec(serial="WKD0A1B1"))
    assert choice.disk.name == "sdb" and choice.stable_id == HDDS[1]
    assert choice.unique and choice.key == "disk.match" and choice.signatures is None


def test_ambiguous_match_names_every_disk_and_the_fix(shape):
    with pytest.raises(disks.AmbiguousMatch) as e:
        pick(shape("server-2nvme-4hdd"), MatchSpec(model="ST8000*"))
    text = str(e.value)
    assert "ambiguous: 4 disks match" in text and "add serial/wwn or size: largest" in text
    assert all(i in text for i in HDDS) and e.value.kwargs["key"] == "disk.match"


def test_size_breaks_a_tie(shape):
    inv = shape("live-iso")
    assert pick(inv, MatchSpec(size="largest")).disk.name == "sdb"
    chosen = pick(inv, MatchSpec(size="smallest"))
    assert chosen.disk.name == "sda" and not chosen.unique
    assert chosen.stable_id == "wwn:naa.500a07512b3c4d5e"


def test_same_sized_disks_are_still_ambiguous(shape):
    with pytest.raises(disks.SameSize, match=r"4 disks are the largest .*7\.3 TiB each"):
        pick(shape("server-2nvme-4hdd"), MatchSpec(model="ST8000*", size="largest"))


def test_zero_matches_lists_the_candidates(shape):
    with pytest.raises(disks.NoDiskMatches) as e:
        pick(shape("server-2nvme-4hdd"), MatchSpec(serial="S3Z*"))
    text = str(e.value)
    assert "no disk matches serial 'S3Z*'" in text
    assert all(i in text for i in HDDS) and "serial:" + USB_SERIAL in text
    assert "nvme0n1 (the boot medium)" in text


def test_first_spec_with_a_match_wins(shape):
    inv = shape("server-2nvme-4hdd")
    choice = pick(inv, MatchSpec(serial="S3Z*"), MatchSpec(wwn="*C1A2B3C2"),
                  MatchSpec(serial="WKD0A1B0"))
    assert choice.stable_id == HDDS[2] and choice.key == "disk.match[1]"


def test_an_ambiguous_first_spec_does_not_fall_through(shape):
    with pytest.raises(disks.AmbiguousMatch) as e:
        pick(shape("server-2nvme-4hdd"), MatchSpec(vendor="ATA"), MatchSpec(serial="WKD0A1B0"))
    assert e.value.kwargs["key"] == "disk.match[0]"


def test_a_usb_disk_only_when_named_exactly(shape):
    inv = shape("server-2nvme-4hdd")        # the stick is not the boot medium here
    with pytest.raises(disks.NoDiskMatches, match=r"\(sde would match\)"):
        pick(inv, MatchSpec(max_gib=100))
    with pytest.raises(disks.NoDiskMatches):
        pick(inv, MatchSpec(serial="4C53*"))
    assert pick(inv, MatchSpec(serial=USB_SERIAL)).disk.name == "sde"
    assert pick(inv, MatchSpec(by_path="pci-0000:00:14.0-usb-0:3:1.0-scsi-0:0:0:0")
                ).disk.name == "sde"


@pytest.mark.parametrize("spec,name", [
    (MatchSpec(wwn="0X5000C500C1A2B3C3"), "sdd"),                   # hex in either case
    (MatchSpec(by_path="pci-0000:00:17.0-ata-2.0"), "sdb"),          # the link's name
    (MatchSpec(by_path="/dev/disk/by-path/pci-0000:00:17.0-ata-3.*"), "sdc"),
    (MatchSpec(vendor="ATA", serial="*B3"), "sdd"),                  # every key must match
    (MatchSpec(model="ST8000*", min_gib=7000, max_gib=8000, serial="*0"), "sda"),
])
def test_matchers(shape, spec, name):
    assert pick(shape("server-2nvme-4hdd"), spec).disk.name == name


def test_size_bounds_are_in_gib(shape):
    inv = shape("live-iso")                 # sda 447.1 GiB, sdb 1788.5 GiB
    assert pick(inv, MatchSpec(max_gib=448)).disk.name == "sda"
    assert pick(inv, MatchSpec(min_gib=448)).disk.name == "sdb"
    with pytest.raises(disks.NoDiskMatches):
        pick(inv, MatchSpec(min_gib=448, max_gib=1788))


def test_globs_are_case_sensitive_except_wwn(shape):
    with pytest.raises(disks.NoDiskMatches):
        pick(shape("server-2nvme-4hdd"), MatchSpec(serial="wkd0a1b0"))


def test_exact_spec_names_each_candidate_alone(shape):
    inv = shape("server-2nvme-4hdd")
    pool, _ = disks.candidates(inv)
    for disk in pool:
        spec = disks.exact_spec(disk)
        assert spec.names_exactly()
        choice = pick(inv, spec)
        assert choice.disk is disk and choice.unique
        assert choice.stable_id == storage.stable_id(disk)


# -- what the disk holds ---------------------------------------------------------------------
def test_a_disk_holding_data_is_refused_and_the_signatures_named(shape):
    run = Runner({"/dev/sdb": "gpt"})
    with pytest.raises(disks.DiskHoldsData) as e:
        pick(shape("server-2nvme-4hdd"), MatchSpec(serial="WKD0A1B1"), run=run)
    assert "PMBR, gpt" in str(e.value) and HDDS[1] in str(e.value)
    assert e.value.kwargs["key"] == "disk.wipe"
    assert run.calls == [["wipefs", "--no-act", "-J", "/dev/sdb"],
                         ["blkid", "-p", "-o", "export", "/dev/sdb"]]


@pytest.mark.parametrize("sample,found", [("ext4", ["ext4"]), ("lvm", ["LVM2_member"]),
                                          ("ceph", ["ceph_bluestore"]), ("mbr", ["dos"])])
def test_force_wipes_a_disk_named_alone(shape, sample, found):
    choice = pick(shape("server-2nvme-4hdd"), MatchSpec(serial="WKD0A1B1"), wipe="force",
                  run=Runner({"/dev/sdb": sample}))
    assert choice.wipe and choice.signatures == found


def test_force_does_not_wipe_a_disk_picked_by_size(shape):
    with pytest.raises(disks.WipeNeedsExactMatch) as e:
        pick(shape("live-iso"), MatchSpec(size="largest"), wipe="force",
             run=Runner({"/dev/sdb": "gpt"}))
    assert "wwn: naa.500a07512b3c4d9f" in str(e.value)      # how to name it alone


def test_an_empty_disk_is_not_wiped_even_under_force(shape):
    choice = pick(shape("live-iso"), MatchSpec(size="largest"), wipe="force", run=Runner())
    assert choice.signatures == [] and not choice.wipe


def test_a_disk_that_cannot_be_probed_is_refused(shape):
    with pytest.raises(disks.CannotProbe, match="wipefs exited 1"):
        pick(shape("vm-virtio"), MatchSpec(serial="data1"), run=Runner({"/dev/vdb": "missing"}))


# -- the plan ---------------------------------------------------------------------------------
def answers(**sections):
    data = {"version": 1, "hostname": "node1", "disk": {"match": {"serial": "WKD0A1B1"}},
            "network": {"interface": "eno1", "address": "10.0.0.11/24",
                        "gateway": "10.0.0.1"},
            "cluster": {"create": {"name": "rack1", "vip": "10.0.0.100"}}}
    data.update(sections)
    return answer.Answers.from_dict(data)


def test_plan_of_a_seed(shape):
    p = plan.make_plan(answers(), shape("server-2nvme-4hdd"), run=Runner())
    assert (p.disk.path, p.disk.stable_id, p.disk.serial) == ("/dev/sdb", HDDS[1], "WKD0A1B1")
    assert p.disk.size == 8001563222016 and p.disk.model == "ST8000NM000A-2KE"
    assert p.wipe is False and p.signatures == [] and p.hostname == "node1"
    assert p.bootstrap == {"seed": True, "cluster": "rack1", "vip": "10.0.0.100",
                           "management": {"interface": "eno1", "address": "10.0.0.11/24",
                                          "gateway": "10.0.0.1"}}
    assert p.management == p.bootstrap["management"]
    assert p.bootstrap["management"] is not p.management     # no alias in the YAML


def test_plan_of_a_joining_node_writes_what_firstboot_reads(shape, tmp_path):
    join = {"join": {"endpoints": ["https://10.0.0.11:9443"], "token": TOKEN,
                     "ca_sha256": PIN}}
    p = plan.make_plan(answers(cluster=join, disk={"match": {"serial": "WKD0A1B0"},
                                                   "wipe": "force"}),
                       shape("server-2nvme-4hdd"), run=Runner({"/dev/sda": "ext4"}))
    assert p.mode == "join" and p.wipe and p.signatures == ["ext4"]
    path = tmp_path / "bootstrap.yaml"
    path.write_text(p.bootstrap_yaml())
    boot = bootstrap.load(path, cmdline="")
    assert boot.join == bootstrap.Join(["https://10.0.0.11:9443"], TOKEN, PIN)
    assert boot.management.address == "10.0.0.11/24" and not boot.seed
    # the token is in the file the writer installs, and nowhere else
    shown = repr(p) + "\n".join(p.summary()) + repr(p.to_dict())
    assert TOKEN not in shown and "token given, not shown" in "\n".join(p.summary())


def test_plan_collects_disk_and_network_problems(shape):
    a = answers(network={"bond": {"members": ["eno1", "mac:aa:bb:cc:dd:ee:ff"]},
                         "address": "dhcp"},
                disk={"match": {"model": "ST8000*"}})
    with pytest.raises(plan.PlanInvalid) as e:
        plan.make_plan(a, shape("server-2nvme-4hdd"), run=Runner())
    keys = [p.key for p in e.value.problems]
    assert keys == ["disk.match", "network"]
    assert "mac:aa:bb:cc:dd:ee:ff" in e.value.lines[1] and "eno1" not in \
        e.value.lines[1].split("its NICs")[0]


def test_plan_accepts_nics_by_mac(shape):
    a = answers(network={"interface": "mac:f4:02:70:b1:22:31", "address": "dhcp"})
    assert plan.make_plan(a, shape("server-2nvme-4hdd"), run=Runner()).management[
        "interface"] == "mac:f4:02:70:b1:22:31"


def test_plan_needs_complete_answers(shape):
    with pytest.raises(answer.AnswerInvalid, match="hostname: is missing"):
        plan.make_plan(answer.Answers(), shape("live-iso"))


def test_plan_on_a_recorded_inventory_does_not_probe(shape):
    p = plan.make_plan(answers(disk={"match": {"size": "smallest"}}), shape("live-iso"),
                       run=None)
    assert p.signatures is None and not p.wipe and p.disk.stable_id == \
        "wwn:naa.500a07512b3c4d5e"
    assert any("not probed" in line for line in p.summary())
