"""Ceph OSDs: one per data disk first boot chose, made, recorded, brought back at every boot.

A data disk is a real block device (``ceph-volume raw``: no LVM, no
device-mapper) or, where the profile asks for it (``storage.file_disks``, a test
bed's nspawn nodes), a file in the node's data directory.  Both share one path
and one on-disk layout, ``/var/lib/ceph/osd/ceph-N`` on the root file system
(``--no-tmpfs``) with ``block`` pointing at the disk; only the command that
writes BlueStore differs (``ceph-volume raw prepare`` on a device; ``ceph osd
new`` and ``ceph-osd --mkfs`` on a file, which ceph-volume refuses).

Making one (step ``ceph-osd``), per disk without a record:

1. the disk's BlueStore label: one of this cluster's that an OSD record still
   names is adopted (an agent stopped between prepare and record);
2. otherwise any signature (``wipefs``/``blkid``, as first boot reads them, and
   a BlueStore label of another cluster or a destroyed OSD) refuses the disk
   unless first boot picked it under ``storage.wipe: force``; a disk this
   cluster's OSD left behind is wiped (raw prepare on a labelled disk exits 0
   doing nothing);
3. prepared, Ceph picking the id (or reusing a destroyed one's);
4. recorded on the node (``/var/lib/rackforge/ceph/osds/N.json``, which the boot
   unit reads without etcd) and in etcd (``keys.CEPH_OSDS``: id, uuid, node, disk
   ids), then ``ceph-osd@N`` enabled and started.

At every boot ``rackforge-ceph-osd@N.service`` (shipped with the image, required by
``ceph-osd@N`` through a drop-in) runs :func:`activate`: it finds the disk by its
stable id, checks that the label is this OSD's (a swapped disk is refused with
one line), gives the device to ``ceph`` and re-links ``block``; raw mode has no
boot-time activation of its own.

Replacing or removing a disk is asked for in etcd (``keys.CEPH_REQUESTS``) by
``rackforge node disk`` (:mod:`.disks`), after Ceph said it is safe; this
node's agent does the node's half in :meth:`Osds.serve`.
"""

import json
import logging
import os
import shutil
import subprocess
import time
import uuid as uuid_mod
from pathlib import Path

from rackforge import errors, keys
from rackforge.fileutil import atomic_write, make_dirs
from rackforge.firstboot import storage
from rackforge.nodeagent import health, keyring
from rackforge.nodeagent.ceph import (RUN_DIR, Ceph, CephFailed, asok, daemon_units,
                                      osd_records)
from rackforge.nodeagent.reconcile import Action

LOG = logging.getLogger(__name__)
OSD_DIR = "/var/lib/ceph/osd/ceph-%d"
RECORDS = "/var/lib/rackforge/ceph/osds"
BOOTSTRAP_KEYRING = "/var/lib/ceph/bootstrap-osd/ceph.keyring"
WIPE_BYTES = 10 << 20               # what ceph-volume zap clears at the start of a disk


class DiskRefused(errors.RackforgeError):
    message = ("disk {disk} carries {what}; it is not wiped: set storage.wipe: force in the "
               "profile (or wipe it by hand) if its data may go")
    retryable = False


class DiskMissing(errors.RackforgeError):
    message = ("disk {disk} is not there ({tried}); a replaced disk needs "
               "'rackforge node disk replace'")
    retryable = True


class WrongDisk(errors.RackforgeError):
    message = ("osd.{osd}: {device} carries {found}, not this OSD ({uuid}); the disk was "
               "swapped: 'rackforge node disk replace NODE osd.{osd}' makes an OSD on it")
    retryable = False


def device_of(disk, exists=os.path.exists):
    """The path of data disk ``disk`` (a first-boot record) now: by WWN, by slot, else the
    name it had; a file disk is its path."""
    if disk.get("kind") == "file":
        return disk["path"]
    tried = []
    if disk.get("wwn"):
        tried.append("/dev/disk/by-id/wwn-" + disk["wwn"])
    if disk.get("by_path"):
        tried.append(disk["by_path"])
    tried.append(disk["path"])
    for path in tried:
        if exists(path):
            return path
    raise DiskMissing(disk=disk.get("stable_id"), tried=", ".join(tried))


def read_label(run, device):
    """The BlueStore label on ``device`` ({osd_uuid, ceph_fsid, whoami, ...}) or None."""
    res = run(["ceph-bluestore-tool", "show-label", "--dev", device], capture_output=True,
              text=True, timeout=60)
    if res.returncode != 0:
        return None
    try:
        data = json.loads(res.stdout)
    except ValueError:
        return None
    return next(iter(data.values()), None) if isinstance(data, dict) else None


def record_for(osd_id, osd_uuid, fsid, node_id, node_name, disk, device):
    return {"id": int(osd_id), "uuid": osd_uuid, "fsid": fsid, "node": node_id,
            "node_name": node_name, "disk": disk["stable_id"], "kind": disk.get("kind", "disk"),
            "serial": disk.get("serial"), "wwn": disk.get("wwn"), "by_path": disk.get("by_path"),
            "path": disk["path"], "device": device, "created": time.time()}


class Osds:
    """This node's OSDs: the step, the check, the boot-time activation, the requests."""

    def __init__(self, node_id, kv, run=subprocess.run, root="/"):
        self.node_id = node_id
        self.kv = kv
        self.run = run
        self.root = Path(root)
        self.said = set()

    def path(self, p):
        return self.root / str(p).lstrip("/")

    # -- records ------------------------------------------------------------------------------
    def local(self):
        """{id: record} kept on this node."""
        out = {}
        folder = self.path(RECORDS)
        for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                rec = json.loads(f.read_text())
                out[int(rec["id"])] = rec
            except (ValueError, KeyError, OSError):
                LOG.warning("ceph: unreadable OSD record %s left alone", f)
        return out

    def keep(self, rec):
        make_dirs(self.path(RECORDS), 0o700)
        atomic_write(self.path(RECORDS) / ("%d.json" % rec["id"]), json.dumps(rec, indent=1)
                     + "\n", mode=0o600)
        if self.kv is not None:
            self.kv.txn([], [(keys.CEPH_OSDS + str(rec["id"]), json.dumps(rec).encode())])

    def forget(self, osd_id):
        self.path(RECORDS).joinpath("%d.json" % osd_id).unlink(missing_ok=True)

    # -- disks --------------------------------------------------------------------------------
    def _cmd(self, argv, what, stdin=None, env=None, timeout=600):
        res = self.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout,
                       **({"env": env} if env else {}))
        if res.returncode != 0:
            last = (res.stderr or res.stdout or "").strip().splitlines()[-1:] or [""]
            raise CephFailed(what=what, detail="exit %d: %s" % (res.returncode, last[0][:200]))
        return res.stdout

    def wipe(self, device):
        """What ``ceph-volume zap`` does to a raw disk, for a disk and a file alike: every
        signature wipefs knows, and the first 10 MiB (the BlueStore label) zeroed."""
        self._cmd(["wipefs", "--all", device], "wipefs")
        fd = os.open(device, os.O_WRONLY)
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
            os.lseek(fd, 0, os.SEEK_SET)
            left = min(WIPE_BYTES, size)
            zeros = bytes(1 << 20)
            while left > 0:
                left -= os.write(fd, zeros[:min(len(zeros), left)])
            os.fsync(fd)
        finally:
            os.close(fd)

    def check_disk(self, disk, device, fsid, known_uuids):
        """What to do with ``device`` before an OSD is made on it: ``("adopt", label)``,
        ``("wipe", why)`` or ``("use", None)``; raises :class:`DiskRefused`."""
        label = read_label(self.run, device)
        if label and label.get("ceph_fsid") == fsid and label.get("osd_uuid") in known_uuids:
            return "adopt", label
        if label and label.get("ceph_fsid") == fsid:
            return "wipe", "a BlueStore label this cluster left (osd.%s)" % label.get("whoami")
        found = storage.probe_signatures(device, run=_probe_runner(self.run))
        if label:
            found = ["a BlueStore label of another Ceph cluster (%s)"
                     % label.get("ceph_fsid")] + found
        if not found:
            return "use", None
        if not disk.get("wipe"):
            raise DiskRefused(disk=disk.get("stable_id"), what=", ".join(found))
        return "wipe", ", ".join(found)

    def prepare(self, disk, device, fsid, osd_id=None):
        """BlueStore on ``device``; returns (id, uuid)."""
        if disk.get("kind") == "file":
            return self._prepare_file(device, fsid, osd_id)
        argv = ["ceph-volume", "raw", "prepare", "--bluestore", "--data", device, "--no-tmpfs"]
        if osd_id is not None:
            argv += ["--osd-id", str(osd_id)]
        env = dict(os.environ)
        if device.startswith("/dev/loop"):
            env["CEPH_VOLUME_ALLOW_LOOP_DEVICES"] = "1"     # a test bed's, said by its profile
        self._cmd(argv, "ceph-volume raw prepare", env=env)
        label = read_label(self.run, device)
        if not label or label.get("ceph_fsid") != fsid:
            raise CephFailed(what="ceph-volume raw prepare",
                             detail="%s has no label of this cluster after it" % device)
        return int(label["whoami"]), label["osd_uuid"]

    def _intent_path(self, device):
        return self.path(RECORDS) / ("making-%s.intent" % device.strip("/").replace("/", "_"))

    def _intent(self, device, osd_id):
        """The uuid and key of the OSD being made on ``device``, kept before ``osd new``
        (intent before the side effect): a retry after a failure or a power cut asks
        Ceph for the same OSD again instead of leaking a new id each time."""
        path = self._intent_path(device)
        try:
            intent = json.loads(path.read_text())
            if intent.get("osd_id") == osd_id:
                return path, intent
        except (OSError, ValueError):
            pass
        intent = {"uuid": str(uuid_mod.uuid4()), "secret": keyring.cephx_key().decode(),
                  "osd_id": osd_id}
        make_dirs(path.parent, 0o700)
        atomic_write(path, json.dumps(intent) + "\n", mode=0o600)
        return path, intent

    def _prepare_file(self, device, fsid, osd_id=None):
        _, intent = self._intent(device, osd_id)
        osd_uuid, secret = intent["uuid"], intent["secret"]
        ceph = Ceph(self.run, name="client.bootstrap-osd",
                    keyring=str(self.path(BOOTSTRAP_KEYRING)))
        args = ["osd", "new", osd_uuid] + ([str(osd_id)] if osd_id is not None else [])
        got = ceph(*args, "-i", "-", stdin=json.dumps({"cephx_secret": secret}))
        new_id = int(got if not isinstance(got, dict) else got.get("osdid"))
        osd_dir = self.path(OSD_DIR % new_id)
        if osd_dir.exists():
            shutil.rmtree(osd_dir)
        make_dirs(osd_dir, 0o750)
        (osd_dir / "block").symlink_to(device)
        atomic_write(osd_dir / "keyring", "[osd.%d]\n\tkey = %s\n" % (new_id, secret),
                     mode=0o600)
        give_file_disk(device)
        for p in (osd_dir, osd_dir / "keyring"):
            shutil.chown(p, "ceph", "ceph")
        self._cmd(["ceph-osd", "--cluster", "ceph", "-i", str(new_id), "--mkfs", "--osd-uuid",
                   osd_uuid, "--no-mon-config", "--setuser", "ceph", "--setgroup", "ceph"],
                  "ceph-osd --mkfs")
        return new_id, osd_uuid

    def make(self, disk, fsid, view, osd_id=None):
        """An OSD on ``disk`` (with ``osd_id``: reusing a destroyed one's); its record."""
        device = device_of(disk)
        known = {r.get("uuid") for r in osd_records(self.kv)}
        what, why = self.check_disk(disk, device, fsid, known)
        if what == "adopt" and osd_id is None:
            new_id, osd_uuid = int(why["whoami"]), why["osd_uuid"]
            LOG.info("ceph: %s already holds osd.%d of this cluster: adopted", device, new_id)
        else:
            if what == "wipe" or what == "adopt":
                LOG.warning("ceph: wiping %s (%s) for a new OSD", device,
                            why if what == "wipe" else "the OSD it held is replaced")
                self.wipe(device)
            new_id, osd_uuid = self.prepare(disk, device, fsid, osd_id)
        rec = record_for(new_id, osd_uuid, fsid, self.node_id, view.name, disk, device)
        self.keep(rec)
        self._intent_path(device).unlink(missing_ok=True)     # kept until the record is
        return rec

    # -- the step -------------------------------------------------------------------------------
    def step(self, ctx):
        view, actions, failures = ctx.view, [], []
        fsid = ctx.context["secrets"]["ceph-fsid"]
        actions += self.serve(ctx, fsid)
        by_disk = {r["disk"]: r for r in self.local().values()}
        busy = {r.get("disk") for r in self.requests().values()
                if r.get("state") not in ("done", "failed") or r.get("action") == "remove"}
        for disk in view.disks:
            rec = by_disk.get(disk.get("stable_id"))
            if disk.get("stable_id") in busy:
                continue                # 'node disk replace|remove' has it (serve, above)
            if rec is None:
                if ctx.dry_run:
                    actions.append(Action("step", "ceph-osd", "ceph-osd",
                                          "would make an OSD on " + disk.get("path", "?")))
                    continue
                try:
                    rec = self.make(disk, fsid, view)
                except errors.RackforgeError as exc:
                    failures.append(exc)
                    continue
                actions.append(Action("step", "osd.%d" % rec["id"], "ceph-osd",
                                      "made on %s" % rec["device"]))
            actions += self._units(ctx, rec["id"])
        if failures:
            raise failures[0]
        return actions

    def _units(self, ctx, osd_id):
        unit = "ceph-osd@%d.service" % osd_id
        return daemon_units(ctx.systemd, ctx, ("ceph.target", "ceph-osd.target", unit), unit)

    # -- requests from 'rackforge node disk' ---------------------------------------------------
    def requests(self):
        out = {}
        for entry in self.kv.get_prefix(keys.CEPH_REQUESTS) if self.kv is not None else []:
            try:
                req = json.loads(entry.value)
            except ValueError:
                continue
            if req.get("node") == self.node_id:
                out[entry.key] = req
        return out

    def _answer(self, key, req, state, **more):
        req = dict(req, state=state, answered=time.time(), **more)
        self.kv.txn([], [(key, json.dumps(req).encode())])

    def serve(self, ctx, fsid):
        """This node's half of a replace or a removal: the OSD stopped (``stopping`` ->
        ``stopped``), then, once Ceph destroyed it, made again with the same id on the new
        disk (``destroyed`` -> ``done`` or ``failed``, with the reason)."""
        actions = []
        for key, req in self.requests().items():
            state = req.get("state")
            if state not in ("stopping", "destroyed") or ctx.dry_run:
                continue
            osd_id = int(req["osd"])
            unit = "ceph-osd@%d.service" % osd_id
            if state == "stopping":
                for verb in ("stop", "disable"):
                    ctx.systemd.act(verb, unit)
                if req.get("action") == "remove":
                    self.forget(osd_id)
                self._answer(key, req, "stopped")
                actions.append(Action("stop", unit, "ceph-osd",
                                      "osd.%d: %s asked" % (osd_id, req.get("action"))))
                continue
            old = req["disk_record"]
            disk = dict(old, stable_id=old["disk"], wipe=bool(req.get("wipe")))
            if req.get("with"):
                disk.update(path=req["with"], wwn=None, by_path=None, serial=None)
            try:
                self.forget(osd_id)
                rec = self.make(disk, fsid, ctx.view, osd_id=osd_id)
            except errors.RackforgeError as exc:
                self._answer(key, req, "failed", error=str(exc))
                LOG.error("ceph: replacing osd.%d failed: %s", osd_id, exc)
                continue
            actions += self._units(ctx, rec["id"])
            self._answer(key, req, "done", device=rec["device"])
            actions.append(Action("step", "osd.%d" % osd_id, "ceph-osd",
                                  "made again on %s" % rec["device"]))
        return actions

    # -- the check ------------------------------------------------------------------------------
    def check(self, view, systemd):
        records = self.local()
        if not records:
            return health.Result(health.PENDING, "no OSD made yet")
        states, bad = {}, []
        for osd_id in sorted(records):
            try:
                states[osd_id] = asok(self.path(RUN_DIR) / ("ceph-osd.%d.asok" % osd_id),
                                      "status").get("state")
            except (OSError, ValueError):
                states[osd_id] = None
            if states[osd_id] != "active":
                bad.append("osd.%d is %s" % (osd_id, states[osd_id] or "not running"))
        detail = {"osds": {str(k): v or "down" for k, v in states.items()}}
        if not bad:
            return health.Result(health.OK, "", detail)
        if all(s is not None for s in states.values()):
            return health.Result(health.DEGRADED, "; ".join(bad), detail)
        return health.Result(health.FAILED, "; ".join(bad), detail)

    # -- at boot --------------------------------------------------------------------------------
    def activate(self, osd_id):
        """Bring osd ``osd_id``'s directory back before ``ceph-osd@N`` starts (no etcd, no
        monitor needed): the right disk, owned by ceph, linked."""
        rec = self.local().get(int(osd_id))
        if rec is None:
            raise DiskMissing(disk="osd.%s" % osd_id, tried="no record in %s" % RECORDS)
        device = device_of(rec)
        label = read_label(self.run, device)
        if not label or label.get("osd_uuid") != rec["uuid"]:
            raise WrongDisk(osd=osd_id, device=device, uuid=rec["uuid"],
                            found="OSD %s" % label.get("osd_uuid") if label else "no OSD")
        if rec.get("kind") == "file":
            osd_dir = self.path(OSD_DIR % int(osd_id))
            link = osd_dir / "block"
            if not link.is_symlink() or os.readlink(link) != device:
                link.unlink(missing_ok=True)
                link.symlink_to(device)
            give_file_disk(device)
            for p in [osd_dir] + list(osd_dir.iterdir()):
                if not p.is_symlink():
                    shutil.chown(p, "ceph", "ceph")
        else:
            self._cmd(["ceph-volume", "raw", "activate", "--device", device, "--osd-id",
                       str(osd_id), "--osd-uuid", rec["uuid"], "--no-systemd", "--no-tmpfs"],
                      "ceph-volume raw activate")
        return device


def give_file_disk(path):
    """A file disk belongs to ceph, and its folder lets ceph through (first boot made it
    root's, 0700)."""
    folder = os.path.dirname(path)
    shutil.chown(folder, group="ceph")
    os.chmod(folder, 0o750)
    shutil.chown(path, "ceph", "ceph")


def _probe_runner(run):
    def probe(argv):
        res = run(argv, capture_output=True, text=True, timeout=30)
        return res.returncode, res.stdout
    return probe
