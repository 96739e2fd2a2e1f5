"""pyghmi's errors translated once, by the IPMI_ERRORS table."""

import pytest
from pyghmi import exceptions as pyghmi_exc

from rackforge.bmc import base, errors, ipmi

BMC = base.BMC(address="10.0.0.5", port=623, username="admin", password="Pw-123-xyz")


@pytest.mark.parametrize("message,cls,retryable", [
    ("Incorrect password provided", errors.BMCAuthFailed, False),
    ("Unauthorized name in RAKP2", errors.BMCAuthFailed, False),
    ("timeout", errors.BMCUnreachable, True),
    (None, errors.BMCUnreachable, True),
    ("Session no longer connected", errors.BMCUnreachable, True),
    ("Node busy", errors.BMCBusy, True),
    ("Invalid data field in request", errors.BMCUnsupported, False),
    ("something new", errors.BMCCommandFailed, True),
])
def test_translate(message, cls, retryable):
    err = ipmi.translate(pyghmi_exc.IpmiException(message), BMC, "power status")
    assert type(err) is cls and err.retryable is retryable
    assert "10.0.0.5:623" in str(err) and "\n" not in str(err)


def test_translate_redacts_an_echoed_password():
    err = ipmi.translate(pyghmi_exc.IpmiException("bad Pw-123-xyz"), BMC, "x")
    assert "Pw-123-xyz" not in str(err)


def test_boot_device_names_map_both_ways():
    for dev in base.BOOT_DEVICES:
        assert ipmi.PYGHMI_TO_BOOT[ipmi.BOOT_TO_PYGHMI[dev]] == dev


def test_unknown_boot_device_never_touches_the_bmc():
    with pytest.raises(errors.InvalidSetting):
        ipmi.IPMIManagement().set_boot_device(BMC, "floppy")
