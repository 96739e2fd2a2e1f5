"""Boot the ``minimal`` build under QEMU (TCG) to the login prompt with the banner.

The fast set for ``make test``: the disk under UEFI and BIOS, the ISO from a
CD drive under BIOS, and the PXE bundle under BIOS.  The other combinations
are in tests/e2e.
"""

import pytest
from boots import BOOTS, boot_pxe
from netns import namespaces

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("medium, firmware", [("disk", "uefi"), ("disk", "bios"),
                                              ("cdrom", "bios")])
def test_boots_to_login(minimal_build, tmp_path, medium, firmware):
    out, _ = minimal_build
    assert "login:" in BOOTS[medium](out, tmp_path, firmware)


def test_pxe_bundle_boots_over_http_and_cleans_up(minimal_build, tmp_path):
    out, _ = minimal_build
    before = namespaces()
    assert "login:" in boot_pxe(out, tmp_path, "bios")
    assert namespaces() == before
    # the live root really came over HTTP
    assert "GET /rootfs.squashfs" in (tmp_path / "http.log").read_text()
