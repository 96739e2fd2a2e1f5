"""``rackforge bmc``, ``rackforge power`` and ``rackforge console``.

Every command that acts on BMCs takes its targets the same way: enrolled
node names, ``--all`` (every node in the registry), or ``--bmc ADDR[:PORT]``
(repeatable) with ``--user`` and a password source, without a registry.  It
works on them in parallel (:mod:`rackforge.bmc.parallel`), prints one line
per target (or ``--json``), and exits 0 only if every target succeeded.

Passwords are read from a file, an environment variable or a prompt; there is
deliberately no ``--password`` option.  Heavy imports live inside the command
functions so that ``rackforge --help`` stays fast.
"""

import argparse
import json
import logging
import sys

LOG = logging.getLogger(__name__)

EXIT_SOME_FAILED = 1


# -- argument plumbing -----------------------------------------------------------
def _add_password_options(p):
    g = p.add_argument_group("BMC password (never on the command line)")
    g.add_argument("--password-file", metavar="FILE",
                   help="read the password from the first line of FILE")
    g.add_argument("--password-env", metavar="VARIABLE",
                   help="read the password from this environment variable "
                        "(default: RACKFORGE_BMC_PASSWORD if set)")
    g.add_argument("--password-prompt", action="store_true", help="ask for the password")


def _add_run_options(p):
    g = p.add_argument_group("how")
    g.add_argument("--concurrency", type=int, default=16, metavar="N",
                   help="BMCs worked on at once (default: %(default)s)")
    g.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="per-BMC time limit, retries included (default: %(default)s)")
    g.add_argument("--attempts", type=int, default=7, metavar="N",
                   help="attempts per BMC on retryable errors (default: %(default)s)")
    g.add_argument("--json", action="store_true", help="print the results as JSON")
    g.add_argument("--insecure", action="store_true",
                   help="allow empty passwords and anonymous logins (labs only)")
    g.add_argument("--etcd", metavar="URL", help="node registry endpoint "
                   "(default: $RACKFORGE_ETCD or http://127.0.0.1:2379)")


def _add_target_options(p, nodes=True):
    if nodes:
        p.add_argument("nodes", nargs="*", metavar="NODE", help="enrolled node names or ids")
        p.add_argument("--all", action="store_true", help="every node in the registry")
    g = p.add_argument_group("BMCs without a registry")
    g.add_argument("--bmc", action="append", default=[], metavar="ADDR[:PORT]",
                   help="a BMC address (repeatable)")
    g.add_argument("--user", metavar="USER", help="BMC user name")
    g.add_argument("--driver", default="ipmi", help="BMC driver (default: %(default)s)")
    _add_password_options(p)
    _add_run_options(p)


def add_commands(sub):
    """Register ``bmc``, ``power`` and ``console`` on the top-level sub-parser."""
    from rackforge.bmc.base import BOOT_DEVICES, POWER_ACTIONS

    p = sub.add_parser("bmc", help="discover, enroll and configure nodes' BMCs")
    bsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    q = bsub.add_parser("discover", help="find BMCs in an address range (RMCP presence ping)")
    q.add_argument("--range", required=True, dest="range_", metavar="FIRST-LAST",
                   help="IPv4 range, e.g. 10.0.0.10-10.0.0.40")
    q.add_argument("--port", type=int, default=623, help="UDP port (default: %(default)s)")
    q.add_argument("--timeout", type=float, default=2.0, metavar="SECONDS",
                   help="how long to wait for answers (default: %(default)s)")
    q.add_argument("--json", action="store_true", help="print the results as JSON")
    q.add_argument("--all-addresses", action="store_true",
                   help="list the addresses that did not answer too")
    q.set_defaults(func=cmd_discover)

    q = bsub.add_parser("enroll", help="read BMCs' inventory and register their nodes")
    q.add_argument("addresses", nargs="+", metavar="ADDR[:PORT]")
    q.add_argument("--user", required=True, metavar="USER", help="BMC user name")
    q.add_argument("--driver", default="ipmi", help="BMC driver (default: %(default)s)")
    q.add_argument("--name", action="append", default=[], metavar="NAME",
                   help="node name for the BMC in the same position (default: from the "
                        "serial number)")
    _add_password_options(q)
    _add_run_options(q)
    q.set_defaults(func=cmd_enroll)

    q = bsub.add_parser("boot-device", help="set the next boot device")
    q.add_argument("device", choices=BOOT_DEVICES)
    q.add_argument("--uefi", action="store_true", help="ask for a UEFI boot")
    q.add_argument("--persistent", action="store_true", help="for every boot, not only the next")
    _add_target_options(q)
    q.set_defaults(func=cmd_boot_device)

    q = bsub.add_parser("inventory", help="what the BMCs report: FRU, GUID, MACs, sensors")
    _add_target_options(q)
    q.set_defaults(func=cmd_inventory)

    q = bsub.add_parser("identify", help="light or clear the identify LED")
    q.add_argument("state", choices=("on", "off"))
    _add_target_options(q)
    q.set_defaults(func=cmd_identify)

    p = sub.add_parser("power", help="power nodes on, off, cycle, reset or show their state")
    p.add_argument("power_action", choices=POWER_ACTIONS + ("status",), metavar="ACTION",
                   help=", ".join(POWER_ACTIONS + ("status",)))
    p.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for the node to reach the state (default: "
                        "%(default)s)")
    _add_target_options(p)
    p.set_defaults(func=cmd_power)

    p = sub.add_parser("console", help="attach to a node's serial console (type ~. to leave)")
    p.add_argument("node", nargs="?", metavar="NODE")
    p.add_argument("--log", metavar="FILE", help="also copy the console output to FILE")
    p.add_argument("--capture", type=float, metavar="SECONDS",
                   help="do not attach: copy SECONDS of output to --log (or stdout)")
    g = p.add_argument_group("a BMC without a registry")
    g.add_argument("--bmc", action="append", default=[], metavar="ADDR[:PORT]")
    g.add_argument("--user", metavar="USER")
    g.add_argument("--driver", default="ipmi")
    _add_password_options(p)
    p.add_argument("--insecure", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--etcd", metavar="URL", help="node registry endpoint")
    p.set_defaults(func=cmd_console)


# -- targets ---------------------------------------------------------------------
HOST_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"


def parse_address(text, what="a BMC address"):
    """``ADDR``, ``ADDR:PORT``, ``[V6ADDR]:PORT`` or an http(s) URL -> (address, port or None).

    ADDR is an IPv4 or IPv6 address or a DNS host name.  Anything else is
    refused before it is printed or resolved, and the error does not repeat
    it: a password typed in the wrong place must not reach the terminal, the
    logs or a DNS server.  ``what`` names the argument in that error.
    """
    from rackforge.bmc import errors

    refused = errors.BMCConfigError(
        detail="%s is not an address (not shown, in case it is a password): give "
        "ADDR[:PORT] with an IPv4 address, [IPv6] address or host name, or an "
        "http(s)://HOST[:PORT] URL" % what)
    text = text.strip()
    if "://" in text:           # a URL (Redfish): the driver reads the port from it
        return _checked_url(text, refused), None
    if text.startswith("["):
        addr, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
        if rest and port is None or ":" not in addr:
            raise refused
    elif text.count(":") == 1:
        addr, port = text.split(":")
    else:
        addr, port = text, None
    if not _is_host(addr):
        raise refused
    if port is not None:
        if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise errors.BMCConfigError(detail="%s has a port that is not a number from 1 "
                                        "to 65535" % what)
        port = int(port)
    return addr, port


def _is_host(text):
    """True for an IPv4 or IPv6 address or a DNS host name (RFC 1123)."""
    import ipaddress
    import re

    if ":" in text:
        try:
            ipaddress.IPv6Address(text)
            return True
        except ValueError:
            return False
    labels = text.split(".")
    if labels and labels[-1].isdigit():         # numbers: an IPv4 address or nothing
        try:
            ipaddress.IPv4Address(text)
            return True
        except ValueError:
            return False
    return len(text) <= 253 and all(re.fullmatch(HOST_LABEL, label) for label in labels)


def _checked_url(text, refused):
    import urllib.parse

    try:
        url = urllib.parse.urlsplit(text)
        url.port                                # a bad port raises ValueError
    except ValueError:
        raise refused from None
    if url.scheme not in ("http", "https") or "@" in url.netloc or not url.hostname \
            or not _is_host(url.hostname) or not url.path.isascii() \
            or not url.path.isprintable() or " " in url.path or url.query or url.fragment:
        raise refused
    return text


def _password(args):
    from rackforge.bmc import credentials
    return credentials.read_password(file=args.password_file, env=args.password_env,
                                     prompt=args.password_prompt)


def _connect_registry(args):
    from rackforge import registry
    return registry.connect(getattr(args, "etcd", None))


class Target:
    """One line of the result table: a BMC, or the reason there is none."""

    def __init__(self, label, bmc=None, error=None):
        self.label, self.bmc, self.error = label, bmc, error


def resolve_targets(args):
    """:returns: list of :class:`Target`.  :raises: BMCConfigError for bad arguments."""
    from rackforge.bmc import base, credentials, errors

    nodes = getattr(args, "nodes", None) or []
    if getattr(args, "node", None):
        nodes = [args.node]
    use_all = getattr(args, "all", False)
    if args.bmc and (nodes or use_all):
        raise errors.BMCConfigError(detail="give node names, --all or --bmc, not several")
    if args.bmc:
        if not args.user and not args.insecure:
            raise errors.BMCConfigError(detail="--bmc needs --user")
        password = _password(args)
        targets = []
        for i, text in enumerate(args.bmc):
            addr, port = parse_address(text, "--bmc argument %d" % (i + 1))
            bmc = base.BMC(address=addr, port=port, username=args.user or "",
                           password=password, driver=args.driver, insecure=args.insecure)
            targets.append(Target(bmc.label, bmc))
        return targets
    if not nodes and not use_all:
        raise errors.BMCConfigError(detail="name the nodes, or give --all, or --bmc ADDR")
    reg = _connect_registry(args)
    if use_all:
        found = reg.list_nodes()
    else:
        found = []
        for name in nodes:
            found.append(reg.find_node(name))
    key = None
    targets = []
    for node in found:
        info = node.bmc or {}
        if not info.get("address"):
            targets.append(Target(node.name, error="node %s has no BMC in the registry; "
                                  "enroll it with 'rackforge bmc enroll'" % node.name))
            continue
        try:
            if key is None:
                key = credentials.load_key(create=False)
            password = credentials.decrypt(info.get("password", ""), key, node=node.name) \
                if info.get("password") else ""
        except errors.RackforgeError as e:
            targets.append(Target(node.name, error=str(e)))
            continue
        bmc = base.BMC(address=info["address"], port=info.get("port"),
                       username=info.get("username", ""), password=password,
                       driver=info.get("driver", "ipmi"), node=node.name,
                       insecure=args.insecure or info.get("insecure", False),
                       options=info.get("options", {}))
        targets.append(Target(node.name, bmc))
    return targets


def run_on_targets(args, targets, action, fn):
    """``fn(driver, bmc)`` on every target in parallel; prints the table; exit code."""
    from rackforge.bmc import credentials, drivers, parallel

    secrets = [t.bmc.password for t in targets if t.bmc and t.bmc.password]
    _redact_logs(secrets)
    cache = {}

    def driver_for(name):
        if name not in cache:
            cache[name] = drivers.get_driver(name)
        return cache[name]

    def one(target):
        if target.error:
            from rackforge.bmc import errors
            raise errors.BMCConfigError(detail=target.error)
        driver = driver_for(target.bmc.driver)
        driver.validate(target.bmc)
        credentials.check_login(target.bmc.username, target.bmc.password, target.bmc.label,
                                target.bmc.insecure)
        return fn(driver, target.bmc)

    for t in targets:     # load drivers up front: an unknown name fails once, clearly
        if t.bmc:
            driver_for(t.bmc.driver)
    results = parallel.run_all(targets, one, action, label=lambda t: t.label,
                               concurrency=max(1, args.concurrency), timeout=args.timeout,
                               attempts=max(1, args.attempts), secrets=secrets)
    print_results(results, action, args.json)
    return 0 if all(r.ok for r in results) else EXIT_SOME_FAILED


def _redact_logs(secrets):
    """Belt and braces: no handler may print a password, whatever logs it."""
    from rackforge.bmc.credentials import RedactingFilter
    # sushy narrates its authentication fallbacks as warnings; the result table says
    # what matters, in one line per BMC
    logging.getLogger("sushy").setLevel(logging.ERROR)
    flt = RedactingFilter(secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(flt)


def _fmt_value(value):
    if isinstance(value, dict):
        return " ".join("%s=%s" % (k, v) for k, v in value.items() if v not in (None, [], {}))
    return "" if value is None else str(value)


def print_results(results, action, as_json=False, out=None):
    out = out or sys.stdout
    if as_json:
        json.dump({"action": action, "ok": all(r.ok for r in results),
                   "results": [r.as_dict() for r in results]}, out, indent=2, default=str)
        out.write("\n")
        return
    width = max([len(r.target) for r in results] + [6])
    out.write("%-*s  %-6s  %s\n" % (width, "TARGET", "RESULT", "DETAIL"))
    for r in results:
        detail = _fmt_value(r.value) if r.ok else r.error
        if r.attempts > 1:
            detail += " (%d attempts)" % r.attempts
        out.write("%-*s  %-6s  %s\n" % (width, r.target, "ok" if r.ok else "FAILED", detail))
    failed = sum(not r.ok for r in results)
    out.write("%s: %d of %d succeeded%s\n" % (action, len(results) - failed, len(results),
                                              "" if not failed else ", %d failed" % failed))
    out.flush()


# -- commands --------------------------------------------------------------------
def cmd_power(args):
    action = args.power_action
    targets = resolve_targets(args)
    if action == "status":
        return run_on_targets(args, targets, "power status",
                              lambda d, b: d.power.get_power_state(b))
    wait = min(args.wait, args.timeout)
    return run_on_targets(args, targets, "power " + action,
                          lambda d, b: d.power.change_power(b, action, timeout=wait))


def cmd_boot_device(args):
    targets = resolve_targets(args)

    def act(driver, bmc):
        driver.management.set_boot_device(bmc, args.device, persistent=args.persistent,
                                          uefi=args.uefi)
        flags = [f for f, on in (("uefi", args.uefi), ("persistent", args.persistent)) if on]
        return args.device + (" (%s)" % ", ".join(flags) if flags else "")
    return run_on_targets(args, targets, "boot-device " + args.device, act)


def cmd_identify(args):
    targets = resolve_targets(args)

    def act(driver, bmc):
        driver.management.set_identify(bmc, on=args.state == "on")
        return args.state
    return run_on_targets(args, targets, "identify " + args.state, act)


def cmd_inventory(args):
    targets = resolve_targets(args)

    def act(driver, bmc):
        inv = driver.inventory.get_inventory(bmc).as_dict()
        if not args.json:
            inv["sensors"] = len(inv["sensors"]) or None
            inv.pop("extra")
            inv["macs"] = ",".join(inv["macs"]) or None
        return inv
    return run_on_targets(args, targets, "inventory", act)


def cmd_discover(args):
    from rackforge.bmc import discover

    addresses = discover.parse_range(args.range_)
    found = discover.discover(addresses, port=args.port, timeout=args.timeout)
    rows = [(a, p) for a, p in found.items() if p is not None or args.all_addresses]
    if args.json:
        json.dump([{"address": a, "port": args.port, "answered": p is not None,
                    **(p or {})} for a, p in rows], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print("%-15s  %-5s  %-8s  %-4s  %s" % ("ADDRESS", "PORT", "ANSWER", "IPMI", "RMCP+"))
        for a, p in rows:
            if p is None:
                print("%-15s  %-5d  %-8s" % (a, args.port, "none"))
            else:
                print("%-15s  %-5d  %-8s  %-4s  %s" % (
                    a, args.port, "pong", "yes" if p["ipmi"] else "no",
                    "yes" if p["rmcp_security"] else "not advertised"))
        print("discover: %d of %d addresses answered" % (
            sum(p is not None for p in found.values()), len(found)))
    return 0


def _node_name(inv, given):
    import re
    if given:
        return given
    if inv.serial:
        name = re.sub(r"[^a-z0-9-]+", "-", inv.serial.lower()).strip("-")[:40]
        if name:
            return "node-" + name
    return ""


def discovered_with(reg, macs):
    """The ``discovered`` node that holds one of ``macs`` (a machine the live appliance
    recorded before anyone enrolled its BMC), or None."""
    for mac in macs:
        node = reg.node_by_mac(mac)
        if node is not None and node.state == "discovered":
            return node
    return None


def enroll_one(reg, key, existing, driver, bmc, name=None):
    """Enroll one BMC: read its inventory, then create its node (state ``enrolled``),
    update the node already enrolled at that address and port, or adopt the
    ``discovered`` node that holds one of the MACs the BMC reports.  The machine's own
    inventory (``inventory.host``, from discovery or the join) is kept beside the BMC's.

    Adopting is the operator's move ``discovered -> enrolled`` (compare-and-set from
    ``discovered``): the record keeps its id, the live appliance's inventory and its
    MACs, and gains the BMC, its inventory and the MACs it reports; it is renamed as
    a new enrolment would be named (``name``, else from the BMC's serial; the
    discovered name if neither).

    The BMC part is slow (the caller runs many in parallel); every registry write is
    a compare-and-set, so parallel writers are safe.  The password is stored as a
    Fernet token under ``key``.

    :param existing: ``{(address, port): Node}`` of the nodes enrolled before
    :returns: ``(node, inventory, created)``: ``created`` for a new or adopted node
    """
    from rackforge import registry, states
    from rackforge.bmc import credentials

    inv = driver.inventory.get_inventory(bmc)
    record = {"driver": bmc.driver, "address": bmc.address,
              "port": bmc.port or driver.default_port, "username": bmc.username,
              "password": credentials.encrypt(bmc.password, key)}
    if bmc.insecure:
        record["insecure"] = True

    def with_host(node):
        """The BMC's inventory, and the machine's own (``host``: the live appliance's
        or the join's) kept beside it."""
        host = (node.inventory or {}).get("host")
        return dict(inv.as_dict(), **({"host": host} if host else {}))

    old = existing.get((bmc.address, record["port"]))
    if old is not None:
        def change(node):
            node.bmc = record
            node.inventory = with_host(node)
            node.macs = sorted(set(node.macs) | set(inv.macs))
        return reg.update_node(old.id, change), inv, False
    found = discovered_with(reg, inv.macs)
    if found is not None:
        new_name = _node_name(inv, name)

        def adopt(node):
            node.bmc = record
            node.inventory = with_host(node)
            node.macs = sorted(set(node.macs) | set(inv.macs))
            node.name = new_name or node.name
        node = reg.transition(found.id, "enrolled", states.OPERATOR, frm="discovered",
                              change=adopt)
        return node, inv, True
    node = reg.create_node(registry.Node(name=_node_name(inv, name), state="enrolled",
                                         macs=inv.macs, bmc=record, inventory=inv.as_dict()))
    return node, inv, True


def enrolled_bmcs(reg):
    """``{(address, port): Node}`` of every node with a BMC in the registry."""
    return {(n.bmc.get("address"), n.bmc.get("port")): n for n in reg.list_nodes() if n.bmc}


def cmd_enroll(args):
    from rackforge.bmc import base, credentials, errors

    if args.name and len(args.name) != len(args.addresses):
        raise errors.BMCConfigError(detail="give one --name per address (%d names for %d "
                                    "addresses)" % (len(args.name), len(args.addresses)))
    password = _password(args)
    targets = []
    for i, text in enumerate(args.addresses):
        addr, port = parse_address(text, "address argument %d" % (i + 1))
        bmc = base.BMC(address=addr, port=port, username=args.user, password=password,
                       driver=args.driver, insecure=args.insecure)
        targets.append(Target(bmc.label, bmc))
    positions = {id(t.bmc): i for i, t in enumerate(targets)}
    reg = _connect_registry(args)
    key = credentials.load_key(create=True)
    existing = enrolled_bmcs(reg)

    def act(driver, bmc):
        name = args.name[positions[id(bmc)]] if args.name else None
        node, inv, created = enroll_one(reg, key, existing, driver, bmc, name)
        if not created:
            return "updated %s (state %s)" % (node.name, node.state)
        return "enrolled %s serial=%s macs=%s%s" % (
            node.name, inv.serial or "?", ",".join(node.macs) or "none",
            " (the machine discovered before)" if node.boot.get("discovered") else "")
    return run_on_targets(args, targets, "enroll", act)


def cmd_console(args):
    import contextlib
    import os

    from rackforge.bmc import credentials, drivers, errors

    if not args.node and not args.bmc:
        raise errors.BMCConfigError(detail="name the node, or give --bmc ADDR")
    args.nodes, args.all = [], False
    targets = resolve_targets(args)
    if len(targets) != 1:
        raise errors.BMCConfigError(detail="console attaches to one node at a time")
    target = targets[0]
    if target.error:
        raise errors.BMCConfigError(detail=target.error)
    bmc = target.bmc
    _redact_logs(bmc.secrets())
    driver = drivers.get_driver(bmc.driver)
    driver.validate(bmc)
    credentials.check_login(bmc.username, bmc.password, bmc.label, bmc.insecure)
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(open(args.log, "ab")) if args.log else None
        if args.capture is not None:
            sink = log or sys.stdout.buffer
            count = driver.console.capture(bmc, sink, args.capture)
            print("console: %d bytes from %s in %g s%s" % (
                count, bmc.label, args.capture, " to " + args.log if args.log else ""),
                file=sys.stderr)
            return 0
        stdin = sys.stdin
        if os.isatty(stdin.fileno()):
            import termios
            import tty
            saved = termios.tcgetattr(stdin.fileno())
            stack.callback(termios.tcsetattr, stdin.fileno(), termios.TCSADRAIN, saved)
            tty.setraw(stdin.fileno())
        print("console: %s (type ~. to leave)\r" % bmc.label, file=sys.stderr)
        driver.console.attach(bmc, stdin, sys.stdout.buffer, log=log)
    return 0
