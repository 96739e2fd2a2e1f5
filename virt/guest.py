"""One QEMU guest of the virtual rack: its command line, start and stop.

A guest is a q35 machine under TCG with a qcow2 disk (empty, or an overlay
over a ready image that stays untouched) and one virtio-net NIC on a tap of
the rack bridge (inside the rack's network namespace).  Its SMBIOS system
serial is the one its BMC's FRU reports, as on a real server.  Its serial
console is appended to a log file; QEMU's own messages go to ``qemu.log``; a
QMP socket allows a soft (ACPI) power-off.

The boot order comes from the BMC's boot device at each start: ``network``
puts the NIC first (QEMU's iPXE ROM under BIOS, OVMF's network boot under
UEFI), ``hd`` and ``default`` put the disk first.  :func:`qemu_command` is
pure so that unit tests can check every combination.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rackforge.proc import stop_process

MAC_PREFIX = "52:54:00:5a:00"
MAX_NODES = 254
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
FIRMWARES = ("bios", "uefi")
# what the BMC may be told (pyghmi's names) -> what boots first
NETWORK_FIRST = ("network",)
DISK_FIRST = ("hd", "default")
BOOT_DEVICES = NETWORK_FIRST + DISK_FIRST
DISK_SIZE = "8G"
#: what the guest's SMBIOS and its BMC's FRU say it is
VENDOR = "rackforge"
PRODUCT = "virtual node"


def node_name(index):
    return "node-%02d" % index


def mac_for(index):
    """The fixed MAC of node ``index`` (1-based): ``52:54:00:5a:00:NN`` (NN in hex)."""
    if not 1 <= index <= MAX_NODES:
        raise ValueError("node index %d outside 1..%d" % (index, MAX_NODES))
    return "%s:%02x" % (MAC_PREFIX, index)


def tap_name(index):
    return "rfvtap%d" % index


def serial_for(index):
    """The system serial number of node ``index``: ``RFVIRT-NN`` (SMBIOS and FRU)."""
    return "RFVIRT-%02d" % index


@dataclass
class GuestSpec:
    """Everything needed to start one node's QEMU; stored as ``node.json``."""

    name: str
    index: int
    mac: str
    netns: str
    tap: str
    workdir: str
    firmware: str = "bios"
    memory_mib: int = 1024
    bmc_address: str = "127.0.0.1"
    bmc_port: int = 6230
    password_file: str = ""
    serial: str = ""                # SMBIOS type 1 serial, and the BMC's FRU serial
    base_disk: str = ""             # a ready image under the node's disk (never written)
    bmc_netns: str = ""             # the BMC runs in this namespace ("": the host's)

    @property
    def dir(self):
        return Path(self.workdir)

    @property
    def disk(self):
        return self.dir / "disk.qcow2"

    @property
    def console_log(self):
        return self.dir / "console.log"

    @property
    def qemu_log(self):
        return self.dir / "qemu.log"

    @property
    def pidfile(self):
        return self.dir / "qemu.pid"

    @property
    def qmp_socket(self):
        return self.dir / "qmp.sock"

    @property
    def ovmf_vars(self):
        return self.dir / "OVMF_VARS.fd"

    @property
    def boot_file(self):
        return self.dir / "boot-device"

    def save(self):
        path = self.dir / "node.json"
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path):
        return cls(**json.loads(Path(path).read_text()))


def qemu_command(spec, boot_device="network"):
    """The QEMU command line (run inside the rack's namespace) for one start."""
    if spec.firmware not in FIRMWARES:
        raise ValueError("firmware must be one of %s" % ", ".join(FIRMWARES))
    if boot_device not in BOOT_DEVICES:
        raise ValueError("boot device must be one of %s" % ", ".join(BOOT_DEVICES))
    net_index, disk_index = (1, 2) if boot_device in NETWORK_FIRST else (2, 1)
    cmd = ["qemu-system-x86_64", "-name", spec.name, "-accel", "tcg",
           "-machine", "q35,graphics=off", "-smp", "1", "-m", str(spec.memory_mib),
           "-display", "none", "-monitor", "none",
           "-chardev", "file,id=console,path=%s,append=on" % spec.console_log,
           "-serial", "chardev:console",
           "-qmp", "unix:%s,server=on,wait=off" % spec.qmp_socket,
           "-pidfile", str(spec.pidfile)]
    if spec.serial:
        cmd += ["-smbios", "type=1,manufacturer=%s,product=%s,serial=%s"
                % (VENDOR, PRODUCT, spec.serial)]
    if spec.firmware == "uefi":
        cmd += ["-drive", "if=pflash,format=raw,readonly=on,file=%s" % OVMF_CODE,
                "-drive", "if=pflash,format=raw,file=%s" % spec.ovmf_vars]
    cmd += ["-drive", "file=%s,if=none,id=disk0,format=qcow2" % spec.disk,
            "-device", "virtio-blk-pci,drive=disk0,bootindex=%d" % disk_index,
            "-netdev", "tap,id=net0,ifname=%s,script=no,downscript=no" % spec.tap,
            "-device", "virtio-net-pci,netdev=net0,mac=%s,bootindex=%d" % (spec.mac, net_index)]
    return ["ip", "netns", "exec", spec.netns] + cmd


def disk_command(spec, base_format=None):
    """``qemu-img`` making the node's disk: an empty qcow2, or a qcow2 overlay whose
    backing file is ``spec.base_disk`` (format ``base_format``), opened read-only by
    QEMU: whatever the node writes stays in the overlay (pure)."""
    if spec.base_disk:
        if not base_format:
            raise ValueError("the format of %s is needed for its overlay" % spec.base_disk)
        return ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(spec.base_disk),
                "-F", base_format, str(spec.disk)]
    return ["qemu-img", "create", "-q", "-f", "qcow2", str(spec.disk), DISK_SIZE]


def image_format(path):
    """The format of the image at ``path`` (``qcow2``, ``raw``...), from ``qemu-img info``."""
    res = subprocess.run(["qemu-img", "info", "--output=json", str(path)],
                         capture_output=True, text=True)
    if res.returncode:
        raise GuestStartFailed("%s: not an image qemu-img can read (%s)"
                               % (path, _last_line(res.stderr)))
    return json.loads(res.stdout)["format"]


def _last_line(text):
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def prepare(spec):
    """Create the node's folder, its disk (empty, or an overlay over its base image) and
    (UEFI) its own variable store.  An existing disk is kept: a node's disk lives as long
    as the rack."""
    spec.dir.mkdir(parents=True, exist_ok=True)
    if not spec.disk.exists():
        fmt = image_format(spec.base_disk) if spec.base_disk else None
        res = subprocess.run(disk_command(spec, fmt), capture_output=True, text=True)
        if res.returncode:
            raise GuestStartFailed("%s: qemu-img could not make its disk: %s"
                                   % (spec.name, _last_line(res.stderr)))
    if spec.firmware == "uefi" and not spec.ovmf_vars.exists():
        shutil.copyfile(OVMF_VARS, spec.ovmf_vars)


def pid_alive(pid):
    """True if ``pid`` runs and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def read_pid(path):
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


class GuestStartFailed(Exception):
    pass


class Guest:
    """Starts and stops the QEMU of one node.  The power state is "QEMU runs"."""

    def __init__(self, spec):
        self.spec = spec
        self.proc = None

    def pid(self):
        if self.proc is not None:
            return self.proc.pid if self.proc.poll() is None else None
        pid = read_pid(self.spec.pidfile)
        return pid if pid and pid_alive(pid) else None

    def running(self):
        return self.pid() is not None

    def start(self, boot_device, start_timeout=20):
        if self.running():
            return
        prepare(self.spec)
        self.spec.pidfile.unlink(missing_ok=True)
        with open(self.spec.qemu_log, "ab") as log:
            self.proc = subprocess.Popen(qemu_command(self.spec, boot_device),
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        # QEMU writes its pid file once the machine is built: from then on
        # anyone (``virt rack status``, ``down``) sees it running
        deadline = time.monotonic() + start_timeout
        while read_pid(self.spec.pidfile) != self.proc.pid:
            if self.proc.poll() is not None or time.monotonic() >= deadline:
                self.stop()
                raise GuestStartFailed("%s: QEMU did not start (see %s)"
                                       % (self.spec.name, self.spec.qemu_log))
            time.sleep(0.05)

    def stop(self, timeout=10):
        """Hard power-off: QEMU ends at once on SIGTERM."""
        if self.proc is not None:
            stop_process(self.proc, timeout=timeout)
            self.proc = None
        else:
            pid = self.pid()
            if pid:
                kill_pid(pid, timeout)
        self.spec.pidfile.unlink(missing_ok=True)

    def shutdown(self):
        """Soft power-off: ACPI power button through QMP (the guest decides)."""
        if not self.running():
            return
        qmp(self.spec.qmp_socket, "system_powerdown")


def kill_pid(pid, timeout=10):
    """SIGTERM a process that is not our child, then SIGKILL after ``timeout`` s."""
    for sig in (signal.SIGCONT, signal.SIGTERM):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def qmp(path, command, timeout=5):
    """Send one QMP command; returns its reply (a dict)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        f = s.makefile("rwb")
        json.loads(f.readline())                # greeting
        for cmd in ("qmp_capabilities", command):
            f.write(json.dumps({"execute": cmd}).encode() + b"\n")
            f.flush()
            while True:
                reply = json.loads(f.readline())
                if "event" not in reply:
                    break
        return reply
