"""A tiny test guest for the rack's OpenStack: Debian's kernel, a busybox initramfs, a blank disk.

Booting a VM through nova (libvirt, QEMU TCG) and reading its console is the
end-to-end check that compute works; it needs a guest that boots in seconds
under TCG, gets its address by DHCP and says so on the console.  ``build``
makes one from two Debian packages only, fetched with ``apt-get download`` from
the host's configured mirror (nothing else is downloaded):

- ``linux-image-amd64``'s real package (``linux-image-6.x...-amd64``): the
  kernel (vmlinuz) and the modules for a virtio NIC and disk on QEMU's ``pc``
  machine (virtio_pci, virtio_net, virtio_blk and what their ``depends=``
  says; the package has no modules.dep, depmod writes it when installed);
- ``busybox-static``: the whole user space.

The initramfs (newc cpio, gzip, written here: the host has no cpio) holds
busybox, those modules and an ``/init`` that loads them in dependency order,
runs ``udhcpc`` on eth0 and prints on ttyS0 and tty0::

    rackforge-guest: up
    rackforge-guest: default via 10.0.2.2 dev eth0
    rackforge-guest: address 10.0.2.15/24 on eth0

then re-prints the address every 30 s and never exits (no panic).  The
kernel answers ping by itself.  ``disk`` is 1 MiB of zeros: nova wants a root
disk image; the guest never reads it.

The result is cached in ``cache_dir/<key>/``, the key naming both package
versions and a hash of the recipe below, so a second ``build`` downloads
nothing.  Total: about 10 MiB (kernel 7.9 MiB, initramfs 1.1 MiB, disk 1 MiB).

Upload to glance as an AMI-style set (nova-compute fetches the kernel and
ramdisk to the instance directory and boots them directly; ``os_command_line``
replaces nova's ``root=/dev/vda console=tty0 console=ttyS0 console=hvc0``).
The aki/ari container formats matter: with ``bare`` glance inspects the upload,
finds the bzImage's boot-sector signature, calls it "gpt" and refuses it::

    openstack image create --disk-format aki --container-format aki \\
        --file KERNEL guest-kernel
    openstack image create --disk-format ari --container-format ari \\
        --file INITRAMFS guest-ramdisk
    openstack image create --disk-format raw --container-format bare --file DISK \\
        --property kernel_id=$(openstack image show -f value -c id guest-kernel) \\
        --property ramdisk_id=$(openstack image show -f value -c id guest-ramdisk) \\
        --property os_command_line='console=ttyS0' guest
"""

import gzip
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

MARKER = "rackforge-guest: up"
ADDRESS_RE = r"rackforge-guest: address (\d+\.\d+\.\d+\.\d+/\d+) on eth0"
KERNEL_META = "linux-image-amd64"
BUSYBOX = "busybox-static"
# what a virtio NIC and disk on QEMU's pc machine need (their dependencies follow)
WANTED = ("virtio_pci", "virtio_net", "virtio_blk")
DISK_SIZE = 1 << 20

INIT = r"""#!/bin/sh
# rackforge test guest: virtio modules, DHCP on eth0, the address on the console.
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run /tmp
say() {
    for t in /dev/ttyS0 /dev/tty0; do { echo "rackforge-guest: $*" > "$t"; } 2>/dev/null; done
}
@INSMODS@
dmesg -n 4
n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
ip link set lo up
ip link set eth0 up || say "no eth0: is the NIC virtio-net?"
# in the foreground until the first lease, then a daemon that renews it
udhcpc -i eth0 -s /etc/udhcpc.script -b
n=0
up=
while :; do
    ip link set eth0 up 2>/dev/null
    if [ -s /run/eth0.address ]; then
        [ -n "$up" ] || { say up; say "$(ip route show default)"; up=1; }
        say "address $(cat /run/eth0.address) on eth0"
        sleep 30
    else
        [ $((n % 30)) -eq 0 ] && say "waiting for a DHCP lease on eth0"
        n=$((n + 1))
        sleep 1
    fi
done
"""

UDHCPC_SCRIPT = r"""#!/bin/sh
# udhcpc's hook: $1 is the event; $ip, $mask (prefix length), $router, $mtu: the lease
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    rm -f /run/eth0.address
    ;;
bound|renew)
    if [ "$(cat /run/eth0.address 2>/dev/null)" != "$ip/$mask" ]; then
        ip -4 addr flush dev "$interface"
        ip addr add "$ip/$mask" dev "$interface"
    fi
    for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
    # neutron announces its overlay networks' smaller MTU by DHCP
    [ -z "$mtu" ] || ip link set dev "$interface" mtu "$mtu"
    echo "$ip/$mask" > /run/eth0.address
    ;;
esac
exit 0
"""

RECIPE = hashlib.sha256(("1|%s|%s|%s" % (INIT, UDHCPC_SCRIPT, WANTED)).encode()).hexdigest()[:8]


class GuestImageError(RuntimeError):
    """One line: what is wrong and what to do."""


@dataclass
class GuestImage:
    kernel: Path
    initramfs: Path
    disk: Path
    modules: tuple = ()   # in insmod order
    MARKER: ClassVar[str] = MARKER
    ADDRESS_RE: ClassVar[str] = ADDRESS_RE

    @property
    def size(self):
        return sum(p.stat().st_size for p in (self.kernel, self.initramfs, self.disk))


def build(cache_dir):
    """The guest image from the host's apt mirror, built once per package versions."""
    cache_dir = Path(cache_dir)
    kernel_pkg, kernel_ver = _kernel_package()
    busybox_ver = _candidate(BUSYBOX)["Version"]
    key = "%s_%s+busybox_%s+%s" % (kernel_pkg, kernel_ver, busybox_ver, RECIPE)
    out = cache_dir / key.replace(":", "%3a")
    if not (out / "manifest.json").is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_dir))
        try:
            _build(work, (kernel_pkg, kernel_ver), (BUSYBOX, busybox_ver))
            try:
                work.rename(out)
            except OSError:
                if not (out / "manifest.json").is_file():   # not a concurrent build's result
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    manifest = json.loads((out / "manifest.json").read_text())
    return GuestImage(out / "vmlinuz", out / "initramfs.cpio.gz", out / "disk.raw",
                      tuple(manifest["modules"]))


# -- apt -------------------------------------------------------------------

def _run(cmd, what, **kw):
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    except FileNotFoundError:
        raise GuestImageError("%s: %s is not installed (the guest image needs a Debian host "
                              "with apt and dpkg)" % (what, cmd[0])) from None
    if res.returncode != 0:
        err = [line for line in res.stderr.splitlines() if line.startswith("E:")] or \
            res.stderr.strip().splitlines()[-1:] or ["exit status %d" % res.returncode]
        raise GuestImageError("%s failed (%s): check the host's apt sources and run "
                              "apt-get update" % (what, err[0].strip()))
    return res.stdout


def _candidate(package):
    """The fields of the version apt would install."""
    text = _run(["apt-cache", "show", "--no-all-versions", package],
                "apt-cache show %s" % package)
    fields = dict(re.findall(r"^([\w-]+): (.*)$", text, re.M))
    if "Version" not in fields:
        raise GuestImageError("apt-cache knows no %s: the host's apt sources need Debian "
                              "main (then apt-get update)" % package)
    return fields


def _kernel_package():
    """``linux-image-amd64`` is a metapackage: the versioned package it depends on."""
    depends = _candidate(KERNEL_META).get("Depends", "")
    m = re.search(r"(linux-image-\d[^\s,|()]*-amd64)", depends)
    if not m:
        raise GuestImageError("%s depends on no linux-image-N-amd64 (Depends: %s): "
                              "is this apt source Debian?" % (KERNEL_META, depends))
    return m.group(1), _candidate(m.group(1))["Version"]


def _unpack(work, package, version):
    """``apt-get download`` the exact version into ``work`` and ``dpkg-deb -x`` it."""
    debs = work / "debs"
    debs.mkdir(exist_ok=True)
    # -o APT::Sandbox::User=root: the _apt user cannot write to a root-only folder
    _run(["apt-get", "-q", "-o", "APT::Sandbox::User=root", "download",
          "%s=%s" % (package, version)], "apt-get download %s=%s" % (package, version),
         cwd=debs)
    deb, = debs.glob("%s_*.deb" % package)
    tree = work / package
    _run(["dpkg-deb", "-x", str(deb), str(tree)], "dpkg-deb -x %s" % deb.name)
    deb.unlink()
    return tree


# -- kernel modules ----------------------------------------------------------

def _modinfo_depends(ko):
    """The ``depends=`` of a module's ELF .modinfo section (what depmod puts in modules.dep)."""
    data = ko.read_bytes()
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i):
        name, _, _, _, offset, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        return name, offset, size

    names = section(shstrndx)[1]
    for i in range(shnum):
        name, offset, size = section(i)
        if data[names + name:data.index(b"\0", names + name)] == b".modinfo":
            for field in data[offset:offset + size].split(b"\0"):
                if field.startswith(b"depends="):
                    return [d for d in field[8:].decode().split(",") if d]
            return []
    raise GuestImageError("%s has no .modinfo section: not a kernel module?" % ko)


def _modules_in_order(moddir):
    """(name, path) of WANTED and their dependencies, each after what it needs."""
    files = {ko.name[:-3].replace("-", "_"): ko for ko in (moddir / "kernel").rglob("*.ko")}
    builtin = {Path(line).name[:-3].replace("-", "_")
               for line in (moddir / "modules.builtin").read_text().split()}
    order = []

    def visit(name):
        if name in builtin or name in (n for n, _ in order):
            return
        if name not in files:
            raise GuestImageError("module %s is neither in %s nor built in: does this kernel "
                                  "still have virtio drivers?" % (name, moddir))
        for dep in _modinfo_depends(files[name]):
            visit(dep)
        order.append((name, files[name]))

    for name in WANTED:
        visit(name)
    return order


# -- initramfs ---------------------------------------------------------------

class _Cpio:
    """A newc archive; every entry owned by root, mtime 0 (the same bytes every build)."""

    def __init__(self):
        self.data = bytearray()
        self.ino = 0

    def _entry(self, name, mode, body=b"", rdev=(0, 0)):
        self.ino += 1
        name = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, 0, len(body), 0, 0, rdev[0], rdev[1], len(name), 0)
        self.data += b"070701" + b"".join(b"%08x" % f for f in fields) + name
        self.data += b"\0" * (-len(self.data) % 4) + body
        self.data += b"\0" * (-len(self.data) % 4)

    def dir(self, name):
        self._entry(name, 0o040755)

    def file(self, name, body, mode=0o644):
        self._entry(name, 0o100000 | mode, body)

    def symlink(self, name, target):
        self._entry(name, 0o120777, target.encode())

    def chardev(self, name, major, minor):
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self):
        self._entry("TRAILER!!!", 0)
        return bytes(self.data)


def _initramfs(busybox, modules):
    cpio = _Cpio()
    for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "run", "tmp",
              "etc", "lib", "lib/modules"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)    # the kernel opens it for /init's stdio
    cpio.file("bin/busybox", busybox, 0o755)
    cpio.symlink("bin/sh", "busybox")
    for name, ko in modules:
        cpio.file("lib/modules/%s.ko" % name, ko.read_bytes())
    insmods = "\n".join("insmod /lib/modules/%s.ko" % name for name, _ in modules)
    cpio.file("init", INIT.replace("@INSMODS@", insmods).encode(), 0o755)
    cpio.file("etc/udhcpc.script", UDHCPC_SCRIPT.encode(), 0o755)
    return gzip.compress(cpio.finish(), compresslevel=9, mtime=0)


def _build(work, kernel, busybox):
    ktree = _unpack(work, *kernel)
    kver = kernel[0][len("linux-image-"):]
    vmlinuz = ktree / "boot" / ("vmlinuz-%s" % kver)
    if not vmlinuz.is_file():
        raise GuestImageError("%s has no boot/%s: an unexpected package layout"
                              % (kernel[0], vmlinuz.name))
    modules = _modules_in_order(ktree / "lib" / "modules" / kver)
    bbtree = _unpack(work, *busybox)
    (work / "initramfs.cpio.gz").write_bytes(
        _initramfs((bbtree / "bin" / "busybox").read_bytes(), modules))
    shutil.move(str(vmlinuz), str(work / "vmlinuz"))
    with open(work / "disk.raw", "wb") as f:
        f.truncate(DISK_SIZE)
    for tree in (ktree, bbtree, work / "debs"):
        shutil.rmtree(tree)
    os.chmod(work, 0o755)   # mkdtemp made it 0700
    manifest = {"kernel": "%s=%s" % kernel, "busybox": "%s=%s" % busybox, "recipe": RECIPE,
                "modules": [name for name, _ in modules]}
    (work / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
