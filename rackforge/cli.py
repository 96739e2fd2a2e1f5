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

from rackforge import __version__, errors, paths

LOG = logging.getLogger("rackforge")

# Rooms that bring their own sub-commands: each module has ``add_commands(sub)``
# and keeps its heavy imports inside the command functions, so that
# ``rackforge --help`` stays fast.
COMMAND_MODULES = (
    "rackforge.pxe.cli",
    "rackforge.bmc.cli",
    "rackforge.firstboot.cli",
    "rackforge.virt.cli",
)

# Environment a build re-executed under sudo must keep.
PRESERVED_ENV = ("PATH", "RACKFORGE_SOURCE", "RACKFORGE_PROFILES", "RACKFORGE_IMAGES",
                 "RACKFORGE_CACHE", "ELEMENTS_PATH", "DIB_IMAGE_CACHE", "TMPDIR")


def _profile(name):
    from rackforge.profile import load_profile
    return load_profile(name)


# -- build -------------------------------------------------------------------
def cmd_build(args):
    from rackforge.images import hosttools, pipeline
    from rackforge.images.progress import Progress

    profile = _profile(args.profile)
    plan = pipeline.make_plan(profile)
    if args.dry_run:
        for line in plan.describe():
            print(line)
        return 0
    if not hosttools.has_privileges():
        if hosttools.sudo_available():
            _reexec_with_sudo()
        raise errors.NotPrivileged(action="building an image")
    progress = Progress(verbose=args.verbose)
    progress.info("building %s into %s/" % (profile.name, plan.out_dir))
    pipeline.preflight(plan)
    final = pipeline.Build(plan, progress, use_cache=not args.no_cache,
                           verbose=args.verbose).run()
    progress.info("built %s: %s" % (profile.name, final))
    return 0


def _reexec_with_sudo():
    env = ["%s=%s" % (k, os.environ[k]) for k in PRESERVED_ENV if k in os.environ]
    argv = ["sudo", "-n", "env", *env, sys.executable, "-m", "rackforge", *sys.argv[1:]]
    os.execvp("sudo", argv)


def cmd_verify(args):
    from rackforge.images import manifest
    out = paths.images_dir() / args.profile
    if not (out / manifest.MANIFEST_NAME).is_file():
        raise errors.ConfigError("no build of '%s' in %s: run 'rackforge build %s' first"
                                 % (args.profile, out, args.profile))
    problems = manifest.verify(out)
    for p in problems:
        print("%s: %s" % (out, p), file=sys.stderr)
    if problems:
        return 1
    print("%s: every artifact matches manifest.json" % out)
    return 0


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
    from rackforge.profile import ProfileInvalid
    bad = 0
    for name in args.profiles:
        try:
            _profile(name)
            print("%s: valid" % name)
        except (ProfileInvalid, errors.UnknownProfile) as e:
            _print_error(e)
            bad += 1
    return 2 if bad else 0


# -- node-side agents (placeholders until their issues land) -----------------
def _journal_line(agent, text):
    """One line to the journal (stdout of a systemd unit goes there)."""
    print("%s: %s" % (agent, text), flush=True)


def cmd_nodeagent_run(args):
    _journal_line("rackforge-nodeagent",
                  "rackforge %s node agent: nothing to do yet, exiting" % __version__)
    return 0


def cmd_version(args):
    print("rackforge %s" % __version__)
    return 0


def build_parser():
    from rackforge.profile import DEFAULT_PROFILE

    parser = argparse.ArgumentParser(
        prog="rackforge",
        description="Turn a rack of bare-metal servers into a converged OpenStack cloud.")
    parser.add_argument("--version", action="version", version="rackforge %s" % __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("build", help="build a profile's images into images/PROFILE/")
    p.add_argument("profile", nargs="?", default=DEFAULT_PROFILE,
                   help="profile name or path to a profile YAML (default: %(default)s)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the profile and print the plan; build nothing")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="show diskimage-builder's own output")
    p.add_argument("--no-cache", action="store_true",
                   help="build the base afresh even if a cached one matches")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("verify", help="check a build's artifacts against its manifest")
    p.add_argument("profile", nargs="?", default=DEFAULT_PROFILE)
    p.set_defaults(func=cmd_verify)

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

    # ``firstboot`` is registered by rackforge.firstboot.cli (COMMAND_MODULES)
    for agent, func in (("nodeagent", cmd_nodeagent_run),):
        p = sub.add_parser(agent, help="the %s agent (run by its systemd unit)" % agent)
        asub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
        asub.add_parser("run", help="run the agent").set_defaults(func=func)

    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub)

    sub.add_parser("version", help="print the version").set_defaults(func=cmd_version)
    return parser


def _print_error(e):
    for line in str(e).splitlines() or [e.__class__.__name__]:
        print("rackforge: error: %s" % line, file=sys.stderr)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # a TERM or HUP (closed terminal) unwinds like Ctrl-C: every stage cleans up
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
