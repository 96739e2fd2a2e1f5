"""The four ways an appliance boots, as test procedures shared by the suites."""

from guest import Guest, wait_for_login
from netns import pxe_network

from rackforge import __version__
from rackforge.images import live

NAME = "rackforge-minimal"
PROFILE = "minimal"
# TCG is slow: a disk boot takes about a minute here, a live boot a little more
BOOT_TIMEOUT = 15 * 60
FIRSTBOOT_LINE = r"rackforge-firstboot: rackforge %s first-boot agent" % __version__.replace(
    ".", r"\.")


def _login(guest):
    text = wait_for_login(guest, __version__, PROFILE, BOOT_TIMEOUT)
    # the first-boot unit ran its entry point (it writes to the console too)
    guest.wait_for(FIRSTBOOT_LINE, 60)
    return text


def boot_disk(out, workdir, firmware):
    guest = Guest(workdir, firmware=firmware)
    guest.add_disk(out / (NAME + ".qcow2"), "qcow2")
    with guest:
        return _login(guest)


def boot_iso_cdrom(out, workdir, firmware):
    guest = Guest(workdir, firmware=firmware)
    guest.add_cdrom(out / (NAME + ".iso"))
    with guest:
        return _login(guest)


def boot_iso_usb(out, workdir, firmware):
    """The ISO as if written with dd to a USB stick."""
    guest = Guest(workdir, firmware=firmware)
    guest.add_usb_stick(out / (NAME + ".iso"))
    with guest:
        return _login(guest)


def boot_pxe(out, workdir, firmware):
    """QEMU's own iPXE ROM -> DHCP (dnsmasq) -> HTTP boot script -> live root over HTTP."""
    http_root = workdir / "http"
    http_root.mkdir(parents=True)
    for name in ("vmlinuz", "initrd", "rootfs.squashfs"):
        (http_root / name).symlink_to(out / "pxe" / name)
    with pxe_network(workdir, http_root) as (netns, tap, base_url):
        (http_root / "boot.ipxe").write_text(
            live.render_ipxe(out / "pxe" / "boot.ipxe.j2", base_url))
        guest = Guest(workdir / "guest", firmware=firmware, netns=netns)
        guest.add_pxe_nic(tap)
        with guest:
            return _login(guest)


# medium -> procedure, for the parametrized boot tests
BOOTS = {"disk": boot_disk, "cdrom": boot_iso_cdrom, "usb": boot_iso_usb, "pxe": boot_pxe}
