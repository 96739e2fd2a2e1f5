"""The installer from the ``minimal`` ISO under QEMU (TCG), unattended.

The guest boots the ISO with three more disks: the target (blank, serial
RFTARGET01), a decoy full of data (a partition table and random bytes, serial
RFDECOY01) and a small FAT disk labelled RF-ANSWER holding ``answer.yaml``.  The
ISO's menu defaults to "Install rackforge" when it sees that label; the
installer finds the answer file, picks the target by its serial, writes and
verifies it, and reboots (QEMU exits: ``-no-reboot``).  Then:

- the decoy and the answer disk are byte for byte what they were (SHA-256);
- the target boots under UEFI with the variables the installer left (its
  ``rackforge`` boot entry), and first boot runs there as the seed of a new
  cluster, with the hostname and SSH key from the answer file;
- the same disk boots under BIOS (SeaBIOS) to the login prompt.
"""

import hashlib
import os
import subprocess

import pytest
from guest import Guest, once_more_on_panic, wait_for_login
from seedinstall import answer_disk, ssh_key

from rackforge import __version__

pytestmark = pytest.mark.integration

NAME = "rackforge-minimal"
INSTALL_TIMEOUT = 30 * 60       # TCG: the live boot, a copy and a read-back of the root
BOOT_TIMEOUT = 15 * 60
ANSWER = """\
version: 1
disk:
  match: {serial: RFTARGET01}
network: {interface: "mac:52:54:00:12:34:56", address: 10.0.2.15/24, gateway: 10.0.2.2}
cluster:
  create: {name: rack1, vip: 10.0.2.100}
hostname: installed1
ssh_authorized_keys: ["%s"]
"""


def root_partition(disk, tmp_path):
    """The installed root file system, mounted read-only from a raw copy of ``disk``
    (its journal not replayed: the last guest was stopped, not shut down)."""
    raw = tmp_path / "installed.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(disk), str(raw)], check=True)
    info = subprocess.run(["sgdisk", "-i", "3", str(raw)], check=True, capture_output=True,
                          text=True).stdout
    first = int(info.split("First sector: ")[1].split()[0])
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "ro,noload,loop,offset=%d" % (first * 512), str(raw), str(mnt)],
                   check=True)
    return mnt


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def decoy_disk(path):
    """256 MiB: a GPT with one partition, random bytes in it (someone's data)."""
    with open(path, "wb") as f:
        f.truncate(256 << 20)
    subprocess.run(["sgdisk", "--new=1:1M:0", "--change-name=1:precious", str(path)],
                   check=True, capture_output=True)
    with open(path, "r+b") as f:
        f.seek(1 << 20)
        f.write(os.urandom(64 << 20))


def test_the_iso_installs_from_an_answer_file_and_the_disk_boots_uefi_and_bios(
        minimal_build, tmp_path):
    out, _ = minimal_build
    target, decoy, answers = tmp_path / "target.qcow2", tmp_path / "decoy.raw", \
        tmp_path / "answer.img"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(target), "6G"], check=True)
    decoy_disk(decoy)
    _, key = ssh_key(tmp_path)
    answer_disk(answers, ANSWER % key)
    before = {p: sha256(p) for p in (decoy, answers)}
    uefi_vars = tmp_path / "OVMF_VARS.fd"

    guest = Guest(tmp_path / "install", firmware="uefi", uefi_vars=uefi_vars)
    guest.add_install_medium(out / (NAME + ".iso"))
    guest.add_scsi_disk(target, "RFTARGET01", fmt="qcow2")
    guest.add_scsi_disk(decoy, "RFDECOY01")
    # in the boot order, so that OVMF connects it and the ISO's GRUB sees its label (a
    # USB stick on a server's firmware is); it boots nothing itself
    guest.add_scsi_disk(answers, "RFANSWER01", bootindex=1)
    guest.add_user_nic()
    with guest:
        guest.wait_for(r"rackforge installer: answer file from the partition labelled "
                       r"RF-ANSWER", INSTALL_TIMEOUT)
        guest.wait_for(r"rackforge installer: target \S+ \(serial:RFTARGET01", 300)
        done = guest.wait_for(r"rackforge installer: installed to \S+ \(serial:RFTARGET01\) "
                              r"in (\d+) s", INSTALL_TIMEOUT)
        print("installed in %s s (under TCG)" % done.group(1))
        assert guest.wait_exit(300) == 0
    assert "rackforge installer: FAILED" not in guest.output
    assert {p: sha256(p) for p in (decoy, answers)} == before

    def booted(firmware, **kw):
        def make(attempt):
            guest = Guest(tmp_path / ("%s-%d" % (firmware, attempt)), firmware=firmware, **kw)
            guest.add_scsi_disk(target, "RFTARGET01", fmt="qcow2")
            guest.add_user_nic()
            return guest
        return make

    def seeds(uefi):
        uefi.wait_for(r"seeding cluster rack1", BOOT_TIMEOUT)
        uefi.wait_for(r"first boot complete: node \S+ is controller", BOOT_TIMEOUT)
        wait_for_login(uefi, __version__, "minimal", BOOT_TIMEOUT)
        assert "installed1 login:" in uefi.output

    once_more_on_panic(booted("uefi", uefi_vars=uefi_vars), seeds)
    once_more_on_panic(booted("bios"),
                       lambda bios: wait_for_login(bios, __version__, "minimal", BOOT_TIMEOUT))
    assert {p: sha256(p) for p in (decoy, answers)} == before

    mnt = root_partition(target, tmp_path)
    try:
        assert (mnt / "root" / ".ssh" / "authorized_keys").read_text() == key + "\n"
        assert (mnt / "etc" / "hostname").read_text() == "installed1\n"
        bootstrap = mnt / "etc" / "rackforge" / "bootstrap.yaml"
        assert oct(bootstrap.stat().st_mode & 0o777) == "0o600"
        assert "seed: true" in bootstrap.read_text()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
