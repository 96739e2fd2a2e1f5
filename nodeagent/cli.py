"""``rackforge nodeagent ...`` and ``rackforge node services``.

- ``nodeagent run``: the agent its systemd unit starts (:mod:`.daemon`);
- ``nodeagent reconcile --once [--dry-run]``: one pass by hand; with
  ``--dry-run`` it prints what it would change and changes nothing;
- ``nodeagent catalogue``: the services of the catalogue, checked;
- ``nodeagent osd-activate ID``: an OSD's disk brought back at boot (its unit
  runs it, before ``ceph-osd@ID``; :func:`.osd.Osds.activate`);
- ``node services NODE [--json]``: a node's services and their health, as its
  agent published them;
- ``node disk list|replace|remove NODE [DISK]``: a node's OSDs; a failed disk
  replaced in place, or a disk taken out for good (:mod:`.disks`);
- ``cluster secret list [--json]`` and ``cluster secret rotate NAME``: the
  cluster's service secrets (never their values) and a new value for one
  (:func:`.keyring.rotate`);
- ``cloud credentials [--clouds-yaml]``: the cloud's admin credentials, as the
  agent wrote them on this controller (an openrc, or clouds.yaml).
"""

import json
import sys
import time

from rackforge import errors


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
    q = asub.add_parser("osd-activate", help="bring an OSD's disk back (run at boot by "
                        "rackforge-ceph-osd@N.service)")
    q.add_argument("osd", metavar="ID", type=int, help="the OSD's id")
    q.set_defaults(func=cmd_osd_activate)
    q = asub.add_parser("console", help="the node's own screen: its status from the node "
                        "agent (run on tty1); as root")
    q.add_argument("--tty", metavar="DEVICE", help="draw on this tty (e.g. /dev/tty1)")
    q.add_argument("--confirm-within", metavar="SECONDS", type=int, default=None,
                   help="a network change made here is rolled back unless confirmed within "
                        "this time (30-900, default 120)")
    q.set_defaults(func=cmd_console)
    p = sub.add_parser("cloud", help="the OpenStack cloud the rack runs")
    csub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = csub.add_parser("credentials", help="the admin credentials (an openrc to source, "
                        "or clouds.yaml); on a controller, as root")
    q.add_argument("--clouds-yaml", action="store_true",
                   help="print /etc/openstack/clouds.yaml (cloud 'rackforge') instead")
    q.set_defaults(func=cmd_cloud_credentials)


class NoCredentials(errors.ConfigError):
    message = ("no cloud credentials on this node ({path}: {reason}): run it as root on a "
               "controller once 'rackforge cluster status' shows keystone-users ok")


def cmd_console(args):
    from rackforge.nodeagent import console, netchange
    if args.confirm_within is None:
        args.confirm_within = netchange.CONFIRM_DEFAULT
    if not netchange.CONFIRM_MIN <= args.confirm_within <= netchange.CONFIRM_MAX:
        raise errors.ConfigError("--confirm-within %d: give %d to %d seconds"
                                 % (args.confirm_within, netchange.CONFIRM_MIN,
                                    netchange.CONFIRM_MAX))
    return console.main(args.tty, confirm_within=args.confirm_within)


def cmd_cloud_credentials(args, root="/"):
    from pathlib import Path

    path = Path(root, "etc/openstack", "clouds.yaml" if args.clouds_yaml else "admin-openrc")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise NoCredentials(path=path, reason="not written here") from None
    except PermissionError:
        raise NoCredentials(path=path, reason="readable by root only") from None
    sys.stdout.write(text)
    return 0


def cmd_osd_activate(args):
    from rackforge.nodeagent import osd

    device = osd.Osds(None, None).activate(args.osd)
    print("osd.%d: %s activated" % (args.osd, device))
    return 0


def add_node_commands(nsub, etcd_option):
    q = nsub.add_parser("services", help="a node's services and their health")
    q.add_argument("name", metavar="NAME", help="node name, id or MAC")
    q.add_argument("--json", action="store_true", help="print them as JSON")
    etcd_option(q)
    q.set_defaults(func=cmd_node_services)
    p = nsub.add_parser("disk", help="a node's data disks and their OSDs: list, replace, "
                        "remove (on a controller)")
    dsub = p.add_subparsers(dest="disk_action", metavar="ACTION", required=True)
    q = dsub.add_parser("list", help="the node's OSDs and their disks")
    q.add_argument("name", metavar="NODE", help="node name, id or MAC")
    q.add_argument("--json", action="store_true", help="print them as JSON")
    etcd_option(q)
    q.set_defaults(func=cmd_disk_list)
    for action, text in (("replace", "a failed disk's OSD out, destroyed keeping its id, and "
                          "made again on the new disk"),
                         ("remove", "a disk's OSD out and purged: no longer a data disk")):
        q = dsub.add_parser(action, help=text)
        q.add_argument("name", metavar="NODE", help="node name, id or MAC")
        q.add_argument("disk", metavar="DISK", help="osd.N, or the disk's stable id, path or "
                       "serial ('node disk list')")
        if action == "replace":
            q.add_argument("--with", dest="new_path", metavar="PATH",
                           help="the new disk's path, when it is not where the old one was")
            q.add_argument("--wipe", action="store_true",
                           help="wipe the new disk even if it carries data")
        q.add_argument("--timeout", type=int, default=1800, metavar="SECONDS",
                       help="how long to wait for Ceph at each stage (default 1800)")
        etcd_option(q)
        q.set_defaults(func=cmd_disk_job, disk_job=action)


def add_cluster_commands(csub, etcd_option):
    p = csub.add_parser("secret", help="the cluster's service secrets (never their values)")
    ssub = p.add_subparsers(dest="secret_action", metavar="ACTION", required=True)
    q = ssub.add_parser("list", help="each secret: version, readers, last change, rotation")
    q.add_argument("--json", action="store_true", help="print them as JSON")
    etcd_option(q)
    q.set_defaults(func=cmd_secret_list)
    q = ssub.add_parser("rotate", help="a new value for one secret; the agents apply it")
    q.add_argument("name", metavar="NAME", help="the secret (see 'cluster secret list')")
    etcd_option(q)
    q.set_defaults(func=cmd_secret_rotate)


def _rotation(secret):
    if secret.fixed:
        return "fixed: " + secret.fixed
    return ("by task %s and restarts" % secret.applied_by if secret.applied_by
            else "by restarts")


def cmd_secret_list(args):
    from rackforge import registry
    from rackforge.cluster import secrets as store_mod
    from rackforge.nodeagent import catalogue, hooks

    cat = catalogue.load(**hooks.names())
    store = store_mod.SecretStore(registry.connect(getattr(args, "etcd", None)).kv)
    rows = []
    for name, secret in sorted(cat.secrets.items()):
        info = store.info(name) or {}
        rows.append({"name": name, "description": secret.description,
                     "reader_roles": list(secret.readers), "created": bool(info),
                     "version": info.get("version"), "updated": info.get("updated"),
                     "readers": info.get("readers", []), "rotation": _rotation(secret)})
    if args.json:
        json.dump({"secrets": rows}, sys.stdout, indent=2, sort_keys=True)
        print()
        return 0
    for row in rows:
        if not row["created"]:
            state = "not created yet"
        else:
            state = "v%d, %d readers, changed %s" % (
                row["version"], len(row["readers"]), time.strftime(
                    "%Y-%m-%d %H:%M", time.gmtime(row["updated"] or 0)))
        print("%-20s %-34s rotation %s" % (row["name"], state, row["rotation"]))
    return 0


def cmd_secret_rotate(args):
    from rackforge import registry
    from rackforge.nodeagent import catalogue, hooks, keyring

    cat = catalogue.load(**hooks.names())
    info = keyring.rotate(registry.connect(getattr(args, "etcd", None)).kv, cat.secrets,
                          args.name)
    secret = cat.secrets[args.name]
    users = sorted(s.name for s in cat.services if args.name in s.secrets)
    print("secret %s rotated: version %d, sealed for %d nodes" % (
        args.name, info["version"], len(info["readers"])))
    print("each node's agent applies it on its next pass: %s%s restart; follow it with "
          "'rackforge cluster status'" % (
              "task %s sets it, " % secret.applied_by if secret.applied_by else "",
              ", ".join(users)))
    return 0


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
    from rackforge.nodeagent import daemon, health

    if not daemon.node_file().exists():
        raise daemon.NodeNotJoined(path=daemon.node_file())
    agent = _agent(args.dry_run)
    # beside the running agent: no heartbeat, no health of its own (its states would
    # replace the agent's and go with this lease); a lease only for the tasks it claims
    agent.publishes = False
    # what the running agent last saw of each service, so "requires" is judged as it would
    published = health.read_all(agent.kv).get(agent.node_id, {})
    for svc in agent.catalogue.services:
        if svc.name in published:
            rec = published[svc.name]
            agent.trackers[svc.name] = health.Tracker(
                service=svc, state=rec.get("state", health.PENDING),
                since=rec.get("since", 0.0), error=rec.get("error", ""))
    if not args.dry_run:
        agent.lease = agent.kv.lease_grant(daemon.LEASE_TTL)
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


def cmd_disk_list(args):
    from rackforge import registry
    from rackforge.nodeagent import disks

    reg = registry.connect(getattr(args, "etcd", None))
    node = reg.find_node(args.name)
    records = disks.osd_records(reg.kv, node.id)
    if args.json:
        json.dump({"node": node.name, "osds": records}, sys.stdout, indent=2, sort_keys=True)
        print()
        return 0
    if not records:
        print("node %s has no OSD" % node.name)
    for rec in records:
        print("osd.%-4d %-40s %s" % (rec["id"], rec["disk"], rec.get("device") or rec["path"]))
    return 0


def cmd_disk_job(args):
    from rackforge import registry
    from rackforge.nodeagent import disks

    reg = registry.connect(getattr(args, "etcd", None))
    node = reg.find_node(args.name)
    rec = disks.find(reg.kv, node, args.disk)
    job = disks.DiskJob(reg.kv, registry=reg)
    return job.run(node, rec, args.disk_job, new_path=getattr(args, "new_path", None),
                   wipe=getattr(args, "wipe", False), timeout=args.timeout)


def cmd_node_services(args):
    from rackforge import registry
    from rackforge.nodeagent import health

    reg = registry.connect(getattr(args, "etcd", None))
    node = reg.find_node(args.name)
    found = health.read_all(reg.kv).get(node.id, {})
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
