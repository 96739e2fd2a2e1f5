"""The OpenStack test guest (tests/lib/guestimage.py) built from Debian packages and booted.

The image is built into a session temporary folder from the host's apt
mirror, then booted the way nova's libvirt driver boots an image with
kernel_id/ramdisk_id: direct kernel boot on QEMU's default ``pc`` machine
(TCG), a virtio disk and a virtio NIC.  QEMU's user-mode network answers the
guest's DHCP itself (10.0.2.15/24) and binds nothing on the host, so the test
needs neither root nor a bridge.  Passing means: the virtio modules load in
order, udhcpc configures eth0, and the console shows the lines an operator
(or an end-to-end test) reads from ``openstack console log show``.
"""

import re
import shutil
import time

import guestimage
import pytest
from guest import Guest

pytestmark = [pytest.mark.integration]

# a boot to the address line takes about 10 s under TCG here; the rest is for a busy host
BOOT_TIMEOUT = 5 * 60
USER_NET_ADDRESS = "10.0.2.15/24"
USER_NET_GATEWAY = "10.0.2.2"
MAX_SIZE = 32 << 20


@pytest.fixture(scope="session")
def guest_image(tmp_path_factory):
    for tool in ("apt-get", "dpkg-deb", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            pytest.skip("%s is missing: tools/setup-host --test installs it" % tool)
    try:
        return guestimage.build(tmp_path_factory.mktemp("guestimage"))
    except guestimage.GuestImageError as e:
        pytest.fail(str(e), pytrace=False)


class KernelGuest(Guest):
    """QEMU with -kernel/-initrd/-append, as nova's libvirt driver runs an AMI-style image."""

    def __init__(self, workdir, image):
        super().__init__(workdir, memory_mib=256, cpus=1)
        self.image = image

    def command(self):
        return ["qemu-system-x86_64", "-accel", "tcg", "-m", str(self.memory_mib),
                "-nographic", "-no-reboot",
                "-kernel", str(self.image.kernel), "-initrd", str(self.image.initramfs),
                "-append", "console=ttyS0",
                # snapshot=on: the cached disk is never written (nor locked for writing)
                "-drive", "file=%s,format=raw,if=virtio,snapshot=on" % self.image.disk,
                "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"]


def test_image_is_small_and_built_once(guest_image):
    assert guest_image.size < MAX_SIZE, "the guest image grew to %d bytes" % guest_image.size
    assert guest_image.disk.stat().st_size == 1 << 20
    # virtio_net's dependencies come from its .modinfo, each loaded before what needs it
    mods = guest_image.modules
    assert mods.index("failover") < mods.index("net_failover") < mods.index("virtio_net")
    assert "virtio_blk" in mods
    # a second build with the same package versions reuses the cached files
    stamps = {p: p.stat().st_mtime_ns
              for p in (guest_image.kernel, guest_image.initramfs, guest_image.disk)}
    again = guestimage.build(guest_image.kernel.parent.parent)
    assert again == guest_image
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_guest_boots_and_reports_its_dhcp_address(guest_image, tmp_path):
    guest = KernelGuest(tmp_path, guest_image)
    started = time.monotonic()
    with guest:
        guest.wait_for(r"(?m)^%s\r?$" % re.escape(guestimage.MARKER), BOOT_TIMEOUT)
        m = guest.wait_for(r"(?m)^%s\r?$" % guestimage.ADDRESS_RE, 60)
        took = time.monotonic() - started
    assert guest.proc.poll() is not None, "QEMU outlived the test"
    assert m.group(1) == USER_NET_ADDRESS, guest.output[-2000:]
    # udhcpc's hook set the default route from the lease (the way back to a pinging host)
    assert "rackforge-guest: default via %s dev eth0" % USER_NET_GATEWAY in guest.output
    assert "insmod: can't insert" not in guest.output
    print("guest up with %s after %.1f s (console: %s)" % (m.group(1), took, guest.console_log))
