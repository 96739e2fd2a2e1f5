"""The ``rackforge`` command.

Every failure the operator can cause or fix ends here as one line on stderr
(``rackforge: error: ...``) and a non-zero exit; tracebacks are for bugs
only, and even those end with one line pointing at the log.
"""

import argparse
import importlib
import logging
import os
import signal
import sys

from rackforge import __version__, errors

LOG = logging.getLogger("rackforge")

# Rooms that bring their own sub-commands: each module has ``add_commands(sub)``
# and keeps its heavy imports inside the command functions, so that
# ``rackforge --help`` stays fast.
COMMAND_MODULES = (
    "rackforge.images.cli",
    "rackforge.pxe.cli",
    "rackforge.bmc.cli",
    "rackforge.bringup.cli",
    "rackforge.cluster.cli",
    "rackforge.firstboot.cli",
    "rackforge.installer.cli",
    "rackforge.nodeagent.cli",
    "rackforge.virt.cli",
)
# Build-side rooms: not installed on a node (images/rootfs.py), so their commands
# are simply absent there.
OPTIONAL_MODULES = ("rackforge.images.cli", "rackforge.virt.cli")


def _profile(name):
    from rackforge.profile import load_profile
    return load_profile(name)


# -- profiles ----------------------------------------------------------------
def cmd_profile_list(args):
    from rackforge.profile import DEFAULT_PROFILE, list_profiles
    for name, description in list_profiles():
        mark = " (default)" if name == DEFAULT_PROFILE else ""
        print("%-10s %s%s" % (name, description, mark))
    return 0


def cmd_profile_show(args):
    import yaml
    print(yaml.safe_dump(_profile(args.profile).as_dict(), sort_keys=False), end="")
    return 0


def cmd_profile_validate(args):
    """Every profile named is checked and reported, whatever the ones before it were."""
    bad = 0
    for name in args.profiles:
        try:
            _profile(name)
            print("%s: valid" % errors.printable(name))
        except errors.ConfigError as e:
            _print_error(e)
            bad += 1
    return 2 if bad else 0


def cmd_version(args):
    print("rackforge %s" % __version__)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="rackforge",
        description="Turn a rack of bare-metal servers into a converged OpenStack cloud.")
    parser.add_argument("--version", action="version", version="rackforge %s" % __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("profile", help="list, show and validate profiles")
    psub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    psub.add_parser("list", help="the profiles and what they are for").set_defaults(
        func=cmd_profile_list)
    q = psub.add_parser("show", help="the merged profile, as YAML")
    q.add_argument("profile")
    q.set_defaults(func=cmd_profile_show)
    q = psub.add_parser("validate", help="check profiles; one line per problem")
    q.add_argument("profiles", nargs="+")
    q.set_defaults(func=cmd_profile_validate)

    for module in COMMAND_MODULES:
        try:
            commands = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if module in OPTIONAL_MODULES and module.startswith(str(exc.name)):
                continue
            raise
        commands.add_commands(sub)

    sub.add_parser("version", help="print the version").set_defaults(func=cmd_version)
    return parser


def _print_error(e):
    for line in str(e).splitlines() or [e.__class__.__name__]:
        print("rackforge: error: %s" % errors.printable(line), file=sys.stderr)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # a TERM or HUP (closed terminal) unwinds like Ctrl-C: every stage cleans up.  Ctrl-C
    # itself too, even when started from a shell that ignores it (a background job of a
    # non-interactive shell inherits SIGINT ignored, and Python keeps it so)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except errors.RackforgeError as e:
        _print_error(e)
        return e.exit_code
    except KeyboardInterrupt:
        _print_error(errors.Interrupted(what="rackforge %s" % args.command))
        return errors.Interrupted.exit_code
    except BrokenPipeError:
        return 1
    except OSError as e:
        _print_error(errors.FileProblem.of(e))
        return errors.FileProblem.exit_code
    except Exception:       # noqa: BLE001 - a bug: one line here, the detail logged
        where = _log_bug(args)
        _print_error(errors.Bug(command=args.command, where=where))
        return errors.Bug.exit_code


def _log_bug(args):
    """Keep the traceback where the operator can send it; returns where that is."""
    import tempfile
    import traceback

    detail = "rackforge %s: %s" % (" ".join(sys.argv[1:]) or args.command,
                                   traceback.format_exc())
    if os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"):
        LOG.error("%s", detail)       # stderr of a unit: the journal
        return "the journal of this unit ('journalctl -b -u UNIT')"
    fd, path = tempfile.mkstemp(prefix="rackforge-error-", suffix=".log")
    with os.fdopen(fd, "w") as f:
        f.write(detail)
    return path
