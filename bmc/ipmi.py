"""The IPMI driver: IPMI 2.0 over LAN (RMCP+, "lanplus") through pyghmi.

Cipher suites: pyghmi negotiates RAKP-HMAC-SHA256 with AES (suite 17) first
and falls back to RAKP-HMAC-SHA1 with AES (suite 3); it never offers suite 0
(no authentication), so neither does rackforge.  ``insecure`` only allows
empty passwords and the anonymous user.

pyghmi keeps one logged-in session per (BMC, user, password, port) in its own
table and runs its own I/O thread; a :class:`pyghmi.ipmi.command.Command`
created for a BMC that already has a session reuses it, so this driver
creates one per call and caches nothing itself.

Library errors are translated once, here, by :data:`IPMI_ERRORS` (MAAS's
table idea): the first entry whose text appears in pyghmi's message decides
the operator sentence and whether the action may be retried.
"""

import logging

from rackforge.bmc import base, errors

LOG = logging.getLogger(__name__)

DEFAULT_PORT = 623
#: a Set User Password request carries 16 bytes (20 with the IPMI 2.0 flag, which not
#: every BMC takes): passwords rackforge sets stay within 16
MAX_PASSWORD = 16

# pyghmi message fragment (lower case) -> error class.  Order matters.
IPMI_ERRORS = (
    ("incorrect password", errors.BMCAuthFailed),
    ("unauthorized name", errors.BMCAuthFailed),
    ("invalid rakp4 integrity", errors.BMCAuthFailed),
    ("insufficient privilege", errors.BMCAuthFailed),
    ("unauthorized role", errors.BMCAuthFailed),
    ("password is too long", errors.BMCAuthFailed),
    ("node busy", errors.BMCBusy),
    ("out of space", errors.BMCBusy),
    ("timeout", errors.BMCUnreachable),
    ("no longer connected", errors.BMCUnreachable),
    ("session disconnected", errors.BMCUnreachable),
    ("failed to initialize", errors.BMCUnreachable),
    ("unable to transmit", errors.BMCUnreachable),
    ("invalid command", errors.BMCUnsupported),
    ("invalid data field", errors.BMCUnsupported),
    ("not supported", errors.BMCUnsupported),
)

# rackforge boot device -> pyghmi's name, and back
BOOT_TO_PYGHMI = {"pxe": "network", "disk": "hd", "cdrom": "optical", "bios": "setup"}
PYGHMI_TO_BOOT = {"network": "pxe", "hd": "disk", "safe": "disk", "optical": "cdrom",
                  "setup": "bios", "default": None}


def translate(exc, bmc, action):
    """The :class:`BMCError` for a pyghmi (or socket) exception; never holds the password."""
    from pyghmi import exceptions as pyghmi_exc

    detail = errors.redact(str(exc) if str(exc) not in ("", "None") else "no answer",
                           bmc.secrets())
    if isinstance(exc, errors.BMCError):
        return exc
    if isinstance(exc, pyghmi_exc.InvalidParameterValue):
        return errors.BMCConfigError(detail="BMC %s: %s" % (bmc.label, detail))
    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
        return errors.BMCUnreachable(bmc=bmc.label, detail=detail, protocol="IPMI over LAN")
    low = detail.lower()
    cls = errors.BMCCommandFailed
    if detail == "no answer":
        cls = errors.BMCUnreachable
    for fragment, candidate in IPMI_ERRORS:
        if fragment in low:
            cls = candidate
            break
    return cls(bmc=bmc.label, detail=detail, action=action, user=bmc.username,
               protocol="IPMI over LAN")


def _credentials(bmc):
    """User and password as bytes.

    pyghmi keys its table of sessions being set up by the values it is given
    but removes the entry with their encoded form: with ``str`` credentials the
    entry stays, and the next command object for the same BMC waits forever
    for a login that already finished.  With ``bytes`` both keys agree and the
    logged-in session is shared as intended.
    """
    return bmc.username.encode("utf-8"), bmc.password.encode("utf-8")


def _open(bmc):
    """A pyghmi command object for ``bmc``, logged in.

    pyghmi 1.6 can mark a session broken while it logs in without saying why (a
    logout from its own thread races the login), then fails on the reason it never
    set: ``AttributeError: 'Session' object has no attribute 'errormsg'`` (seen with a
    wrong password while another BMC was reached in parallel).  The login is tried once
    more, and that one says why (a wrong password is then one clear line)."""
    from pyghmi.ipmi import command

    for attempt in (1, 2):
        try:
            return command.Command(bmc.address, *_credentials(bmc),
                                   port=bmc.port or DEFAULT_PORT)
        except AttributeError as e:
            if "errormsg" not in str(e) or attempt == 2:
                raise


class _IPMIBase:
    """Opens a pyghmi command object per call and translates its errors."""

    def _call(self, bmc, action, fn):
        from pyghmi import exceptions as pyghmi_exc

        try:
            return fn(_open(bmc))
        except (pyghmi_exc.PyghmiException, OSError) as e:
            raise translate(e, bmc, action) from None


class IPMIPower(_IPMIBase, base.PowerInterface):

    def get_power_state(self, bmc):
        state = self._call(bmc, "power status", lambda c: c.get_power()["powerstate"])
        return base.POWER_ON if state == "on" else base.POWER_OFF

    def set_power_state(self, bmc, action):
        def act(cmd):
            if action == "cycle":
                if cmd.get_power()["powerstate"] == "off":
                    return cmd.set_power("on")
                # chassis control 2: power cycle (off, pause, on) in the BMC itself
                rsp = cmd.raw_command(netfn=0, command=2, data=(2,))
                if "error" in rsp:
                    from pyghmi import exceptions as pyghmi_exc
                    raise pyghmi_exc.IpmiException(rsp["error"])
                return rsp
            return cmd.set_power({"soft-off": "shutdown"}.get(action, action))

        if action not in base.POWER_ACTIONS:
            raise errors.BMCConfigError(detail="unknown power action '%s'" % action)
        self._call(bmc, "power " + action, act)


class IPMIManagement(_IPMIBase, base.ManagementInterface):

    def set_boot_device(self, bmc, device, persistent=False, uefi=False):
        if device not in BOOT_TO_PYGHMI:
            raise errors.InvalidSetting(driver="ipmi", setting="boot device", value=device,
                                        why="one of " + ", ".join(base.BOOT_DEVICES))

        def act(cmd):
            rsp = cmd.set_bootdev(BOOT_TO_PYGHMI[device], persist=persistent, uefiboot=uefi)
            if isinstance(rsp, dict) and "error" in rsp:
                from pyghmi import exceptions as pyghmi_exc
                raise pyghmi_exc.IpmiException(rsp["error"])
        self._call(bmc, "boot-device " + device, act)

    def get_boot_device(self, bmc):
        rsp = self._call(bmc, "get boot-device", lambda c: c.get_bootdev())
        dev = rsp.get("bootdev")
        return {"device": PYGHMI_TO_BOOT.get(dev, dev), "persistent": rsp.get("persistent"),
                "uefi": rsp.get("uefimode")}

    def set_identify(self, bmc, on=True):
        self._call(bmc, "identify", lambda c: c.set_identify(on=on))

    def set_user_password(self, bmc, password):
        """Set Password (IPMI 2.0, 22.30) for the user id of ``bmc.username`` on the LAN
        channel; at most :data:`MAX_PASSWORD` bytes."""
        if not 0 < len(password.encode("utf-8")) <= MAX_PASSWORD:
            raise errors.BMCConfigError(detail="BMC %s: a new IPMI password has 1 to %d bytes"
                                        % (bmc.label, MAX_PASSWORD))

        def act(cmd):
            uids = cmd.get_name_uids(bmc.username)
            if not uids:
                raise errors.BMCUnsupported(bmc=bmc.label, action="set user password",
                                            detail="the BMC lists no user named as the login")
            cmd.set_user_password(uids[0], mode="set_password", password=password)
        try:
            self._call(bmc, "set user password", act)
        except errors.BMCError as exc:
            # a library that echoed the new password back loses it here
            raise type(exc)(errors.redact(exc, [password])) from None


class IPMIInventory(_IPMIBase, base.InventoryInterface):

    def get_inventory(self, bmc):
        return self._call(bmc, "inventory", lambda c: self._read(bmc, c))

    def _read(self, bmc, cmd):
        from pyghmi import exceptions as pyghmi_exc
        from pyghmi.ipmi.private import util

        inv = base.Inventory()

        def part(name, fn):
            # A BMC without FRU, SDR or LAN parameters still gives the rest.
            try:
                return fn()
            except (pyghmi_exc.PyghmiException, KeyError, ValueError, TypeError) as e:
                LOG.debug("%s: no %s: %s", bmc.label, name,
                          errors.redact(e, bmc.secrets()))
                inv.extra.setdefault("missing", []).append(name)
                return None

        fru = part("fru", lambda: self._zero_fru(cmd)) or {}
        inv.vendor = fru.get("Manufacturer") or fru.get("Board manufacturer")
        inv.product = fru.get("Product name") or fru.get("Board product name")
        inv.serial = fru.get("Serial Number") or fru.get("Board serial number")
        inv.guid = fru.get("UUID")
        if not inv.guid:
            rsp = part("guid", lambda: cmd.raw_command(netfn=6, command=0x37))
            if rsp and "error" not in rsp and len(rsp.get("data", ())) == 16:
                inv.guid = util.decode_wireformat_uuid(rsp["data"])
        inv.macs = find_macs(fru)
        net = part("lan", lambda: cmd.get_net_configuration()) or {}
        inv.bmc_mac = net.get("mac_address")
        sensors = part("sensors", lambda: [
            {"name": r.name, "value": r.value, "units": r.units,
             "health": str(r.health)} for r in cmd.get_sensor_data()]) or []
        inv.sensors = sensors
        for key in ("Device ID", "Manufacturer ID", "Product ID", "Firmware Version"):
            if key in fru:
                inv.extra[key] = fru[key] if isinstance(fru[key], (int, str)) else str(fru[key])
        return inv

    @staticmethod
    def _zero_fru(cmd):
        """FRU 0 through pyghmi; if the BMC refuses pyghmi's read size (OpenIPMI's
        simulator answers 0xC8, which pyghmi does not back off on), read it again in
        chunks that halve until the BMC accepts them."""
        from pyghmi import exceptions as pyghmi_exc
        from pyghmi.ipmi import fru

        try:
            return cmd.get_inventory_of_component("System")
        except pyghmi_exc.IpmiException as e:
            if "length" not in str(e).lower():
                raise
        return fru.FRU(rawdata=read_fru_chunked(cmd, 0)).info or {}


def read_fru_chunked(cmd, fruid, chunk=224):
    """The raw bytes of FRU ``fruid``, read with Read FRU Data in shrinking chunks."""
    from pyghmi import exceptions as pyghmi_exc

    rsp = cmd.raw_command(netfn=0xA, command=0x10, data=[fruid])
    if "error" in rsp:
        raise pyghmi_exc.IpmiException(rsp["error"], rsp.get("code"))
    size = rsp["data"][0] | (rsp["data"][1] << 8)
    data = bytearray()
    while len(data) < size:
        count = min(chunk, size - len(data))
        off = len(data)
        rsp = cmd.raw_command(netfn=0xA, command=0x11,
                              data=[fruid, off & 0xFF, off >> 8, count])
        if rsp.get("code") in (0xC8, 0xC9, 0xCA) and chunk > 8:
            chunk //= 2
            continue
        if "error" in rsp:
            raise pyghmi_exc.IpmiException(rsp["error"], rsp.get("code"))
        got = rsp["data"][0]
        if got == 0:
            break
        data.extend(rsp["data"][1:1 + got])
    return bytes(data)


def find_macs(fru):
    """MAC addresses in a parsed FRU: fields named like MACs, and extra fields that are one."""
    import re
    pattern = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}\Z")
    values = []
    for key, value in fru.items():
        if isinstance(value, list):
            values.extend(v for v in value if isinstance(v, str))
        elif isinstance(value, str) and "mac" in key.lower():
            values.append(value)
    return sorted({v.strip().lower().replace("-", ":") for v in values
                   if pattern.match(v.strip())})


class IPMIConsole(_IPMIBase, base.ConsoleInterface):
    """Serial over LAN (SOL) through pyghmi's console."""

    def _open(self, bmc, out):
        from pyghmi import exceptions as pyghmi_exc
        from pyghmi.ipmi import console

        state = {"error": None}

        def handler(data):
            if isinstance(data, dict):          # pyghmi reports errors as dicts
                state["error"] = data.get("error")
                return
            out(data if isinstance(data, bytes) else data.encode("utf-8", "replace"))

        try:
            sol = console.Console(bmc.address, *_credentials(bmc), handler,
                                  port=bmc.port or DEFAULT_PORT, force=True)
        except (pyghmi_exc.PyghmiException, OSError) as e:
            raise translate(e, bmc, "console") from None
        return sol, state

    def capture(self, bmc, log, seconds):
        import time
        from pyghmi.ipmi.private import session

        count = [0]

        def out(data):
            log.write(data)
            log.flush()
            count[0] += len(data)

        sol, state = self._open(bmc, out)
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline and not state["error"]:
                session.Session.wait_for_rsp(timeout=min(0.5, deadline - time.monotonic()))
        finally:
            sol.close()
        if state["error"] and not count[0]:
            raise translate(Exception(state["error"]), bmc, "console")
        return count[0]

    def attach(self, bmc, stdin, stdout, log=None, escape=b"~."):
        import os
        import select
        from pyghmi.ipmi.private import session

        def out(data):
            stdout.write(data)
            stdout.flush()
            if log:
                log.write(data)
                log.flush()

        sol, state = self._open(bmc, out)
        fd = stdin.fileno()
        recent = b""
        try:
            while not state["error"]:
                session.Session.wait_for_rsp(timeout=0.1)
                ready, _, _ = select.select([fd], [], [], 0.1)
                if not ready:
                    continue
                data = os.read(fd, 1024)
                if not data:
                    break
                recent = (recent + data)[-len(escape):]
                if recent == escape:
                    break
                sol.send_data(data)
        finally:
            sol.close()
        if state["error"]:
            raise translate(Exception(state["error"]), bmc, "console")


class IPMIDriver(base.Driver):
    name = "ipmi"
    default_port = DEFAULT_PORT
    protocol = "IPMI over LAN"

    def __init__(self):
        super().__init__(IPMIPower(), IPMIManagement(), IPMIInventory(), IPMIConsole())
