"""The installer's TUI from the ``minimal`` ISO under QEMU (TCG, UEFI), typed at its serial
console in tmux, as a person at a BMC's serial console would.

The guest has the ISO, a blank target (serial RFTARGET02) and a decoy full of data
(serial RFDECOY02), and no answer file.  Keys go through ``tmux send-keys``, one at
a time as a person types at a slow serial console (``serialconsole.fill``); each step
waits for its screen (``capture-pane``):

1. GRUB's menu: Down, Enter (the install entry);
2. "1/6  Target disk": the target chosen with the arrows and Enter (its row marked
   ``(*)``), the decoy shown as holding data; then the network (static address),
   a new cluster, the host name, no SSH key;
3. the summary names the target and the host name; Tab to Install, Enter;
4. the installer says it installed and reboots (QEMU exits).

Then the decoy is byte for byte what it was, and the target's root holds the host
name, the seed's bootstrap file (0600) and the GRUB of both firmwares.  Booting the
installed disk is ``test_install_iso.py``'s.
"""

import re
import subprocess

import pytest
from guest import Guest
from serialconsole import SerialConsole
from test_install_iso import decoy_disk, root_partition, sha256

# in make e2e: about 15 minutes under TCG (the live system's boot, then the writer's
# verify of every file), beside test_install_iso's own install in make test
pytestmark = [pytest.mark.integration, pytest.mark.e2e]

NAME = "rackforge-minimal"
BOOT_TIMEOUT = 30 * 60          # TCG: GRUB, the live system's boot, then the TUI
SCREEN_TIMEOUT = 120            # one screen after a key
INSTALL_TIMEOUT = 30 * 60


def choose_target(console, serial, rows=10):
    """Enter on the highlighted row, Down until the chosen ``(*)`` row (its two lines) is
    ``serial``'s."""
    for _ in range(rows):
        console.key_until("Enter", lambda: any("(*)" in on for _, on in console.focused()),
                          SCREEN_TIMEOUT)
        if serial in console.wait_screen(r"\(\*\) .*\n.*", SCREEN_TIMEOUT).group(0):
            return
        highlighted = console.focused()
        console.key_until("Down", lambda: console.focused() != highlighted, SCREEN_TIMEOUT)
    raise AssertionError("no row for %s on the disk screen:\n%s" % (serial, console.screen()))


def on_screen(console, title):
    """``title`` shown and a field focused: the screen takes keys."""
    console.wait_screen(title, SCREEN_TIMEOUT)
    console.wait_until(lambda: console.focused(), SCREEN_TIMEOUT, "a focused field")


def next_screen(console, title, button="< Next >"):
    """Tab to ``button`` and press Enter until ``title`` shows (no function key: an escape
    sequence split by a slow serial line reads as Esc, which goes back)."""
    console.focus(button, SCREEN_TIMEOUT)
    console.key_until("Enter", lambda: re.search(title, console.screen()), SCREEN_TIMEOUT)
    on_screen(console, title)


def through_the_screens(console, serial, hostname):
    """From the disk screen to the summary: ``serial``'s disk, a static address, a new
    cluster, ``hostname``, no SSH key; the summary's text."""
    on_screen(console, r"1/6\s+Target disk")
    choose_target(console, serial)
    next_screen(console, r"2/6\s+Management network")
    console.fill("Address/prefix", "10.0.2.15/24", SCREEN_TIMEOUT)
    console.fill("Gateway", "10.0.2.2", SCREEN_TIMEOUT)
    next_screen(console, r"3/6\s+Cluster")
    console.fill("Cluster name", "rack1", SCREEN_TIMEOUT)
    console.fill("VIP", "10.0.2.100", SCREEN_TIMEOUT)
    next_screen(console, r"4/6\s+Host name")
    console.fill("Host name", hostname, SCREEN_TIMEOUT)
    next_screen(console, r"5/6\s+SSH key")
    next_screen(console, r"6/6\s+Summary")
    return console.wait_screen(r"6/6[\s\S]*Install >", SCREEN_TIMEOUT).group(0)


def test_the_tui_on_the_serial_console_installs_to_the_disk_chosen(minimal_build, tmp_path):
    if subprocess.run(["which", "tmux"], capture_output=True).returncode:
        pytest.skip("no tmux: tools/setup-host --test installs it")
    out, _ = minimal_build
    target, decoy = tmp_path / "target.qcow2", tmp_path / "decoy.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(target), "6G"], check=True)
    decoy_disk(decoy)
    before = sha256(decoy)

    guest = Guest(tmp_path / "install", firmware="uefi")
    guest.add_install_medium(out / (NAME + ".iso"))
    guest.add_scsi_disk(target, "RFTARGET02", fmt="qcow2")
    guest.add_scsi_disk(decoy, "RFDECOY02")
    guest.add_user_nic()
    with SerialConsole(guest, "rf-tui-%d" % id(tmp_path)) as console:
        # GRUB counts down 5 s from its menu: any key stops it
        console.wait_screen(r"Install rackforge", BOOT_TIMEOUT)
        console.keys("Down")
        console.keys("Enter")

        console.wait_screen(r"rackforge installer\s+1/6\s+Target disk", BOOT_TIMEOUT)
        screen = console.screen()
        assert "HOLDS DATA" in screen and "RFDECOY02" in screen
        summary = through_the_screens(console, "RFTARGET02", "tui1")
        assert "RFTARGET02" in summary and "tui1" in summary, summary
        assert "RFDECOY02" not in summary, summary
        console.focus("< Install >", SCREEN_TIMEOUT)
        console.keys("Enter")

        done = console.wait_screen(r"installed to \S+ \(serial:RFTARGET02\) in (\d+) s|"
                                   r"FAILED: .*", INSTALL_TIMEOUT)
        assert done.group(1), done.group(0)         # the TUI's failure line, not 30 min
        print("installed in %s s (under TCG)" % done.group(1))
        assert console.wait_exit(300) == 0
    # the TUI's own failure line (systemd's "FAILED ... Failed unmounting /run/live/medium"
    # at the live system's power-off is every live system's: its root is on that medium)
    assert "FAILED: " not in console.output()
    assert sha256(decoy) == before

    mnt = root_partition(target, tmp_path)
    try:
        assert (mnt / "etc" / "hostname").read_text() == "tui1\n"
        bootstrap = mnt / "etc" / "rackforge" / "bootstrap.yaml"
        assert oct(bootstrap.stat().st_mode & 0o777) == "0o600"
        text = bootstrap.read_text()
        assert "seed: true" in text and "rack1" in text and "10.0.2.100" in text
        assert (mnt / "boot" / "grub" / "i386-pc").is_dir()
        assert (mnt / "boot" / "grub" / "x86_64-efi").is_dir()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
