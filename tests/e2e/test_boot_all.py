"""Every other boot combination of the ``minimal`` build (make e2e)."""

import pytest
from boots import BOOTS

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


@pytest.mark.parametrize("medium, firmware", [
    ("usb", "uefi"),     # the ISO written with dd to a USB stick
    ("usb", "bios"),
    ("cdrom", "uefi"),
])
def test_boots_to_login(minimal_build, tmp_path, medium, firmware):
    out, _ = minimal_build
    assert "login:" in BOOTS[medium](out, tmp_path, firmware)
