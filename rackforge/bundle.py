"""The PXE bundle's contract: the file names the image pipeline writes and the boot
services serve (``images/live.py`` makes it, ``pxe/`` serves it).

A bundle is one directory (``images/<profile>/pxe/``)::

    vmlinuz          the kernel
    initrd           its initramfs (live-boot, which fetches the root over HTTP)
    rootfs.squashfs  the live root file system
    boot.ipxe.j2     the iPXE script template that boots the three (jinja2)

The template is rendered with :func:`template_context`: the three names, so
that a name is written here and nowhere else.
"""

from pathlib import Path

KERNEL = "vmlinuz"
INITRD = "initrd"
SQUASHFS = "rootfs.squashfs"
TEMPLATE = "boot.ipxe.j2"

#: what the boot HTTP service serves under /bundle/
SERVED = (KERNEL, INITRD, SQUASHFS)
#: everything a bundle directory holds
FILES = SERVED + (TEMPLATE,)


def template_context(base_url, console, kernel_args):
    """The variables of ``boot.ipxe.j2``."""
    return {"base_url": base_url.rstrip("/"), "console": console, "kernel_args": kernel_args,
            "kernel": KERNEL, "initrd": INITRD, "squashfs": SQUASHFS}


def missing(directory):
    """The bundle files absent from ``directory`` (empty: it is a bundle)."""
    directory = Path(directory)
    return [name for name in FILES if not (directory / name).is_file()]
