"""Boot the ``minimal`` build under QEMU (TCG) to the login prompt with the banner.

The fast set for ``make test``: the disk under UEFI and BIOS, the ISO from a
CD drive under BIOS, and the PXE bundle served by ``rackforge pxe serve``
under BIOS (proxy-DHCP, iPXE ROM) and UEFI (full DHCP, OVMF's own PXE, iPXE
over TFTP).  The other combinations are in tests/e2e.
"""

import json
import os
import re

import pytest
from boots import BOOTS, PXE_MAC, boot_pxe
from netns import CREATED, namespaces

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("medium, firmware", [("disk", "uefi"), ("disk", "bios"),
                                              ("cdrom", "bios")])
def test_boots_to_login(minimal_build, tmp_path, medium, firmware):
    out, _ = minimal_build
    assert "login:" in BOOTS[medium](out, tmp_path, firmware)


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_pxe_boot_from_rackforge_pxe_serve(minimal_build, tmp_path, firmware):
    out, _ = minimal_build
    console, log, status = boot_pxe(out, tmp_path, firmware)
    assert "login:" in console
    # the per-node script was decided from the registry by the guest's MAC
    assert "boot of %s (%s): discover (unknown MAC)" % (
        PXE_MAC, "pcbios" if firmware == "bios" else "efi") in log
    # the live root came over rackforge's HTTP
    assert "fetches rootfs.squashfs" in log
    if firmware == "uefi":
        # OVMF fetched iPXE from rackforge's TFTP before iPXE took over
        size = os.path.getsize("/usr/lib/ipxe/snponly.efi")
        assert re.search(r"sent 'snponly\.efi' to 10\.213\.77\.\d+:\d+ \(%d bytes\)" % size, log)
    boots = {b["mac"]: b for b in json.loads(status)["boots"]}
    assert boots[PXE_MAC]["decision"] == "discover"
    assert boots[PXE_MAC]["platform"] == ("pcbios" if firmware == "bios" else "efi")
    assert CREATED and not set(CREATED) & namespaces(), "a namespace was left behind"
