"""``rackforge cluster ...`` and ``rackforge node ...``.

- ``cluster ca init|show``: the cluster CA in ``state_dir()/ca`` and its pin.
- ``cluster token create|list|delete``: join tokens in the registry.
- ``cluster join-server``: the join service (``rackforge-join.service``).
- ``cluster status``: etcd's quorum and quota, the nodes; one line per problem.
- ``node list|show``: every node from the registry, with role, state, addresses,
  data disks and last heartbeat.

Commands that use the registry take ``--etcd URL`` (default ``$RACKFORGE_ETCD``).
Heavy imports stay inside the command functions so ``rackforge --help`` stays fast.
"""

import json
import sys
import time

from rackforge import keys


def _etcd_option(p):
    p.add_argument("--etcd", metavar="URL", help="node registry endpoint "
                   "(default: $RACKFORGE_ETCD or http://127.0.0.1:2379)")


def add_commands(sub):
    """Register the cluster and node commands on the top-level sub-parser."""
    p = sub.add_parser("cluster", help="the cluster CA and join tokens")
    csub = p.add_subparsers(dest="area", metavar="AREA", required=True)
    t = csub.add_parser("token", help="create, list and delete join tokens")
    tsub = t.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = tsub.add_parser("create", help="a new join token, printed once with the CA pin")
    q.add_argument("--ttl", default="1h", metavar="DURATION",
                   help="lifetime: seconds or 30m, 1h, ... up to 24h (default: %(default)s)")
    q.add_argument("--uses", type=int, default=1, metavar="N",
                   help="how many nodes may join with it (default: %(default)s)")
    q.add_argument("--description", default="", metavar="TEXT", help="a note for the list")
    q.add_argument("--endpoint", metavar="URL", help="the one join endpoint to print "
                   "(default: every controller's, from the cluster record)")
    q.add_argument("--json", action="store_true",
                   help="print {endpoint, token, ca_sha256} as JSON")
    _etcd_option(q)
    q.set_defaults(func=cmd_token_create)
    q = tsub.add_parser("list", help="the tokens and their state (never their secrets)")
    q.add_argument("--json", action="store_true", help="print the tokens as JSON")
    _etcd_option(q)
    q.set_defaults(func=cmd_token_list)
    q = tsub.add_parser("delete", help="revoke a token")
    q.add_argument("id", metavar="ID", help="the token's id (the part before the dot)")
    _etcd_option(q)
    q.set_defaults(func=cmd_token_delete)

    q = csub.add_parser("join-server", help="serve joins, the install and the discovery APIs "
                        "over HTTPS (every controller's rackforge-join.service runs it)")
    q.add_argument("--listen", metavar="ADDRESS",
                   help="address to listen on (default: this controller's, from "
                        "/etc/rackforge/join-server.json)")
    q.add_argument("--port", type=int, help="port (default: from that file, else 9443)")
    _etcd_option(q)
    q.set_defaults(func=cmd_join_server)

    q = csub.add_parser("status", help="etcd's quorum and quota, the nodes; one line per "
                        "problem (exit 1 when there is one)")
    q.add_argument("--json", action="store_true", help="print the status as JSON")
    _etcd_option(q)
    q.set_defaults(func=cmd_status)

    from rackforge.nodeagent.cli import add_cluster_commands
    add_cluster_commands(csub, _etcd_option)

    c = csub.add_parser("ca", help="the cluster certificate authority")
    casub = c.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = casub.add_parser("init", help="create the cluster CA here (the seed), or show it")
    q.add_argument("--cluster", default="rackforge", help="cluster name in the CA's subject")
    q.add_argument("--key-type", choices=("ec", "rsa"), default="ec",
                   help="EC P-256 (default) or RSA 2048")
    q.set_defaults(func=cmd_ca_init)
    casub.add_parser("show", help="the CA's subject, expiry and pin").set_defaults(
        func=cmd_ca_show)

    p = sub.add_parser("node", help="the nodes in the registry")
    nsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = nsub.add_parser("list", help="every node: role, state, addresses, disks, heartbeat")
    q.add_argument("--json", action="store_true", help="print the nodes as JSON")
    _etcd_option(q)
    q.set_defaults(func=cmd_node_list)
    from rackforge.nodeagent.cli import add_node_commands
    add_node_commands(nsub, _etcd_option)

    q = nsub.add_parser("show", help="one node in full")
    q.add_argument("name", metavar="NAME", help="node name, id or MAC")
    q.add_argument("--json", action="store_true", help="print the node as JSON")
    _etcd_option(q)
    q.set_defaults(func=cmd_node_show)

    q = nsub.add_parser("remove", help="forget a machine that never joined (discovered, "
                        "enrolled, live, installing, installed, failed before a join): its "
                        "records and bound join token")
    q.add_argument("name", metavar="NAME", help="node name, id or MAC")
    q.add_argument("--yes", action="store_true", help="do it (without: say what would go)")
    _etcd_option(q)
    q.set_defaults(func=cmd_node_remove)


def _connect_registry(args):
    from rackforge import registry
    return registry.connect(getattr(args, "etcd", None))


def _print_json(data):
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    print()


def _when(ts):
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _ago(ts, now):
    if ts is None:
        return "never"
    seconds = max(0, int(now - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return "%d%s ago" % (seconds // size, unit)
    return "%ds ago" % seconds


# -- cluster ---------------------------------------------------------------------------
def cmd_ca_init(args):
    from rackforge.cluster import ca

    existed = (ca.ca_dir() / ca.CERT_FILE).is_file()
    authority = ca.CertificateAuthority.init(cluster=args.cluster, key_type=args.key_type)
    print("%s cluster CA in %s" % ("kept the" if existed else "created the",
                                   authority.directory))
    print("ca_sha256: %s" % authority.pin)
    return 0


def cmd_ca_show(args):
    from rackforge.cluster import ca

    authority = ca.CertificateAuthority.load()
    print("subject:   %s" % authority.cert.subject.rfc4514_string())
    print("expires:   %s" % authority.cert.not_valid_after_utc.strftime("%Y-%m-%d"))
    print("ca_sha256: %s" % authority.pin)
    return 0


def cmd_join_server(args):
    """Serve ``POST /join`` until SIGTERM; tells systemd when it listens."""
    import signal
    import threading

    from rackforge import errors, nodeprofile, paths, systemd
    from rackforge.bringup import addressing, discoverapi, installapi
    from rackforge.cluster import ca, etcd, join, joinserver, roles
    from rackforge.kvstore import RegistryUnavailable

    config = {}
    where = paths.config_dir() / "join-server.json"
    if where.is_file():
        config = json.loads(where.read_text())
    host = args.listen or config.get("listen")
    port = args.port or config.get("port") or join.DEFAULT_PORT
    if not host:
        raise errors.ConfigError("no address to serve joins on: %s is missing (first boot "
                                 "writes it on controllers); give --listen ADDRESS" % where)
    authority = ca.CertificateAuthority.load()
    reg = _connect_registry(args)
    kv = reg.kv
    identity = None
    if config.get("node_id"):
        key_path = paths.state_dir() / "pki" / "node.key"
        identity = (config["node_id"], ca.load_key(key_path.read_bytes()))

    def endpoints():
        try:
            return etcd.voting_endpoints(kv.members())
        except (AttributeError, etcd.EtcdError, RegistryUnavailable):   # no members API
            return list(getattr(kv, "endpoints", []))

    policy = roles.RolePolicy.from_profile(nodeprofile.load())
    service = join.JoinService(reg, authority, endpoints, policy, identity=identity)
    # the install API beside the joins: nodes that 'rack up' installs over PXE ask it;
    # the discovery API: machines nobody enrolled that PXE-boot the live appliance
    install = installapi.InstallService(reg, authority.pin, service.join_endpoints,
                                        network=lambda: addressing.local_network(host))
    discover = discoverapi.DiscoverService(reg)
    server = joinserver.JoinServer(service, host, port, install=install,
                                   discover=discover).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    print("rackforge-join: serving joins at %s (CA %s)" % (server.endpoint, authority.pin),
          flush=True)
    systemd.notify("READY=1")
    while not stop.wait(3600):
        pass
    systemd.notify("STOPPING=1")
    server.stop()
    print("rackforge-join: stopped", flush=True)
    return 0


def cmd_status(args):
    from rackforge.cluster import etcd, status

    found = status.collect(_connect_registry(args), etcd.QUOTA_BYTES)
    if args.json:
        _print_json(found.to_dict())
    else:
        print("\n".join(status.render(found)))
    return 1 if found.problems else 0


def _cluster_pin(kv):
    """The CA pin: the cluster record's (any node), else this controller's CA."""
    from rackforge.cluster import ca

    entry = kv.get(keys.CLUSTER)
    pin = json.loads(entry.value).get("ca_sha256") if entry else None
    return pin or ca.CertificateAuthority.load().pin


def cmd_token_create(args):
    from rackforge.cluster import tokens

    ttl, uses = tokens.parse_ttl(args.ttl), tokens.check_uses(args.uses)
    store = tokens.TokenStore(_connect_registry(args).kv)
    pin = _cluster_pin(store.kv)                  # before anything is written
    endpoints = tokens.join_endpoints(store.kv, args.endpoint)
    token, record = store.create(ttl=ttl, uses=uses, description=args.description)
    data = tokens.bundle(endpoints, token, pin)
    if args.json:
        _print_json(data)
        return 0
    print("%-10s %s" % ("endpoints:", ", ".join(data["endpoints"])))
    for key in ("token", "ca_sha256"):
        print("%-10s %s" % (key + ":", data[key]))
    print("expires:   %s (%s), uses: %d" % (_when(record.expires), args.ttl, record.uses))
    print("the token is shown only now; put the three under 'join:' in a node's "
          "bootstrap.yaml")
    return 0


def cmd_token_list(args):
    from rackforge.cluster import tokens

    store = tokens.TokenStore(_connect_registry(args).kv)
    now = store.clock()
    rows = [r.public(now) for r in sorted(store.list(), key=lambda r: r.created)]
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no join tokens; create one with 'rackforge cluster token create'")
        return 0
    print("%-6s  %-7s  %-9s  %-20s  %s" % ("ID", "STATE", "USED", "EXPIRES", "DESCRIPTION"))
    for r in rows:
        used = "%d/%s" % (r["used"], r["uses"] if r["uses"] is not None else "-")
        print("%-6s  %-7s  %-9s  %-20s  %s" % (r["id"], r["state"], used, r["expires"],
                                               r["description"]))
    return 0


def cmd_token_delete(args):
    from rackforge.cluster import tokens

    record = tokens.TokenStore(_connect_registry(args).kv).delete(args.id)
    plural = "" if record.used == 1 else "s"
    print("deleted join token %s (%d use%s)" % (record.id, record.used, plural))
    return 0


# -- nodes ------------------------------------------------------------------------------
def _heartbeat(kv, node_id):
    entry = kv.get(keys.HEARTBEATS + node_id)
    if entry is None:
        return None
    try:
        return float(json.loads(entry.value)["time"])
    except (ValueError, KeyError, TypeError):
        return None


def _bmc_view(bmc):
    """The BMC record without its (encrypted) password."""
    return {k: v for k, v in (bmc or {}).items() if k != "password"}


def node_view(reg, node):
    """What ``node list`` / ``node show`` print about ``node``, as plain data."""
    from rackforge.cluster import roles

    decision = roles.RoleElection(reg.kv).current(node.id)
    data_disks = (node.boot.get("storage") or {}).get("disks", [])
    addresses = list(node.boot.get("addresses") or [])
    bmc = _bmc_view(node.bmc)
    return {
        "id": node.id, "name": node.name, "state": node.state,
        "role": node.role or (",".join(decision.roles) if decision else None),
        "hostname": (node.inventory or {}).get("hostname") or node.name,
        "addresses": addresses, "bmc": bmc, "macs": list(node.macs),
        "disks": [{k: d.get(k) for k in ("name", "path", "size", "stable_id", "wipe")}
                  for d in data_disks],
        "heartbeat": _heartbeat(reg.kv, node.id),
        "updated": node.updated,
    }


def cmd_node_list(args):
    reg = _connect_registry(args)
    views = [node_view(reg, n) for n in reg.list_nodes()]
    if args.json:
        _print_json(views)
        return 0
    if not views:
        print("no nodes in the registry; enroll them with 'rackforge bmc enroll'")
        return 0
    now = time.time()
    fmt = "%-16s %-18s %-11s %-28s %-14s %s"
    print(fmt % ("NAME", "ROLE", "STATE", "ADDRESSES", "DISKS", "HEARTBEAT"))
    for v in views:
        addrs = v["addresses"] + (["bmc:%s" % v["bmc"]["address"]]
                                  if v["bmc"].get("address") else [])
        print(fmt % (v["name"], v["role"] or "-", v["state"], ",".join(addrs) or "-",
                     ",".join(d["name"] for d in v["disks"]) or "-",
                     _ago(v["heartbeat"], now)))
    return 0


def cmd_node_remove(args):
    from rackforge.cluster import removal

    reg = _connect_registry(args)
    node = reg.find_node(args.name)
    why = removal.member_reason(reg.kv, node)
    if why:
        raise removal.NodeIsMember(node=node.name, why=why)
    bmc = ("; its BMC record goes too, with the only copy of a password 'rack up "
           "--set-bmc-password' set" if (node.bmc or {}).get("password") else "")
    if not args.yes:
        print("rackforge node remove: this forgets node %s (%s, state %s, MACs %s) and any "
              "join token bound to it%s; run it again with --yes to do it"
              % (node.name, node.id, node.state, ", ".join(node.macs) or "-", bmc),
              file=sys.stderr)
        return 2
    gone = removal.remove(reg, node.id)
    print("removed node %s (%s, was %s); enrolled or network-booted again, it is a new "
          "machine" % (gone.name, gone.id, gone.state))
    return 0


def cmd_node_show(args):
    reg = _connect_registry(args)
    node = reg.find_node(args.name)
    view = node_view(reg, node)
    view["inventory"] = node.inventory
    view["boot"] = node.boot
    if args.json:
        _print_json(view)
        return 0
    now = time.time()
    for key in ("name", "id", "hostname", "role", "state"):
        print("%-10s %s" % (key + ":", view[key] or "-"))
    print("%-10s %s" % ("addresses:", ", ".join(view["addresses"]) or "-"))
    print("%-10s %s" % ("macs:", ", ".join(view["macs"]) or "-"))
    print("%-10s %s" % ("bmc:", " ".join("%s=%s" % kv for kv in sorted(view["bmc"].items()))
                        or "-"))
    for d in view["disks"]:
        size = (d["size"] or 0) / (1 << 30)
        print("%-10s %s %.1f GiB %s%s" % ("disk:", d["path"], size, d["stable_id"],
                                          " (to wipe)" if d["wipe"] else ""))
    if not view["disks"]:
        print("%-10s -" % "disks:")
    print("%-10s %s" % ("heartbeat:", _ago(view["heartbeat"], now)))
    print("%-10s %s" % ("updated:", _when(view["updated"])))
    return 0
