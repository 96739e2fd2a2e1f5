"""Recorded hardware shapes for the inventory tests: load them, or record this host.

One directory per shape under ``tests/unit/samples/inventory/<shape>/``:

- ``udev/block/<name>.json``, ``udev/net/<name>.json``: one udev device each,
  ``{"devpath": "/devices/...", "properties": {...}, "sys": {ATTR: VALUE}}``
  where ATTR is a path below the device's sysfs directory and VALUE is the
  file's text or ``{"link": TARGET}`` for a symlink (e.g. ``device/driver``);
- ``sys.json``: other /sys files, ``{"class/dmi/id/sys_vendor": "Dell Inc.", ...}``;
- ``proc/``: the /proc files as they are (cpuinfo, meminfo, self/mountinfo,
  sys/kernel/arch, sys/kernel/hostname);
- ``commands/<argv joined by _>.txt``: a tool's stdout (``lldpctl_-f_json.txt``);
  no file means the tool is not installed.

Record a real machine with ``python tests/lib/inventory_samples.py record DIR``
(as root, so the DMI serial and UUID are readable), then review and anonymise.
"""

import json
import os
import sys
from pathlib import Path

from rackforge.firstboot import inventory

BLOCK_ATTRS = ("dev", "size", "removable", "ro", "queue/rotational", "device/model",
               "device/vendor", "device/serial", "device/wwid", "wwid", "serial",
               "loop/backing_file")
NET_ATTRS = ("address", "speed", "carrier", "operstate", "mtu", "type", "bonding/slaves",
             "bonding/mode", "bonding_slave/perm_hwaddr", "bridge/stp_state")
NET_LINKS = ("device/driver", "master")
DMI_ATTRS = ("sys_vendor", "product_name", "product_serial", "product_uuid")
PROC_FILES = ("cpuinfo", "meminfo", "self/mountinfo", "sys/kernel/arch", "sys/kernel/hostname")
COMMANDS = (["dmidecode", "--type", "17"], ["lldpctl", "-f", "json"],
            ["ipmitool", "lan", "print"])


def command_file(argv):
    return "_".join(argv) + ".txt"


def load(shape_dir, tmp_dir):
    """A :class:`inventory.Sources` replaying *shape_dir*; its /sys is built under *tmp_dir*."""
    shape_dir, sys_root = Path(shape_dir), Path(tmp_dir) / "sys"
    records = {"block": [], "net": []}
    for subsystem in records:
        for path in sorted((shape_dir / "udev" / subsystem).glob("*.json")):
            data = json.loads(path.read_text())
            records[subsystem].append(inventory.UdevRecord(
                path.stem, data["devpath"], subsystem, data.get("properties", {})))
            base = data["devpath"].lstrip("/")
            for attr, value in data.get("sys", {}).items():
                _write(sys_root / base / attr, value)
    sys_json = shape_dir / "sys.json"
    if sys_json.exists():
        for rel, value in json.loads(sys_json.read_text()).items():
            _write(sys_root / rel, value)
    sys_root.mkdir(parents=True, exist_ok=True)

    def run(argv, timeout=20):
        out = shape_dir / "commands" / command_file(argv)
        return out.read_text() if out.exists() else None

    return inventory.Sources(devices=lambda subsystem: list(records[subsystem]),
                             sys_root=sys_root, proc_root=shape_dir / "proc", run=run,
                             machine="unrecorded")


def _write(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(value, dict):
        os.symlink(value["link"], path)
    else:
        path.write_text(value + "\n")


def record(out_dir, src=None):
    """Write this host's data in the sample format to *out_dir*."""
    src = src or inventory.Sources()
    out = Path(out_dir)
    for subsystem, attrs in (("block", BLOCK_ATTRS), ("net", NET_ATTRS)):
        for rec in src.devices(subsystem):
            files = {a: src.read_sys(rec.devpath, a) for a in attrs}
            if subsystem == "block":
                for child in src.listdir_sys(rec.devpath):
                    if src.read_sys(rec.devpath, child, "partition") is not None:
                        for attr in ("partition", "dev"):
                            files[child + "/" + attr] = src.read_sys(rec.devpath, child, attr)
                for slave in src.listdir_sys(rec.devpath, "slaves"):
                    files["slaves/" + slave] = ""
            else:
                for link in NET_LINKS:
                    try:
                        files[link] = {"link": os.readlink(src.sys_path(rec.devpath, link))}
                    except OSError:
                        pass
                for port in src.listdir_sys(rec.devpath, "brif"):
                    files["brif/" + port] = ""
                for name in src.listdir_sys(rec.devpath):
                    if name.startswith("lower_"):
                        files[name] = ""
            data = {"devpath": rec.devpath, "properties": rec.properties,
                    "sys": {k: v for k, v in sorted(files.items()) if v is not None}}
            _dump(out / "udev" / subsystem / (rec.name + ".json"), data)
    dmi = {"class/dmi/id/" + a: src.read_sys("/class/dmi/id", a) for a in DMI_ATTRS}
    _dump(out / "sys.json", {k: v for k, v in dmi.items() if v is not None})
    for rel in PROC_FILES:
        text = (src.proc_root / rel).read_text() if (src.proc_root / rel).exists() else None
        if text is not None:
            (out / "proc" / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / "proc" / rel).write_text(text)
    for argv in COMMANDS:
        text = src.run(argv)
        if text is not None:
            (out / "commands").mkdir(parents=True, exist_ok=True)
            (out / "commands" / command_file(argv)).write_text(text)


def _dump(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "record":
        sys.exit("usage: %s record DIR" % sys.argv[0])
    record(sys.argv[2])
