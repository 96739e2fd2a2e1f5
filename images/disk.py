"""Assemble a bootable GPT disk from a root tree, without device-mapper.

Layout (512-byte sectors, 1 MiB aligned)::

    LBA 0        protective MBR with GRUB's boot code
    LBA 1-33     GPT
    1 MiB        p1  BIOS boot (EF02), 1 MiB: GRUB core.img
    2 MiB        p2  EFI system partition (EF00), FAT32, BOOTX64.EFI
    ...          p3  root (8304, Linux x86-64 root), ext4 built with mkfs.ext4 -d
    end          backup GPT

Each file system is made in its own file and copied into the disk at its
partition's offset, so no loop device or mount is ever needed.  The same
commands work on a real host.
"""

import os
import re
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from rackforge.images import bootloader

MIB = 1024 * 1024
SECTOR = 512
ALIGN = MIB
BIOS_BOOT_SIZE = MIB
GPT_BACKUP_SECTORS = 33
ROOT_LABEL = "rackforge-root"
ESP_LABEL = "RF-ESP"

TYPE_BIOS_BOOT = "EF02"
TYPE_ESP = "EF00"
TYPE_ROOT_X86_64 = "8304"


@dataclass(frozen=True)
class Partition:
    number: int
    name: str
    type_code: str
    start: int      # bytes
    size: int       # bytes

    @property
    def first_lba(self):
        return self.start // SECTOR

    @property
    def last_lba(self):
        return (self.start + self.size) // SECTOR - 1


@dataclass(frozen=True)
class DiskLayout:
    size: int
    bios_boot: Partition
    esp: Partition
    root: Partition

    @property
    def partitions(self):
        return (self.bios_boot, self.esp, self.root)


def _align_up(value, align=ALIGN):
    return (value + align - 1) // align * align


def plan_layout(root_fs_size, esp_mib):
    """Partition offsets for a root file system of ``root_fs_size`` bytes."""
    bios = Partition(1, "bios-boot", TYPE_BIOS_BOOT, ALIGN, BIOS_BOOT_SIZE)
    esp = Partition(2, "esp", TYPE_ESP, bios.start + bios.size, esp_mib * MIB)
    root_size = _align_up(root_fs_size)
    root = Partition(3, "root", TYPE_ROOT_X86_64, esp.start + esp.size, root_size)
    size = root.start + root.size + ALIGN  # room for the backup GPT, aligned
    return DiskLayout(size, bios, esp, root)


def tree_size(root):
    """Bytes of data and a count of inodes under ``root`` (not following links)."""
    total = 0
    inodes = 0
    seen = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            inodes += 1
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            # a file occupies whole 4 KiB blocks
            total += (st.st_size + 4095) // 4096 * 4096
    return total, inodes


def root_fs_size(root, free_mib):
    """A size that fits the tree, ext4's metadata and the requested free space."""
    data, inodes = tree_size(root)
    overhead = data // 10 + inodes * 256 + 64 * MIB  # journal, inode tables, bitmaps
    return _align_up(data + overhead + free_mib * MIB)


def _mke2fs_feature_args(run):
    """Features GRUB 2.06 cannot read are off by default only on some hosts."""
    out = run(["mke2fs", "-V"], capture_output=True, text=True)
    m = re.search(r"mke2fs (\d+)\.(\d+)", out.stderr + out.stdout)
    if m and (int(m.group(1)), int(m.group(2))) >= (1, 47):
        return ["-O", "^metadata_csum_seed,^orphan_file"]
    return []


def make_root_fs(root, image, size, fs_uuid, run=subprocess.run):
    with open(image, "wb") as f:
        f.truncate(size)
    run(["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-U", fs_uuid, "-E", "root_owner=0:0",
         *_mke2fs_feature_args(run), "-d", str(root), str(image)], check=True,
        capture_output=True, text=True)


def make_esp(image, size, efi_loader, run=subprocess.run):
    with open(image, "wb") as f:
        f.truncate(size)
    run(["mkfs.vfat", "-F", "32", "-n", ESP_LABEL, str(image)], check=True, capture_output=True)
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    run(["mmd", "-i", str(image), "::/EFI", "::/EFI/BOOT"], check=True, env=env,
        capture_output=True)
    run(["mcopy", "-i", str(image), str(efi_loader), "::/EFI/BOOT/BOOTX64.EFI"], check=True,
        env=env, capture_output=True)


def partition(disk, layout, disk_guid=None, run=subprocess.run):
    with open(disk, "wb") as f:
        f.truncate(layout.size)
    args = ["sgdisk", "--clear"]
    if disk_guid:
        args += ["--disk-guid", disk_guid]
    for p in layout.partitions:
        args += ["--new", "%d:%d:%d" % (p.number, p.first_lba, p.last_lba),
                 "--typecode", "%d:%s" % (p.number, p.type_code),
                 "--change-name", "%d:%s" % (p.number, p.name)]
    run(args + [str(disk)], check=True, capture_output=True, text=True)


def copy_into(disk, image, offset, bufsize=8 * MIB):
    """Copy ``image`` into ``disk`` at byte ``offset``, keeping holes as holes."""
    with open(image, "rb") as src, open(disk, "r+b") as dst:
        dst.seek(offset)
        zero = bytes(bufsize)
        while True:
            chunk = src.read(bufsize)
            if not chunk:
                break
            if chunk == zero[:len(chunk)]:
                dst.seek(len(chunk), os.SEEK_CUR)
            else:
                dst.write(chunk)


def write_fstab(root, fs_uuid):
    fstab = Path(root) / "etc" / "fstab"
    fstab.write_text(
        "# written by rackforge for the disk image\n"
        "UUID=%s / ext4 errors=remount-ro 0 1\n"
        "LABEL=%s /boot/efi vfat umask=0077,nofail,x-systemd.device-timeout=10s 0 2\n"
        % (fs_uuid, ESP_LABEL))
    (Path(root) / "boot" / "efi").mkdir(parents=True, exist_ok=True)


def build_disk(root, out_raw, workdir, esp_mib, free_mib, grub_cfg, run=subprocess.run):
    """Make ``out_raw`` from the tree at ``root``; returns the root file system UUID.

    ``grub_cfg`` is a callable taking the root UUID and returning the text of
    /boot/grub/grub.cfg (the menu lives in the root file system so the disk
    can be re-configured without rebuilding the loaders).
    """
    workdir = Path(workdir)
    fs_uuid = str(uuid.uuid4())
    write_fstab(root, fs_uuid)
    grub_dir = Path(root) / "boot" / "grub"
    grub_dir.mkdir(parents=True, exist_ok=True)
    (grub_dir / "grub.cfg").write_text(grub_cfg(fs_uuid))

    size = root_fs_size(root, free_mib)
    layout = plan_layout(size, esp_mib)
    root_img = workdir / "root.ext4"
    esp_img = workdir / "esp.vfat"
    make_root_fs(root, root_img, layout.root.size, fs_uuid, run)
    efi = bootloader.make_efi_loader(workdir, fs_uuid, run)
    make_esp(esp_img, layout.esp.size, efi, run)
    core = bootloader.make_bios_core(workdir, fs_uuid, run)

    partition(out_raw, layout, run=run)
    copy_into(out_raw, esp_img, layout.esp.start)
    copy_into(out_raw, root_img, layout.root.start)
    bootloader.install_bios(out_raw, core, layout.bios_boot.first_lba,
                            layout.bios_boot.size // SECTOR)
    root_img.unlink()
    esp_img.unlink()
    return fs_uuid
