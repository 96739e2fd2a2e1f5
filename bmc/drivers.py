"""The registry of BMC drivers: a name -> a :class:`rackforge.bmc.base.Driver` factory.

Built-in drivers are listed here by import path (imported only when used, so
``rackforge --help`` does not load pyghmi or sushy); other distributions add
drivers with an entry point in the group ``rackforge.bmc.drivers``, each
naming a zero-argument factory, as Ironic does with its hardware types.  The
fake driver is registered exactly like the real ones.
"""

import importlib
from importlib import metadata

from rackforge.bmc import errors

ENTRY_POINT_GROUP = "rackforge.bmc.drivers"
BUILTIN = {
    "ipmi": "rackforge.bmc.ipmi:IPMIDriver",
    "redfish": "rackforge.bmc.redfish:RedfishDriver",
    "fake": "rackforge.bmc.fake:FakeDriver",
}


def _entry_points():
    try:
        return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    except Exception:   # a broken third-party distribution must not break the built-ins
        return {}


def driver_names():
    return sorted(set(BUILTIN) | set(_entry_points()))


def get_driver(name):
    """A new driver instance by name.  :raises: UnknownDriver"""
    if name in BUILTIN:
        module, _, attr = BUILTIN[name].partition(":")
        factory = getattr(importlib.import_module(module), attr)
    else:
        ep = _entry_points().get(name)
        if ep is None:
            raise errors.UnknownDriver(name=name, known=", ".join(driver_names()))
        factory = ep.load()
    return factory()
