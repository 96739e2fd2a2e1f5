"""A fake BMC driver, registered like the real ones, for unit tests and dry runs.

Its machines live in a :class:`FakeRack` (one per driver instance, never at
module level): power and boot device change when asked, and faults can be
scripted per address: ``rack.faults["10.0.0.5"] = [BMCUnreachable, None]``
makes the next call fail once, then pass.  ``rack.calls`` records every
action, for asserting what the caller did.
"""

import threading

from rackforge.bmc import base, errors


class FakeRack:
    def __init__(self):
        self.lock = threading.Lock()
        self.power = {}          # address -> "on" | "off"
        self.boot = {}           # address -> {"device", "persistent", "uefi"}
        self.identify = {}
        self.passwords = {}      # address -> the password the BMC accepts (None: any)
        self.faults = {}         # address -> [exception class or None, ...]
        self.sticky_power = set()   # addresses whose power never changes
        self.calls = []

    def check(self, bmc, action):
        with self.lock:
            self.calls.append((bmc.address, action))
            want = self.passwords.get(bmc.address)
            if want is not None and bmc.password != want:
                raise errors.BMCAuthFailed(bmc=bmc.label, user=bmc.username,
                                           detail="incorrect password")
            queue = self.faults.get(bmc.address)
            fault = queue.pop(0) if queue else None
        if fault is not None:
            if issubclass(fault, errors.BMCTimeout):
                raise fault(bmc=bmc.label, action=action, seconds=1)
            raise fault(bmc=bmc.label, action=action, detail="injected fault",
                        protocol="fake", user=bmc.username)


class _FakeBase:
    def __init__(self, rack):
        self.rack = rack


class FakePower(_FakeBase, base.PowerInterface):
    def get_power_state(self, bmc):
        self.rack.check(bmc, "power status")
        return self.rack.power.get(bmc.address, base.POWER_OFF)

    def set_power_state(self, bmc, action):
        self.rack.check(bmc, "power " + action)
        if bmc.address in self.rack.sticky_power:
            return
        off = action in ("off", "soft-off")
        self.rack.power[bmc.address] = base.POWER_OFF if off else base.POWER_ON


class FakeManagement(_FakeBase, base.ManagementInterface):
    def set_boot_device(self, bmc, device, persistent=False, uefi=False):
        if device not in base.BOOT_DEVICES:
            raise errors.InvalidSetting(driver="fake", setting="boot device", value=device,
                                        why="one of " + ", ".join(base.BOOT_DEVICES))
        self.rack.check(bmc, "boot-device " + device)
        self.rack.boot[bmc.address] = {"device": device, "persistent": persistent,
                                       "uefi": uefi}

    def get_boot_device(self, bmc):
        self.rack.check(bmc, "get boot-device")
        return dict(self.rack.boot.get(bmc.address, {"device": None, "persistent": None,
                                                     "uefi": None}))

    def set_identify(self, bmc, on=True):
        self.rack.check(bmc, "identify")
        self.rack.identify[bmc.address] = on

    def set_user_password(self, bmc, password):
        self.rack.check(bmc, "set user password")
        with self.rack.lock:
            self.rack.passwords[bmc.address] = password


class FakeInventory(_FakeBase, base.InventoryInterface):
    def get_inventory(self, bmc):
        self.rack.check(bmc, "inventory")
        last = int(bmc.address.rsplit(".", 1)[-1]) if bmc.address[-1].isdigit() else 0
        return base.Inventory(vendor="Fake", product="FakeServer 1", serial="FAKE%04d" % last,
                              guid="00000000-0000-4000-8000-%012x" % last,
                              macs=["52:54:00:00:%02x:%02x" % (last // 256, last % 256)],
                              sensors=[{"name": "Inlet Temp", "value": 21.0, "units": "C",
                                        "health": "ok"}])


class FakeConsole(_FakeBase, base.ConsoleInterface):
    def capture(self, bmc, log, seconds):
        self.rack.check(bmc, "console")
        data = b"fake console of %s\n" % bmc.address.encode()
        log.write(data)
        return len(data)


class FakeDriver(base.Driver):
    name = "fake"
    default_port = 623
    protocol = "the fake protocol"

    def __init__(self, rack=None):
        self.rack = rack or FakeRack()
        super().__init__(FakePower(self.rack), FakeManagement(self.rack),
                         FakeInventory(self.rack), FakeConsole(self.rack))
