"""Write the appliance onto the target disk, from the live root the installer runs on.

The installer boots the appliance's own live root (the squashfs on the ISO or USB
stick, or the one the PXE boot fetched into memory), so that root is the source:
nothing is downloaded a second time.  The disk gets the image pipeline's layout
(``images/disk.py``)::

    1 MiB     p1  BIOS boot (EF02), 1 MiB: GRUB's core image
    2 MiB     p2  EFI system partition (EF00), FAT32, label RF-ESP
    ...       p3  root (8304), ext4, label rackforge-root, to the end of the disk

then a copy of the live root, the files that make it this node's (fstab, GRUB's
menu, hostname, root's SSH key, the bootstrap file for first boot), GRUB for
BIOS and UEFI from the appliance's own packages (the removable-media path
``EFI/BOOT/BOOTX64.EFI`` always; an NVRAM entry first in the boot order when
booted under UEFI, and a failure there only a warning), and a verification:
the root is unmounted, mounted again read-only, and every file is compared by
SHA-256 with the live root it came from.

Guardrails: :func:`check_exclusive` refuses a disk with anything mounted, used
as swap or held by another device before a byte is written.  From the first
write on, any error wipes the new partition table (:func:`scrub`), so a
half-written disk never boots; the error is one line, the detail in the log.
"""

import hashlib
import logging
import os
import shutil
import stat
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from rackforge import bundle, errors
from rackforge.fileutil import atomic_write

LOG = logging.getLogger(__name__)

MIB = 1024 * 1024
ESP_MIB = 128
ROOT_LABEL = "rackforge-root"
ESP_LABEL = "RF-ESP"
NVRAM_LABEL = "rackforge"
TARGET = Path("/run/rackforge/target")
#: written on the installed system: left out of the comparison with the live root
NODE_FILES = ("etc/fstab", "etc/hostname", "etc/rackforge/bootstrap.yaml",
              "root/.ssh", "boot/grub", "boot/efi", "var/lib/rackforge/bundle")
#: the seed's PXE bundle for the rack, made from the installation medium's live files
BUNDLE_DIR = "var/lib/rackforge/bundle"
MEDIUM_FILES = {"vmlinuz": bundle.KERNEL, "initrd.img": bundle.INITRD,
                "filesystem.squashfs": bundle.SQUASHFS, bundle.TEMPLATE: bundle.TEMPLATE}


class InstallError(errors.RackforgeError):
    message = "install to {disk}: {step}: {reason}"


class DiskBusy(errors.ConfigError):
    message = ("{disk} is in use ({what}); nothing was written: choose another disk, or "
               "stop what uses it and run the installer again")


class VerifyFailed(errors.RackforgeError):
    message = ("{disk}: {count} file(s) differ from the live root after writing (first: "
               "{first}); the disk was wiped: check the disk (smartctl -a) or use another")


@dataclass
class Target:
    """What the writer is told: the disk and the node's own files."""
    disk: str                               # /dev/... (resolved from the plan's stable id)
    hostname: str
    bootstrap: str                          # the bootstrap file's text (YAML)
    ssh_keys: list = field(default_factory=list)
    console: str = "console=tty0 console=ttyS0,115200n8"
    esp_mib: int = ESP_MIB
    bundle_from: str = None                 # the medium's live/ (the seed: PXE for the rack)


def _run(argv, run=subprocess.run, timeout=600):
    res = run(argv, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError("%s failed (exit %d): %s" % (
            argv[0], res.returncode, (res.stderr or res.stdout).strip()[-300:]))
    return res.stdout


# -- before anything is written -----------------------------------------------------------
def _block_name(disk):
    return os.path.basename(os.path.realpath(disk))


def partitions(disk, sys_root="/sys"):
    """{number: /dev/NAME} of ``disk``'s partitions, as the kernel knows them now."""
    name = _block_name(disk)
    out = {}
    base = Path(sys_root) / "block" / name
    for entry in base.iterdir() if base.is_dir() else ():
        number = entry / "partition"
        if number.is_file():
            out[int(number.read_text())] = "/dev/" + entry.name
    return out


def check_exclusive(disk, sys_root="/sys", proc_root="/proc"):
    """Refuse ``disk`` if it or a partition is mounted, swap, or held (LVM, MD, dm)."""
    name = _block_name(disk)
    devices = {"/dev/" + name} | set(partitions(disk, sys_root).values())
    mounts = Path(proc_root, "self", "mountinfo").read_text().splitlines()
    for line in mounts:
        source = line.split(" - ", 1)[1].split()[1] if " - " in line else ""
        if os.path.realpath(source) in devices:
            raise DiskBusy(disk=disk, what="%s is mounted" % source)
    swaps = Path(proc_root, "swaps").read_text().splitlines()[1:]
    for line in swaps:
        if line.split() and os.path.realpath(line.split()[0]) in devices:
            raise DiskBusy(disk=disk, what="%s is swap" % line.split()[0])
    base = Path(sys_root, "block", name)
    for holders in [base / "holders"] + [base / os.path.basename(d) / "holders"
                                         for d in devices if os.path.basename(d) != name]:
        if holders.is_dir() and any(holders.iterdir()):
            raise DiskBusy(disk=disk, what="%s is held by %s" % (
                holders.parent.name, ", ".join(sorted(p.name for p in holders.iterdir()))))


# -- the steps ----------------------------------------------------------------------------
STEPS = ("partition", "file systems", "copy", "configure", "pxe bundle", "bootloader", "verify")


class Writer:
    """The steps, in order; ``progress(step, fraction, line)`` hears about each."""

    def __init__(self, target, source, progress=None, run=subprocess.run, sys_root="/sys",
                 efi=None, mount_root=TARGET, proc_root="/proc"):
        self.t = target
        self.source = Path(source)
        self.progress = progress or (lambda step, fraction, line: None)
        self.run = run
        self.sys_root, self.proc_root = sys_root, proc_root
        self.efi = os.path.isdir("/sys/firmware/efi") if efi is None else efi
        self.root = Path(mount_root)
        self.parts = {}
        self.root_uuid = None
        self.warnings = []

    def write(self):
        """Every step; on an error after the first write the disk is scrubbed."""
        check_exclusive(self.t.disk, self.sys_root, self.proc_root)
        step = STEPS[0]
        try:
            for step in STEPS:
                self.progress(step, 0.0, "%s ..." % step)
                getattr(self, "_" + step.replace(" ", "_"))()
                self.progress(step, 1.0, "%s done" % step)
        except errors.RackforgeError as exc:
            LOG.error("install failed at %s: %s", step, exc)
            self._abort()
            if isinstance(exc, VerifyFailed):
                raise
            raise InstallError(disk=self.t.disk, step=step, reason=str(exc)) from exc
        except Exception as exc:        # noqa: BLE001 - any failure must scrub the disk
            LOG.exception("install failed at %s", step)
            self._abort()
            raise InstallError(disk=self.t.disk, step=step,
                               reason="%s (the detail is in the log)" % str(exc)[:200]) from exc
        return self.warnings

    def _abort(self):
        self._unmount()
        try:
            scrub(self.t.disk, self.run)
        except Exception:       # noqa: BLE001 - the first error is the one to report
            LOG.exception("could not wipe %s after the failure", self.t.disk)

    # p1 BIOS boot, p2 ESP, p3 root to the end
    def _partition(self):
        disk = self.t.disk
        _run(["wipefs", "--all", "--force", disk], self.run)
        _run(["sgdisk", "--zap-all", disk], self.run)
        _run(["sgdisk", "--clear",
              "--new=1:1M:+1M", "--typecode=1:EF02", "--change-name=1:bios-boot",
              "--new=2:0:+%dM" % self.t.esp_mib, "--typecode=2:EF00",
              "--change-name=2:efi-system",
              "--new=3:0:0", "--typecode=3:8304", "--change-name=3:rackforge-root", disk],
             self.run)
        _run(["partprobe", disk], self.run)
        _run(["udevadm", "settle", "--timeout=30"], self.run)
        self.parts = partitions(disk, self.sys_root)
        if not {1, 2, 3} <= set(self.parts):
            raise RuntimeError("the kernel shows partitions %s of %s after partitioning, "
                               "not 1-3" % (sorted(self.parts), disk))

    def _file_systems(self):
        _run(["mkfs.vfat", "-F", "32", "-n", ESP_LABEL, self.parts[2]], self.run)
        _run(["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, self.parts[3]], self.run)
        self.root_uuid = _run(["blkid", "-s", "UUID", "-o", "value", self.parts[3]],
                              self.run).strip()
        self.root.mkdir(parents=True, exist_ok=True)
        _run(["mount", self.parts[3], str(self.root)], self.run)
        (self.root / "boot" / "efi").mkdir(parents=True, exist_ok=True)
        _run(["mount", self.parts[2], str(self.root / "boot" / "efi")], self.run)

    def _copy(self):
        total = tree_bytes(self.source)
        start = _used(self.root)
        done = threading.Event()

        def watch():
            while not done.wait(2):
                self.progress("copy", min(0.99, (_used(self.root) - start) / max(total, 1)),
                              "")
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            _run(["cp", "-a", "--one-file-system", str(self.source) + "/.", str(self.root)],
                 self.run, timeout=6 * 3600)
        finally:
            done.set()
            watcher.join()

    def _configure(self):
        r = self.root
        atomic_write(r / "etc" / "fstab",
                     "# written by the rackforge installer\n"
                     "UUID=%s / ext4 errors=remount-ro 0 1\n"
                     "LABEL=%s /boot/efi vfat umask=0077,nofail,x-systemd.device-timeout=10s"
                     " 0 2\n" % (self.root_uuid, ESP_LABEL))
        atomic_write(r / "etc" / "hostname", self.t.hostname + "\n")
        (r / "etc" / "rackforge").mkdir(parents=True, exist_ok=True)
        atomic_write(r / "etc" / "rackforge" / "bootstrap.yaml", self.t.bootstrap, mode=0o600)
        if self.t.ssh_keys:
            ssh = r / "root" / ".ssh"
            ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
            keys = "".join(k.strip() + "\n" for k in self.t.ssh_keys)
            atomic_write(ssh / "authorized_keys", keys, mode=0o600)
        (r / "boot" / "grub").mkdir(parents=True, exist_ok=True)
        menu = grub_cfg(r, self.root_uuid, self.t.console)
        atomic_write(r / "boot" / "grub" / "grub.cfg", menu)

    def _pxe_bundle(self):
        """The seed serves the rack the appliance it was installed from: the medium's
        kernel, initrd, root squashfs and iPXE template, under BUNDLE_DIR."""
        if not self.t.bundle_from:
            return
        src, dst = Path(self.t.bundle_from), self.root / BUNDLE_DIR
        missing = [name for name in MEDIUM_FILES if not (src / name).is_file()]
        if missing:
            raise RuntimeError("the installation medium has no live/%s for the rack's PXE "
                               "bundle" % missing[0])
        dst.mkdir(parents=True, exist_ok=True)
        for name, target in MEDIUM_FILES.items():
            tmp = dst / (".%s.part" % target)
            shutil.copyfile(src / name, tmp)
            if tmp.stat().st_size != (src / name).stat().st_size:
                raise RuntimeError("live/%s was copied short" % name)
            os.replace(tmp, dst / target)

    def _bootloader(self):
        r = str(self.root)
        _run(["grub-install", "--target=i386-pc", "--boot-directory=%s/boot" % r,
              "--modules=part_gpt ext2", self.t.disk], self.run)
        _run(["grub-install", "--target=x86_64-efi", "--efi-directory=%s/boot/efi" % r,
              "--boot-directory=%s/boot" % r, "--removable", "--no-nvram"], self.run)
        if not (self.root / "boot" / "efi" / "EFI" / "BOOT" / "BOOTX64.EFI").is_file():
            raise RuntimeError("grub-install left no EFI/BOOT/BOOTX64.EFI")
        if self.efi:
            try:
                nvram_entry(self.t.disk, 2, self.run)
            except Exception as exc:    # noqa: BLE001 - the removable path boots without it
                line = "no UEFI boot entry (%s); the disk still boots by the removable " \
                       "path EFI/BOOT/BOOTX64.EFI" % str(exc)[:160]
                LOG.warning("%s", line)
                self.warnings.append(line)

    def _verify(self):
        self._unmount()
        _run(["blockdev", "--flushbufs", self.parts[3]], self.run)
        _run(["mount", "-o", "ro", self.parts[3], str(self.root)], self.run)
        try:
            total = tree_bytes(self.source)
            seen = [0]

            def tick(n):        # both copies are read: the source's bytes and the disk's
                seen[0] += n
                self.progress("verify", min(0.99, seen[0] / max(2 * total, 1)), "")
            bad = compare_trees(self.source, self.root, skip=NODE_FILES, tick=tick)
        finally:
            self._unmount()
        if bad:
            raise VerifyFailed(disk=self.t.disk, count=len(bad), first=bad[0])

    def _unmount(self):
        for where in (self.root / "boot" / "efi", self.root):
            if os.path.ismount(where):
                self.run(["umount", str(where)], capture_output=True, text=True)


def scrub(disk, run=subprocess.run):
    """Wipe the signatures of ``disk``'s partitions, then its partition tables (both GPT
    copies and the MBR), so nothing half-written ever boots."""
    for dev in partitions(disk).values():
        run(["wipefs", "--all", "--force", dev], capture_output=True, text=True)
    _run(["sgdisk", "--zap-all", disk], run)
    _run(["wipefs", "--all", "--force", disk], run)
    run(["partprobe", disk], capture_output=True, text=True)


def nvram_entry(disk, part, run=subprocess.run):
    """One UEFI boot entry labelled rackforge, first in BootOrder (older ones removed)."""
    listing = _run(["efibootmgr"], run)
    for line in listing.splitlines():
        head, _, label = line.partition(" ")
        label = label.split("\t")[0].strip()      # efibootmgr 18 adds "\tdevice path"
        if head.startswith("Boot") and head.endswith("*") and label == NVRAM_LABEL:
            _run(["efibootmgr", "--quiet", "--bootnum", head[4:8], "--delete-bootnum"], run)
    _run(["efibootmgr", "--quiet", "--create", "--disk", disk, "--part", str(part),
          "--label", NVRAM_LABEL, "--loader", "\\EFI\\BOOT\\BOOTX64.EFI"], run)


def grub_cfg(root, root_uuid, console):
    """GRUB's menu on the installed disk: the newest kernel of the copied root."""
    boot = Path(root) / "boot"
    kernels = sorted((p.name for p in boot.glob("vmlinuz-*")), key=_version_key)
    if not kernels:
        raise RuntimeError("the live root has no /boot/vmlinuz-*")
    kernel = kernels[-1]
    initrd = "initrd.img-" + kernel[len("vmlinuz-"):]
    if not (boot / initrd).is_file():
        raise RuntimeError("the live root has no /boot/%s" % initrd)
    return ("# written by the rackforge installer\n"
            "serial --unit=0 --speed=115200\n"
            "terminal_input console serial\n"
            "terminal_output console serial\n"
            "set timeout=3\n"
            "set default=0\n\n"
            "menuentry \"rackforge\" {\n"
            "    search --no-floppy --fs-uuid --set=root %s\n"
            "    linux /boot/%s root=UUID=%s ro %s\n"
            "    initrd /boot/%s\n"
            "}\n" % (root_uuid, kernel, root_uuid, console, initrd))


def _version_key(name):
    """vmlinuz-6.12.41-amd64 after vmlinuz-6.12.9-amd64 (numbers compared as numbers)."""
    import re
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", name)]


def _used(path):
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def tree_bytes(root):
    """The bytes of the regular files under ``root`` (one file system)."""
    total = 0
    dev = os.lstat(root).st_dev
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if os.lstat(os.path.join(dirpath, d)).st_dev == dev]
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def _digest(path, tick):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(MIB)
            if not chunk:
                return h.hexdigest()
            h.update(chunk)
            tick(len(chunk))


def compare_trees(source, copy, skip=(), tick=lambda n: None):
    """Paths (relative) whose type, mode, owner, link target or SHA-256 differ between
    ``source`` and ``copy``, or that are missing from ``copy``; ``skip``: relative
    paths (and everything under them) written for the node."""
    source, copy = Path(source), Path(copy)
    bad = []
    dev = os.lstat(source).st_dev
    for dirpath, dirnames, filenames in os.walk(source):
        rel_dir = os.path.relpath(dirpath, source)
        keep = []
        for d in dirnames:
            rel = os.path.normpath(os.path.join(rel_dir, d))
            if not _skipped(rel, skip) and os.lstat(os.path.join(dirpath, d)).st_dev == dev:
                keep.append(d)
        dirnames[:] = keep
        for name in keep + filenames:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if _skipped(rel, skip):
                continue
            if _differs(source / rel, copy / rel, tick):
                bad.append(rel)
    return bad


def _skipped(rel, skip):
    return any(rel == s or rel.startswith(s + "/") for s in skip)


def _differs(a, b, tick):
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except FileNotFoundError:
        return True
    if (stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode)
            or stat.S_IMODE(sa.st_mode) != stat.S_IMODE(sb.st_mode)
            or (sa.st_uid, sa.st_gid) != (sb.st_uid, sb.st_gid)):
        return True
    if stat.S_ISLNK(sa.st_mode):
        return os.readlink(a) != os.readlink(b)
    if stat.S_ISREG(sa.st_mode):
        return sa.st_size != sb.st_size or _digest(a, tick) != _digest(b, tick)
    if stat.S_ISCHR(sa.st_mode) or stat.S_ISBLK(sa.st_mode):
        return sa.st_rdev != sb.st_rdev
    return False


def live_root(proc_root="/proc"):
    """Where the live root's read-only squashfs is mounted (the installer's source)."""
    for line in Path(proc_root, "self", "mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype = right.split()[0] if right else ""
        mountpoint = left.split()[4] if len(left.split()) > 4 else ""
        if fstype == "squashfs" and mountpoint.startswith("/run/live/rootfs/"):
            return mountpoint
    return None
