"""``rackforge installer ...``: the installer's commands.

- ``installer run [--no-reboot]``: what ``rackforge-installer.service`` runs on an
  install boot (``installer/run.py``): answer file found, install unattended and
  reboot; none, start the TUI on each console.
- ``installer tui [--tty DEVICE] [--inventory JSON] [--dry-run]``: the
  installer's screens (``tuicmd.py``, ``tui.py``), the same answers and plan as a file.
- ``installer validate FILE [--inventory JSON]``: check an answer file, then
  show the plan it makes on this machine (or on a recorded inventory): the
  disk it would pick and what it would do with it.  It writes nothing: the
  disks are only probed (wipefs ``--no-act``, ``blkid -p``).  Every problem
  is one line on stderr and the exit status is 2.

Heavy imports stay inside the command functions so ``rackforge --help`` stays fast.
"""

from rackforge import errors

#: an inventory file (``rackforge firstboot inventory --json``) is read up to this size
MAX_INVENTORY_BYTES = 4 * 1024 * 1024


class InventoryUnreadable(errors.ConfigError):
    message = ("{path}: {problem}; give the output of 'rackforge firstboot inventory --json' "
               "run on the target")


def add_commands(sub):
    """Register ``installer`` and its sub-commands on the top-level sub-parser."""
    p = sub.add_parser("installer", help="the installer: install, check answer files")
    isub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = isub.add_parser("validate", help="check an answer file and show the disk it would "
                        "pick and what it would do (writes nothing)")
    q.add_argument("file", metavar="FILE", help="the answer file (YAML, version: 1)")
    q.add_argument("--inventory", metavar="JSON",
                   help="a recorded inventory ('rackforge firstboot inventory --json' on the "
                        "target) instead of this machine's; its disks are not probed")
    q.set_defaults(func=cmd_installer_validate)
    t = isub.add_parser("tui", help="the installer's screens: disk, network, cluster, host "
                        "name, SSH key, then the plan to confirm before anything is written")
    t.add_argument("--tty", metavar="DEVICE",
                   help="run on this tty (/dev/tty1, /dev/ttyS0) instead of the terminal")
    t.add_argument("--inventory", metavar="JSON",
                   help="a recorded inventory instead of this machine's (needs --dry-run)")
    t.add_argument("--dry-run", action="store_true",
                   help="go through every screen, then print the plan instead of writing")
    t.set_defaults(func=cmd_installer_tui)
    q = isub.add_parser("run", help="the install boot's installer (run by its unit): an "
                        "answer file installs unattended, none starts the TUI")
    q.add_argument("--no-reboot", action="store_true",
                   help="stay up after a successful install (default: reboot into it)")
    q.set_defaults(func=cmd_installer_run)


def cmd_installer_run(args):
    from rackforge.installer import run

    return run.main(reboot=not args.no_reboot)


class TuiUnavailable(errors.ConfigError):
    message = ("the installer's screens need Textual ({detail}); install python3-textual, "
               "or install from an answer file")


def cmd_installer_tui(args):
    try:
        from rackforge.installer import tuicmd
    except ImportError as e:
        if not (e.name or "").startswith(("textual", "rich")):
            raise
        raise TuiUnavailable(detail="no module %s" % e.name.split(".")[0]) from None
    return tuicmd.main(tty=args.tty, inventory_path=args.inventory, dry_run=args.dry_run)


def load_inventory(path):
    """The :class:`Inventory` recorded in the JSON file ``path``."""
    import json

    from rackforge import fileutil
    from rackforge.firstboot.inventory import Inventory

    try:
        data = json.loads(fileutil.read_limited(path, MAX_INVENTORY_BYTES))
    except OSError as e:
        raise InventoryUnreadable(path=path, problem="cannot read: %s" % (e.strerror or e))
    except ValueError as e:
        raise InventoryUnreadable(path=path, problem="not JSON (%s)" % e.__class__.__name__)
    try:
        return Inventory.from_dict(data)
    except (KeyError, TypeError, AttributeError):
        raise InventoryUnreadable(path=path, problem="not an inventory") from None


def cmd_installer_validate(args):
    from rackforge.firstboot import inventory, storage
    from rackforge.installer import answer, plan

    answers = answer.load(args.file)
    if args.inventory:
        machine, run = load_inventory(args.inventory), None
        where = "the inventory in %s" % args.inventory
    else:
        machine, run = inventory.collect(), storage.run_probe
        where = "this machine"
    result = plan.make_plan(answers, machine, run=run)
    print("%s: valid (version %d, %s)" % (errors.printable(args.file), answers.version,
                                          "a new cluster" if answers.mode == "create"
                                          else "joins a cluster"))
    print("on %s the installer would:" % errors.printable(where))
    for line in result.summary():
        print("  " + errors.printable(line))
    print("nothing was written.")
    return 0
