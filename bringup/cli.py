"""``rackforge rack up`` and ``rackforge rack status``.

Heavy imports stay inside the command functions so that ``rackforge --help``
stays fast.  BMC passwords come from a file, an environment variable or a
prompt (``bmc/credentials.py``), never from the command line, and only when a
BMC is to be enrolled: a second ``rack up`` over the same BMCs asks nothing.
"""

import json
import logging
import os
import re
import sys

from rackforge import errors

DISK_GLOBS = ("serial", "model", "vendor", "wwn", "by_path")
DISK_SIZES = ("min_gib", "max_gib")
DEFAULT_DEADLINE = "60m"
DEFAULT_REBOOT_WAIT = "15m"
#: the seed's PXE bundle, made by the installer from its medium (installer/write.py)
DEFAULT_BUNDLE = "/var/lib/rackforge/bundle"


class BringupOptionError(errors.ConfigError):
    message = "{option}: {why}"


class ClusterNotReady(errors.ConfigError):
    message = ("the cluster record {why}: 'rack up' runs on the seed once its first boot "
               "is done (the join service serves the install API); see 'rackforge cluster "
               "status'")


def add_commands(sub):
    """Register ``rack up`` and ``rack status`` on the top-level sub-parser."""
    from rackforge.bmc import cli as bmc_cli

    p = sub.add_parser("rack", help="bring the rack up from the seed: boot services, BMCs, "
                       "installs, joins")
    rsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = rsub.add_parser("up", help="install every node behind the given BMCs and follow it "
                        "until it is active; run again to continue")
    q.add_argument("bmcs", nargs="*", metavar="BMC",
                   help="ADDR[:PORT], FIRST-LAST[:PORT] (10.0.0.10-10.0.0.20) or "
                        "ADDR:PORT-PORT; none: continue the nodes of earlier runs")
    q.add_argument("--user", metavar="USER", help="BMC user name (to enroll new BMCs)")
    q.add_argument("--driver", default="ipmi", help="BMC driver (default: %(default)s)")
    bmc_cli._add_password_options(q)
    g = q.add_argument_group("boot services (rackforge-pxe.service, 'pxe serve')")
    g.add_argument("--interface", metavar="IF", help="the provisioning interface (default: "
                   "what an earlier 'rack up' configured)")
    g.add_argument("--bundle", metavar="DIR", default=None,
                   help="the PXE bundle to serve (default: %s, which the installer made on "
                        "the seed from its installation medium)" % DEFAULT_BUNDLE)
    g.add_argument("--mode", choices=("proxy", "full"), default="proxy",
                   help="proxy-DHCP beside the site's server (default), or full DHCP")
    g.add_argument("--range", dest="range_", metavar="FIRST,LAST",
                   help="addresses for --mode full")
    g.add_argument("--http-port", type=int, metavar="N", help="boot HTTP port (default 8080)")
    g.add_argument("--allow-default-route", action="store_true",
                   help="serve even on the interface of the default route")
    g.add_argument("--no-pxe", action="store_true",
                   help="leave the boot services alone (they run elsewhere)")
    g = q.add_argument_group("install")
    g.add_argument("--disk-match", metavar="KEY=VALUE[,...]", default="size=largest",
                   help="the target disk, as the answer file's disk.match: serial, model, "
                        "vendor, wwn, by_path (globs), min_gib, max_gib, size=largest|"
                        "smallest (default: %(default)s)")
    g.add_argument("--wipe", choices=("never", "force"), default="never",
                   help="write over a disk that holds data (default: %(default)s)")
    g.add_argument("--set-bmc-password", action="store_true",
                   help="give each BMC user a generated password of its own (stored sealed, "
                        "never shown)")
    g.add_argument("--uefi", action="store_true", help="ask the BMCs for UEFI boots")
    g.add_argument("--retry-failed", action="store_true",
                   help="install failed nodes again (default: report them)")
    g = q.add_argument_group("how")
    g.add_argument("--deadline", default=DEFAULT_DEADLINE, metavar="DURATION",
                   help="per node, until it is active: 90s, 30m, 2h (default: %(default)s)")
    g.add_argument("--reboot-wait", default=DEFAULT_REBOOT_WAIT, metavar="DURATION",
                   help="a node installed this long that has not joined yet (its reboot "
                        "never came) is reset through its BMC, once (default: %(default)s)")
    g.add_argument("--no-wait", action="store_true",
                   help="power the nodes on and return; 'rack status' follows them")
    g.add_argument("--concurrency", type=int, default=16, metavar="N",
                   help="BMCs worked on at once (default: %(default)s)")
    g.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                   help="per BMC and stage, retries included (default: %(default)s)")
    g.add_argument("--attempts", type=int, default=5, metavar="N",
                   help="attempts per BMC on retryable errors (default: %(default)s)")
    g.add_argument("--poll", type=float, default=5.0, help=argparse_suppress())
    g.add_argument("--insecure", action="store_true",
                   help="allow empty BMC passwords and anonymous logins (labs only)")
    g.add_argument("--etcd", metavar="URL", help="node registry endpoint")
    q.set_defaults(func=cmd_up)

    q = rsub.add_parser("status", help="every node: BMC, state, since when, last error")
    q.add_argument("--json", action="store_true", help="print the status as JSON")
    q.add_argument("--etcd", metavar="URL", help="node registry endpoint")
    q.set_defaults(func=cmd_status)


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS


def parse_duration(text, option="--deadline"):
    """``90``, ``90s``, ``30m``, ``2h`` -> seconds (1 minute to 24 hours)."""
    m = re.fullmatch(r"\s*(\d{1,6})\s*([smh]?)\s*", str(text).lower())
    if m is None:
        raise BringupOptionError(option=option, why="give seconds or a duration like 30m")
    seconds = int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    if not 60 <= seconds <= 24 * 3600:
        raise BringupOptionError(option=option, why="from 1 minute to 24 hours")
    return seconds


def parse_disk(match, wipe):
    """The answer file's ``disk`` section from ``--disk-match`` and ``--wipe``."""
    spec = {}
    for part in filter(None, (p.strip() for p in match.split(","))):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise BringupOptionError(option="--disk-match", why="write KEY=VALUE[,KEY=VALUE]")
        if key in DISK_GLOBS:
            spec[key] = value
        elif key in DISK_SIZES:
            try:
                number = float(value)
            except ValueError:
                number = 0
            if not number > 0:
                raise BringupOptionError(option="--disk-match", why="%s is a size in GiB "
                                         "above 0" % key)
            spec[key] = int(number) if number.is_integer() else number
        elif key == "size" and value in ("largest", "smallest"):
            spec[key] = value
        else:
            raise BringupOptionError(option="--disk-match", why="the keys are %s and "
                                     "size=largest|smallest" % ", ".join(DISK_GLOBS
                                                                         + DISK_SIZES))
    if not spec:
        raise BringupOptionError(option="--disk-match", why="name the target disk, like "
                                 "size=largest")
    return {"match": spec, "wipe": wipe}


def cluster_ready(kv):
    """``(join endpoints, CA pin, cluster name)`` from the cluster record."""
    from rackforge import keys

    entry = kv.get(keys.CLUSTER)
    try:
        record = json.loads(entry.value) if entry is not None else None
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise ClusterNotReady(why="is missing")
    if not record.get("join_endpoints") or not record.get("ca_sha256"):
        raise ClusterNotReady(why="lists no join endpoint or CA pin yet")
    return record["join_endpoints"], record["ca_sha256"], record.get("name")


def _boot_services(args, cluster):
    from rackforge.bringup import bootsvc

    if args.no_pxe:
        return
    words = None
    if args.interface and not args.bundle and os.path.isdir(DEFAULT_BUNDLE):
        args.bundle = DEFAULT_BUNDLE
    if args.interface or args.bundle:
        if not (args.interface and args.bundle):
            raise BringupOptionError(option="--interface", why="the boot services need both "
                                     "--interface IF and --bundle DIR")
        bootsvc.check(args.interface, args.bundle, args.mode, args.range_,
                      args.allow_default_route)
        words = bootsvc.arguments(args.interface, args.bundle, args.mode, args.range_,
                                  args.http_port, args.etcd, cluster,
                                  allow_default_route=args.allow_default_route)
    done = bootsvc.ensure(words)
    print("boot services: %s; waiting for them to serve" % done, flush=True)
    status = bootsvc.wait_serving(failed=bootsvc.unit_failed)
    print("boot services: %s (%s on %s)" % (done, status.get("mode", "?"),
                                            status.get("interface", "?")), flush=True)


def cmd_up(args):
    from rackforge import registry
    from rackforge.bmc import cli as bmc_cli
    from rackforge.bmc import credentials
    from rackforge.bmc import errors as bmc_errors
    from rackforge.bringup import display, rack, targets

    addresses = targets.expand(args.bmcs)
    disk = parse_disk(args.disk_match, args.wipe)
    deadline = parse_duration(args.deadline)
    reboot_wait = parse_duration(args.reboot_wait, "--reboot-wait")
    reg = registry.connect(args.etcd)
    _, _, cluster = cluster_ready(reg.kv)          # before anything is written
    key = credentials.load_key(create=True)

    def password():
        if not args.user and not args.insecure:
            raise bmc_errors.BMCConfigError(detail="new BMCs to enroll: give --user and a "
                                            "password source")
        return bmc_cli._password(args)

    _boot_services(args, cluster)
    # every BMC password in play (the given one, each node's, each new one) is added to
    # this filter before it is used: no log line can carry one
    flt = credentials.RedactingFilter([])
    for handler in logging.getLogger().handlers:
        handler.addFilter(flt)
    logging.getLogger("sushy").setLevel(logging.ERROR)
    settings = rack.Settings(driver=args.driver, username=args.user or "", password=password,
                             insecure=args.insecure, set_bmc_password=args.set_bmc_password,
                             retry_failed=args.retry_failed, uefi=args.uefi, disk=disk,
                             concurrency=args.concurrency, timeout=args.timeout,
                             attempts=args.attempts, deadline=deadline,
                             reboot_wait=reboot_wait,
                             poll=max(0.2, args.poll), follow=not args.no_wait)
    shown = display.Display(sys.stdout, tty=sys.stdout.isatty())
    run = rack.RackUp(reg, settings, shown, key, on_secret=flt.secrets.append)
    trackers = run.run(addresses)
    if not trackers:
        print("rack up: no nodes: name their BMCs (rackforge rack up 10.0.0.10-10.0.0.20 "
              "--user USER --password-file FILE)")
        return 1
    up = shown.summary(trackers)
    if args.no_wait:
        return 0 if all(t.outcome in (None,) + rack.OK for t in trackers) else 1
    return 0 if up else 1


def cmd_status(args):
    from rackforge import registry
    from rackforge.bringup import display

    found = display.status(registry.connect(args.etcd))
    if args.json:
        display.dump_json(found, sys.stdout)
    else:
        display.render_status(found, sys.stdout)
    return 1 if found["totals"].get("failed") else 0
