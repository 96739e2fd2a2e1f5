"""Whether this machine has a KVM that works, and whether it is a container: nova's
``virt_type`` and libvirt's ``qemu.conf`` follow from these two facts.

A ``/dev/kvm`` that opens proves little: under nested virtualization on some
hosts it opens, SeaBIOS runs, and the guest kernel never prints a line (the
test bed's hosts), and an nspawn node has no ``/dev/kvm`` at all.  So KVM counts
only when a real guest kernel, run by QEMU with ``-accel kvm`` for at most
:data:`TIMEOUT` seconds, prints its banner on the serial console.  The kernel
is this node's own (``/boot/vmlinuz-*``); with no root file system it panics
and QEMU (``-no-reboot``) exits, within a second or two on a working KVM.
Anything else (no device, no CPU flag, no kernel, no banner) means software
emulation (``virt_type = qemu``), which always works, only slower.

Run once when the agent starts (:func:`rackforge.nodeagent.daemon.facts`), and
said once in the journal.
"""

import glob
import logging
import os
import stat
import subprocess

LOG = logging.getLogger(__name__)
DEVICE = "/dev/kvm"
QEMU = "qemu-system-x86_64"
KERNELS = ("/boot/vmlinuz-*", "/vmlinuz")
TIMEOUT = 20
BANNER = b"Linux version"


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The CPU's flags (``vmx`` for Intel VT-x, ``svm`` for AMD-V among them)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def find_kernel(patterns=KERNELS):
    """A kernel image to boot for the test, newest name first; None when there is none."""
    for pattern in patterns:
        found = sorted(glob.glob(pattern), reverse=True)
        if found:
            return found[0]
    return None


def device_usable(path=DEVICE):
    """(True, "") when ``path`` is a character device this process can open read-write;
    else (False, why)."""
    try:
        if not stat.S_ISCHR(os.stat(path).st_mode):
            return False, "%s is not a character device" % path
        os.close(os.open(path, os.O_RDWR | os.O_CLOEXEC))
    except FileNotFoundError:
        return False, "%s is missing" % path
    except OSError as exc:
        return False, "%s: %s" % (path, exc.strerror or exc)
    return True, ""


def boot_argv(kernel):
    """QEMU booting ``kernel`` under KVM with its console on standard output."""
    return [QEMU, "-accel", "kvm", "-cpu", "host", "-machine", "q35", "-m", "256",
            "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none",
            "-serial", "stdio", "-no-reboot", "-kernel", kernel,
            "-append", "console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1"]


def guest_prints(kernel, run=subprocess.run, timeout=TIMEOUT):
    """(True, "") when the guest kernel printed its banner under KVM within ``timeout``
    seconds; else (False, why)."""
    try:
        res = run(boot_argv(kernel), stdin=subprocess.DEVNULL, capture_output=True,
                  timeout=timeout)
        out, err = res.stdout or b"", res.stderr or b""
    except subprocess.TimeoutExpired as exc:
        out, err = exc.output or b"", b""
        if BANNER in out:
            return True, ""
        return False, "a guest kernel under KVM printed nothing in %ds" % timeout
    except OSError as exc:
        return False, "%s: %s" % (QEMU, exc.strerror or exc)
    if BANNER in out:
        return True, ""
    last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no banner"]
    return False, "QEMU with -accel kvm: %s" % last[0][:200]


def detect(run=subprocess.run, device=DEVICE, cpuinfo="/proc/cpuinfo", kernels=KERNELS,
           timeout=TIMEOUT):
    """(kvm works, why not): the device, the CPU flag, then a guest kernel booted."""
    usable, why = device_usable(device)
    if not usable:
        return False, why
    if not cpu_flags(cpuinfo) & {"vmx", "svm"}:
        return False, "the CPU shows neither vmx nor svm"
    kernel = find_kernel(kernels)
    if kernel is None:
        return False, "no kernel in /boot to test KVM with"
    return guest_prints(kernel, run, timeout)


def container(run=subprocess.run):
    """The container this node runs in (``systemd-nspawn``, ``lxc``, ...), or "" on a
    machine of its own (``systemd-detect-virt -c`` prints ``none`` and exits 1)."""
    try:
        res = run(["systemd-detect-virt", "-c"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    name = (res.stdout or "").strip()
    return "" if res.returncode != 0 or name == "none" else name


def facts(run=subprocess.run, **kw):
    """``{"kvm": bool, "container": str}``, said once in the journal."""
    works, why = detect(run, **kw)
    inside = container(run)
    if works:
        LOG.info("kvm: a guest kernel runs under KVM: nova uses virt_type kvm")
    else:
        LOG.warning("kvm: no working KVM (%s): nova uses virt_type qemu, software "
                    "emulation", why)
    if inside:
        LOG.info("kvm: this node is a %s container: libvirt runs without cgroup "
                 "controllers and without a security driver", inside)
    return {"kvm": works, "container": inside}
