"""The console's network test: can this node reach its gateway, the VIP, each peer, DNS?

``GET /v1/nettest`` of the local API.  The targets come from what the agent knows
(:mod:`.view`: the VIP, every other node's management address) and from the
node itself (the default gateway, the name servers of ``/etc/resolv.conf``).
Each host is pinged (two echo requests, one second each) and each name server
is asked for the root zone's SOA over UDP, all at once in threads, so the
whole test takes about two seconds however many peers there are.  A result
per target: ok with the round trip, or what failed.
"""

import ipaddress
import logging
import re
import secrets
import socket
import struct
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

LOG = logging.getLogger(__name__)
RESOLV = Path("/etc/resolv.conf")
PING_COUNT, PING_WAIT = 2, 1
DNS_TIMEOUT = 2.0
MAX_TARGETS = 64
_RTT = re.compile(r"= [\d.]+/([\d.]+)/")


def default_gateway(iproute=None):
    """The IPv4 default route's gateway, or None."""
    if iproute is None:
        from pyroute2 import IPRoute
        with IPRoute() as ipr:
            return default_gateway(ipr)
    for route in iproute.get_default_routes(family=socket.AF_INET):
        if route.get_attr("RTA_GATEWAY"):
            return route.get_attr("RTA_GATEWAY")
    return None


def nameservers(resolv=RESOLV):
    found = []
    try:
        for line in Path(resolv).read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "nameserver":
                try:
                    ipaddress.ip_address(words[1])
                except ValueError:
                    continue
                found.append(words[1])
    except OSError:
        pass
    return found


def targets(view, gateway=None, dns=()):
    """``[(kind, label, address)]``: gateway, VIP, each peer, each name server."""
    out = []
    if gateway:
        out.append(("ping", "gateway", gateway))
    vip = ((view.cluster or {}).get("vip") if view is not None else None)
    if vip:
        out.append(("ping", "VIP", vip))
    for peer in (view.nodes if view is not None else []):
        if peer.id != view.node_id and peer.address:
            out.append(("ping", "peer %s" % peer.name, peer.address))
    out += [("dns", "DNS", server) for server in dns]
    return out[:MAX_TARGETS]


def ping(address, run=subprocess.run):
    """``(ok, detail)`` of :data:`PING_COUNT` echo requests to ``address``."""
    try:
        res = run(["ping", "-n", "-q", "-c", str(PING_COUNT), "-W", str(PING_WAIT), address],
                  capture_output=True, text=True, timeout=PING_COUNT * PING_WAIT + 5)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, "ping did not run: %s" % (getattr(exc, "strerror", None) or exc)
    if res.returncode == 0:
        m = _RTT.search(res.stdout)
        return True, "%s ms" % m.group(1) if m else "answers"
    return False, "no answer to ping"


def dns_query(server, timeout=DNS_TIMEOUT):
    """``(ok, detail)``: the root zone's SOA asked of ``server`` over UDP port 53."""
    ident = secrets.randbits(16)
    query = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + b"\x00" + \
        struct.pack(">HH", 6, 1)
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    start = time.monotonic()
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(query, (server, 53))
            data = sock.recv(4096)
    except socket.timeout:
        return False, "no DNS answer within %g s" % timeout
    except OSError as exc:
        return False, "DNS: %s" % (exc.strerror or exc)
    if len(data) < 12 or struct.unpack(">H", data[:2])[0] != ident:
        return False, "an answer that is not ours"
    rcode = data[3] & 0x0F
    ms = (time.monotonic() - start) * 1000
    return (True, "answers (%.1f ms)" % ms) if rcode in (0, 3) else \
        (False, "DNS error code %d" % rcode)


def run_tests(found, probe_ping=ping, probe_dns=dns_query):
    """``[{"target", "address", "ok", "detail"}]`` in the order of ``found``."""
    def one(item):
        kind, label, address = item
        ok, detail = (probe_dns if kind == "dns" else probe_ping)(address)
        return {"target": label, "address": address, "ok": ok, "detail": detail}
    if not found:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(found))) as pool:
        return list(pool.map(one, found))


def query(view_of, gateway_of=default_gateway, resolv=RESOLV):
    """``GET /v1/nettest``: ``{"results": [...]}``; the view from the agent (may be None)."""
    view = view_of()
    found = targets(view, gateway_of(), nameservers(resolv))
    results = run_tests(found)
    failed = [r["target"] for r in results if not r["ok"]]
    LOG.info("console: network test: %d targets, %s", len(results),
             "all answer" if not failed else "no answer from " + ", ".join(failed))
    return {"results": results, "at": time.time()}


def lines(answer):
    results = (answer or {}).get("results") or []
    if not results:
        return ["nothing to test: no gateway, VIP, peer or name server is known"]
    out = ["%-4s %-24s %-15s %s" % ("ok" if r["ok"] else "FAIL", r["target"][:24],
                                    r["address"], r["detail"]) for r in results]
    bad = sum(1 for r in results if not r["ok"])
    out.append("")
    out.append("all %d answer" % len(results) if not bad else
               "%d of %d do not answer" % (bad, len(results)))
    return out
