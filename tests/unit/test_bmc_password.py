"""Setting a BMC user's password through the drivers (``rack up --set-bmc-password``)."""

import pytest
from pyghmi import exceptions as pyghmi_exc

from rackforge.bmc import base, errors, fake, ipmi, redfish

BMC = base.BMC(address="10.0.0.5", port=623, username="admin", password="Old-Pw-123")
NEW = "N3w-Pw-abcdefghi"[:16]


class Command:
    def __init__(self, users, fail=None):
        self.users, self.fail, self.calls = users, fail, []

    def get_name_uids(self, name):
        return [uid for uid, n in self.users.items() if n == name]

    def set_user_password(self, uid, mode="set_password", password=None):
        self.calls.append((uid, mode, password))
        if self.fail:
            raise pyghmi_exc.IpmiException(self.fail)
        return True


def with_command(monkeypatch, cmd):
    from pyghmi.ipmi import command
    monkeypatch.setattr(command, "Command", lambda *a, **kw: cmd)


def test_ipmi_sets_the_password_of_the_login_users_id(monkeypatch):
    cmd = Command({1: None, 2: "admin", 3: "operator"})
    with_command(monkeypatch, cmd)
    ipmi.IPMIManagement().set_user_password(BMC, NEW)
    assert cmd.calls == [(2, "set_password", NEW)]


def test_ipmi_refuses_a_password_over_16_bytes_before_the_bmc():
    with pytest.raises(errors.BMCConfigError, match="1 to 16 bytes"):
        ipmi.IPMIManagement().set_user_password(BMC, "x" * 17)


def test_ipmi_without_the_user_and_an_echoed_password_are_one_clean_line(monkeypatch):
    with_command(monkeypatch, Command({2: "root"}))
    with pytest.raises(errors.BMCUnsupported, match="no user named as the login"):
        ipmi.IPMIManagement().set_user_password(BMC, NEW)
    with_command(monkeypatch, Command({2: "admin"}, fail="rejected %s" % NEW))
    with pytest.raises(errors.BMCError) as err:
        ipmi.IPMIManagement().set_user_password(BMC, NEW)
    assert NEW not in str(err.value) and "Old-Pw-123" not in str(err.value)


def test_the_fake_bmc_takes_the_new_password_and_refuses_the_old():
    driver = fake.FakeDriver()
    driver.management.set_user_password(BMC, NEW)
    with pytest.raises(errors.BMCAuthFailed):
        driver.power.get_power_state(BMC)
    assert driver.power.get_power_state(base.BMC(address="10.0.0.5", username="admin",
                                                 password=NEW)) == "off"


def test_redfish_says_it_cannot():
    bmc = base.BMC(address="10.0.0.5", username="admin", password="x", driver="redfish")
    with pytest.raises(errors.BMCUnsupported, match="not implemented by the redfish driver"):
        redfish.RedfishDriver().management.set_user_password(bmc, NEW)
