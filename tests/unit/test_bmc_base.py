"""The driver interface and the fake driver, registered like the real ones."""

import pytest

from rackforge.bmc import base, drivers, errors
from rackforge.bmc.fake import FakeDriver


def bmc(addr="10.0.0.5", **kw):
    kw.setdefault("username", "admin")
    kw.setdefault("password", "pw-xyz")
    return base.BMC(address=addr, driver="fake", **kw)


def test_registry_knows_the_builtin_drivers():
    assert {"ipmi", "redfish", "fake"} <= set(drivers.driver_names())
    assert isinstance(drivers.get_driver("fake"), FakeDriver)


def test_unknown_driver_is_one_line_naming_the_known_ones():
    with pytest.raises(errors.UnknownDriver) as e:
        drivers.get_driver("nope")
    assert "ipmi" in str(e.value) and "\n" not in str(e.value)


def test_password_is_not_in_repr():
    assert "pw-xyz" not in repr(bmc())


def test_properties_document_every_setting():
    props = drivers.get_driver("fake").get_properties()
    assert {"address", "username", "password", "port"} <= set(props)
    assert all(isinstance(help_, str) and help_ for help_, _ in props.values())


@pytest.mark.parametrize("kw,exc", [
    (dict(addr=""), errors.MissingSetting),
    (dict(port=70000), errors.InvalidSetting),
    (dict(username=""), errors.InsecureRefused),
    (dict(password=""), errors.InsecureRefused),
])
def test_validate_refuses_bad_settings_without_touching_the_bmc(kw, exc):
    d = FakeDriver()
    with pytest.raises(exc):
        d.validate(bmc(**kw))
    assert d.rack.calls == []


def test_insecure_allows_empty_password():
    FakeDriver().validate(bmc(password="", insecure=True))


def test_change_power_confirms_the_state():
    d = FakeDriver()
    b = bmc()
    assert d.power.change_power(b, "on", poll=0) == "on"
    assert d.power.change_power(b, "cycle", poll=0) == "on"
    assert d.power.change_power(b, "soft-off", poll=0) == "off"
    # already off: nothing sent but the status read
    d.rack.calls.clear()
    assert d.power.change_power(b, "off", poll=0) == "off"
    assert d.rack.calls == [("10.0.0.5", "power status")]


def test_change_power_fails_when_the_state_does_not_change():
    d = FakeDriver()
    d.rack.sticky_power.add("10.0.0.5")
    now = [0.0]

    def sleep(s):
        now[0] += s
    with pytest.raises(errors.PowerStateNotReached) as e:
        d.power.change_power(bmc(), "on", timeout=5, poll=1, clock=lambda: now[0],
                             sleep=sleep)
    assert e.value.retryable and "still off" in str(e.value)


def test_boot_device_and_inventory():
    d = FakeDriver()
    d.management.set_boot_device(bmc(), "pxe", persistent=True, uefi=True)
    assert d.management.get_boot_device(bmc()) == {"device": "pxe", "persistent": True,
                                                   "uefi": True}
    inv = d.inventory.get_inventory(bmc()).as_dict()
    assert inv["serial"] == "FAKE0005" and inv["macs"]


def test_console_unsupported_by_default_is_one_line():
    with pytest.raises(errors.BMCUnsupported):
        base.NoConsole().capture(bmc(), None, 1)
