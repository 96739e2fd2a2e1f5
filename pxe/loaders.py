"""The iPXE boot loaders PXE firmware fetches over TFTP, from Debian's ``ipxe`` package.

BIOS firmware (option 93 = 0) gets ``undionly.kpxe``; x86-64 UEFI firmware gets
``snponly.efi`` (iPXE on the firmware's own NIC driver, the most compatible
choice, Ironic's default too) or ``ipxe.efi`` (iPXE's own drivers).  They are
copied into a TFTP root that holds nothing else.
"""

import os
import shutil
from pathlib import Path

from rackforge import errors
from rackforge.fileutil import make_dirs

BIOS_LOADER = "undionly.kpxe"
EFI_LOADERS = ("snponly.efi", "ipxe.efi")


def ipxe_dir():
    return Path(os.environ.get("RACKFORGE_IPXE_DIR", "/usr/lib/ipxe"))


def populate_tftp_root(root, source=None):
    """Copy every loader into ``root`` (made fresh); returns the list of names."""
    source = Path(source or ipxe_dir())
    names = (BIOS_LOADER,) + EFI_LOADERS
    for name in names:
        if not (source / name).is_file():
            raise errors.HostToolMissing(tool="iPXE loader %s in %s" % (name, source),
                                         install="apt-get install ipxe")
    root = Path(root)
    if root.exists():
        shutil.rmtree(root)
    make_dirs(root, 0o755)
    for name in names:
        shutil.copyfile(source / name, root / name)
    return list(names)
