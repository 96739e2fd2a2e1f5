"""The node's own BMC over the in-band interface: its LAN settings and a user's password.

From the node's console an operator fixes a BMC nobody can reach over the
network (a wrong address, a lost password).  pyghmi talks to the BMC through
the kernel's IPMI device (``/dev/ipmi0``, the ``ipmi_si`` and ``ipmi_devintf``
modules) with the same commands it sends over the LAN, so nothing here is
specific to the in-band path but the session (:func:`local_command`).

``GET /v1/bmc``: the LAN channel's address (with prefix), how it is set
(static, DHCP), gateway, MAC, VLAN.  ``POST /v1/bmc`` ``{"address": A/P,
"gateway": G}`` or ``{"dhcp": true}``; ``POST /v1/bmc/password`` ``{"user":
ID, "password": P}``.  Every value is checked before the BMC is touched, each
change is one line in the journal (never the password), and the password
travels only in the body of a request on the root-only socket.
"""

import ipaddress
import logging

from rackforge import errors

LOG = logging.getLogger(__name__)
IPMI_DEVICE = "/dev/ipmi0"
PASSWORD_MIN, PASSWORD_MAX = 8, 20          # IPMI 2.0 passwords are 16 or 20 bytes


class BmcRefused(errors.ConfigError):
    message = "BMC settings refused: {why}"


class BmcUnavailable(errors.RackforgeError):
    message = "the node's BMC over the in-band interface: {detail}"
    retryable = True


def local_command():
    """A pyghmi command on the in-band interface (or :class:`BmcUnavailable`)."""
    import os
    if not os.path.exists(IPMI_DEVICE):
        raise BmcUnavailable(detail="%s is missing: this machine has no BMC, or the "
                                    "ipmi_si and ipmi_devintf modules are not loaded"
                             % IPMI_DEVICE)
    from pyghmi.ipmi import command
    try:
        return command.Command()
    except Exception as exc:        # noqa: BLE001 - pyghmi raises plain exceptions
        raise BmcUnavailable(detail=str(exc) or type(exc).__name__) from None


class InbandBmc:
    """The three calls of the local API; ``command``: a factory of pyghmi commands."""

    def __init__(self, command=local_command):
        self.command = command

    def _call(self, what, *args, **kwargs):
        ipmi = self.command()
        try:
            return getattr(ipmi, what)(*args, **kwargs)
        except errors.RackforgeError:
            raise
        except Exception as exc:    # noqa: BLE001 - an IPMI completion code, a timeout
            raise BmcUnavailable(detail="%s: %s" % (what, str(exc) or type(exc).__name__)) \
                from None

    def state(self):
        cfg = self._call("get_net_configuration", gateway_macs=False)
        return {"address": cfg.get("ipv4_address"),
                "mode": (cfg.get("ipv4_configuration") or "").lower() or None,
                "gateway": cfg.get("ipv4_gateway"), "mac": cfg.get("mac_address"),
                "vlan": cfg.get("vlan_id")}

    def set_network(self, body):
        if not isinstance(body, dict):
            raise BmcRefused(why="the body must be a JSON object")
        unknown = sorted(set(body) - {"address", "gateway", "dhcp"})
        if unknown:
            raise BmcRefused(why="unknown field %r; the fields are address, gateway, dhcp"
                             % str(unknown[0])[:40])
        if body.get("dhcp") is True:
            if body.get("address") or body.get("gateway"):
                raise BmcRefused(why="DHCP gives the address and gateway; send only dhcp")
            self._call("set_net_configuration", ipv4_configuration="DHCP")
            LOG.warning("console: BMC set to DHCP")
            return self.state()
        try:
            address = ipaddress.IPv4Interface(str(body.get("address")))
        except ValueError:
            raise BmcRefused(why="address must be an IPv4 address with its prefix, like "
                                 "10.1.0.12/24") from None
        if "/" not in str(body.get("address")) or address.network.prefixlen in (0, 32):
            raise BmcRefused(why="address needs its prefix, like 10.1.0.12/24")
        gateway = body.get("gateway") or None
        if gateway is not None:
            try:
                gw = ipaddress.IPv4Address(str(gateway))
            except ValueError:
                raise BmcRefused(why="gateway must be an IPv4 address, or empty") from None
            if gw not in address.network or gw == address.ip:
                raise BmcRefused(why="gateway %s is not another host of %s"
                                 % (gw, address.network))
        self._call("set_net_configuration", ipv4_address=str(address),
                   ipv4_configuration="Static",
                   ipv4_gateway=str(gateway) if gateway else "0.0.0.0")   # none: cleared
        LOG.warning("console: BMC address set to %s%s", address,
                    ", gateway %s" % gateway if gateway else "")
        return self.state()

    def set_password(self, body):
        if not isinstance(body, dict):
            raise BmcRefused(why="the body must be a JSON object")
        user, password = body.get("user"), body.get("password")
        if isinstance(user, bool) or not isinstance(user, int) or not 1 <= user <= 63:
            raise BmcRefused(why="user must be the BMC user's number (1-63; 2 is often "
                                 "the administrator)")
        if not isinstance(password, str) or not PASSWORD_MIN <= len(password) <= \
                PASSWORD_MAX or not password.isascii() or not password.isprintable():
            raise BmcRefused(why="the password must be %d to %d printable ASCII characters"
                             % (PASSWORD_MIN, PASSWORD_MAX))
        self._call("set_user_password", user, password=password)
        LOG.warning("console: BMC user %d's password changed", user)
        return {"user": user, "changed": True}
