"""Boot the ``minimal`` build under QEMU (TCG) to the login prompt with the banner.

The fast set for ``make test``: the disk under UEFI and BIOS, the ISO from a
CD drive under BIOS, and the PXE bundle under BIOS.  The other combinations
are in tests/e2e.
"""

import pytest
from boots import boot_disk, boot_iso_cdrom, boot_pxe
from netns import namespaces

pytestmark = pytest.mark.integration


def test_disk_boots_under_uefi(minimal_build, tmp_path):
    out, _ = minimal_build
    assert "login:" in boot_disk(out, tmp_path, "uefi")


def test_disk_boots_under_bios(minimal_build, tmp_path):
    out, _ = minimal_build
    assert "login:" in boot_disk(out, tmp_path, "bios")


def test_iso_boots_from_cdrom_under_bios(minimal_build, tmp_path):
    out, _ = minimal_build
    assert "login:" in boot_iso_cdrom(out, tmp_path, "bios")


def test_pxe_bundle_boots_over_http_and_cleans_up(minimal_build, tmp_path):
    out, _ = minimal_build
    before = namespaces()
    assert "login:" in boot_pxe(out, tmp_path, "bios")
    assert namespaces() == before
    # the live root really came over HTTP
    assert "GET /rootfs.squashfs" in (tmp_path / "http.log").read_text()
