"""``rackforge installer run``: the install boot's one job, start to reboot.

1. find the answer file (:mod:`sources`, in its order); none: start the TUI on
   each console (``rackforge-installer-tui@TTY``) and stop here;
2. check it and make the plan on this machine (:mod:`answer`, :mod:`plan`):
   the disk the answer file came from is left out like the boot medium;
3. take the install lock (one writer, whichever console or answer file got
   there first), write (:mod:`write`), report to the seed when it asked us to
   install (a PXE node), and reboot into the installed system.

What the operator sees is a few lines on every console (the consoles the
kernel writes to, ``/sys/class/tty/console/active``, plus tty1): the answer
file's source, the target, each step with its progress, and either
``installed to DISK (ID) in N s`` or one ``FAILED:`` line; the detail goes to
the journal and to ``/var/log/rackforge/installer.log``.  A failure leaves
the machine up (no reboot) so the line stays on the screen.
"""

import contextlib
import fcntl
import logging
import os
import subprocess
import time
from pathlib import Path

from rackforge import errors, yamlfile
from rackforge.installer import sources, write

LOG = logging.getLogger(__name__)
LOG_FILE = Path("/var/log/rackforge/installer.log")
LOCK = Path("/run/rackforge/installer.lock")
PREFIX = "rackforge installer: "
TUI_UNIT = "rackforge-installer-tui@%s.service"


class InstallBusy(errors.RackforgeError):
    message = "another console is installing already; follow it there"


class Console:
    """Lines for the person at the machine: every active console, and the log."""

    def __init__(self, ttys=None, stream=None):
        self.ttys = ttys if ttys is not None else consoles()
        self.stream = stream
        self._last = {}

    def line(self, text):
        LOG.info("%s", text)
        text = PREFIX + errors.printable(text)
        for tty in self.ttys:
            try:
                with open(tty, "w") as f:
                    f.write(text + "\n")
            except OSError:
                pass
        if self.stream is not None:
            self.stream.write(text + "\n")
            self.stream.flush()

    def progress(self, step, fraction, line):
        """A step's progress: its start, every 10 %, its end."""
        if line:
            self.line(line)
            return
        tenth = int(fraction * 10)
        if tenth > self._last.get(step, 0):
            self._last[step] = tenth
            self.line("%s %d%%" % (step, tenth * 10))


def consoles(sys_root="/sys"):
    """The ttys the kernel's console goes to (tty0 means the visible VT: tty1 here)."""
    try:
        active = Path(sys_root, "class", "tty", "console", "active").read_text().split()
    except OSError:
        active = []
    ttys = ["/dev/" + ("tty1" if name == "tty0" else name) for name in active]
    return list(dict.fromkeys(ttys + ["/dev/tty1"]))


def console_args(cmdline):
    """The ``console=`` arguments of this boot, kept for the installed system."""
    return " ".join(w for w in cmdline.split() if w.startswith("console=")) or \
        "console=tty0 console=ttyS0,115200n8"


def answers_of(found):
    """Checked :class:`answer.Answers` of the text of a found answer file."""
    from rackforge.installer import answer

    try:
        root = yamlfile.compose(found.text, found.source, answer.LIMITS)
        data = yamlfile.construct(root, found.source, answer.LIMITS)
    except yamlfile.YamlError as e:
        raise answer.AnswerUnreadable(where=e.kwargs["where"],
                                      problem=e.kwargs["problem"]) from None
    lines = yamlfile.key_lines(root) if root is not None else {}
    return answer.Answers.from_dict(data, where=found.source, lines=lines)


def leave_out(inventory, device):
    """Mark the disk an answer file came from as a system disk: never a target."""
    if not device:
        return
    disk = os.path.realpath(sources.parent_disk(device))
    for d in inventory.disks:
        if os.path.realpath(d.path) == disk:
            d.system = True


@contextlib.contextmanager
def install_lock(path=LOCK):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InstallBusy() from None
        yield
    finally:
        os.close(fd)


def install(plan, console, cmdline, source=None, report=None, run=subprocess.run):
    """Write ``plan`` to its disk from the live root; returns the seconds it took."""
    start = time.monotonic()
    root = source or write.live_root()
    if root is None:
        raise write.InstallError(disk=plan.disk.path, step="source",
                                 reason="no live root is mounted (/run/live/rootfs); "
                                        "boot the ISO, USB stick or PXE install entry")
    medium_live = sources.MEDIUM / "live"
    target = write.Target(disk=plan.disk.path, hostname=plan.hostname,
                          bootstrap=plan.bootstrap_yaml(), ssh_keys=plan.ssh_authorized_keys,
                          console=console_args(cmdline),
                          bundle_from=str(medium_live) if plan.mode == "create" and
                          (medium_live / "filesystem.squashfs").is_file() else None)
    with install_lock():
        warnings = write.Writer(target, root, progress=console.progress, run=run).write()
    for w in warnings:
        console.line("warning: " + w)
    return time.monotonic() - start


def run_unattended(found, console, cmdline, seed_report=None):
    from rackforge.firstboot import inventory, storage
    from rackforge.installer import plan as plan_mod

    console.line("answer file from %s" % found.source)
    answers = answers_of(found)
    machine = inventory.collect()
    leave_out(machine, found.device)
    plan = plan_mod.make_plan(answers, machine, run=storage.run_probe)
    d = plan.disk
    console.line("target %s (%s)" % (d.path, ", ".join(
        x for x in (d.stable_id, _size(d.size), d.model) if x)))
    for line in plan.summary()[1:]:
        console.line("  " + line)
    seconds = install(plan, console, cmdline)
    if seed_report:
        seed_report("installed", "")
    console.line("installed to %s (%s) in %.0f s; rebooting into it" % (
        d.path, d.stable_id, seconds))
    return 0


def _size(size):
    from rackforge.installer import disks
    return disks.size_text(size)


def start_tuis(run=subprocess.run):
    """No answer file: the TUI on tty1 and on the serial console, in place of their gettys."""
    ttys = ["tty1"] + [t[5:] for t in consoles() if t.startswith("/dev/ttyS")]
    run(["systemctl", "start", "--no-block"] + [TUI_UNIT % t for t in dict.fromkeys(ttys)],
        check=False)


def main(cmdline=None, reboot=True, run=subprocess.run):
    """The unit's entry point; the exit status."""
    cmdline = cmdline if cmdline is not None else Path("/proc/cmdline").read_text()
    _log_to_file()
    console = Console()
    seed_report = None
    try:
        found = sources.find(cmdline, run=run, seed=_seed_source())
        if found is None:
            console.line("no answer file: the installer is on tty1 and the serial console")
            start_tuis(run)
            return 0
        seed_report = found.report
        run_unattended(found, console, cmdline, seed_report)
    except errors.RackforgeError as exc:
        console.line("FAILED: %s" % exc)
        console.line("the detail is in %s; nothing boots from a half-written disk" % LOG_FILE)
        if seed_report:
            try:
                seed_report("failed", str(exc))
            except errors.RackforgeError as again:
                console.line("the seed was not told: %s" % again)
        return exc.exit_code or 1
    if reboot:
        run(["systemctl", "reboot"], check=False)
    return 0


def _seed_source():
    try:
        from rackforge.installer import seedapi
    except ImportError:
        return None
    return seedapi.fetch


def _log_to_file():
    try:
        LOG_FILE.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(LOG_FILE)
    except OSError:
        return
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("rackforge").addHandler(handler)
    logging.getLogger("rackforge").setLevel(logging.INFO)
