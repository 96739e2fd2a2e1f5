"""``rackforge firstboot ...``: the first-boot agent's commands.

- ``firstboot run``: the agent its systemd unit starts (:mod:`.agent`);
- ``firstboot discover``: a discovery boot reports this machine to the seed
  (:mod:`.discover`; ``rackforge-discover.service``);
- ``firstboot reset --yes``: forget the step journal;
- ``firstboot join --endpoint URL --ca-sha256 PIN [--token-file F]``: new join
  settings for a node that has not joined (``rejoin.py``), first boot started again;
- ``firstboot inventory [--json]``: this machine's hardware inventory.

Heavy imports stay inside the command functions so ``rackforge --help`` stays fast.
"""

import sys

from rackforge import __version__


def add_commands(sub):
    """Register the first-boot and cluster commands on the top-level sub-parser."""
    p = sub.add_parser("firstboot", help="the first-boot agent (run by its systemd unit)")
    fsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    fsub.add_parser("run", help="run the agent").set_defaults(
        func=lambda args: cmd_firstboot_run(args))
    fsub.add_parser("discover", help="on a discovery boot: report this machine to the seed "
                    "(run by rackforge-discover.service)").set_defaults(
        func=lambda args: cmd_firstboot_discover(args))
    q = fsub.add_parser("reset", help="forget every first-boot step so the agent runs again")
    q.add_argument("--yes", action="store_true", help="really remove the step records")
    q.set_defaults(func=cmd_firstboot_reset)
    q = fsub.add_parser("join", help="a node that has not joined: replace its join endpoint, "
                        "token and CA pin, and run first boot again",
                        allow_abbrev=False)      # no '--token' read as '--token-file'
    q.add_argument("--endpoint", action="append", required=True, metavar="URL",
                   help="a controller's join service, https://ADDRESS:9443 (repeat, or "
                        "commas between)")
    q.add_argument("--ca-sha256", required=True, metavar="PIN",
                   help="the cluster CA's pin, sha256:<64 hex>")
    q.add_argument("--token-file", metavar="FILE",
                   help="read the token from FILE ('-': standard input); asked for "
                        "otherwise (never on the command line)")
    q.set_defaults(func=cmd_firstboot_join)
    q = fsub.add_parser("factory-reset", help="reset this node to its factory state: it "
                        "leaves its cluster, its state is erased, first boot waits for "
                        "join settings")
    g = q.add_mutually_exclusive_group(required=True)
    g.add_argument("--confirm", metavar="HOSTNAME",
                   help="this node's host name, typed to confirm")
    g.add_argument("--resume", action="store_true",
                   help="go on with a reset a power cut interrupted (its unit runs this)")
    q.set_defaults(func=cmd_firstboot_factory_reset)
    q = fsub.add_parser("inventory", help="this machine's hardware inventory")
    q.add_argument("--json", action="store_true", help="print the whole inventory as JSON")
    q.set_defaults(func=cmd_firstboot_inventory)


# -- firstboot ------------------------------------------------------------------------
BANNER = "rackforge-firstboot.issue"        # rejoin.py reads it back
BANNER_PREFIX = "rackforge first boot: "


def banner(line):
    """The console banner's first-boot line: joined as what, or why not (agetty issue.d).

    The banner is world-readable and shown on the console: ``line`` must hold no
    secret (callers pass only error lines that quote nothing from the bootstrap
    file), and control characters are escaped here.
    """
    from rackforge import errors, paths
    from rackforge.fileutil import atomic_write, make_dirs

    directory = paths.issue_dir()
    text = errors.printable(" ".join(str(line).split()))
    try:
        make_dirs(directory, 0o755)       # agetty reads it; the banner is public
        atomic_write(directory / BANNER, "%s%s\n\n" % (BANNER_PREFIX, text), mode=0o644)
    except OSError as exc:      # a read-only /etc must not hide the real outcome
        print("rackforge-firstboot: cannot write the console banner: %s" % exc, flush=True)


def cmd_firstboot_run(args, env=None):
    from rackforge import errors, states
    from rackforge.firstboot import agent, bootstrap, journal

    # tests/lib/boots.py and the image's console expect this line first
    print("rackforge-firstboot: rackforge %s first-boot agent: starting" % __version__,
          flush=True)

    def say(line):
        print("rackforge-firstboot: " + errors.printable(line), flush=True)

    if bootstrap.boot_mode() == states.DISCOVER:
        # the machine is nobody's node yet: it never joins on its own, bootstrap file or not
        say("a discovery boot (rackforge.mode=discover) never joins: "
            "rackforge-discover.service reports this machine to the seed; first boot runs "
            "from the disk 'rackforge rack up' installs")
        return 0
    if journal.done_marker().exists():
        say("first boot already completed (%s); 'rackforge firstboot reset --yes' to run "
            "it again" % journal.done_marker())
        return 0
    try:
        boot = bootstrap.load()
    except bootstrap.BootstrapMissing as exc:
        say(str(exc))
        banner("not joined: no bootstrap file yet (%s)" % bootstrap.path())
        return 0
    except errors.RackforgeError as exc:
        say("not joined: " + str(exc))
        banner("not joined: " + str(exc))
        return exc.exit_code
    except Exception:       # a bug: the console still says why; main() keeps the detail
        banner("not joined: reading the bootstrap file %s failed unexpectedly; see "
               "'journalctl -u rackforge-firstboot'" % bootstrap.path())
        raise
    what = ("seeding cluster %s" % boot.cluster if boot.seed
            else "joining through %s" % ", ".join(boot.join.endpoints))
    say("bootstrap %s: %s%s" % (boot.path, what,
                                ", role pinned %s" % boot.role if boot.role else ""))
    banner("working: %s" % what)

    def on_retry(step, exc, delay):
        say("step %s: retrying in %ds: %s" % (step, delay, exc))
        banner("retrying: %s (step %s, next try in %ds)" % (exc, step, delay))

    try:
        env = env or agent.Env()        # reads the node profile: its error is a line too
        env.start_console(say)
        ctx = agent.run(boot, env=env, say=say, on_retry=on_retry)
    except errors.RackforgeError as exc:
        say("not joined: " + str(exc))
        banner("not joined: " + str(exc))
        return exc.exit_code
    member = ctx.results.get("join") or ctx.results["seed"]
    role = ctx.results["handover"]["role"] + (",storage" if ctx.results["handover"]["storage"]
                                              else "")
    say("first boot complete: node %s is %s; handed over to the node agent"
        % (member["name"], role))
    banner("node %s joined as %s" % (member["name"], role))
    return 0


def cmd_firstboot_discover(args, **kw):
    """Report this machine to the seed on a discovery boot (``kw``: :func:`.discover.run`'s).

    One line on the console and the banner: recorded as which node, or why not.
    Exit 0 when recorded (or not a discovery boot, or nothing to send to), 2 for a
    refusal, 1 when the seed did not answer (its unit starts it again).
    """
    from rackforge import errors
    from rackforge.cluster import ca
    from rackforge.firstboot import discover

    def say(line):
        print("rackforge-discover: " + errors.printable(line), flush=True)

    def on_retry(detail, pause):
        say("the seed does not record this machine yet (%s); asking again in %ds"
            % (detail, pause))
        banner("discovery: retrying (%s; next try in %ds)" % (detail, pause))

    kw.setdefault("on_retry", on_retry)
    try:
        found = discover.run(**kw)
    except discover.NotRecorded as exc:
        say(str(exc))
        banner(str(exc))
        return 0
    except (discover.DiscoverRefused, discover.DiscoverUnavailable, ca.CAPinMismatch) as exc:
        say("not recorded: " + str(exc))
        banner("not recorded: " + str(exc))
        return exc.exit_code
    if found is None:
        say("not a discovery boot (no rackforge.mode=discover): nothing to report")
        return 0
    line = discover.line_for(*found)
    say(line)
    banner(line)
    return 0


def cmd_firstboot_reset(args):
    from rackforge.firstboot import journal

    if not args.yes:
        print("rackforge firstboot reset: this makes first boot run again on the next boot "
              "(join, role, storage); run it again with --yes to do it", file=sys.stderr)
        return 2
    removed = journal.reset()
    print("removed %d first-boot record%s from %s; rackforge-firstboot runs again on the "
          "next boot" % (removed, "" if removed == 1 else "s", journal.steps_dir().parent))
    return 0


def read_token(file, ask=None, stdin=None):
    """The join token from ``file`` (its first line; '-': standard input, asked for
    without echo when that is a terminal) or a prompt."""
    import getpass

    from rackforge import fileutil
    stdin = stdin or sys.stdin
    ask = ask or getpass.getpass
    prompt = "join token (from 'rackforge cluster token create'): "
    if file == "-":
        return (ask(prompt) if stdin.isatty() else stdin.readline()).strip()
    if file:
        data = fileutil.read_limited(file, 4096).decode("utf-8-sig", errors="replace")
        lines = data.splitlines()
        return lines[0].strip() if lines else ""
    return ask(prompt).strip()


def cmd_firstboot_join(args, geteuid=None):
    import os

    from rackforge import errors
    from rackforge.firstboot import rejoin

    if (geteuid or os.geteuid)() != 0:
        print("rackforge firstboot join: %s" % errors.NotPrivileged(
            action="rackforge firstboot join"), file=sys.stderr)
        return 2
    try:
        token = read_token(args.token_file)
    except OSError as exc:
        print("rackforge firstboot join: cannot read the token file %s (%s); give a "
              "readable file, '-' for standard input, or no --token-file to be asked"
              % (errors.printable(args.token_file), exc.strerror or type(exc).__name__),
              file=sys.stderr)
        return 2
    try:
        boot = rejoin.apply(rejoin.split_endpoints(args.endpoint), token, args.ca_sha256)
    except errors.RackforgeError as exc:
        print("rackforge firstboot join: %s" % exc, file=sys.stderr)
        return exc.exit_code
    print("join settings replaced (%s); first boot runs again: 'journalctl -fu %s'"
          % (", ".join(boot.join.endpoints), rejoin.UNIT))
    return 0


def cmd_firstboot_factory_reset(args, geteuid=None, env=None):
    import os

    from rackforge import errors
    from rackforge.firstboot import factoryreset

    if (geteuid or os.geteuid)() != 0:
        print("rackforge firstboot factory-reset: %s" % errors.NotPrivileged(
            action="rackforge firstboot factory-reset"), file=sys.stderr)
        return 2

    def say(line):
        print(line, flush=True)
    try:
        if args.resume:
            factoryreset.resume(env, say)
        else:
            plan = factoryreset.start(args.confirm, env, say)   # None: a reset resumed
            for line in plan.lines() if plan else []:
                print("  " + line)
    except errors.RackforgeError as exc:
        print("rackforge firstboot factory-reset: %s" % exc, file=sys.stderr)
        return exc.exit_code
    return 0


def cmd_firstboot_inventory(args):
    from rackforge.firstboot import inventory

    inv = inventory.collect()
    if args.json:
        print(inv.to_json())
        return 0
    sv = inv.system_vendor
    print("system:  %s %s serial=%s uuid=%s (%s boot)" % (
        sv.manufacturer or "?", sv.product_name or "?", sv.serial_number or "?",
        sv.uuid or "?", inv.boot_mode))
    print("cpu:     %d x %s (%s)" % (inv.cpu.count, inv.cpu.model or "?",
                                     inv.cpu.architecture))
    print("memory:  %.1f GiB" % (inv.memory.total_bytes / (1 << 30)))
    print("bmc:     %s" % (inv.bmc.address or "-"))
    for d in inv.disks:
        flags = [f for f in ("system", "removable", "read_only") if getattr(d, f)]
        print("disk:    %-8s %9.1f GiB %-5s %s serial=%s wwn=%s %s" % (
            d.name, d.size / (1 << 30), d.type, d.model or "?", d.serial or "-",
            d.wwn or "-", ",".join(flags)))
    for n in inv.interfaces:
        print("nic:     %-10s %s %s %s link=%s" % (
            n.name, n.mac or "-", n.kind, n.driver or "-", "up" if n.carrier else "down"))
    return 0
