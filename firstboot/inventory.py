"""Hardware inventory of the node: CPUs, memory, disks, NICs, system and BMC.

Plain dataclasses serialised to JSON, in the manner of ironic-python-agent's
``BlockDevice``, ``NetworkInterface``, ``CPU`` and ``Memory``.  Every fact is
read through a :class:`Sources` object (udev device list, /sys root, /proc
root, command runner) so the unit tests replay recorded data of several
hardware shapes instead of the test machine's own.

Optional tools (dmidecode, lldpctl, ipmitool) add detail when present; a
missing or failing tool leaves the matching field ``None``, never an error.
"""

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from typing import Optional

from rackforge.firstboot.sources import Sources, UdevRecord, run_command

__all__ = ["collect", "Inventory", "Sources", "UdevRecord", "run_command"]

SECTOR = 512
PCI_ADDRESS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]\Z")
# CPU flags worth keeping: virtualisation, long mode, crypto and vector units.
CPU_FLAGS = ("lm", "vmx", "svm", "hypervisor", "aes", "sse4_2", "avx", "avx2", "avx512f",
             "pdpe1gb", "x2apic", "rdrand", "sha_ni",
             # aarch64 "Features"
             "asimd", "sve", "sha2", "crc32", "atomics")
# Mount points whose devices count as "the running system" (root, boot, and
# the media of a live ISO/USB boot: Debian live, dracut, archiso, casper).
SYSTEM_MOUNTS = ("/", "/boot", "/boot/efi", "/usr")
LIVE_MOUNTS = ("/run/live/medium", "/run/live/rootfs", "/lib/live/mount/medium",
               "/run/initramfs/live", "/cdrom", "/run/archiso/bootmnt")
# Block devices never reported: RAM disks, compressed swap, mapped and
# software RAID devices (their members are; they only decide ``system``).
SKIP_DISKS = re.compile(r"^(ram|zram|dm-|md|nbd)")
CD_MAJOR = "11"
LOOP_MAJOR = "7"


@dataclass
class CPU:
    model: Optional[str]
    count: int
    architecture: str
    sockets: Optional[int] = None
    frequency_mhz: Optional[int] = None
    flags: list = field(default_factory=list)


@dataclass
class Memory:
    total_bytes: int
    physical_mb: Optional[int] = None


@dataclass
class BlockDevice:
    name: str
    path: str
    size: int
    type: str = "disk"          # disk | rom | loop
    rotational: bool = False
    model: Optional[str] = None
    vendor: Optional[str] = None
    serial: Optional[str] = None
    wwn: Optional[str] = None
    by_path: Optional[str] = None
    bus: Optional[str] = None   # udev ID_BUS: ata, nvme, scsi, usb, ...
    removable: bool = False
    read_only: bool = False
    system: bool = False        # holds the running root, /boot or the live medium


@dataclass
class LLDPNeighbour:
    chassis_id: Optional[str] = None
    chassis_name: Optional[str] = None
    port_id: Optional[str] = None
    port_description: Optional[str] = None
    vlan: Optional[int] = None


@dataclass
class NetworkInterface:
    name: str
    mac: Optional[str]
    kind: str = "physical"      # physical | bond | vlan | bridge
    driver: Optional[str] = None
    speed_mbps: Optional[int] = None
    carrier: bool = False
    operstate: Optional[str] = None
    mtu: Optional[int] = None
    pci_address: Optional[str] = None
    master: Optional[str] = None
    members: list = field(default_factory=list)
    lldp: Optional[LLDPNeighbour] = None


@dataclass
class SystemVendor:
    manufacturer: Optional[str] = None
    product_name: Optional[str] = None
    serial_number: Optional[str] = None
    uuid: Optional[str] = None


@dataclass
class BMC:
    address: Optional[str] = None
    mac: Optional[str] = None


@dataclass
class Inventory:
    cpu: CPU
    memory: Memory
    disks: list
    interfaces: list
    system_vendor: SystemVendor
    bmc: BMC
    boot_mode: str = "bios"     # bios | uefi
    hostname: Optional[str] = None

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self, **kwargs):
        kwargs.setdefault("indent", 2)
        kwargs.setdefault("sort_keys", True)
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data):
        """The inverse of :meth:`to_dict` (for readers of a stored inventory)."""
        ifaces = []
        for item in data["interfaces"]:
            item = dict(item)
            if item.get("lldp") is not None:
                item["lldp"] = LLDPNeighbour(**item["lldp"])
            ifaces.append(NetworkInterface(**item))
        return cls(cpu=CPU(**data["cpu"]), memory=Memory(**data["memory"]),
                   disks=[BlockDevice(**d) for d in data["disks"]], interfaces=ifaces,
                   system_vendor=SystemVendor(**data["system_vendor"]),
                   bmc=BMC(**data["bmc"]), boot_mode=data.get("boot_mode", "bios"),
                   hostname=data.get("hostname"))

    def system_disks(self):
        return [d for d in self.disks if d.system]


def _int(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _clean(text):
    """None for empty or placeholder values firmware likes to fill in."""
    if text is None:
        return None
    text = text.strip()
    if not text or text.lower() in ("none", "not specified", "to be filled by o.e.m.",
                                    "default string", "0", "unknown", "not settable",
                                    "not present", "not available"):
        return None
    return text


def pci_address(devpath):
    """The PCI function nearest to the device in its sysfs path, or None."""
    for part in reversed(devpath.split("/")):
        if PCI_ADDRESS.match(part):
            return part
    return None


# --- CPU and memory -------------------------------------------------------

def collect_cpu(src):
    text = src.read_proc("cpuinfo") or ""
    blocks = [b for b in text.split("\n\n") if b.strip()]
    procs = []
    for block in blocks:
        entry = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                entry[key.strip().lower()] = value.strip()
        if "processor" in entry:
            procs.append(entry)
    first = procs[0] if procs else {}
    model = first.get("model name") or first.get("cpu model") or first.get("hardware")
    flags = set((first.get("flags") or first.get("features") or "").split())
    sockets = {p["physical id"] for p in procs if "physical id" in p}
    freq = _int(src.read_sys("/devices/system/cpu/cpu0/cpufreq", "cpuinfo_max_freq"))
    if freq:
        freq //= 1000
    else:
        freq = _int((first.get("cpu mhz") or "").split(".")[0])
    arch = src.read_proc("sys/kernel/arch") or src.machine
    return CPU(model=model, count=len(procs) or os.cpu_count() or 1, architecture=arch,
               sockets=len(sockets) or None, frequency_mhz=freq,
               flags=[f for f in CPU_FLAGS if f in flags])


def collect_memory(src):
    total = 0
    for line in (src.read_proc("meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            total = int(line.split()[1]) * 1024
    return Memory(total_bytes=total, physical_mb=_dmidecode_memory_mb(src))


def _dmidecode_memory_mb(src):
    """Sum of the installed DIMMs' sizes (``dmidecode --type 17``), or None."""
    out = src.run(["dmidecode", "--type", "17"])
    if not out:
        return None
    units = {"kb": 1 / 1024, "mb": 1, "gb": 1024, "tb": 1024 * 1024}
    total = 0
    for line in out.splitlines():
        m = re.match(r"^\s*Size:\s*(\d+)\s*([KMGT]B)\s*$", line, re.I)
        if m:
            total += int(m.group(1)) * units[m.group(2).lower()]
    return int(total) or None


# --- disks ----------------------------------------------------------------

class _BlockIndex:
    """Maps MAJ:MIN and names of disks and partitions to their disk record."""

    def __init__(self, src, records):
        self.src = src
        self.records = {r.name: r for r in records}
        self.by_dev = {}    # "8:2" -> ("sda", "sda2")
        self.by_name = {}   # "sda2" -> "sda"
        for rec in records:
            self._add(rec.name, rec.name, src.read_sys(rec.devpath, "dev"))
            for child in src.listdir_sys(rec.devpath):
                if src.read_sys(rec.devpath, child, "partition") is not None:
                    self._add(rec.name, child, src.read_sys(rec.devpath, child, "dev"))

    def _add(self, disk, name, dev):
        self.by_name[name] = disk
        if dev:
            self.by_dev[dev] = (disk, name)

    def disks_under(self, dev=None, name=None, seen=None):
        """Disks backing a device: follows partitions, loop backing files and slaves."""
        seen = set() if seen is None else seen
        if dev is not None and dev in self.by_dev:
            disk, name = self.by_dev[dev]
        elif name is not None and name in self.by_name:
            disk = self.by_name[name]
        else:
            return set()
        if disk in seen:
            return set()
        seen.add(disk)
        found = {disk}
        rec = self.records[disk]
        parts = (rec.devpath,) if name == disk else (rec.devpath, name)
        for slave in self.src.listdir_sys(*parts, "slaves"):
            found |= self.disks_under(name=slave, seen=seen)
        backing = self.src.read_sys(rec.devpath, "loop", "backing_file")
        if backing:
            found |= self._mount_disks(_mount_for(self.src, backing), seen)
        return found

    def _mount_disks(self, mount, seen):
        if mount is None:
            return set()
        dev, source = mount
        found = self.disks_under(dev=dev, seen=seen)
        if not found and source.startswith("/dev/"):
            found = self.disks_under(name=os.path.basename(source), seen=seen)
        return found


def _mountinfo(src):
    """(mount point, MAJ:MIN, source) for every mount, in mount order."""
    mounts = []
    for line in (src.read_proc("self/mountinfo") or "").splitlines():
        fields = line.split()
        try:
            sep = fields.index("-")
        except ValueError:
            continue
        point = fields[4].replace("\\040", " ")
        mounts.append((point, fields[2], fields[sep + 2] if len(fields) > sep + 2 else ""))
    return mounts


def _mount_for(src, path):
    """(MAJ:MIN, source) of the last mount holding *path* (longest prefix wins)."""
    best = None
    for point, dev, source in _mountinfo(src):
        if path == point or path.startswith(point.rstrip("/") + "/"):
            if best is None or len(point) >= len(best[0]):
                best = (point, dev, source)
    return best[1:] if best else None


def system_disk_names(src, index):
    found = set()
    seen = set()
    for point, dev, source in _mountinfo(src):
        if point in SYSTEM_MOUNTS or any(point == m or point.startswith(m + "/")
                                         for m in LIVE_MOUNTS):
            found |= index._mount_disks((dev, source), seen)
    return found


def collect_disks(src):
    records = src.devices("block")
    index = _BlockIndex(src, records)
    system = system_disk_names(src, index)
    disks = []
    for rec in sorted(records, key=lambda r: r.name):
        props = rec.properties
        major = props.get("MAJOR") or (src.read_sys(rec.devpath, "dev") or ":").split(":")[0]
        if SKIP_DISKS.match(rec.name):
            continue
        if major == LOOP_MAJOR and rec.name not in system:
            continue    # image files mounted by someone, not hardware
        size = (_int(src.read_sys(rec.devpath, "size")) or 0) * SECTOR
        if size == 0 and rec.name not in system:
            continue    # empty card reader, CD tray or unattached loop
        if major == LOOP_MAJOR:
            kind = "loop"
        elif major == CD_MAJOR or props.get("ID_CDROM") == "1" or props.get("ID_TYPE") == "cd":
            kind = "rom"
        else:
            kind = "disk"
        disks.append(_block_device(src, rec, size, kind, rec.name in system))
    return disks


def _block_device(src, rec, size, kind, system):
    props = rec.properties
    model = _clean(src.read_sys(rec.devpath, "device", "model")) or _udev_str(props, "ID_MODEL")
    vendor = _clean(src.read_sys(rec.devpath, "device", "vendor"))
    if vendor is None or re.match(r"^0x[0-9a-f]+$", vendor):   # a PCI id (virtio), not a name
        vendor = _udev_str(props, "ID_VENDOR")
    serial = (_clean(props.get("ID_SERIAL_SHORT")) or _clean(src.read_sys(rec.devpath, "serial"))
              or _clean(src.read_sys(rec.devpath, "device", "serial")))
    wwn = (_clean(props.get("ID_WWN_WITH_EXTENSION")) or _clean(props.get("ID_WWN"))
           or _clean(src.read_sys(rec.devpath, "wwid"))
           or _clean(src.read_sys(rec.devpath, "device", "wwid")))
    by_path = None
    if props.get("ID_PATH"):
        by_path = "/dev/disk/by-path/" + props["ID_PATH"]
    else:
        for link in props.get("DEVLINKS", "").split():
            if link.startswith("/dev/disk/by-path/"):
                by_path = link
                break
    bus = props.get("ID_BUS") or ("usb" if "/usb" in rec.devpath else None)
    if bus is None and rec.name.startswith("nvme"):
        bus = "nvme"
    elif bus is None and "/virtio" in rec.devpath:
        bus = "virtio"
    removable = src.read_sys(rec.devpath, "removable") == "1" or bus == "usb"
    return BlockDevice(name=rec.name, path=props.get("DEVNAME") or "/dev/" + rec.name,
                       size=size, type=kind,
                       rotational=src.read_sys(rec.devpath, "queue", "rotational") == "1",
                       model=model, vendor=vendor, serial=serial, wwn=wwn, by_path=by_path,
                       bus=bus, removable=removable,
                       read_only=src.read_sys(rec.devpath, "ro") == "1", system=system)


def _udev_str(props, key):
    """udev's value, preferring the escaped form (``ID_MODEL_ENC``) that keeps spaces."""
    enc = props.get(key + "_ENC")
    if enc:
        enc = re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), enc)
        return _clean(enc)
    value = props.get(key)
    return _clean(value.replace("_", " ")) if value else None


# --- network interfaces ---------------------------------------------------

LOOPBACK_TYPE = "772"


def collect_interfaces(src):
    lldp = _lldp_neighbours(src)
    ifaces = []
    for rec in sorted(src.devices("net"), key=lambda r: r.name):
        kind = _net_kind(src, rec)
        if kind is None:
            continue
        path = rec.devpath
        mac = (src.read_sys(path, "bonding_slave", "perm_hwaddr")
               or src.read_sys(path, "address"))
        speed = _int(src.read_sys(path, "speed"))
        members = []
        if kind == "bond":
            members = (src.read_sys(path, "bonding", "slaves") or "").split()
        elif kind == "bridge":
            members = src.listdir_sys(path, "brif")
        elif kind == "vlan":
            members = [n[len("lower_"):] for n in src.listdir_sys(path) if n.startswith("lower_")]
        ifaces.append(NetworkInterface(
            name=rec.name, mac=_clean(mac), kind=kind,
            driver=src.readlink_sys(path, "device", "driver") if kind == "physical" else None,
            speed_mbps=speed if speed and speed > 0 else None,
            carrier=src.read_sys(path, "carrier") == "1",
            operstate=src.read_sys(path, "operstate"),
            mtu=_int(src.read_sys(path, "mtu")),
            pci_address=pci_address(path) if kind == "physical" else None,
            master=src.readlink_sys(path, "master"), members=members,
            lldp=lldp.get(rec.name)))
    return ifaces


def _net_kind(src, rec):
    """physical, bond, vlan or bridge; None for loopback and other virtual links."""
    path = rec.devpath
    if rec.name == "lo" or src.read_sys(path, "type") == LOOPBACK_TYPE:
        return None
    devtype = rec.properties.get("DEVTYPE")
    if devtype in ("bond", "vlan", "bridge"):
        return devtype
    if src.listdir_sys(path, "bonding"):
        return "bond"
    if src.listdir_sys(path, "bridge"):
        return "bridge"
    if not path.startswith("/devices/virtual/"):
        return "physical"
    return None


def _lldp_neighbours(src):
    """{interface: LLDPNeighbour} from ``lldpctl -f json``; {} without lldpd."""
    out = src.run(["lldpctl", "-f", "json"])
    if not out:
        return {}
    try:
        data = json.loads(out).get("lldp") or {}
    except (ValueError, AttributeError):
        return {}
    ifaces = data.get("interface") or {}
    # lldpctl gives a mapping for one interface and a list of one-key mappings for several.
    if isinstance(ifaces, dict):
        ifaces = [ifaces]
    found = {}
    for item in ifaces:
        for name, info in item.items():
            found[name] = _lldp_neighbour(info)
    return found


def _lldp_neighbour(info):
    chassis = info.get("chassis") or {}
    if isinstance(chassis.get("id"), dict):
        # no system name: lldpctl puts the chassis fields straight under "chassis"
        chassis_name, chassis_info = None, chassis
    else:
        chassis_name, chassis_info = next(iter(chassis.items()), (None, {}))
    if not isinstance(chassis_info, dict):
        chassis_info = {}
    port = info.get("port") or {}
    vlan = info.get("vlan")
    if isinstance(vlan, list):
        vlan = vlan[0] if vlan else None
    vlan_id = _int(vlan.get("vlan-id")) if isinstance(vlan, dict) else None
    return LLDPNeighbour(chassis_id=_value(chassis_info.get("id")), chassis_name=chassis_name,
                         port_id=_value(port.get("id")),
                         port_description=_value(port.get("descr")), vlan=vlan_id)


def _value(item):
    if isinstance(item, dict):
        return item.get("value")
    return item


# --- system and BMC -------------------------------------------------------

DMI = "/class/dmi/id"


def collect_system_vendor(src):
    vendor = SystemVendor(manufacturer=_clean(src.read_sys(DMI, "sys_vendor")),
                          product_name=_clean(src.read_sys(DMI, "product_name")),
                          serial_number=_clean(src.read_sys(DMI, "product_serial")),
                          uuid=_clean(src.read_sys(DMI, "product_uuid")))
    if vendor == SystemVendor():
        # No DMI in sysfs (old kernel, odd firmware): ask dmidecode if it is there.
        for attr, key in (("manufacturer", "system-manufacturer"),
                          ("product_name", "system-product-name"),
                          ("serial_number", "system-serial-number"),
                          ("uuid", "system-uuid")):
            setattr(vendor, attr, _clean(src.run(["dmidecode", "-s", key])))
    if vendor.uuid:
        vendor.uuid = vendor.uuid.lower()
    return vendor


def collect_bmc(src):
    """In-band BMC address from ``ipmitool lan print``; empty without a BMC."""
    out = src.run(["ipmitool", "lan", "print"])
    bmc = BMC()
    for line in (out or "").splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "IP Address" and value not in ("0.0.0.0", ""):
            bmc.address = value
        elif key == "MAC Address" and value not in ("00:00:00:00:00:00", ""):
            bmc.mac = value.lower()
    return bmc


def collect(sources=None):
    """The node's :class:`Inventory`, read through *sources* (the real host by default)."""
    src = sources or Sources()
    return Inventory(cpu=collect_cpu(src), memory=collect_memory(src),
                     disks=collect_disks(src), interfaces=collect_interfaces(src),
                     system_vendor=collect_system_vendor(src), bmc=collect_bmc(src),
                     boot_mode="uefi" if src.listdir_sys("/firmware/efi") else "bios",
                     hostname=src.read_proc("sys/kernel/hostname"))
