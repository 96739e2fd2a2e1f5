"""``rackforge build`` and ``rackforge verify``: the image pipeline's commands.

Build-side only: this room is not installed on nodes, and the core CLI skips
these commands where it is absent.
"""

import os
import sys

from rackforge import errors, paths

# Environment a build re-executed under sudo must keep.
PRESERVED_ENV = ("PATH", "RACKFORGE_SOURCE", "RACKFORGE_PROFILES", "RACKFORGE_IMAGES",
                 "RACKFORGE_CACHE", "ELEMENTS_PATH", "DIB_IMAGE_CACHE", "TMPDIR")


def add_commands(sub):
    from rackforge.profile import DEFAULT_PROFILE

    p = sub.add_parser("build", help="build a profile's images into images/PROFILE/")
    p.add_argument("profile", nargs="?", default=DEFAULT_PROFILE,
                   help="profile name or path to a profile YAML (default: %(default)s)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the profile and print the plan; build nothing")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="show diskimage-builder's own output")
    p.add_argument("--no-cache", action="store_true",
                   help="build the base afresh even if a cached one matches")
    p.add_argument("--like", metavar="MANIFEST",
                   help="rebuild at the package versions of an earlier build's manifest.json; "
                        "fails naming every package the mirror no longer serves")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("verify", help="check a build's artifacts against its manifest")
    p.add_argument("profile", nargs="?", default=DEFAULT_PROFILE)
    p.set_defaults(func=cmd_verify)


def cmd_build(args):
    from rackforge.images import hosttools, pipeline
    from rackforge.profile import load_profile
    from rackforge.images.progress import Progress

    profile = load_profile(args.profile)
    plan = pipeline.make_plan(profile, like=args.like)
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
    if plan.pins:
        return _check_reproduced(plan, final, progress)
    return 0


def _check_reproduced(plan, final, progress):
    """Compare the rebuild's packages with the manifest it was pinned to."""
    import json

    from rackforge.images import manifest, pins

    data = json.loads((final / manifest.MANIFEST_NAME).read_text())
    differ = pins.compare(plan.pins, {p["name"]: p["version"] for p in data["packages"]})
    if not differ:
        progress.info("reproduced: all %d packages at the versions of %s"
                      % (len(plan.pins), plan.like))
        return 0
    for line in differ[:20]:
        progress.info("differs: %s" % line)
    raise errors.BuildFailed(
        step="rebuilding from %s" % plan.like, log=final / "build.log",
        detail="%d packages differ (the first: %s); the mirror no longer serves those "
               "versions: point the host's apt sources at a snapshot mirror to rebuild "
               "them" % (len(differ), differ[0]))


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
