"""The BMC driver interfaces, in the manner of Ironic's ``drivers/base.py``.

A driver (``Driver``) is a named bundle of four small interfaces:

* :class:`PowerInterface`      on, off, soft off, cycle, reset, status
* :class:`ManagementInterface` next boot device, identify LED, the user's password
* :class:`InventoryInterface`  FRU (vendor, product, serial), GUID, MACs, sensors
* :class:`ConsoleInterface`    serial console attach and capture

Each method takes a :class:`BMC` (where and how to reach one BMC) and performs
one action, once.  Retries, timeouts and parallelism belong to
:mod:`rackforge.bmc.parallel`; the one exception is
:meth:`PowerInterface.change_power`, which owns the "did the state really
change?" check for every driver (MAAS's ``PowerDriver`` idea).

``validate()`` is fast and never touches the BMC; ``get_properties()``
documents every setting a driver reads, and :data:`COMMON_PROPERTIES` those
shared by all of them.
"""

import abc
import time
from dataclasses import dataclass, field

from rackforge.bmc import errors

POWER_ON = "on"
POWER_OFF = "off"
POWER_ACTIONS = ("on", "off", "soft-off", "cycle", "reset")
BOOT_DEVICES = ("pxe", "disk", "cdrom", "bios")

# Setting name -> (help, required).  Secret settings are listed in SECRET_SETTINGS;
# they never appear in a repr, a log line or an error message.
COMMON_PROPERTIES = {
    "address": ("host name or IP address of the BMC", True),
    "port": ("UDP/TCP port of the BMC (driver default if unset)", False),
    "username": ("BMC user name", True),
    "password": ("BMC password (secret; stored encrypted in the registry)", True),
}
SECRET_SETTINGS = ("password",)


@dataclass
class BMC:
    """How to reach one BMC.  The password never shows in ``repr``."""

    address: str
    username: str = ""
    password: str = field(default="", repr=False)
    port: int = None
    driver: str = "ipmi"
    node: str = None           # node name, for messages
    insecure: bool = False     # allow null passwords / anonymous users / no TLS check
    options: dict = field(default_factory=dict)   # driver-specific settings

    @property
    def label(self):
        """``node (ADDR:PORT)`` or ``ADDR:PORT``: what error lines call this BMC."""
        where = self.address if self.port is None else "%s:%s" % (self.address, self.port)
        return "%s (%s)" % (self.node, where) if self.node else where

    def secrets(self):
        return [self.password] if self.password else []


@dataclass
class Inventory:
    """What a BMC says about its machine; plain data, JSON-serialisable."""

    vendor: str = None
    product: str = None
    serial: str = None
    guid: str = None
    macs: list = field(default_factory=list)
    bmc_mac: str = None
    sensors: list = field(default_factory=list)   # [{"name", "value", "units", "health"}]
    extra: dict = field(default_factory=dict)

    def as_dict(self):
        return {"vendor": self.vendor, "product": self.product, "serial": self.serial,
                "guid": self.guid, "macs": list(self.macs), "bmc_mac": self.bmc_mac,
                "sensors": list(self.sensors), "extra": dict(self.extra)}


class BaseInterface(abc.ABC):
    """Shared by every interface: its settings and their fast validation."""

    #: driver-specific settings: name -> (help, required)
    properties = {}

    def get_properties(self):
        """Every setting this interface reads, with its help text.

        :returns: dict of setting name -> (help, required)
        """
        return dict(COMMON_PROPERTIES, **self.properties)

    def validate(self, bmc):
        """Check ``bmc``'s settings without talking to the BMC.

        :raises: MissingSetting, InvalidSetting, InsecureRefused
        """
        driver = bmc.driver
        if not bmc.address:
            raise errors.MissingSetting(driver=driver, setting="address",
                                        help=COMMON_PROPERTIES["address"][0])
        if bmc.port is not None and not (isinstance(bmc.port, int) and 0 < bmc.port < 65536):
            raise errors.InvalidSetting(driver=driver, setting="port", value=bmc.port,
                                        why="a number from 1 to 65535")
        if not bmc.insecure:
            if not bmc.username:
                raise errors.InsecureRefused(what="an anonymous login", bmc=bmc.label)
            if not bmc.password:
                raise errors.InsecureRefused(what="an empty password", bmc=bmc.label)
        for name, (help_, required) in self.properties.items():
            if required and name not in bmc.options:
                raise errors.MissingSetting(driver=driver, setting=name, help=help_)


class PowerInterface(BaseInterface):

    @abc.abstractmethod
    def get_power_state(self, bmc):
        """:returns: ``"on"`` or ``"off"``.  :raises: BMCError"""

    @abc.abstractmethod
    def set_power_state(self, bmc, action):
        """Ask for ``action`` (one of :data:`POWER_ACTIONS`) once; do not wait.

        :raises: BMCError
        """

    def change_power(self, bmc, action, timeout=30.0, poll=1.0, clock=time.monotonic,
                     sleep=time.sleep):
        """Perform ``action`` and wait until the node really is in the expected state.

        ``on``, ``cycle`` and ``reset`` end powered on; ``off`` and
        ``soft-off`` end powered off.  ``on``, ``off`` and ``soft-off`` are
        skipped when the node is already there (a BMC may refuse a redundant
        request); ``cycle`` and ``reset`` of a node that is off power it on.

        :returns: the final power state
        :raises: PowerStateNotReached (retryable) or the driver's BMCError
        """
        if action not in POWER_ACTIONS:
            raise errors.BMCConfigError(detail="unknown power action '%s'" % action)
        want = POWER_OFF if action in ("off", "soft-off") else POWER_ON
        state = self.get_power_state(bmc)
        if action in ("on", "off", "soft-off") and state == want:
            return want
        if action in ("cycle", "reset") and state == POWER_OFF:
            action = "on"       # a cycle or reset of a node that is off powers it on
        self.set_power_state(bmc, action)
        deadline = clock() + timeout
        while True:
            state = self.get_power_state(bmc)
            if state == want:
                return state
            if clock() >= deadline:
                raise errors.PowerStateNotReached(bmc=bmc.label, action=action, actual=state,
                                                  seconds=timeout)
            sleep(min(poll, max(0.0, deadline - clock())))


class ManagementInterface(BaseInterface):

    @abc.abstractmethod
    def set_boot_device(self, bmc, device, persistent=False, uefi=False):
        """Boot from ``device`` (one of :data:`BOOT_DEVICES`) next time (or always).

        :raises: BMCError
        """

    @abc.abstractmethod
    def get_boot_device(self, bmc):
        """:returns: dict ``{"device": one of BOOT_DEVICES or None, "persistent": bool|None,
        "uefi": bool|None}`` as far as the BMC reports it.  :raises: BMCError"""

    def set_identify(self, bmc, on=True):
        """Light (or clear) the chassis identify LED.  :raises: BMCError"""
        raise errors.BMCUnsupported(bmc=bmc.label, action="identify",
                                    detail="not implemented by the %s driver" % bmc.driver)

    def set_user_password(self, bmc, password):
        """Give the user ``bmc`` logs in as the new ``password`` (``bmc.password`` is the
        one in force).  The new password never appears in an error or a log line.

        :raises: BMCError
        """
        raise errors.BMCUnsupported(bmc=bmc.label, action="set user password",
                                    detail="not implemented by the %s driver" % bmc.driver)


class InventoryInterface(BaseInterface):

    @abc.abstractmethod
    def get_inventory(self, bmc):
        """:returns: :class:`Inventory`.  :raises: BMCError"""


class ConsoleInterface(BaseInterface):

    def attach(self, bmc, stdin, stdout, log=None, escape=b"~."):
        """Connect the serial console to ``stdin``/``stdout`` (binary streams) until
        ``escape`` is typed or the BMC closes it; copy the output to ``log`` (a
        binary file) too.  :raises: BMCError
        """
        raise errors.BMCUnsupported(bmc=bmc.label, action="console",
                                    detail="no serial console in the %s driver" % bmc.driver)

    def capture(self, bmc, log, seconds):
        """Copy the console output to ``log`` for ``seconds``.

        :returns: the number of bytes captured.  :raises: BMCError
        """
        raise errors.BMCUnsupported(bmc=bmc.label, action="console",
                                    detail="no serial console in the %s driver" % bmc.driver)


class NoConsole(ConsoleInterface):
    """For drivers without a serial console."""


class Driver:
    """A named bundle of interfaces (Ironic's hardware type, reduced)."""

    name = None
    default_port = None
    protocol = "the BMC protocol"

    def __init__(self, power, management, inventory, console=None):
        self.power = power
        self.management = management
        self.inventory = inventory
        self.console = console or NoConsole()

    def interfaces(self):
        return (self.power, self.management, self.inventory, self.console)

    def get_properties(self):
        props = {}
        for iface in self.interfaces():
            props.update(iface.get_properties())
        return props

    def validate(self, bmc):
        """Fast check of every interface's settings; never touches the BMC."""
        for iface in self.interfaces():
            iface.validate(bmc)

    def close(self):
        """Release sessions and sockets (optional)."""
