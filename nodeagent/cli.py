"""``rackforge nodeagent ...`` and ``rackforge node services``.

- ``nodeagent run``: the agent its systemd unit starts (:mod:`.daemon`);
- ``nodeagent reconcile --once [--dry-run]``: one pass by hand; with
  ``--dry-run`` it prints what it would change and changes nothing;
- ``nodeagent catalogue``: the services of the catalogue, checked;
- ``node services NODE [--json]``: a node's services and their health, as its
  agent published them.
"""

import json
import sys
import time


def add_commands(sub):
    p = sub.add_parser("nodeagent", help="the node agent (run by its systemd unit)")
    asub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    asub.add_parser("run", help="run the agent").set_defaults(func=cmd_run)
    q = asub.add_parser("reconcile", help="one reconcile pass now")
    q.add_argument("--once", action="store_true", required=True,
                   help="one pass, then exit (the daemon runs them all the time)")
    q.add_argument("--dry-run", action="store_true",
                   help="print what the pass would change; change nothing")
    q.set_defaults(func=cmd_reconcile)
    asub.add_parser("catalogue", help="the service catalogue, checked").set_defaults(
        func=cmd_catalogue)


def add_node_commands(nsub, etcd_option):
    q = nsub.add_parser("services", help="a node's services and their health")
    q.add_argument("name", metavar="NAME", help="node name, id or MAC")
    q.add_argument("--json", action="store_true", help="print them as JSON")
    etcd_option(q)
    q.set_defaults(func=cmd_node_services)


def cmd_run(args):
    from rackforge.nodeagent import daemon
    return daemon.main(args)


def _agent(dry_run):
    from rackforge import registry
    from rackforge.nodeagent import catalogue, daemon, hooks, keyring, units

    node = json.loads(daemon.node_file().read_text())
    reg = registry.connect()
    agent = daemon.Agent(reg, node["node_id"], keyring.private_key(node["key"]),
                         catalogue.load(**hooks.names()), units.Systemd(),
                         hooks.Hooks(node["node_id"], reg.kv), settings=daemon.settings())
    agent.reconciler.dry_run = dry_run
    return agent


def cmd_reconcile(args):
    from rackforge.nodeagent import daemon

    if not daemon.node_file().exists():
        raise daemon.NodeNotJoined(path=daemon.node_file())
    agent = _agent(args.dry_run)
    if not args.dry_run:
        agent.keep_lease()
    outcome = agent.reconcile()
    verb = "would " if args.dry_run else ""
    for action in outcome.actions:
        print("%s%s" % (verb, action.line()))
    for name, why in sorted(outcome.pending.items()):
        print("pending %s: %s" % (name, why))
    for name, line in sorted(outcome.errors.items()):
        print("error %s: %s" % (name, line), file=sys.stderr)
    if not outcome.actions:
        print("nothing to change")
    if agent.lease is not None:
        agent.kv.lease_revoke(agent.lease)
    return 1 if outcome.errors else 0


def cmd_catalogue(args):
    from rackforge.nodeagent import catalogue, hooks

    cat = catalogue.load(**hooks.names())
    print("catalogue %s: %d services, %d secrets" % (cat.version, len(cat.services),
                                                     len(cat.secrets)))
    for svc in cat.services:
        print("  %-16s %-22s %s" % (svc.name, ",".join(svc.roles),
                                    " ".join(svc.units) or "(configuration only)"))
    return 0


def services_of(kv, node_id):
    from rackforge.nodeagent import health
    return health.read_all(kv).get(node_id, {})


def cmd_node_services(args):
    from rackforge import registry

    reg = registry.connect(getattr(args, "etcd", None))
    node = reg.find_node(args.name)
    found = services_of(reg.kv, node.id)
    if args.json:
        json.dump({"node": node.name, "services": found}, sys.stdout, indent=2,
                  sort_keys=True)
        print()
        return 0
    if not found:
        print("node %s publishes no services (its agent is not running, or it has none)"
              % node.name)
        return 1
    now = time.time()
    for name, rec in sorted(found.items()):
        since = int(now - rec.get("since", now))
        print("%-16s %-9s %6ds  %s" % (name, rec.get("state"), since, rec.get("error", "")))
    return 0
