"""The node's BMC in band: LAN settings and a user's password through pyghmi's command
(replaced here by a recorder that answers as a BMC does), every value checked first."""

import logging

import pytest

from rackforge.nodeagent import bmcinband

# the keys and value forms of pyghmi's get_net_configuration(gateway_macs=False)
# (pyghmi/ipmi/command.py), for a BMC with a static address
RECORDED = {"ipv4_address": "10.1.0.12/24", "ipv4_configuration": "Static",
            "mac_address": "3c:ec:ef:12:34:56", "ipv4_gateway": "10.1.0.1",
            "ipv4_backup_gateway": "0.0.0.0", "vlan_id": "off"}


class Bmc:
    def __init__(self, fail=None):
        self.cfg, self.calls, self.fail = dict(RECORDED), [], fail

    def command(self):
        return self

    def get_net_configuration(self, gateway_macs=True):
        return dict(self.cfg)

    def set_net_configuration(self, ipv4_address=None, ipv4_configuration=None,
                              ipv4_gateway=None):
        self.calls.append(("net", ipv4_address, ipv4_configuration, ipv4_gateway))
        if self.fail:
            raise Exception(self.fail)
        self.cfg.update(ipv4_configuration=ipv4_configuration)
        if ipv4_address:
            self.cfg.update(ipv4_address=ipv4_address, ipv4_gateway=ipv4_gateway or "0.0.0.0")

    def set_user_password(self, uid, password=None):
        self.calls.append(("password", uid, password))


def test_the_state_as_the_console_shows_it():
    bmc = Bmc()
    assert bmcinband.InbandBmc(bmc.command).state() == {
        "address": "10.1.0.12/24", "mode": "static", "gateway": "10.1.0.1",
        "mac": "3c:ec:ef:12:34:56", "vlan": "off"}


def test_a_static_address_dhcp_and_a_password_each_one_journal_line(caplog):
    caplog.set_level(logging.WARNING)
    bmc = Bmc()
    inband = bmcinband.InbandBmc(bmc.command)
    got = inband.set_network({"address": "10.1.0.40/24", "gateway": "10.1.0.1"})
    assert got["address"] == "10.1.0.40/24" and bmc.calls[-1] == (
        "net", "10.1.0.40/24", "Static", "10.1.0.1")
    assert inband.set_network({"dhcp": True})["mode"] == "dhcp"
    assert inband.set_password({"user": 2, "password": "Rack-7-Admin"}) == {
        "user": 2, "changed": True}
    assert bmc.calls[-1] == ("password", 2, "Rack-7-Admin")
    assert "BMC address set to 10.1.0.40/24, gateway 10.1.0.1" in caplog.text
    assert "BMC set to DHCP" in caplog.text and "BMC user 2's password changed" in caplog.text
    assert "Rack-7-Admin" not in caplog.text


@pytest.mark.parametrize("call, body, says", [
    ("set_network", {"address": "10.1.0.40"}, "needs its prefix"),
    ("set_network", {"address": "10.1.0.400/24"}, "must be an IPv4 address with its prefix"),
    ("set_network", {"address": "10.1.0.40/24", "gateway": "10.9.0.1"},
     "gateway 10.9.0.1 is not another host of 10.1.0.0/24"),
    ("set_network", {"dhcp": True, "address": "10.1.0.40/24"}, "send only dhcp"),
    ("set_network", {"address": "10.1.0.40/24", "vlan": 7}, "unknown field 'vlan'"),
    ("set_password", {"user": 2, "password": "short"}, "8 to 20 printable ASCII"),
    ("set_password", {"user": 2, "password": "x" * 21}, "8 to 20 printable ASCII"),
    ("set_password", {"user": 0, "password": "Rack-7-Admin"}, "user's number (1-63"),
    ("set_password", {"user": True, "password": "Rack-7-Admin"}, "user's number"),
])
def test_bad_values_are_refused_before_the_bmc_is_touched(call, body, says):
    bmc = Bmc()
    with pytest.raises(bmcinband.BmcRefused) as err:
        getattr(bmcinband.InbandBmc(bmc.command), call)(body)
    assert says in str(err.value) and bmc.calls == []
    assert "Rack-7-Admin" not in str(err.value)


def test_a_bmc_that_refuses_and_a_machine_without_one(tmp_path, monkeypatch):
    bmc = Bmc(fail="Parameter not supported")
    with pytest.raises(bmcinband.BmcUnavailable, match="set_net_configuration: Parameter not"):
        bmcinband.InbandBmc(bmc.command).set_network({"address": "10.1.0.40/24"})
    monkeypatch.setattr(bmcinband, "IPMI_DEVICE", str(tmp_path / "ipmi0"))
    with pytest.raises(bmcinband.BmcUnavailable, match="ipmi0 is missing"):
        bmcinband.InbandBmc().state()
