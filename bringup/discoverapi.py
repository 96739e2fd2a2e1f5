"""The discovery API: a machine nobody enrolled, booted into the live appliance, is recorded.

Served by every controller's join service (``cluster/joinserver.py``) beside the
install API, over the same HTTPS, which the live appliance pins by the CA's
sha256 (``rackforge.ca=`` on a discovery boot's kernel command line, beside
``rackforge.join=``; ``firstboot/discover.py`` is the client).  One call, JSON in
and out, no token:

``POST /v1/discover`` ``{"macs": [MAC, ...], "serial": S, "inventory": {...}}``
    200 ``{"node": ID, "state": "discovered"}`` after a new node record in state
    ``discovered`` (the live appliance's move, ``(new) -> discovered`` in
    ``rackforge/states.py``) with the MACs, the inventory (under ``inventory.host``,
    where a join keeps it too) and, in ``boot.discovered``, the address the request
    came from, the serial and the time.  For a machine a node already holds one
    of the MACs of, nothing is written and the answer is that node's id and
    state (``discovered`` again for a machine that reboots into discovery, or
    ``enrolled``, ``failed``, ...): a machine is never recorded twice.

    The boot network is not trusted, so everything it sends is bounded: the body
    (at most :data:`MAX_BODY`, JSON), the MACs (1 to :data:`MAX_MACS` unicast NIC
    addresses), the serial (:data:`MAX_SERIAL` characters), the inventory (only
    the fields of ``firstboot/inventory.py``'s shape, each of its type, text one
    printable line of at most :data:`MAX_TEXT` characters, lists cut at
    :data:`LIST_LIMITS`, at most :data:`MAX_INVENTORY` bytes as stored), and the
    number of ``discovered`` records (:data:`MAX_DISCOVERED`; past it 503
    "discovery full", one log line a minute).  The cap holds across controllers:
    each new record rewrites :data:`rackforge.keys.DISCOVERY` in the same
    transaction, compared, so two discoveries never both take the last place.
    A malformed body is 400 and counts against the client's address like a
    refused join token (429 after ten in a minute).

    Nothing here issues a token or answers anything secret: a discovered machine
    never joins on its own.  ``rackforge bmc enroll`` or ``rack up`` adopts it
    (``discovered -> enrolled``, by the operator) when its BMC reports one of its
    MACs (``bmc/cli.py:enroll_one``).
"""

import json
import logging
import re
import time

from rackforge import errors, keys, states
from rackforge import registry as registry_mod
from rackforge.kvstore import Compare, RegistryUnavailable
from rackforge.pxe.limits import LogLimiter

LOG = logging.getLogger(__name__)
DISCOVER = "/v1/discover"
PATHS = (DISCOVER,)
MAX_BODY = 256 * 1024
MAX_MACS = 64
MAX_SERIAL = 128
MAX_TEXT = 128
#: a discovered record's inventory as stored (a 64-disk machine fits in half of it)
MAX_INVENTORY = 32 * 1024
MAX_DISCOVERED = 256
#: seconds a full discovery is believed before the registry is counted again
FULL_RECHECK = 10.0
TXN_ATTEMPTS = 16
MAX_INT = 2 ** 63 - 1

TEXT, INT, BOOL = "text", "int", "bool"
LIST_LIMITS = {"flags": 32, "disks": 64, "interfaces": 64, "members": 16}
#: the inventory fields kept (firstboot/inventory.py's dataclasses), each with its type
SHAPE = {
    "cpu": {"model": TEXT, "count": INT, "architecture": TEXT, "sockets": INT,
            "frequency_mhz": INT, "flags": [TEXT]},
    "memory": {"total_bytes": INT, "physical_mb": INT},
    "disks": [{"name": TEXT, "path": TEXT, "size": INT, "type": TEXT, "rotational": BOOL,
               "model": TEXT, "vendor": TEXT, "serial": TEXT, "wwn": TEXT, "by_path": TEXT,
               "bus": TEXT, "removable": BOOL, "read_only": BOOL, "system": BOOL}],
    "interfaces": [{"name": TEXT, "mac": TEXT, "kind": TEXT, "driver": TEXT, "speed_mbps": INT,
                    "carrier": BOOL, "operstate": TEXT, "mtu": INT, "pci_address": TEXT,
                    "master": TEXT, "members": [TEXT],
                    "lldp": {"chassis_id": TEXT, "chassis_name": TEXT, "port_id": TEXT,
                             "port_description": TEXT, "vlan": INT}}],
    "system_vendor": {"manufacturer": TEXT, "product_name": TEXT, "serial_number": TEXT,
                      "uuid": TEXT},
    "bmc": {"address": TEXT, "mac": TEXT},
    "boot_mode": TEXT,
    "hostname": TEXT,
}
_PEER = re.compile(r"[0-9A-Fa-f.:]{1,45}")


class BadDiscoverRequest(errors.ConfigError):
    message = "discover request: {detail}"


class DiscoveryFull(errors.RackforgeError):
    message = ("discovery full: {count} machines are discovered and not enrolled; enroll "
               "them ('rackforge rack up') or remove them ('rackforge node remove') on the "
               "seed, and this machine is recorded when it asks again")
    retryable = True


class DiscoverUnavailable(errors.RackforgeError):
    message = "the discovery API cannot answer now ({detail}); the machine asks again by itself"
    retryable = True


def status_of(exc):
    """The HTTP status of a refusal."""
    if isinstance(exc, (DiscoveryFull, DiscoverUnavailable, RegistryUnavailable,
                        registry_mod.ConcurrentUpdate, registry_mod.NodeExists)):
        return 503
    if isinstance(exc, errors.ConfigError):
        return 400
    return 500


def _decode(raw):
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadDiscoverRequest(detail="the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadDiscoverRequest(detail="the body must be a JSON object")
    return body


def _text(value):
    if not isinstance(value, str):
        return None
    return errors.printable(" ".join(value[:4 * MAX_TEXT].split()))[:MAX_TEXT] or None


def shaped(value, spec, name=None):
    """``value`` cut to ``spec`` (:data:`SHAPE` or a part): known keys only, each of its
    type (else None), text one printable line of at most :data:`MAX_TEXT`, lists cut at
    :data:`LIST_LIMITS`.  Nothing the network sends survives outside the shape."""
    if spec == TEXT:
        return _text(value)
    if spec == INT:
        return value if type(value) is int and 0 <= value <= MAX_INT else None
    if spec == BOOL:
        return value if isinstance(value, bool) else None
    if isinstance(spec, list):
        if not isinstance(value, list):
            return []
        items = [shaped(v, spec[0]) for v in value[:LIST_LIMITS.get(name, 16)]]
        return [v for v in items if v is not None]
    if not isinstance(value, dict):
        return None
    return {k: shaped(value[k], sub, k) for k, sub in spec.items() if k in value}


def parse(body):
    """``(sorted MACs, serial or None, inventory)`` of a ``/v1/discover`` body."""
    allowed = {"macs", "serial", "inventory"}
    unknown = sorted(str(k)[:40] for k in body if k not in allowed)
    if unknown:
        raise BadDiscoverRequest(detail="unknown field '%s'; the fields are %s"
                                 % (errors.printable(unknown[0]), ", ".join(sorted(allowed))))
    macs = body.get("macs")
    if not isinstance(macs, list) or not 0 < len(macs) <= MAX_MACS \
            or not all(isinstance(m, str) for m in macs):
        raise BadDiscoverRequest(detail="'macs' must list this machine's NIC MACs (1 to %d)"
                                 % MAX_MACS)
    found = set()
    for mac in macs:
        try:
            mac = registry_mod.normalize_mac(mac)
        except registry_mod.InvalidNode:
            mac = None
        if mac is None or int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
            raise BadDiscoverRequest(detail="'macs' must be NIC unicast MAC addresses like "
                                     "52:54:00:12:34:56")
        found.add(mac)
    serial = body.get("serial")
    if serial is not None and (not isinstance(serial, str) or len(serial) > MAX_SERIAL):
        raise BadDiscoverRequest(detail="'serial' must be the system serial number (at most "
                                 "%d characters) or null" % MAX_SERIAL)
    inventory = body.get("inventory", {})
    if not isinstance(inventory, dict):
        raise BadDiscoverRequest(detail="'inventory' must be the machine's inventory (an "
                                 "object)")
    inventory = shaped(inventory, SHAPE)
    if len(json.dumps(inventory)) > MAX_INVENTORY:
        raise BadDiscoverRequest(detail="'inventory' is over %d KiB once cut to the fields "
                                 "kept" % (MAX_INVENTORY >> 10))
    return sorted(found), _text(serial), inventory


class DiscoverService:
    """``/v1/discover`` without HTTP, for the join service (``cluster/joinserver.py``).

    :param limit: the most ``discovered`` records the registry may hold
    """

    PATHS = PATHS
    MAX_BODY = MAX_BODY
    BadRequest = BadDiscoverRequest
    #: statuses that count against the client's address like a refused join token
    COUNTED = (400, 403)
    status_of = staticmethod(status_of)

    def __init__(self, registry, limit=MAX_DISCOVERED, clock=time.time,
                 monotonic=time.monotonic):
        self.registry = registry
        self.kv = registry.kv
        self.limit = limit
        self.clock = clock
        self.monotonic = monotonic
        self._full_until, self._full_count = 0.0, 0
        self._log = LogLimiter(LOG, burst=1, interval=60, clock=monotonic)

    def handle(self, path, raw, peer=None):
        """The answer to ``POST path`` with body ``raw``.  :raises: RackforgeError"""
        return self.discover(_decode(raw), peer)

    def discover(self, body, peer=None):
        macs, serial, inventory = parse(body)
        for _ in range(TXN_ATTEMPTS):
            known = self._known(macs)
            if known is not None:           # a machine already recorded: nothing written
                return {"node": known.id, "state": known.state}
            if self.monotonic() < self._full_until:
                raise self._full(peer, self._full_count)
            gate = self.kv.get(keys.DISCOVERY)
            count = self.count()
            if count >= self.limit:
                self._full_until = self.monotonic() + FULL_RECHECK
                self._full_count = count
                raise self._full(peer, count)
            now = self.clock()
            node = registry_mod.Node(
                state="discovered", macs=macs, inventory={"host": inventory},
                boot={"discovered": {"address": peer if isinstance(peer, str)
                                     and _PEER.fullmatch(peer) else None,
                                     "serial": serial, "time": now}})
            node, compares, puts = self.registry.plan_create(node, by=states.LIVE)
            compares.append(Compare(keys.DISCOVERY, gate.mod_revision if gate else 0))
            puts.append((keys.DISCOVERY, json.dumps({"discovered": count + 1,
                                                     "time": now}).encode()))
            if self.kv.txn(compares, puts):
                LOG.info("discovered a machine from %s: node %s (%s), MACs %s, serial %s",
                         peer or "?", node.name, node.id, ",".join(macs), serial or "-")
                return {"node": node.id, "state": node.state}
        raise DiscoverUnavailable(detail="the registry changed under %d attempts"
                                  % TXN_ATTEMPTS)

    def count(self):
        """How many ``discovered`` records the registry holds."""
        return sum(1 for n in self.registry.list_nodes() if n.state == "discovered")

    def _known(self, macs):
        for mac in macs:
            node = self.registry.node_by_mac(mac)
            if node is not None:
                return node
        return None

    def _full(self, peer, count):
        self._log.log("full", logging.WARNING, "discovery of a machine from %s refused: %d "
                      "discovered records already (the most kept); enroll or remove them",
                      peer or "?", count)
        return DiscoveryFull(count=count)
