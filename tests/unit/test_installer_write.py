"""The installer's writer without a disk: the comparison that verifies a copy, the
exclusive-use check on recorded /sys and /proc trees, GRUB's menu, the UEFI entry,
and that a failure after the first write wipes the partition table."""

import os
import subprocess
from types import SimpleNamespace

import pytest

from rackforge.installer import write


def tree(root):
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text("ID=debian\n")
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "tool").write_bytes(b"\x7fELF" + b"x" * 5000)
    os.chmod(root / "usr" / "bin" / "tool", 0o755)
    os.symlink("usr/bin", root / "bin")
    (root / "etc" / "fstab").write_text("live\n")
    return root


def copy(src, dst):
    subprocess.run(["cp", "-a", str(src) + "/.", str(dst)], check=True)


def test_an_identical_copy_passes_and_every_kind_of_difference_is_named(tmp_path):
    src = tree(tmp_path / "src")
    dst = tmp_path / "dst"
    dst.mkdir()
    copy(src, dst)
    (dst / "etc" / "fstab").write_text("the node's own\n")       # written for the node
    assert write.compare_trees(src, dst, skip=write.NODE_FILES) == []

    with open(dst / "usr" / "bin" / "tool", "r+b") as f:          # one byte flipped
        f.seek(4000)
        f.write(b"y")
    os.chmod(dst / "etc" / "os-release", 0o600)
    os.unlink(dst / "bin")
    os.symlink("usr/sbin", dst / "bin")
    (src / "etc" / "new").write_text("missing from the copy\n")
    bad = write.compare_trees(src, dst, skip=write.NODE_FILES)
    assert sorted(bad) == ["bin", "etc/new", "etc/os-release", "usr/bin/tool"]


def test_the_comparison_reads_every_byte_it_compares(tmp_path):
    src = tree(tmp_path / "src")
    dst = tmp_path / "dst"
    dst.mkdir()
    copy(src, dst)
    seen = []
    write.compare_trees(src, dst, skip=write.NODE_FILES, tick=seen.append)
    assert sum(seen) == 2 * (len("ID=debian\n") + 5004)


def fake_sys(tmp_path, holders=()):
    sys_root = tmp_path / "sys"
    for part in ("sdb1", "sdb2"):
        d = sys_root / "block" / "sdb" / part
        (d / "holders").mkdir(parents=True)
        (d / "partition").write_text(part[-1] + "\n")
    (sys_root / "block" / "sdb" / "holders").mkdir()
    for h in holders:
        (sys_root / "block" / "sdb" / "sdb2" / "holders" / h).mkdir()
    return sys_root


def fake_proc(tmp_path, mounts="", swaps=""):
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text(
        "22 1 0:21 / /proc rw - proc proc rw\n" + mounts)
    (proc / "swaps").write_text("Filename Type Size Used Priority\n" + swaps)
    return proc


def test_a_disk_in_use_is_refused_before_anything_is_written(tmp_path):
    sys_root = fake_sys(tmp_path)
    write.check_exclusive("/dev/sdb", sys_root, fake_proc(tmp_path))
    assert write.partitions("/dev/sdb", sys_root) == {1: "/dev/sdb1", 2: "/dev/sdb2"}

    mounted = fake_proc(tmp_path / "m", "40 1 8:17 / /srv rw - ext4 /dev/sdb1 rw\n")
    with pytest.raises(write.DiskBusy, match=r"/dev/sdb1 is mounted\); nothing was written"):
        write.check_exclusive("/dev/sdb", sys_root, mounted)
    swap = fake_proc(tmp_path / "s", swaps="/dev/sdb2 partition 1024 0 -2\n")
    with pytest.raises(write.DiskBusy, match="/dev/sdb2 is swap"):
        write.check_exclusive("/dev/sdb", sys_root, swap)
    held = fake_sys(tmp_path / "h", holders=("md0",))
    with pytest.raises(write.DiskBusy, match="sdb2 is held by md0"):
        write.check_exclusive("/dev/sdb", held, fake_proc(tmp_path / "p"))


def test_grub_menu_boots_the_newest_kernel_of_the_copied_root_by_uuid(tmp_path):
    boot = tmp_path / "boot"
    boot.mkdir()
    for v in ("6.12.9-amd64", "6.12.41-amd64"):
        (boot / ("vmlinuz-" + v)).write_text("")
        (boot / ("initrd.img-" + v)).write_text("")
    menu = write.grub_cfg(tmp_path, "0b5c-uuid", "console=ttyS0,115200n8")
    assert ("linux /boot/vmlinuz-6.12.41-amd64 root=UUID=0b5c-uuid ro console=ttyS0,115200n8"
            in menu) and "initrd /boot/initrd.img-6.12.41-amd64" in menu
    assert "search --no-floppy --fs-uuid --set=root 0b5c-uuid" in menu
    (boot / "initrd.img-6.12.9-amd64").unlink()
    (boot / "initrd.img-6.12.41-amd64").unlink()
    with pytest.raises(RuntimeError, match="no /boot/initrd.img-"):
        write.grub_cfg(tmp_path, "u", "")


class Runner:
    """Commands answered from a script: argv[0] -> result; records every call."""

    def __init__(self, fail=None, outputs=None):
        self.calls, self.fail, self.outputs = [], fail, outputs or {}

    def __call__(self, argv, **kwargs):
        self.calls.append(list(argv))
        if self.fail and argv[0] == self.fail:
            return SimpleNamespace(returncode=1, stdout="", stderr="%s: I/O error" % argv[0])
        return SimpleNamespace(returncode=0, stdout=self.outputs.get(argv[0], ""), stderr="")


def test_a_failure_after_the_first_write_wipes_the_partition_table(tmp_path):
    sys_root = fake_sys(tmp_path)
    (sys_root / "block" / "sdb" / "sdb3").mkdir()
    (sys_root / "block" / "sdb" / "sdb3" / "partition").write_text("3\n")
    run = Runner(fail="mkfs.ext4")
    w = write.Writer(write.Target(disk="/dev/sdb", hostname="n1", bootstrap="seed: true\n"),
                     tmp_path / "src", run=run, sys_root=sys_root, efi=False,
                     mount_root=tmp_path / "target", proc_root=fake_proc(tmp_path))
    with pytest.raises(write.InstallError) as err:
        w.write()
    assert str(err.value) == ("install to /dev/sdb: file systems: mkfs.ext4 failed (exit 1): "
                              "mkfs.ext4: I/O error (the detail is in the log)")
    firsts = [c[0] for c in run.calls]
    assert firsts.index("sgdisk") < firsts.index("mkfs.ext4")
    after = run.calls[firsts.index("mkfs.ext4") + 1:]
    assert ["sgdisk", "--zap-all", "/dev/sdb"] in after
    assert ["wipefs", "--all", "--force", "/dev/sdb"] in after
    assert not any(c[0] in ("cp", "grub-install") for c in run.calls)


def test_the_uefi_entry_replaces_older_rackforge_entries_and_goes_first():
    listing = ("BootCurrent: 0001\nBootOrder: 0003,0001\n"
               "Boot0001* UEFI QEMU DVD-ROM\nBoot0003* rackforge\tHD(2,GPT,...)\n")
    run = Runner(outputs={"efibootmgr": listing})
    write.nvram_entry("/dev/vda", 2, run)
    assert run.calls[1] == ["efibootmgr", "--quiet", "--bootnum", "0003", "--delete-bootnum"]
    assert run.calls[2][:4] == ["efibootmgr", "--quiet", "--create", "--disk"]
    assert run.calls[2][-1] == "\\EFI\\BOOT\\BOOTX64.EFI"


def test_the_seed_gets_the_racks_pxe_bundle_from_the_installation_medium(tmp_path):
    live = tmp_path / "medium" / "live"
    live.mkdir(parents=True)
    for name in ("vmlinuz", "initrd.img", "filesystem.squashfs", "boot.ipxe.j2"):
        (live / name).write_bytes(name.encode() * 100)
    t = write.Target(disk="/dev/sdb", hostname="n1", bootstrap="seed: true\n",
                     bundle_from=str(live))
    w = write.Writer(t, tmp_path / "src", mount_root=tmp_path / "target")
    w._pxe_bundle()
    from rackforge import bundle
    made = tmp_path / "target" / write.BUNDLE_DIR
    assert bundle.missing(made) == []
    assert (made / bundle.SQUASHFS).read_bytes() == b"filesystem.squashfs" * 100
    (live / "boot.ipxe.j2").unlink()
    with pytest.raises(RuntimeError, match="no live/boot.ipxe.j2"):
        w._pxe_bundle()
    w.t.bundle_from = None                  # a joining node: no bundle
    w.root = tmp_path / "elsewhere"
    w._pxe_bundle()
    assert not (tmp_path / "elsewhere").exists()
