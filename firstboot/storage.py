"""Storage preparation: which disks of the node become Ceph OSD data disks.

From the node's :class:`~rackforge.firstboot.inventory.Inventory` and the
profile's ``storage`` policy (``min_disk_gib``, ``wipe: never | force``) a
disk is picked when it is a whole disk (not a CD or loop), does not hold the
running system, is neither removable nor read-only, is at least
``min_disk_gib`` large, and carries no signature: no file system, partition
table, LVM physical volume, RAID member or Ceph BlueStore label, as seen by
``blkid -p -o export DEV`` and ``wipefs --no-act -J DEV`` (both, since each
sees things the other misses).  With ``wipe: force`` a disk with signatures
is picked too and marked ``wipe: true`` with what it carried; the disk is not
touched here (the OSD step wipes it).  A disk that cannot be probed is never
picked: nothing that cannot be read can be called empty.

Each chosen disk is recorded with its stable ids: WWN (follows the disk to
another slot or machine), serial and by-path (the slot on this machine), so
a replaced or moved disk is recognised (PITFALLS.md, Cluster).

Commands run through an injectable runner ``run(argv) -> (returncode,
stdout)``; the unit tests replay recorded output of the real tools.
"""

import dataclasses
import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

from rackforge import errors
from rackforge.fileutil import make_dirs

LOG = logging.getLogger(__name__)

GIB = 1 << 30
WIPE_POLICIES = ("never", "force")
DEFAULT_MIN_GIB = 20
# blkid keys that name a signature (TYPE: file system, LVM, RAID, Ceph...; PTTYPE: table)
BLKID_KEYS = ("TYPE", "PTTYPE")


class StoragePolicyError(errors.ConfigError):
    message = "storage.{key} is '{value}': {why}; fix the profile's storage section"


class ProbeFailed(errors.RackforgeError):
    message = "could not read the signatures of {device}: {detail}"
    retryable = True


def run_probe(argv, timeout=30):
    """Default runner: ``(returncode, stdout)``; 127 when the tool is missing."""
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return 127, ""
    except (OSError, subprocess.TimeoutExpired) as e:
        LOG.warning("storage: %s failed: %s", argv[0], e)
        return 126, ""
    if res.returncode not in (0, 2):
        LOG.info("storage: %s exited %d: %s", " ".join(argv), res.returncode,
                 res.stderr.strip()[:200])
    return res.returncode, res.stdout


FILE_DISK_DIR = "/var/lib/ceph/disks"     # ceph may reach it; rackforge's is 0700


@dataclass(frozen=True)
class StoragePolicy:
    min_disk_gib: int = DEFAULT_MIN_GIB
    wipe: str = "never"
    file_disks: int = 0         # a test bed's: data disks as files (storage.file_disks)
    file_disk_gib: int = 8
    test_devices: tuple = ()    # a test bed's loop devices (storage.test_devices)

    def __post_init__(self):
        if self.wipe not in WIPE_POLICIES:
            raise StoragePolicyError(key="wipe", value=self.wipe,
                                     why="use never (the default) or force")
        if isinstance(self.min_disk_gib, bool) or not isinstance(self.min_disk_gib, int) \
                or self.min_disk_gib < 1:
            raise StoragePolicyError(key="min_disk_gib", value=self.min_disk_gib,
                                     why="use a whole number of GiB, at least 1")

    @classmethod
    def from_profile(cls, profile):
        storage = getattr(profile, "storage", None) or {}
        files = storage.get("file_disks") or {}
        return cls(min_disk_gib=storage.get("min_disk_gib", DEFAULT_MIN_GIB),
                   wipe=storage.get("wipe", "never"), file_disks=int(files.get("count", 0)),
                   file_disk_gib=int(files.get("size_gib", 8)),
                   test_devices=tuple(storage.get("test_devices") or ()))


@dataclass
class DataDisk:
    """A disk chosen for Ceph, with every id that finds it again."""
    name: str
    path: str
    size: int
    stable_id: str              # wwn:..., serial:... or by-path:..., the first known
    wwn: str = None
    serial: str = None
    by_path: str = None
    model: str = None
    rotational: bool = False
    wipe: bool = False          # carries signatures; picked only under wipe: force
    signatures: list = field(default_factory=list)
    kind: str = "disk"          # or "file": a test bed's disk in the node's data directory


@dataclass
class Skipped:
    name: str
    path: str
    reason: str


@dataclass
class Selection:
    disks: list
    skipped: list
    policy: dict
    decided: float = 0.0

    def to_dict(self):
        return dataclasses.asdict(self)


# -- probing ---------------------------------------------------------------------------
def parse_blkid(text):
    """Signatures in ``blkid -p -o export`` output: ``["ext4"]``, ``["gpt"]``, ..."""
    found = []
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep and key in BLKID_KEYS and value:
            found.append(value.replace("\\ ", " "))
    return found


def parse_wipefs(text):
    """Signatures in ``wipefs --no-act -J`` output (empty output: none)."""
    if not (text or "").strip():
        return []
    data = json.loads(text)
    return [s.get("type") or "unknown" for s in data.get("signatures", [])]


def probe_signatures(device, run=run_probe):
    """Every signature on ``device`` (sorted, unique); raises :class:`ProbeFailed`."""
    rc, out = run(["wipefs", "--no-act", "-J", device])
    if rc != 0:
        raise ProbeFailed(device=device, detail="wipefs exited %d%s" % (
            rc, " (not installed)" if rc == 127 else ""))
    try:
        found = parse_wipefs(out)
    except (ValueError, AttributeError) as e:
        raise ProbeFailed(device=device, detail="unreadable wipefs output (%s)" % e) from e
    rc, out = run(["blkid", "-p", "-o", "export", device])
    if rc == 0:
        found += parse_blkid(out)
    elif rc != 2:           # 2: nothing found
        raise ProbeFailed(device=device, detail="blkid exited %d%s" % (
            rc, " (not installed)" if rc == 127 else ""))
    return sorted(set(found))


# -- choosing -----------------------------------------------------------------------------
def stable_id(disk):
    if disk.wwn:
        return "wwn:" + disk.wwn
    if disk.serial:
        return "serial:" + disk.serial
    if disk.by_path:
        return "by-path:" + disk.by_path
    if getattr(disk, "kind", "disk") == "file":
        return "file:" + disk.path
    return "path:" + disk.path


def _static_reason(disk, policy):
    """Why ``disk`` is out before probing it, or None."""
    if disk.type != "disk":
        return "not a disk (%s)" % disk.type
    if disk.system:
        return "holds the running system"
    if disk.removable:
        return "removable"
    if disk.read_only:
        return "read-only"
    if disk.size < policy.min_disk_gib * GIB:
        return "smaller than storage.min_disk_gib (%.1f GiB < %d GiB)" % (
            disk.size / GIB, policy.min_disk_gib)
    return None


def file_disks(policy, folder=FILE_DISK_DIR):
    """The profile's file disks (``storage.file_disks``), made sparse where missing: for
    nodes with no spare block device (a test bed's nspawn nodes), never on a real rack
    unless its profile asks.  They go through the same choice and OSD code as disks."""
    out = []
    for i in range(policy.file_disks):
        path = os.path.join(folder, "disk%d.img" % i)
        if not os.path.exists(path):
            make_dirs(folder, 0o700)
            with open(path + ".new", "wb") as f:
                f.truncate(policy.file_disk_gib * GIB)
            os.replace(path + ".new", path)
        out.append(SimpleNamespace(name="file%d" % i, path=path, type="disk", system=False,
                                   removable=False, read_only=False,
                                   size=os.path.getsize(path), wwn=None, serial=None,
                                   by_path=None, model="file", rotational=False,
                                   kind="file"))
    return out


def test_devices(policy):
    """The profile's loop devices (``storage.test_devices``: a test bed hands a node loop
    devices of its own, which inventory leaves out as image files): block devices from
    here on, ``ceph-volume raw`` and all."""
    out = []
    for path in policy.test_devices:
        try:
            with open(path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
        except OSError as e:
            LOG.warning("storage: test device %s cannot be read: %s", path, e)
            continue
        out.append(SimpleNamespace(name=os.path.basename(path), path=path, type="disk",
                                   system=False, removable=False, read_only=False, size=size,
                                   wwn=None, serial=None, by_path=None, model="loop",
                                   rotational=False, kind="test"))
    return out


def select(inventory, policy=None, run=run_probe, clock=time.time, folder=FILE_DISK_DIR):
    """The data disks of ``inventory`` under ``policy``: a :class:`Selection`."""
    policy = policy or StoragePolicy()
    chosen, skipped = [], []
    disks = (sorted(inventory.disks, key=lambda d: d.name) + file_disks(policy, folder)
             + test_devices(policy))
    for disk in disks:
        reason = None if getattr(disk, "kind", "disk") in ("file", "test") else \
            _static_reason(disk, policy)
        signatures = []
        if reason is None:
            try:
                signatures = probe_signatures(disk.path, run)
            except ProbeFailed as e:
                reason = str(e)
        if reason is None and signatures and policy.wipe != "force":
            reason = "carries %s (storage.wipe is never; set wipe: force to reuse it)" % (
                ", ".join(signatures))
        if reason is not None:
            LOG.info("storage: %s not used: %s", disk.path, reason)
            skipped.append(Skipped(disk.name, disk.path, reason))
            continue
        chosen.append(DataDisk(
            name=disk.name, path=disk.path, size=disk.size, stable_id=stable_id(disk),
            wwn=disk.wwn, serial=disk.serial, by_path=disk.by_path, model=disk.model,
            rotational=disk.rotational, wipe=bool(signatures), signatures=signatures,
            kind="file" if getattr(disk, "kind", "disk") == "file" else "disk"))
    return Selection(disks=chosen, skipped=skipped, policy=dataclasses.asdict(policy),
                     decided=clock())


def record(registry, node_id, selection):
    """Keep the choice in the node's record (``boot["storage"]``) for the OSD step."""
    data = selection.to_dict()
    return registry.update_node(node_id, lambda n: n.boot.update(storage=data))
