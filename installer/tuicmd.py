"""``rackforge installer tui``: the installer's screens (``tui.py``) on a console.

``--tty DEVICE`` puts the app's stdin, stdout and stderr on that tty (Textual
reads stdin and draws on stderr; ``rackforge-installer-tui@.service`` runs it
with ``--tty /dev/%I`` and ``TERM=linux``); log records never reach the
screen the app draws on: they go to what stderr was (the unit's journal) and
to ``installer.log``.  ``--inventory`` reads a recorded inventory and needs
``--dry-run``, which goes through every screen and prints the plan instead
of writing.
"""

import contextlib
import logging
import os
import sys
from pathlib import Path

from rackforge import errors
from rackforge.installer import run as run_mod
from rackforge.installer import tui


class InventoryNeedsDryRun(errors.ConfigError):
    message = ("--inventory needs --dry-run: a recorded inventory's disks are not this "
               "machine's, so nothing is installed from one")


@contextlib.contextmanager
def on_tty(path):
    """Standard input, output and error on the tty ``path`` while the app runs (Textual
    reads stdin and draws on stderr); yields a duplicate of the old stderr for the log
    (the unit's journal), or None without ``path``."""
    if path is None:
        yield None
        return
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(n) for n in (0, 1, 2)]
    try:
        for n in (0, 1, 2):
            os.dup2(fd, n)
        yield os.dup(saved[2])
    finally:
        sys.stdout.flush()
        for n, old in zip((0, 1, 2), saved):
            os.dup2(old, n)
            os.close(old)
        os.close(fd)


@contextlib.contextmanager
def logs_off_screen(old_stderr):
    """Log records never reach the terminal the app draws on: stream handlers are
    moved to ``old_stderr`` (a file descriptor; None drops them) while the app runs."""
    root = logging.getLogger()
    moved = [h for h in root.handlers if isinstance(h, logging.StreamHandler)
             and not isinstance(h, logging.FileHandler)]
    for h in moved:
        root.removeHandler(h)
    added = None
    if old_stderr is not None:
        added = logging.StreamHandler(os.fdopen(old_stderr, "w", buffering=1))
        root.addHandler(added)
    try:
        yield
    finally:
        if added is not None:
            root.removeHandler(added)
            added.stream.close()
        for h in moved:
            root.addHandler(h)


def main(tty=None, inventory_path=None, dry_run=False):
    """``rackforge installer tui``: the exit status."""
    from rackforge.firstboot import inventory, storage
    from rackforge.installer import cli

    if inventory_path and not dry_run:
        raise InventoryNeedsDryRun()
    if inventory_path:
        machine, run = cli.load_inventory(inventory_path), None
    else:
        machine, run = inventory.collect(), storage.run_probe
    cmdline = ""
    if not dry_run:
        run_mod._log_to_file()
        cmdline = Path("/proc/cmdline").read_text()
    with on_tty(tty) as old_stderr, logs_off_screen(old_stderr):
        app = tui.InstallerApp(machine, run=run, dry_run=dry_run, cmdline=cmdline)
        plan = app.run(mouse=False)
        if app.return_code:
            return app.return_code
        if plan is None:
            print("rackforge installer: left; nothing was written")
            return 0
        print("dry run: the installer would:")
        for line in plan.summary():
            print("  " + errors.printable(line))
        print("nothing was written.")
    return 0
