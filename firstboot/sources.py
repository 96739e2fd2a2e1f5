"""Where the hardware inventory reads from: udev, /sys, /proc and optional tools.

Kept apart from the collector so the unit tests can replace each source with
recorded data (see ``tests/lib/inventory_samples.py``).
"""

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

LOG = logging.getLogger(__name__)


@dataclass
class UdevRecord:
    """What the collector needs of one udev device (pyudev's, or a recorded one)."""
    name: str
    devpath: str                # /devices/..., relative to the /sys root
    subsystem: str
    properties: dict = field(default_factory=dict)


def run_command(argv, timeout=20):
    """Default command runner: stdout of *argv*, or None if absent, failing or hung."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        LOG.debug("inventory: %s failed: %s", argv[0], exc)
        return None
    if res.returncode != 0:
        LOG.debug("inventory: %s exited %d: %s", " ".join(argv), res.returncode,
                  res.stderr.strip()[:200])
        return None
    return res.stdout


def udev_devices(subsystem):
    """Disks (``DEVTYPE=disk``) or all network devices, from pyudev."""
    import pyudev  # only the real collector needs it
    ctx = pyudev.Context()
    if subsystem == "block":
        devices = ctx.list_devices(subsystem="block", DEVTYPE="disk")
    else:
        devices = ctx.list_devices(subsystem=subsystem)
    return [UdevRecord(d.sys_name, d.device_path, subsystem, dict(d.properties))
            for d in devices]


class Sources:
    """Where the collector reads from; every part can be replaced in tests.

    ``devices(subsystem)`` returns :class:`UdevRecord` lists ("block" gives
    whole disks, "net" network devices); ``sys_root`` and ``proc_root`` are
    directories laid out like /sys and /proc; ``run(argv)`` returns a
    command's stdout or None.
    """

    def __init__(self, devices=None, sys_root="/sys", proc_root="/proc",
                 run: Optional[Callable] = None, machine=None):
        self.devices = devices or udev_devices
        self.sys_root = Path(sys_root)
        self.proc_root = Path(proc_root)
        self.run = run or run_command
        self.machine = machine or os.uname().machine

    def sys_path(self, devpath, *parts):
        return self.sys_root.joinpath(devpath.lstrip("/"), *parts)

    def read_sys(self, devpath, *parts):
        return _read(self.sys_path(devpath, *parts))

    def read_proc(self, rel):
        return _read(self.proc_root / rel)

    def readlink_sys(self, devpath, *parts):
        """Last component of a symlink's target (e.g. the driver name), or None."""
        try:
            return os.path.basename(os.readlink(self.sys_path(devpath, *parts)))
        except OSError:
            return None

    def listdir_sys(self, devpath, *parts):
        try:
            return sorted(os.listdir(self.sys_path(devpath, *parts)))
        except OSError:
            return []


def _read(path):
    """Stripped text of a file; None if absent or unreadable (e.g. carrier of a down link)."""
    try:
        return Path(path).read_text(errors="replace").strip()
    except OSError:
        return None
