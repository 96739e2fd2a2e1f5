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


def test_a_login_broken_without_its_reason_is_tried_once_more(monkeypatch):
    from pyghmi.ipmi import command

    tries = []

    def login(*args, **kw):
        tries.append(args)
        if len(tries) == 1:     # pyghmi's race: broken, and no reason kept
            raise AttributeError("'Session' object has no attribute 'errormsg'")
        raise pyghmi_exc.IpmiException("Incorrect password provided")
    monkeypatch.setattr(command, "Command", login)
    with pytest.raises(errors.BMCAuthFailed):
        ipmi.IPMIPower().get_power_state(BMC)
    assert len(tries) == 2


def test_any_other_attribute_error_is_not_retried(monkeypatch):
    from pyghmi.ipmi import command

    tries = []

    def login(*args, **kw):
        tries.append(args)
        raise AttributeError("'NoneType' object has no attribute 'sendto'")
    monkeypatch.setattr(command, "Command", login)
    with pytest.raises(AttributeError):
        ipmi.IPMIPower().get_power_state(BMC)
    assert len(tries) == 1
