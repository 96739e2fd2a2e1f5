"""``rackforge pxe serve`` and ``rackforge pxe status``."""

import json
import signal
import time


def add_commands(sub):
    """Register the PXE commands on the top-level sub-parser."""
    p = sub.add_parser("pxe", help="rack boot services: DHCP, TFTP and HTTP boot")
    psub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    q = psub.add_parser("serve", help="serve PXE/iPXE boot on one interface until stopped")
    q.add_argument("--interface", "-i", help="the rack network's interface (required: "
                   "rackforge never picks one)")
    q.add_argument("--bundle", required=True, help="a PXE bundle: images/PROFILE/pxe")
    q.add_argument("--mode", choices=("proxy", "full"), default="proxy",
                   help="proxy: beside the site's DHCP server (default); full: hand out "
                        "addresses from --range")
    q.add_argument("--range", metavar="FIRST,LAST", help="addresses for --mode full")
    q.add_argument("--http-port", type=int, default=8080)
    q.add_argument("--tftp-port", type=int, default=69, help=argparse_suppress())
    q.add_argument("--etcd", help="node registry URL (default: $RACKFORGE_ETCD or "
                   "http://127.0.0.1:2379)")
    q.add_argument("--cluster", default="rackforge", help="cluster id given to booting nodes")
    q.add_argument("--efi-loader", choices=("snponly.efi", "ipxe.efi"), default="snponly.efi",
                   help="iPXE build for UEFI firmware (default: %(default)s)")
    q.add_argument("--allow-default-route", action="store_true",
                   help="serve even on the interface that carries the default route")
    q.set_defaults(func=cmd_serve)

    q = psub.add_parser("status", help="what is served, and the last boot of each MAC")
    q.add_argument("--etcd", help="node registry URL")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_status)


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS


def cmd_serve(args):
    from rackforge import registry
    from rackforge.pxe import service

    services = service.prepare(args, registry.connect)
    services.start()

    def stop(signum, frame):
        services.request_stop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    services.run()
    return 0


def cmd_status(args):
    from rackforge import errors
    from rackforge.pxe import service

    status = service.read_status()
    try:
        boots = _registry(args, status).list_boots()
    except errors.RackforgeError as e:
        boots, registry_error = None, str(e)
    else:
        registry_error = None
    if args.json:
        print(json.dumps({"server": status, "boots": boots, "registry_error": registry_error},
                         indent=2))
        return 0 if status and status["serving"] else 1
    if not status:
        print("not serving: no boot server has run here")
    elif not status["serving"]:
        print("not serving: the last server (pid %d) stopped; it served %s on %s"
              % (status["pid"], status["bundle"], status["interface"]))
    else:
        print("serving %s on %s (%s) since %s" % (status["bundle"], status["interface"],
                                                  status["address"], _when(status["started"])))
        dhcp = ("proxy-DHCP" if status["mode"] == "proxy"
                else "DHCP %s-%s" % tuple(status["range"]))
        print("  %s, dnsmasq pid %s, %d restarts" % (dhcp, status["dhcp"]["pid"],
                                                     status["dhcp"]["restarts"]))
        t = status["tftp"]
        print("  TFTP port %d: %d transfers, %d refused, %d bytes"
              % (t["port"], t["transfers"], t["refused"], t["bytes"]))
        print("  HTTP %s: %d requests" % (status["http"]["url"], status["http"]["requests"]))
    if registry_error:
        print("boots: unknown (%s)" % registry_error)
    elif boots is not None:
        print("%d machines booted from the network" % len(boots))
        if boots:
            print("  %-17s  %5s  %-9s  %-8s  %-19s  %s"
                  % ("MAC", "BOOTS", "DECISION", "PLATFORM", "LAST BOOT", "NODE"))
        for b in sorted(boots, key=lambda b: b["time"], reverse=True):
            print("  %-17s  %5d  %-9s  %-8s  %-19s  %s" % (
                b["mac"], b["count"], b.get("decision") or "-", b.get("platform") or "-",
                _when(b["time"]), b.get("node") or "(unknown)"))
    return 0 if status and status["serving"] else 1


def _registry(args, status):
    """The registry as this node's other commands reach it (``$RACKFORGE_ETCD``, else its
    client file, with the cluster's TLS), else the endpoint the boot server used: that
    URL alone carries no client certificate, and a cluster's etcd asks for one."""
    import os

    from rackforge import kvstore, registry
    if args.etcd:
        return registry.connect(args.etcd)
    if os.environ.get("RACKFORGE_ETCD") or kvstore.read_client() is not None:
        return registry.connect()
    return registry.connect((status or {}).get("etcd"))


def _when(ts):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"
