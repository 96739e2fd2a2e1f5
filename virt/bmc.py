"""A simulated IPMI BMC for one guest of the virtual rack.

:class:`VirtBmc` is a ``pyghmi.ipmi.bmc.Bmc`` (pyghmi's IPMI 2.0 server, the
idea of virtualbmc's ``vbmc.py``) whose chassis commands act on a QEMU guest:
power on starts QEMU with the boot order of the current boot device, power
off stops it, soft off presses the ACPI power button, reset and cycle start it
afresh (so a new boot device takes effect).  The boot device is kept in the
node's folder so that ``virt rack status`` can show it.

Its FRU 0 (Get FRU Inventory Area Info, Read FRU Data) holds a product area
as a server's BMC does: vendor, product, the node's serial (the guest's SMBIOS
serial too) and the NIC's MAC as a custom field, which is how ``bmc enroll``
and ``rack up`` learn the machine's identity before it ever boots.

Each BMC runs as its own process (``python -m rackforge.virt.bmc NODE_JSON``)
so that a test can stop one without touching the others.  It binds to the
loopback address in the host's namespace, or (``virt rack up --bmc-network``)
to the rack bridge's address inside the rack's namespace, where the guests
reach it; the password is read from the rack's password file, never from the
command line.
"""

import logging
import signal
import struct
import sys

import pyghmi.ipmi.bmc as ipmi_bmc
import pyghmi.ipmi.private.session as ipmisession

from rackforge.virt.guest import (BOOT_DEVICES, PRODUCT, VENDOR, Guest, GuestSpec,
                                  GuestStartFailed)

LOG = logging.getLogger("rackforge.virt.bmc")

USER = "admin"
# IPMI completion codes
CC_OK = 0
CC_INVALID_DATA = 0xCC
CC_UNSPECIFIED = 0xFF
CC_NOT_SUPPORTED_IN_STATE = 0xD5
CC_NOT_PRESENT = 0xCB
CC_BAD_LENGTH = 0xC7
# IPMI storage commands (IPMI 2.0 section 34)
NETFN_STORAGE = 0x0A
CMD_FRU_AREA_INFO = 0x10
CMD_READ_FRU = 0x11
# RMCP+ (IPMI 2.0 section 13.17 to 13.28)
PAYLOAD_OPEN_SESSION_REQUEST = 0x10
PAYLOAD_OPEN_SESSION_RESPONSE = 0x11
AUTH_RAKP_HMAC_SHA1 = 1
STATUS_INVALID_AUTH_ALGORITHM = 0x11


def open_session_refusal(request):
    """The RMCP+ packet refusing an Open Session Request that asks for an
    authentication algorithm other than RAKP-HMAC-SHA1, or None if it may proceed.

    pyghmi's server always answers with cipher suite 3 (SHA-1) but reports success
    whatever the client proposed, so a client that tries suite 17 (SHA-256) first
    fails in RAKP 2 instead of falling back; a real BMC refuses the proposal.
    ``request`` is the whole datagram.
    """
    if len(request) < 16 + 32 or request[4] != 6 or request[5] & 0x3F != \
            PAYLOAD_OPEN_SESSION_REQUEST:
        return None
    body = request[16:]
    if body[12] & 0x3F == AUTH_RAKP_HMAC_SHA1:
        return None
    payload = bytes([body[0], STATUS_INVALID_AUTH_ALGORITHM, 0, 0]) + bytes(body[4:8])
    return (bytes([0x06, 0x00, 0xFF, 0x07, 0x06, PAYLOAD_OPEN_SESSION_RESPONSE])
            + bytes(8) + struct.pack("<H", len(payload)) + payload)


def _fru_field(text):
    """A type/length byte (8-bit ASCII, at most 63 bytes) and the text."""
    data = text.encode("ascii")
    if len(data) > 63:
        raise ValueError("a FRU field holds at most 63 bytes: %r" % text)
    return bytes([0xC0 | len(data)]) + data


def fru_image(serial, macs, vendor=VENDOR, product=PRODUCT):
    """FRU 0 of a node (IPMI Platform Management FRU Information Storage Definition
    v1.0): the common header and a product info area with ``vendor``, ``product``,
    ``serial`` and each MAC as a custom field, padded to 8 bytes, with checksums."""
    area = bytes([1, 0, 0])     # format version, length (set below), language: English
    for text in (vendor, product, "", "", serial, "", ""):
        # manufacturer, product, part/model, version, serial, asset tag, FRU file id
        area += _fru_field(text)
    for mac in macs:
        area += _fru_field(mac)
    area += b"\xC1"             # no more fields
    while (len(area) + 1) % 8:
        area += b"\x00"
    area = area[:1] + bytes([(len(area) + 1) // 8]) + area[2:]
    area += bytes([-sum(area) & 0xFF])
    header = bytes([1, 0, 0, 0, 1, 0, 0])      # the product area at offset 1 (x 8)
    return header + bytes([-sum(header) & 0xFF]) + area


def fru_response(image, command, data):
    """``(completion code, response data)`` of a FRU command on FRU 0 = ``image``.

    Get FRU Inventory Area Info: the size, byte access.  Read FRU Data: the count
    read and the bytes, as much as asked within the image (none past its end).
    Any other FRU id is not present.
    """
    data = list(data or ())
    if not data:
        return CC_BAD_LENGTH, []
    if data[0] != 0:
        return CC_NOT_PRESENT, []
    if command == CMD_FRU_AREA_INFO:
        return CC_OK, [len(image) & 0xFF, len(image) >> 8, 0]
    if len(data) < 4:
        return CC_BAD_LENGTH, []
    offset, count = data[1] | (data[2] << 8), data[3]
    chunk = image[offset:offset + count]
    return CC_OK, [len(chunk)] + list(chunk)


def read_boot_device(spec):
    try:
        dev = spec.boot_file.read_text().strip()
    except FileNotFoundError:
        return "network"
    return dev if dev in BOOT_DEVICES else "network"


class VirtBmc(ipmi_bmc.Bmc):

    def __init__(self, spec, password, guest=None):
        super().__init__({USER: password}, port=spec.bmc_port, address=spec.bmc_address)
        self.spec = spec
        self.guest = guest or Guest(spec)
        self.fru = fru_image(spec.serial, [spec.mac])

    def sessionless_data(self, data, sockaddr):
        refusal = open_session_refusal(bytes(data))
        if refusal is not None:
            ipmisession._io_sendto(self.serversocket, refusal, sockaddr)
            return
        super().sessionless_data(data, sockaddr)

    def handle_raw_request(self, request, session):
        if request.get("netfn") == NETFN_STORAGE and \
                request.get("command") in (CMD_FRU_AREA_INFO, CMD_READ_FRU):
            code, data = fru_response(self.fru, request["command"], request.get("data"))
            return session.send_ipmi_response(data=data, code=code)
        return super().handle_raw_request(request, session)

    # -- power ---------------------------------------------------------------
    def get_power_state(self):
        return "on" if self.guest.running() else "off"

    def power_on(self):
        if not self.guest.running():
            LOG.info("%s: power on, boot device %s", self.spec.name, self.get_boot_device())
            return self._start()
        return CC_OK

    def _start(self):
        try:
            self.guest.start(self.get_boot_device())
        except GuestStartFailed as e:
            LOG.error("%s", e)
            return CC_UNSPECIFIED
        return CC_OK

    def power_off(self):
        if self.guest.running():
            LOG.info("%s: power off", self.spec.name)
            self.guest.stop()
        return CC_OK

    def power_shutdown(self):
        if not self.guest.running():
            return CC_NOT_SUPPORTED_IN_STATE
        LOG.info("%s: soft power off (ACPI)", self.spec.name)
        try:
            self.guest.shutdown()
        except OSError as e:
            LOG.warning("%s: ACPI power button failed (%s)", self.spec.name, e)
            return CC_NOT_SUPPORTED_IN_STATE
        return CC_OK

    def power_reset(self):
        if not self.guest.running():
            return CC_NOT_SUPPORTED_IN_STATE
        LOG.info("%s: reset", self.spec.name)
        self.guest.stop()
        return self._start()

    def power_cycle(self):
        if not self.guest.running():
            return CC_NOT_SUPPORTED_IN_STATE
        return self.power_reset()

    # -- boot device ---------------------------------------------------------
    def get_boot_device(self):
        return read_boot_device(self.spec)

    def set_boot_device(self, bootdevice):
        if bootdevice not in BOOT_DEVICES:
            # optical, setup, floppy...: the guest has none of them
            raise NotImplementedError(bootdevice)
        LOG.info("%s: boot device %s", self.spec.name, bootdevice)
        self.spec.boot_file.write_text(bootdevice + "\n")

    def is_active(self):
        return self.guest.running()


def _raise_exit(signum, frame):
    raise SystemExit(0)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m rackforge.virt.bmc NODE_JSON", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    spec = GuestSpec.load(argv[0])
    with open(spec.password_file) as f:
        password = f.readline().strip()
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGINT, _raise_exit)
    bmc = VirtBmc(spec, password)
    del password
    LOG.info("%s: BMC on %s:%d (user %s)", spec.name, spec.bmc_address, spec.bmc_port, USER)
    try:
        bmc.listen(timeout=1)
    finally:
        bmc.guest.stop()
        LOG.info("%s: BMC stopped", spec.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
