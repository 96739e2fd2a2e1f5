"""Live outputs: the root squashfs, the hybrid ISO/USB image and the PXE bundle.

The live system is Debian's live-boot (element ``rackforge-live``): the same
kernel and initrd boot ``/live/filesystem.squashfs`` from the ISO or USB
stick, or fetch ``rootfs.squashfs`` over HTTP when booted by iPXE.
"""

import os
import shutil
import subprocess
from pathlib import Path

from rackforge import bundle

TEMPLATES = Path(__file__).parent / "templates"
ISO_VOLUME_ID = "RACKFORGE"
CONSOLE_ARGS = "console=tty0 console=ttyS0,115200n8"


def render(template, **context):
    import jinja2  # only the build needs it; keep `rackforge` start-up light

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template(template).render(**context)


def make_squashfs(root, out, run=subprocess.run):
    """Compress the tree; zstd decompresses fast on the booting node."""
    run(["mksquashfs", str(root), str(out), "-noappend", "-comp", "zstd",
         "-Xcompression-level", "6", "-quiet", "-no-progress",
         "-e", "boot/grub", "-e", "boot/efi"],
        check=True, capture_output=True, text=True)


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def make_iso(out, kernel, initrd, squashfs, workdir, release, run=subprocess.run):
    """A hybrid ISO: El Torito for BIOS and UEFI, plus MBR/GPT so ``dd`` to USB boots."""
    tree = Path(workdir) / "iso-tree"
    (tree / "live").mkdir(parents=True)
    (tree / "boot" / "grub").mkdir(parents=True)
    _link_or_copy(kernel, tree / "live" / "vmlinuz")
    _link_or_copy(initrd, tree / "live" / "initrd.img")
    _link_or_copy(squashfs, tree / "live" / "filesystem.squashfs")
    # with the three above, the seed's installer makes the PXE bundle for the rack from it
    shutil.copyfile(TEMPLATES / bundle.TEMPLATE, tree / "live" / bundle.TEMPLATE)
    (tree / "boot" / "grub" / "grub.cfg").write_text(
        render("iso-grub.cfg.j2", console=CONSOLE_ARGS, **release))
    run(["grub-mkrescue", "-o", str(out), str(tree), "--", "-volid", ISO_VOLUME_ID],
        check=True, capture_output=True, text=True)
    shutil.rmtree(tree)


def make_pxe_bundle(outdir, kernel, initrd, squashfs, release):
    """kernel, initrd, root squashfs and the iPXE script template, in ``outdir``
    (the names: :mod:`rackforge.bundle`)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    _link_or_copy(kernel, outdir / bundle.KERNEL)
    _link_or_copy(initrd, outdir / bundle.INITRD)
    _link_or_copy(squashfs, outdir / bundle.SQUASHFS)
    shutil.copyfile(TEMPLATES / bundle.TEMPLATE, outdir / bundle.TEMPLATE)
    return outdir


def render_ipxe(bundle_template, base_url, kernel_args=""):
    """Render a bundle's ``boot.ipxe.j2`` for a server at ``base_url``.

    Used by tests and, later, by the rack's boot services; the template is
    plain jinja2 so any server can render it.
    """
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    tpl = env.from_string(Path(bundle_template).read_text())
    return tpl.render(**bundle.template_context(base_url, CONSOLE_ARGS, kernel_args))
