"""Redfish driver pieces that need no emulator: URLs and the error table."""

import pytest
from sushy import exceptions as sx

from rackforge.bmc import base, errors, redfish


def bmc(address, port=None):
    return base.BMC(address=address, port=port, username="admin", password="Pw-Redfish-1",
                    driver="redfish")


def test_base_url():
    assert redfish.base_url(bmc("10.0.0.5")) == "https://10.0.0.5"
    assert redfish.base_url(bmc("10.0.0.5", 8443)) == "https://10.0.0.5:8443"
    assert redfish.base_url(bmc("fe80::1")) == "https://[fe80::1]"
    assert redfish.base_url(bmc("http://127.0.0.1:8000/")) == "http://127.0.0.1:8000"


@pytest.mark.parametrize("exc,cls", [
    (sx.ConnectionError(url="u", error="[Errno 111] Connection refused"),
     errors.BMCUnreachable),
    (sx.SushyError(), errors.BMCCommandFailed),
])
def test_translate(exc, cls):
    err = redfish.translate(exc, bmc("10.0.0.5"), "power status")
    assert type(err) is cls and "\n" not in str(err)


def test_connection_error_detail_is_short():
    err = redfish.translate(sx.ConnectionError(url="u", error="HTTPConnectionPool(...): "
                                               "[Errno 111] Connection refused'))"),
                            bmc("10.0.0.5"), "x")
    assert "(Connection refused)" in str(err)


def test_validate_needs_no_network():
    redfish.RedfishDriver().validate(bmc("10.0.0.5"))
    assert "system_id" in redfish.RedfishDriver().get_properties()
