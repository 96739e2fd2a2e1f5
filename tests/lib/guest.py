"""QEMU guests for the boot tests: start, watch the serial console, stop.

Guests run under TCG (this test bed has no usable KVM) with the serial
console on QEMU's stdout; a reader thread collects it and ``wait_for``
blocks on a condition until a pattern shows up, the guest exits or the
deadline passes.  No sleeping.
"""

import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

from rackforge.proc import stop_process

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


class GuestFailed(AssertionError):
    pass


class GuestPanicked(GuestFailed):
    """The guest's kernel panicked: reported at once, not after the whole timeout."""


PANIC = "Kernel panic - not syncing"


class Guest:
    """One QEMU process.  ``firmware`` is "bios" (SeaBIOS) or "uefi" (OVMF)."""

    def __init__(self, workdir, firmware="bios", memory_mib=2048, cpus=2, netns=None,
                 uefi_vars=None):
        """``uefi_vars``: a file that keeps OVMF's variables (boot entries) from one
        guest to the next (made from OVMF's template when missing); default: fresh."""
        self.uefi_vars = Path(uefi_vars) if uefi_vars else None
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.firmware = firmware
        self.memory_mib = memory_mib
        self.cpus = cpus
        self.netns = netns
        self.devices = []
        self.proc = None
        self._buf = []
        self._cond = threading.Condition()
        self._done = False
        self.console_log = self.workdir / "console.log"

    # -- devices -------------------------------------------------------
    def add_disk(self, path, fmt):
        # -snapshot keeps the artifact (and its manifest hash) untouched
        self.devices += ["-drive", "file=%s,if=virtio,format=%s,snapshot=on" % (path, fmt)]

    def add_cdrom(self, path):
        self.devices += ["-drive", "file=%s,media=cdrom,readonly=on,if=ide,index=2" % path,
                         "-boot", "order=d"]

    def add_scsi_disk(self, path, serial, fmt="raw", bootindex=None):
        """A disk written in place (no snapshot) with a serial number, as a server's are.
        ``bootindex``: in the firmware's boot order (OVMF connects, so GRUB sees, only
        the devices there)."""
        if not any(d.startswith("virtio-scsi-pci") for d in self.devices):
            self.devices += ["-device", "virtio-scsi-pci,id=scsi0"]
        n = sum(1 for d in self.devices if d.startswith("scsi-hd"))
        order = ",bootindex=%d" % bootindex if bootindex is not None else ""
        self.devices += ["-drive", "file=%s,if=none,id=rfdisk%d,format=%s" % (path, n, fmt),
                         "-device", "scsi-hd,bus=scsi0.0,drive=rfdisk%d,serial=%s%s"
                         % (n, serial, order)]

    def add_install_medium(self, path):
        """The ISO as a SATA CD-ROM first in the boot order (bootindex, not -boot, so
        other devices can be in the order too)."""
        self.devices += ["-drive", "file=%s,if=none,id=rfcd,media=cdrom,readonly=on" % path,
                         "-device", "ide-cd,drive=rfcd,bus=ide.2,bootindex=0"]

    def add_user_nic(self, mac="52:54:00:12:34:56"):
        """A NIC on QEMU's user network (10.0.2.0/24, gateway 10.0.2.2), no boot ROM."""
        self.devices += ["-netdev", "user,id=u0",
                         "-device", "virtio-net-pci,netdev=u0,mac=%s,romfile=" % mac]

    def add_usb_stick(self, path):
        self.devices += ["-device", "qemu-xhci,id=xhci",
                         "-drive", "if=none,id=stick,format=raw,file=%s,snapshot=on" % path,
                         "-device", "usb-storage,bus=xhci.0,drive=stick,bootindex=0"]

    def add_pxe_nic(self, tap, mac="52:54:00:12:34:56", ipxe_rom=True):
        """A NIC that boots first.  Without ``ipxe_rom`` (UEFI only) the firmware's own
        PXE client boots, which fetches the iPXE loader over TFTP first."""
        rom = "" if ipxe_rom else ",romfile="
        self.devices += ["-netdev", "tap,id=n0,ifname=%s,script=no,downscript=no" % tap,
                         "-device", "virtio-net-pci,netdev=n0,mac=%s,bootindex=1%s" % (mac, rom)]

    def command(self):
        cmd = ["qemu-system-x86_64", "-accel", "tcg", "-machine", "q35", "-smp", str(self.cpus),
               "-m", str(self.memory_mib), "-display", "none", "-monitor", "none",
               "-serial", "stdio", "-no-reboot"]
        if self.firmware == "uefi":
            vars_copy = self.uefi_vars or self.workdir / "OVMF_VARS.fd"
            if self.uefi_vars is None or not vars_copy.exists():
                shutil.copyfile(OVMF_VARS, vars_copy)
            cmd += ["-drive", "if=pflash,format=raw,readonly=on,file=%s" % OVMF_CODE,
                    "-drive", "if=pflash,format=raw,file=%s" % vars_copy]
        cmd += self.devices
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns] + cmd
        return cmd

    # -- life cycle ----------------------------------------------------
    def start(self):
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self):
        with open(self.console_log, "wb") as log:
            while True:
                chunk = self.proc.stdout.read1(4096)
                if not chunk:
                    break
                log.write(chunk)
                log.flush()
                with self._cond:
                    self._buf.append(chunk.decode(errors="replace"))
                    self._cond.notify_all()
        with self._cond:
            self._done = True
            self._cond.notify_all()

    @property
    def output(self):
        with self._cond:
            return "".join(self._buf)

    def wait_for(self, pattern, timeout):
        """Block until ``pattern`` (regex) appears on the console; returns the match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                text = "".join(self._buf)
                m = regex.search(text)
                if m:
                    return m
                if PANIC in text:
                    raise GuestPanicked("the guest's kernel panicked before %r; console: %s\n%s"
                                        % (pattern, self.console_log, self._tail(40)))
                if self._done:
                    raise GuestFailed("guest exited before %r; console: %s\n%s"
                                      % (pattern, self.console_log, self._tail()))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise GuestFailed("no %r within %ds; console: %s\n%s"
                                      % (pattern, timeout, self.console_log, self._tail()))
                self._cond.wait(left)

    def wait_exit(self, timeout):
        """Block until QEMU exits (a guest reboot ends it: -no-reboot); its exit code."""
        self.proc.wait(timeout=timeout)
        with self._cond:
            while not self._done:
                self._cond.wait(5)
        return self.proc.returncode

    def _tail(self, lines=25):
        return "\n".join("".join(self._buf).splitlines()[-lines:])

    def stop(self):
        if self.proc:
            stop_process(self.proc, timeout=20)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def once_more_on_panic(make, body):
    """``body(guest)`` in a guest from ``make(attempt)`` (1, then 2); a kernel panic is
    retried once in a fresh guest: under TCG with two vCPUs the kernel has been seen to
    oops on an int3 in code it was patching (sched_clock_cpu or update_rq_clock, 3 s in,
    once in some thirty boots, more often on a loaded host); a guest that panics twice
    fails."""
    for attempt in (1, 2):
        guest = make(attempt)
        try:
            with guest:
                return body(guest)
        except GuestPanicked:
            if attempt == 2:
                raise
            print("the guest's kernel panicked (console: %s); booting it once more"
                  % guest.console_log)


def banner_regex(version, profile):
    return re.escape("rackforge %s appliance (profile: %s)" % (version, profile))


def wait_for_login(guest, version, profile, timeout):
    """The banner from /etc/issue, then the getty's prompt after it."""
    m = guest.wait_for(banner_regex(version, profile) + r"[\s\S]*?login:", timeout)
    return m.group(0)
