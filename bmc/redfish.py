"""The Redfish driver, through sushy.

The BMC's address is a host (``https://HOST[:PORT]`` is used) or a full base
URL (``http://127.0.0.1:8000``).  TLS certificates are checked unless
``insecure``, or against the CA file in the ``verify_ca`` option.  The system
is the ``system_id`` option (a Redfish path or a member id), or the only (or
first) member of the Systems collection.

sushy's errors are translated once, by :data:`REDFISH_ERRORS`.  There is no
serial console in Redfish's core schema, so :class:`NoConsole` stands in.
"""

import logging
import re

from rackforge.bmc import base, errors

LOG = logging.getLogger(__name__)

DEFAULT_PORT = 443

BOOT_TO_REDFISH = {"pxe": "Pxe", "disk": "Hdd", "cdrom": "Cd", "bios": "BiosSetup"}
REDFISH_TO_BOOT = {v: k for k, v in BOOT_TO_REDFISH.items()}
POWER_TO_RESET = {"on": "On", "off": "ForceOff", "soft-off": "GracefulShutdown",
                  "cycle": "PowerCycle", "reset": "ForceRestart"}


def base_url(bmc):
    if "://" in bmc.address:
        return bmc.address.rstrip("/")
    host = "[%s]" % bmc.address if ":" in bmc.address else bmc.address
    return "https://%s%s" % (host, ":%d" % bmc.port if bmc.port else "")


def _error_table():
    from sushy import exceptions as sx
    # (exception class, rackforge error class); first match wins
    return (
        (sx.AccessError, errors.BMCAuthFailed),
        (sx.ConnectionError, errors.BMCUnreachable),
        (sx.ResourceNotFoundError, errors.BMCConfigError),
        (sx.MissingActionError, errors.BMCUnsupported),
        (sx.InvalidParameterValueError, errors.BMCUnsupported),
        (sx.BadRequestError, errors.BMCUnsupported),
        (sx.ServerSideError, errors.BMCBusy),
        (sx.SushyError, errors.BMCCommandFailed),
    )


def translate(exc, bmc, action):
    from sushy import exceptions as sx

    if isinstance(exc, errors.BMCError):
        return exc
    detail = errors.redact(getattr(exc, "message", None) or str(exc) or type(exc).__name__,
                           bmc.secrets())
    detail = " ".join(detail.split())[:300]
    if isinstance(exc, sx.AccessError):
        detail = "HTTP %s" % getattr(exc, "status_code", "401/403")
    elif isinstance(exc, sx.ConnectionError):
        found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", detail)
        detail = found.group(1).strip() if found else "no connection"
    for cls, ours in _error_table():
        if isinstance(exc, cls):
            if ours is errors.BMCConfigError:
                return ours(detail="BMC %s: %s; check the system_id setting" %
                            (bmc.label, detail))
            return ours(bmc=bmc.label, detail=detail, action=action, user=bmc.username,
                        protocol="Redfish (HTTPS)")
    return errors.BMCCommandFailed(bmc=bmc.label, action=action, detail=detail)


class _RedfishBase:
    properties = {
        "system_id": ("Redfish system path or id (default: the first system)", False),
        "verify_ca": ("CA bundle file to check the BMC's certificate with", False),
    }

    def _call(self, bmc, action, fn):
        import sushy
        from sushy import exceptions as sx

        verify = False if bmc.insecure else bmc.options.get("verify_ca", True)
        if verify is False:
            import urllib3
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        try:
            conn = sushy.Sushy(base_url(bmc), username=bmc.username, password=bmc.password,
                               verify=verify, server_side_retries=2,
                               server_side_retries_delay=1, read_timeout=20,
                               connect_timeout=5)
            return fn(self._system(conn, bmc))
        except (sx.SushyError, OSError) as e:
            raise translate(e, bmc, action) from None

    @staticmethod
    def _system(conn, bmc):
        sid = bmc.options.get("system_id")
        if sid and not sid.startswith("/"):
            sid = "/redfish/v1/Systems/" + sid
        if sid:
            return conn.get_system(sid)
        members = conn.get_system_collection().members_identities
        if not members:
            raise errors.BMCUnsupported(bmc=bmc.label, action="find system",
                                        detail="the Systems collection is empty")
        return conn.get_system(sorted(members)[0])


class RedfishPower(_RedfishBase, base.PowerInterface):

    def get_power_state(self, bmc):
        import sushy
        state = self._call(bmc, "power status", lambda s: s.power_state)
        # Powering on/off is reported as where it is heading not yet reached
        return base.POWER_ON if state == sushy.PowerState.ON else base.POWER_OFF

    def set_power_state(self, bmc, action):
        import sushy
        if action not in POWER_TO_RESET:
            raise errors.BMCConfigError(detail="unknown power action '%s'" % action)
        reset = sushy.ResetType(POWER_TO_RESET[action])
        self._call(bmc, "power " + action, lambda s: s.reset_system(reset))


class RedfishManagement(_RedfishBase, base.ManagementInterface):

    def set_boot_device(self, bmc, device, persistent=False, uefi=False):
        import sushy
        if device not in BOOT_TO_REDFISH:
            raise errors.InvalidSetting(driver="redfish", setting="boot device", value=device,
                                        why="one of " + ", ".join(base.BOOT_DEVICES))
        enabled = (sushy.BootSourceOverrideEnabled.CONTINUOUS if persistent
                   else sushy.BootSourceOverrideEnabled.ONCE)
        mode = sushy.BootSourceOverrideMode.UEFI if uefi else None
        self._call(bmc, "boot-device " + device, lambda s: s.set_system_boot_options(
            target=sushy.BootSource(BOOT_TO_REDFISH[device]), enabled=enabled, mode=mode))

    def get_boot_device(self, bmc):
        def read(system):
            boot = system.boot
            target = getattr(boot.target, "value", boot.target)
            enabled = getattr(boot.enabled, "value", boot.enabled)
            mode = getattr(boot.mode, "value", boot.mode)
            return {"device": REDFISH_TO_BOOT.get(target),
                    "persistent": enabled == "Continuous" if enabled else None,
                    "uefi": mode == "UEFI" if mode else None}
        return self._call(bmc, "get boot-device", read)

    def set_identify(self, bmc, on=True):
        import sushy
        state = sushy.IndicatorLED.LIT if on else sushy.IndicatorLED.OFF
        self._call(bmc, "identify", lambda s: s.set_indicator_led(state))


class RedfishInventory(_RedfishBase, base.InventoryInterface):

    def get_inventory(self, bmc):
        def read(system):
            inv = base.Inventory(vendor=system.manufacturer, product=system.model,
                                 serial=system.serial_number, guid=system.uuid)
            try:
                inv.macs = sorted({m.lower() for m in system.ethernet_interfaces.summary})
            except Exception as e:     # optional in the schema
                LOG.debug("%s: no ethernet interfaces: %s", bmc.label, e)
                inv.extra.setdefault("missing", []).append("macs")
            inv.extra["redfish_system"] = system.path
            inv.extra["name"] = system.name
            return inv
        return self._call(bmc, "inventory", read)


class RedfishDriver(base.Driver):
    name = "redfish"
    default_port = DEFAULT_PORT
    protocol = "Redfish (HTTPS)"

    def __init__(self):
        super().__init__(RedfishPower(), RedfishManagement(), RedfishInventory())
