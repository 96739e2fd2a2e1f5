"""Preflight checks on the build host: tools, privileges, free disk.

Each check fails fast with one operator line naming what is missing and the
Debian package (or pip package) that provides it, before anything is built.
"""

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from rackforge import errors


@dataclass(frozen=True)
class HostTool:
    """A command (or a data directory) the pipeline needs, and where it comes from."""

    name: str
    install: str          # what to run to get it
    path: str = ""        # a file that must exist instead of a command on PATH

    def present(self):
        if self.path:
            return Path(self.path).exists()
        return shutil.which(self.name) is not None


def _apt(pkg):
    return "apt-get install %s" % pkg


# What each step of the pipeline needs.  Declared once; the check and the
# README's list of host packages both come from here.
TOOLS = {
    "rootfs": (
        HostTool("disk-image-create", "pip install diskimage-builder"),
        HostTool("debootstrap", _apt("debootstrap")),
        HostTool("sudo", _apt("sudo")),
        HostTool("tar", _apt("tar")),
        HostTool("dpkg-query", _apt("dpkg")),
    ),
    "squashfs": (HostTool("mksquashfs", _apt("squashfs-tools")),),
    "disk": (
        HostTool("sgdisk", _apt("gdisk")),
        HostTool("mkfs.ext4", _apt("e2fsprogs")),
        HostTool("mkfs.vfat", _apt("dosfstools")),
        HostTool("mcopy", _apt("mtools")),
        HostTool("mmd", _apt("mtools")),
        HostTool("grub-mkimage", _apt("grub-common")),
        HostTool("grub-pc-bin", _apt("grub-pc-bin"), path="/usr/lib/grub/i386-pc/boot.img"),
        HostTool("grub-efi-amd64-bin", _apt("grub-efi-amd64-bin"),
                 path="/usr/lib/grub/x86_64-efi/linux.mod"),
    ),
    "qcow2": (HostTool("qemu-img", _apt("qemu-utils")),),
    "iso": (
        HostTool("grub-mkrescue", _apt("grub-common")),
        HostTool("xorriso", _apt("xorriso")),
        HostTool("mformat", _apt("mtools")),
        HostTool("grub-pc-bin", _apt("grub-pc-bin"), path="/usr/lib/grub/i386-pc/boot.img"),
        HostTool("grub-efi-amd64-bin", _apt("grub-efi-amd64-bin"),
                 path="/usr/lib/grub/x86_64-efi/linux.mod"),
    ),
}

# Which steps each output format needs, on top of the root file system.
STEPS_FOR_OUTPUT = {
    "raw": ("disk",),
    "qcow2": ("disk", "qcow2"),
    "iso": ("squashfs", "iso"),
    "pxe": ("squashfs",),
}


def required_tools(outputs):
    steps = ["rootfs"]
    for out in outputs:
        steps.extend(STEPS_FOR_OUTPUT[out])
    seen = {}
    for step in steps:
        for tool in TOOLS[step]:
            seen.setdefault(tool.name, tool)
    return list(seen.values())


def check_tools(outputs):
    """Raise HostToolMissing for the first tool the requested outputs need and lack."""
    for tool in required_tools(outputs):
        if not tool.present():
            raise errors.HostToolMissing(tool=tool.name, package=tool.install.split()[-1],
                                         install=tool.install)


def has_privileges():
    """True when we are root; the build re-executes itself under sudo otherwise."""
    return os.geteuid() == 0


def sudo_available():
    if shutil.which("sudo") is None:
        return False
    res = subprocess.run(["sudo", "-n", "true"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return res.returncode == 0


def check_free_space(path, need_gib):
    """Raise NotEnoughDisk when the file system holding ``path`` has too little room."""
    path = Path(path)
    probe = path
    while not probe.exists():
        probe = probe.parent
    st = os.statvfs(probe)
    free_gib = st.f_bavail * st.f_frsize / 2**30
    if free_gib < need_gib:
        raise errors.NotEnoughDisk(path=path, free_gib=free_gib, need_gib=float(need_gib))
    return free_gib
