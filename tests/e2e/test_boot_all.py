"""Every other boot combination of the ``minimal`` build (make e2e)."""

import pytest
from boots import boot_iso_cdrom, boot_iso_usb, boot_pxe

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_iso_as_usb_stick_boots_under_uefi(minimal_build, tmp_path):
    out, _ = minimal_build
    assert "login:" in boot_iso_usb(out, tmp_path, "uefi")


def test_iso_as_usb_stick_boots_under_bios(minimal_build, tmp_path):
    out, _ = minimal_build
    assert "login:" in boot_iso_usb(out, tmp_path, "bios")


def test_iso_boots_from_cdrom_under_uefi(minimal_build, tmp_path):
    out, _ = minimal_build
    assert "login:" in boot_iso_cdrom(out, tmp_path, "uefi")


def test_pxe_bundle_boots_under_uefi(minimal_build, tmp_path):
    out, _ = minimal_build
    assert "login:" in boot_pxe(out, tmp_path, "uefi")
