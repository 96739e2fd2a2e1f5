"""The install API: what a node installing over PXE asks the cluster, and tells it.

Served by every controller's join service (``cluster/joinserver.py``) over its
HTTPS, which the installer pins by the CA's sha256 (``rackforge.ca=`` on its
kernel command line, beside ``rackforge.join=`` and ``rackforge.node=``: never
the token).  Two calls, JSON in and out:

``POST /v1/install`` ``{"node": ID, "macs": [MAC, ...], "serial": S}``
    200 ``{"answer": {...}, "report": SECRET}`` only when node ``ID`` is
    ``installing``, was enrolled through its BMC, every MAC that enrolment
    recorded is among ``macs`` and ``serial`` is the one it recorded (when it
    recorded one).  Anything else is 403 with one line that says nothing of
    which check failed (the reason goes to the service's journal), and counts
    against the client's address like a refused join token (429 after ten).
    The answer is an installer answer file (``installer/answer.py``)::

        {"version": 1, "hostname": NAME,
         "disk": {"match": {"size": "largest"}, "wipe": "never"},     # rack up's
         "network": {"interface": "mac:<MAC>", "address": "A.B.C.D/P", "gateway": G},
         "cluster": {"join": {"endpoints": [...], "token": T, "ca_sha256": PIN}}}

    ``MAC`` is the enrolled MAC that network-booted (the boot records say
    which), else the first one.  The address is the one the node called from,
    made static with this controller's prefix and gateway
    (``addressing.py``: a controller needs a static address); a node calling
    from outside this controller's network gets ``address: dhcp``.

    ``T`` is a new one-use join token *bound* to this node (its id, name,
    enrolled MACs and serial: :func:`rackforge.cluster.tokens.check_binding`),
    so the join service admits that node with it and nobody else.  One
    transaction writes the token (hashed, as every token), the node's install
    record (:data:`rackforge.keys.BRINGUP_INSTALL`: the token's id, the report
    secret's hash, the time, the MAC and the static address given, which
    the seed's DHCP reserves) and deletes the token an earlier call gave: a
    new call revokes the previous token.

``POST /v1/install/report`` ``{"node": ID, "report": SECRET, "result": "installed" |
"failed", "reason": "..."}``
    200 ``{"node": ID, "state": STATE}`` after the installer's move,
    ``installing -> installed`` or ``-> failed`` (the reason, one line of at
    most :data:`MAX_REASON` characters, in the node's ``boot.error``), by
    compare-and-set; the same report again is answered the same.  A wrong
    secret or node: 403; a node no longer installing: 409.  A failed install's
    token is revoked.
"""

import hmac
import json
import logging
import re
import secrets
import string
import time

from rackforge import errors, keys, states
from rackforge import registry as registry_mod
from rackforge.bringup import addressing, progress
from rackforge.cluster import tokens
from rackforge.kvstore import Compare, RegistryUnavailable

LOG = logging.getLogger(__name__)
INSTALL, REPORT = "/v1/install", "/v1/install/report"
PATHS = (INSTALL, REPORT)
#: an install token lives this long: the install, the reboot and the join fit in it
TOKEN_TTL = 4 * 3600
MAX_BODY = 16 * 1024
MAX_MACS = 64
MAX_SERIAL = 128
MAX_REASON = 200
REPORT_LEN = 32
TXN_ATTEMPTS = 16
DEFAULT_DISK = {"match": {"size": "largest"}, "wipe": "never"}
_NODE_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
_NO_REPORT = tokens.hash_secret("-" * REPORT_LEN)


class InstallRefused(errors.RackforgeError):
    message = ("install refused: this machine is not a node waiting for its install here; "
               "enroll it and run 'rackforge rack up' on the seed")
    exit_code = 2


class ReportRefused(errors.RackforgeError):
    message = "install report refused: unknown node or wrong report secret"
    exit_code = 2


class BadInstallRequest(errors.ConfigError):
    message = "install request: {detail}"


class InstallUnavailable(errors.RackforgeError):
    message = "the install API cannot answer now ({detail}); the installer retries by itself"
    retryable = True


def status_of(exc):
    """The HTTP status of a refusal."""
    if isinstance(exc, (InstallRefused, ReportRefused)):
        return 403
    if isinstance(exc, states.InvalidTransition):
        return 409
    if isinstance(exc, (InstallUnavailable, RegistryUnavailable, registry_mod.ConcurrentUpdate,
                        progress.ProgressContended)):
        return 503
    if isinstance(exc, errors.ConfigError):
        return 400
    return 500


def _decode(raw):
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadInstallRequest(detail="the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadInstallRequest(detail="the body must be a JSON object")
    return body


def _fields(body, allowed):
    unknown = sorted(str(k)[:40] for k in body if k not in allowed)
    if unknown:
        raise BadInstallRequest(detail="unknown field '%s'; the fields are %s"
                                % (errors.printable(unknown[0]), ", ".join(sorted(allowed))))


def _node_id(body):
    node = body.get("node")
    if not isinstance(node, str) or not node:
        raise BadInstallRequest(detail="'node' must be the node id from rackforge.node=")
    return node if _NODE_ID.fullmatch(node) else None       # None: no such node


def parse_install(body):
    """``(node id or None, {MACs}, serial or None)`` of a ``/v1/install`` body."""
    _fields(body, {"node", "macs", "serial"})
    node = _node_id(body)
    macs = body.get("macs")
    if not isinstance(macs, list) or not 0 < len(macs) <= MAX_MACS \
            or not all(isinstance(m, str) for m in macs):
        raise BadInstallRequest(detail="'macs' must list this machine's NIC MACs (1 to %d)"
                                % MAX_MACS)
    try:
        macs = {registry_mod.normalize_mac(m) for m in macs}
    except registry_mod.InvalidNode:
        raise BadInstallRequest(detail="'macs' must be MAC addresses like 52:54:00:12:34:56") \
            from None
    serial = body.get("serial")
    if serial is not None and (not isinstance(serial, str) or len(serial) > MAX_SERIAL):
        raise BadInstallRequest(detail="'serial' must be the system serial number (at most "
                                "%d characters) or null" % MAX_SERIAL)
    return node, macs, serial or None


def parse_report(body):
    """``(node id or None, secret, result, reason)`` of a ``/v1/install/report`` body."""
    _fields(body, {"node", "report", "result", "reason"})
    node = _node_id(body)
    secret = body.get("report")
    if not isinstance(secret, str) or not secret:
        raise BadInstallRequest(detail="'report' must be the secret /v1/install answered")
    result = body.get("result")
    if result not in ("installed", "failed"):
        raise BadInstallRequest(detail="'result' must be installed or failed")
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise BadInstallRequest(detail="'reason' must be one line of text")
    reason = " ".join(errors.printable(reason[:4 * MAX_REASON]).split())[:MAX_REASON]
    return node, secret, result, reason


def enrolled_identity(node):
    """``(MACs, serial)`` the node's BMC enrolment recorded (``bmc enroll``, ``rack up``):
    the MACs of its BMC inventory (else the record's), in the BMC's order."""
    inventory = node.inventory or {}
    macs = []
    for mac in inventory.get("macs") or node.macs:
        try:
            mac = registry_mod.normalize_mac(mac)
        except registry_mod.InvalidNode:
            continue
        if mac not in macs:
            macs.append(mac)
    serial = inventory.get("serial")
    return macs, serial if isinstance(serial, str) and serial else None


def mismatch(node, macs, serial):
    """Why ``node`` may not have its install answer (for the journal), or None."""
    if node is None:
        return "no such node"
    if not (node.bmc or {}).get("address"):
        return "node %s was not enrolled through its BMC" % node.name
    if node.state != "installing":
        return "node %s is %s, not installing" % (node.name, node.state)
    enrolled, enrolled_serial = enrolled_identity(node)
    if not enrolled:
        return "node %s has no MAC from its enrolment" % node.name
    if not set(enrolled) <= macs:
        return "the MACs sent are not node %s's enrolled ones" % node.name
    if enrolled_serial is not None and serial != enrolled_serial:
        return "the serial sent is not node %s's enrolled one" % node.name
    return None


def _secret(length=REPORT_LEN):
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


class InstallService:
    """``/v1/install`` and ``/v1/install/report`` without HTTP.

    :param pin: the cluster CA's pin (``sha256:...``)
    :param join_endpoints: a callable giving the join services' URLs (the cluster
        record's, as :meth:`rackforge.cluster.join.JoinService.join_endpoints`)
    :param network: a callable giving this controller's
        :class:`~rackforge.bringup.addressing.LocalNetwork` (or None: every node
        keeps DHCP)
    """

    PATHS = PATHS
    MAX_BODY = MAX_BODY
    BadRequest = BadInstallRequest
    status_of = staticmethod(status_of)

    def __init__(self, registry, pin, join_endpoints, clock=time.time, token_ttl=TOKEN_TTL,
                 network=None):
        self.registry = registry
        self.network = network
        self.kv = registry.kv
        self.pin = pin
        self.join_endpoints = join_endpoints
        self.tokens = tokens.TokenStore(self.kv, clock=clock)
        self.progress = progress.ProgressStore(self.kv)
        self.clock = clock
        self.token_ttl = token_ttl

    def handle(self, path, raw, peer=None):
        """The answer to ``POST path`` with body ``raw``.  :raises: RackforgeError"""
        body = _decode(raw)
        if path == INSTALL:
            return self.install(body, peer)
        return self.report(body, peer)

    # -- /v1/install ---------------------------------------------------------------------
    def install(self, body, peer=None):
        node_id, macs, serial = parse_install(body)
        for _ in range(TXN_ATTEMPTS):
            node = self._node(node_id)
            why = mismatch(node, macs, serial)
            if why is not None:
                LOG.warning("install refused to %s: %s", peer or "?", why)
                raise InstallRefused()
            endpoints = list(self.join_endpoints() or [])
            if not endpoints or not self.pin:
                raise InstallUnavailable(detail="the cluster record has no join endpoint or "
                                         "CA pin yet")
            answer = self._issue(node, serial, endpoints, peer)
            if answer is not None:
                LOG.info("install answer for node %s (%s) to %s", node.name, node.id,
                         peer or "?")
                return answer
        raise InstallUnavailable(detail="the registry changed under %d attempts" % TXN_ATTEMPTS)

    def _node(self, node_id):
        if node_id is None:
            return None
        try:
            return self.registry.get_node(node_id)
        except registry_mod.NodeNotFound:
            return None

    def _booted_mac(self, node, macs):
        """The enrolled MAC whose network boot the PXE service last recorded for
        ``node``, else the first enrolled one."""
        latest, found = -1.0, macs[0]
        for mac in macs:
            entry = self.kv.get(keys.BOOTS + mac)
            try:
                record = json.loads(entry.value) if entry is not None else {}
                when = float(record.get("time") or 0)
            except (ValueError, TypeError):
                continue
            if record.get("node") == node.name and when > latest:
                latest, found = when, mac
        return found

    def _address(self, node, peer):
        """The static ``network`` fields for ``node`` calling from ``peer``, or None."""
        network = self.network() if self.network is not None else None
        static = addressing.static_for(peer, network)
        if static is None:
            LOG.warning("node %s keeps DHCP for its management address: it called from %s, "
                        "outside %s; it can only be a compute node", node.name, peer or "?",
                        network.address.network if network else "this controller's network")
        return static

    def _issue(self, node, serial, endpoints, peer=None):
        """A bound token, the report secret and the install record in one transaction
        (the previous token deleted); None if the registry changed meanwhile."""
        macs, enrolled_serial = enrolled_identity(node)
        mac = self._booted_mac(node, macs)
        static = self._address(node, peer)
        key = keys.BRINGUP_INSTALL + node.id
        entry = self.kv.get(key)
        before = json.loads(entry.value) if entry is not None else {}
        bound = {"node": node.id, "name": node.name, "macs": macs,
                 "serial": enrolled_serial or serial}
        token, record, t_compares, t_puts = self.tokens.plan_create(
            self.token_ttl, 1, "install of %s" % node.name, bound)
        report = _secret()
        install = {"node": node.id, "token": record.id, "report": tokens.hash_secret(report),
                   "issued": self.clock(), "calls": int(before.get("calls", 0)) + 1,
                   "mac": mac}
        if static is not None:
            install["address"] = static["address"].split("/")[0]
        old = before.get("token")
        deletes = [keys.TOKENS + old] if isinstance(old, str) and tokens.ID_RE.match(old) \
            else []
        compares = t_compares + [Compare(keys.NODES + node.id, node.revision),
                                 Compare(key, entry.mod_revision if entry else 0)]
        if not self.kv.txn(compares, t_puts + [(key, json.dumps(install).encode())], deletes):
            return None
        found = self.progress.get(node.id)
        return {"answer": {
            "version": 1,
            "hostname": node.name,
            "disk": (found.disk if found and found.disk else DEFAULT_DISK),
            "network": dict(static or {"address": "dhcp"}, interface="mac:" + mac),
            "cluster": {"join": tokens.bundle(endpoints, token, self.pin)},
        }, "report": report}

    # -- /v1/install/report --------------------------------------------------------------
    def report(self, body, peer=None):
        node_id, secret, result, reason = parse_report(body)
        entry = self.kv.get(keys.BRINGUP_INSTALL + node_id) if node_id else None
        record = json.loads(entry.value) if entry is not None else {}
        stored = record.get("report") if isinstance(record.get("report"), str) else _NO_REPORT
        if not hmac.compare_digest(stored, tokens.hash_secret(secret)) or entry is None:
            LOG.warning("install report refused from %s: unknown node or wrong secret",
                        peer or "?")
            raise ReportRefused()
        try:
            node = self.registry.get_node(node_id)
        except registry_mod.NodeNotFound:
            raise ReportRefused() from None
        if node.state == result:        # the same report again (its answer was lost)
            return {"node": node.id, "state": node.state}
        now = self.clock()

        def change(n):
            boot = {k: v for k, v in n.boot.items() if k != "error"}
            if result == "failed":
                boot["error"] = "install failed: %s" % (reason or "no reason given")
            else:
                boot["installed"] = now
            n.boot = boot
        node = self.registry.transition(node_id, result, states.INSTALLER, frm="installing",
                                        change=change)
        if result == "failed" and tokens.ID_RE.match(str(record.get("token"))):
            self.kv.txn([], (), [keys.TOKENS + record["token"]])      # revoke it
        LOG.info("node %s reported %s%s", node.name, result,
                 ": " + reason if result == "failed" and reason else "")
        return {"node": node.id, "state": node.state}
