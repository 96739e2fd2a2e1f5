import struct

import pytest

from rackforge.images import bootloader

SECTOR = 512


def fake_core(sectors):
    core = bytearray(sectors * SECTOR)
    # as grub-mkimage leaves it: start 2, the sectors after the first, segment 0x820
    struct.pack_into("<QHH", core, bootloader.BLOCKLIST, 2, sectors - 1, 0x820)
    return bytes(core)


def test_boot_sector_points_at_core_and_keeps_partition_table():
    boot_img = bytes(range(256)) * 2
    mbr = bytes(440) + b"\xaa" * 72
    out = bootloader.patch_boot_sector(boot_img, mbr, core_lba=2048)
    assert struct.unpack_from("<Q", out, bootloader.BOOT_KERNEL_SECTOR)[0] == 2048
    assert struct.unpack_from("<H", out, bootloader.BOOT_DRIVE_CHECK)[0] == 0x9090
    assert out[440:] == mbr[440:]
    assert out[:bootloader.BOOT_KERNEL_SECTOR] == boot_img[:bootloader.BOOT_KERNEL_SECTOR]


def test_core_blocklist_starts_after_its_first_sector():
    out = bootloader.patch_core(fake_core(60), core_lba=2048)
    assert struct.unpack_from("<QHH", out, bootloader.BLOCKLIST) == (2049, 59, 0x820)


def test_core_with_unexpected_blocklist_is_refused():
    core = bytearray(fake_core(60))
    struct.pack_into("<H", core, bootloader.BLOCKLIST + 8, 7)
    with pytest.raises(ValueError, match="unexpected core.img blocklist"):
        bootloader.patch_core(bytes(core), 2048)


def test_early_config_finds_root_by_uuid():
    cfg = bootloader.early_config("1234-abcd")
    assert "search --no-floppy --fs-uuid --set=root 1234-abcd" in cfg
    assert "configfile ($root)/boot/grub/grub.cfg" in cfg
