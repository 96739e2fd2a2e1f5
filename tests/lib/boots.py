"""The four ways an appliance boots, as test procedures shared by the suites."""

from guest import Guest, once_more_on_panic, wait_for_login
from netns import RANGE, rack_network

from rackforge import __version__

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


def _boot_local(workdir, firmware, attach):
    """Boot a guest with what ``attach(guest)`` adds, to the login prompt (a kernel panic
    is retried once: :func:`guest.once_more_on_panic`)."""
    def make(attempt):
        guest = Guest(workdir if attempt == 1 else workdir / "again", firmware=firmware)
        attach(guest)
        return guest
    return once_more_on_panic(make, _login)


def boot_disk(out, workdir, firmware):
    return _boot_local(workdir, firmware,
                       lambda guest: guest.add_disk(out / (NAME + ".qcow2"), "qcow2"))


def boot_iso_cdrom(out, workdir, firmware):
    return _boot_local(workdir, firmware, lambda guest: guest.add_cdrom(out / (NAME + ".iso")))


def boot_iso_usb(out, workdir, firmware):
    """The ISO as if written with dd to a USB stick."""
    return _boot_local(workdir, firmware,
                       lambda guest: guest.add_usb_stick(out / (NAME + ".iso")))


PXE_MAC = "52:54:00:12:34:56"


def boot_pxe(out, workdir, firmware):
    """Network boot from ``rackforge pxe serve``, the way each firmware does it.

    BIOS: QEMU's iPXE ROM, beside a site DHCP server, from rackforge's
    proxy-DHCP.  UEFI: OVMF's own PXE client (no iPXE ROM) from rackforge's
    full DHCP, which fetches snponly.efi over rackforge's TFTP first.  Both
    then take the chain and per-node scripts, kernel, initrd and the live
    root over HTTP.  Returns the console text up to the login prompt.
    """
    proxy = firmware == "bios"
    with rack_network(workdir, site_dhcp=proxy) as net:
        tap = net.add_tap()
        net.start_serve("--bundle", out / "pxe",
                        *(["--mode", "proxy"] if proxy else ["--mode", "full", "--range",
                                                             ",".join(RANGE)]))
        guest = Guest(workdir / "guest", firmware=firmware, netns=net.netns)
        guest.add_pxe_nic(tap, PXE_MAC, ipxe_rom=proxy)
        with guest:
            text = _login(guest)
        net.stop_serve()
        status = net.rackforge("pxe", "status", "--json")
        return text, net.log.read_text(), status.stdout


# medium -> procedure, for the parametrized boot tests
BOOTS = {"disk": boot_disk, "cdrom": boot_iso_cdrom, "usb": boot_iso_usb, "pxe": boot_pxe}
