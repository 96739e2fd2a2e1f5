"""GRUB for the appliance's disk: BIOS and UEFI from one set of host files.

Nothing here needs device-mapper, a loop device or a mount.  The UEFI loader
is a standalone ``BOOTX64.EFI`` placed on the EFI system partition at the
removable-media path, so no NVRAM entry is needed.  The BIOS loader is GRUB's
``boot.img`` in the MBR plus ``core.img`` written into the GPT "BIOS boot"
partition; both are patched with the sector numbers that ``grub-bios-setup``
would write, which is all that tool does for an embedded core image.  Both
loaders carry a small early configuration that finds the root file system by
UUID and reads ``/boot/grub/grub.cfg`` from it.
"""

import struct
import subprocess
from pathlib import Path

SECTOR = 512
GRUB_LIB = Path("/usr/lib/grub")

# Offsets in GRUB's i386-pc boot.img and diskboot.img (include/grub/i386/pc/boot.h).
BOOT_KERNEL_SECTOR = 0x5C       # u64: LBA of the first sector of core.img
BOOT_DRIVE_CHECK = 0x66         # u16: jump over the drive check; NOP it for hard disks
MBR_CODE_SIZE = 440             # boot code ends where the disk signature begins
BLOCKLIST = SECTOR - 12         # diskboot's blocklist: u64 start, u16 len, u16 segment

COMMON_MODULES = ("part_gpt", "part_msdos", "ext2", "fat", "normal", "linux", "search",
                  "search_fs_uuid", "configfile", "echo", "test", "gzio", "serial",
                  "terminal", "all_video", "sleep", "ls", "cat", "reboot", "halt")
BIOS_MODULES = ("biosdisk",)
EFI_MODULES = ("efi_gop", "efi_uga")


def early_config(root_uuid):
    """The configuration baked into both loaders: find the root, hand over."""
    return ("search --no-floppy --fs-uuid --set=root %s\n"
            "set prefix=($root)/boot/grub\n"
            "configfile ($root)/boot/grub/grub.cfg\n" % root_uuid)


def _mkimage(fmt, out, modules, config_path, run):
    run(["grub-mkimage", "-O", fmt, "-o", str(out), "-p", "/boot/grub",
         "-c", str(config_path), *modules], check=True, capture_output=True, text=True)


def make_efi_loader(workdir, root_uuid, run=subprocess.run):
    """Build BOOTX64.EFI; returns its path."""
    workdir = Path(workdir)
    cfg = workdir / "grub-early.cfg"
    cfg.write_text(early_config(root_uuid))
    out = workdir / "BOOTX64.EFI"
    _mkimage("x86_64-efi", out, COMMON_MODULES + EFI_MODULES, cfg, run)
    return out


def make_bios_core(workdir, root_uuid, run=subprocess.run):
    """Build core.img for the BIOS boot partition; returns its path."""
    workdir = Path(workdir)
    cfg = workdir / "grub-early.cfg"
    cfg.write_text(early_config(root_uuid))
    out = workdir / "core.img"
    _mkimage("i386-pc", out, COMMON_MODULES + BIOS_MODULES, cfg, run)
    return out


def patch_boot_sector(boot_img, mbr, core_lba):
    """Return a new MBR: GRUB's boot code pointing at ``core_lba``, the table kept.

    ``mbr`` is the disk's current first sector (with the protective GPT entry);
    only the boot-code area is replaced.
    """
    if len(boot_img) != SECTOR or len(mbr) != SECTOR:
        raise ValueError("boot.img and the MBR must be one sector each")
    code = bytearray(boot_img[:MBR_CODE_SIZE])
    struct.pack_into("<Q", code, BOOT_KERNEL_SECTOR, core_lba)
    struct.pack_into("<H", code, BOOT_DRIVE_CHECK, 0x9090)
    return bytes(code) + mbr[MBR_CODE_SIZE:]


def patch_core(core_img, core_lba):
    """Point diskboot's blocklist at the sectors that follow it on disk.

    grub-mkimage leaves the length (sectors after the first) and the load
    segment filled in; only the start sector depends on where core.img lands.
    """
    core = bytearray(core_img)
    start, length, segment = struct.unpack_from("<QHH", core, BLOCKLIST)
    sectors_after_first = (len(core) + SECTOR - 1) // SECTOR - 1
    if length != sectors_after_first:
        raise ValueError("unexpected core.img blocklist: %d sectors, image has %d"
                         % (length, sectors_after_first))
    struct.pack_into("<QHH", core, BLOCKLIST, core_lba + 1, length, segment)
    return bytes(core)


def install_bios(disk_path, core_path, core_lba, max_sectors):
    """Write boot.img into the MBR and core.img at ``core_lba`` of ``disk_path``."""
    core = Path(core_path).read_bytes()
    if (len(core) + SECTOR - 1) // SECTOR > max_sectors:
        raise ValueError("core.img (%d bytes) does not fit the BIOS boot partition" % len(core))
    boot_img = (GRUB_LIB / "i386-pc" / "boot.img").read_bytes()
    with open(disk_path, "r+b") as disk:
        mbr = disk.read(SECTOR)
        disk.seek(0)
        disk.write(patch_boot_sector(boot_img, mbr, core_lba))
        disk.seek(core_lba * SECTOR)
        disk.write(patch_core(core, core_lba))
