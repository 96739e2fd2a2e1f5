"""The join service: admits a new node to the cluster with a token, on every controller.

Served over HTTPS by each controller (``rackforge cluster join-server``,
``rackforge-join.service``) with a certificate of the join-service usage
(:data:`ca.JOIN_SERVICE`), which a joining node checks before it sends its
token (:mod:`.joinclient`).

- ``GET /ca`` -> the CA certificate (public);
- ``POST /join`` with ``Authorization: Bearer ID.SECRET`` and the JSON body
  ``{name, csr, inventory?, storage?, role?, addresses?}``.

What it does, in this order, so that a refusal writes nothing:

1. **Validate** everything: the token (before the body is read), the name
   (a full match, nothing stripped or folded), the CSR (the node's own key;
   weak keys, CA requests and other names refused), every field's type.
   The node's address is the one its request came from: a node is certified
   for where it is, not for what it asks (a token holder cannot get a
   certificate for the join endpoint's or another node's address).
2. **Who is it?**  A token admits a *new* node.  A join whose name, MAC or
   address belongs to a registered node is refused, unless it is that node
   resuming its own join, proved by the key it holds (its CSR's public key
   is the one recorded when it was admitted): then it gets the same node,
   role and a certificate again, and nothing is spent twice.
3. **One transaction**: the token's use, the node record and its indexes,
   its role (and a controller's place), its certificate, and for a
   controller the cluster CA's key sealed for it (so it can serve joins
   too) -- all or nothing, retried on a lost race.

A token *bound* to a node (the install API gives one to each node that
``rackforge rack up`` installs, :func:`tokens.check_binding`) admits that
registered node and nothing else: the request's name, NICs and serial must be
the ones bound, and the node must be ``installed``; it then moves
``installed -> joining`` (the join service's move in ``rackforge/states.py``)
in the same single transaction, keeping its record, BMC and MACs.  Any other
identity is refused like a wrong token.

The answer: ``{node_id, name, role, roles, address, certificate, ca,
etcd_endpoints, join_endpoints}``.  Never a private key.
"""

import json
import logging
import re
from dataclasses import dataclass

from rackforge import errors, keys, states
from rackforge import registry as registry_mod
from rackforge.cluster import ca as ca_mod
from rackforge.cluster import roles, secrets, tokens
from rackforge.kvstore import Compare, RegistryUnavailable

LOG = logging.getLogger(__name__)
DEFAULT_PORT = 9443
TXN_ATTEMPTS = 32
REQUEST_KEYS = {"name", "csr", "inventory", "storage", "role", "addresses", "token"}
_BEARER = re.compile(r"Bearer ([a-z0-9]{6}\.[a-z0-9]{16})")


class JoinError(errors.RackforgeError):
    message = "join {endpoint} failed: {detail}"
    retryable = True


class JoinRefused(errors.RackforgeError):
    message = "the join service at {endpoint} refused the join: {detail}"
    exit_code = 2


class BadJoinRequest(errors.ConfigError):
    message = "join request: {detail}"


class NodeTaken(errors.RackforgeError):
    message = ("{what} belongs to node {node} already, and this request is not that node "
               "resuming its own join (it holds another key); a join token admits new nodes "
               "only: if node {node} never joined, 'rackforge node remove {node} --yes' "
               "forgets it (a member cannot be removed yet)")
    exit_code = 2


class AddressIsEndpoint(NodeTaken):
    message = ("the address {address} is the join endpoint {url}, served by a controller: a "
               "joining node never has it; give this node another address")


class JoinBusy(errors.RackforgeError):
    message = "the join service is busy ({detail}); the node retries by itself"
    retryable = True


def _macs(inventory):
    out = []
    for nic in (inventory or {}).get("interfaces") or []:
        mac = nic.get("mac") if isinstance(nic, dict) else None
        if isinstance(mac, str) and mac and nic.get("kind", "physical") == "physical":
            try:
                out.append(registry_mod.normalize_mac(mac))
            except registry_mod.InvalidNode:
                continue
    return sorted(set(out))


def token_from_header(value):
    """The token of an ``Authorization: Bearer ID.SECRET`` header, or None."""
    m = _BEARER.fullmatch(value) if isinstance(value, str) else None
    return m.group(1) if m else None


@dataclass
class JoinRequest:
    """A join request whose every field was checked."""
    token: str
    name: str
    csr: bytes
    address: str
    inventory: dict
    storage: bool
    role: str


def parse_request(body, address, token=None):
    """A :class:`JoinRequest` from the decoded JSON ``body``, sent from ``address``.

    :raises BadJoinRequest: one line naming the field.
    """
    if not isinstance(body, dict):
        raise BadJoinRequest(detail="the body must be a JSON object")
    unknown = sorted(str(k)[:40] for k in body if k not in REQUEST_KEYS)
    if unknown:
        raise BadJoinRequest(detail="unknown field '%s'; the fields are %s"
                             % (unknown[0], ", ".join(sorted(REQUEST_KEYS))))
    name = body.get("name")
    if not registry_mod.valid_name(name):
        raise BadJoinRequest(detail="'name' must be a node name: a-z, 0-9 and '-', 1 to 63, "
                             "no other character (not even a trailing newline)")
    csr = body.get("csr")
    if not isinstance(csr, str) or not csr:
        raise BadJoinRequest(detail="'csr' must be the node's certificate request (PEM): the "
                             "node makes its own key and keeps it")
    inventory = body.get("inventory", {})
    if not isinstance(inventory, dict):
        raise BadJoinRequest(detail="'inventory' must be an object")
    storage = body.get("storage", False)
    if not isinstance(storage, bool):
        raise BadJoinRequest(detail="'storage' must be true or false")
    role = body.get("role")
    if role is not None and role not in roles.PINNABLE:
        raise BadJoinRequest(detail="'role' must be one of %s, or absent"
                             % ", ".join(roles.PINNABLE))
    asked = body.get("addresses", [])
    if not isinstance(asked, list) or not all(isinstance(a, str) for a in asked):
        raise BadJoinRequest(detail="'addresses' must be a list of IP addresses")
    if any(a.split("/")[0] != address for a in asked):
        raise BadJoinRequest(detail="'addresses' must be the address this request comes from "
                             "(%s): a node is certified for where it is" % address)
    token = token if token is not None else body.get("token")
    if not isinstance(token, str):
        raise tokens.TokenMalformed(node=name)
    return JoinRequest(token=token, name=name, csr=csr.encode(), address=address,
                       inventory=inventory, storage=storage, role=role)


class JoinService:
    """What ``POST /join`` does, without HTTP (unit-testable on the memory registry).

    :param authority: the cluster CA (this controller holds its key).
    :param identity: ``(node_id, private key)`` of this controller: it opens the
        sealed CA key to seal it again for a new controller.  None on a service
        that never admits controllers (tests).
    """

    def __init__(self, registry, authority, etcd_endpoints=(), policy=None, clock=None,
                 identity=None):
        self.registry = registry
        self.authority = authority
        # a list, or a callable giving the current one (the etcd members' client URLs)
        self.etcd_endpoints = (etcd_endpoints if callable(etcd_endpoints)
                               else list(etcd_endpoints))
        kw = {"clock": clock} if clock else {}
        self.tokens = tokens.TokenStore(registry.kv, **kw)
        self.election = roles.RoleElection(registry.kv, policy, **kw)
        node_id, key = identity or (None, None)
        self.secrets = secrets.SecretStore(registry.kv, node_id, key)

    def endpoints(self):
        eps = self.etcd_endpoints
        return list(eps() if callable(eps) else eps)

    def join_endpoints(self):
        entry = self.registry.kv.get(keys.CLUSTER)
        try:
            return list(json.loads(entry.value).get("join_endpoints") or []) if entry else []
        except (ValueError, AttributeError):
            return []

    def check_token(self, token):
        """Refuse a bad token before anything else is read (the HTTP layer's first step)."""
        self.tokens.check(token)

    # -- the join ------------------------------------------------------------------------
    def join(self, request):
        """Admit the node of a :class:`JoinRequest`; returns the answer dict.

        :raises tokens.TokenError, ca_mod.BadCSR, NodeTaken, roles.RoleError:
            refused, nothing written.
        """
        public_key = ca_mod.check_csr(request.csr, request.name, [request.address])
        key_pin = ca_mod.public_key_pin(public_key)
        record, _ = self.tokens.check(request.token, request.name)
        if record.bound:
            return self._join_bound(request, record, public_key, key_pin)
        for _ in range(TXN_ATTEMPTS):
            existing = self._owner(request)
            if existing is not None:
                if existing.key != key_pin:
                    raise NodeTaken(what=self._what(existing, request), node=existing.name)
                return self._resume(existing, request)
            answer = self._admit_new(request, public_key, key_pin)
            if answer is not None:
                LOG.info("node %s (%s) joined as %s from %s", request.name, answer["node_id"],
                         ",".join(answer["roles"]), request.address)
                return answer
        raise JoinBusy(detail="the registry changed under %d attempts" % TXN_ATTEMPTS)

    # -- a node installed by rack up, with the token bound to it ----------------------------
    def _join_bound(self, request, record, public_key, key_pin):
        """The node ``record`` is bound to: admitted once installed, resumed by its key."""
        for _ in range(TXN_ATTEMPTS):
            owner = self._owner(request)
            inventory = request.inventory or {}
            vendor = inventory.get("system_vendor")
            serial = vendor.get("serial_number") if isinstance(vendor, dict) else None
            tokens.check_binding(record, owner.id if owner else None, request.name,
                                 _macs(inventory), serial)
            for mac in _macs(inventory):          # no NIC of another node
                other = self.registry.node_by_mac(mac)
                if other is not None and other.id != owner.id:
                    raise NodeTaken(what="a MAC of this machine", node=other.name)
            for node in self.registry.list_nodes():
                if node.id != owner.id and request.address in (node.boot or {}).get(
                        "addresses", []):
                    raise NodeTaken(what="the address %s" % request.address, node=node.name)
            if owner.key is not None and owner.key == key_pin and owner.state != "installed":
                return self._resume(owner, request)
            if owner.state != "installed":
                raise states.InvalidTransition(
                    node=owner.name, frm=owner.state, to="joining", by=" by join",
                    why="a bound token admits its node once its install is done")
            answer = self._admit_installed(owner, request, public_key, key_pin)
            if answer is not None:
                LOG.info("node %s (%s) joined after its install as %s from %s", owner.name,
                         owner.id, ",".join(answer["roles"]), request.address)
                return answer
        raise JoinBusy(detail="the registry changed under %d attempts" % TXN_ATTEMPTS)

    def _admit_installed(self, node, request, public_key, key_pin):
        """``installed -> joining`` with the token's use, role, certificate (and a
        controller's sealed CA key) in one transaction; None if it lost a race."""
        self._check_address(request)
        _, t_compares, t_puts = self.tokens.plan_redeem(request.token, request.name)
        decision, r_compares, r_puts = self.election.plan(node.id, pin=request.role,
                                                          storage=request.storage)

        def change(n):
            n.key, n.role = key_pin, ",".join(decision.roles)
            n.macs = sorted(set(n.macs) | set(_macs(request.inventory)))
            n.inventory = dict(n.inventory, host=request.inventory)
            n.boot = dict(n.boot, addresses=[request.address], joined=True)
        new, n_compares, n_puts, n_deletes = self.registry.plan_transition(
            node.id, "joining", states.JOIN, frm="installed", change=change)
        cert, c_puts, s_compares, s_puts = self._certify(new, request, decision, public_key)
        if not self.registry.kv.txn(t_compares + n_compares + r_compares + s_compares,
                                    t_puts + n_puts + r_puts + c_puts + s_puts, n_deletes):
            return None
        return self._answer(new, decision, cert)

    def _owner(self, request):
        """The registered node that holds this request's name, a MAC or its address."""
        try:
            return self.registry.find_node(request.name)
        except registry_mod.NodeNotFound:
            pass
        for mac in _macs(request.inventory):
            node = self.registry.node_by_mac(mac)
            if node is not None:
                return node
        for node in self.registry.list_nodes():
            if request.address in (node.boot or {}).get("addresses", []):
                return node
        return None

    @staticmethod
    def _what(node, request):
        if node.name == request.name:
            return "the name %s" % request.name
        if request.address in (node.boot or {}).get("addresses", []):
            return "the address %s" % request.address
        return "a MAC of this machine"

    def _answer(self, node, decision, cert_pem):
        return {"node_id": node.id, "name": node.name, "role": decision.role,
                "roles": decision.roles, "address": (node.boot.get("addresses") or [None])[0],
                "certificate": cert_pem.decode(), "ca": self.authority.cert_pem.decode(),
                "etcd_endpoints": self.endpoints(), "join_endpoints": self.join_endpoints()}

    def _certify(self, node, request, decision, public_key):
        """The node's certificate, its put, and for a controller the grant of the sealed
        CA key (so it serves joins): ``(cert PEM, cert puts, grant compares, grant puts)``
        for the caller's one transaction."""
        cert = self.authority.issue(node.name, [request.address], request.csr,
                                    usage=self._usage(decision)).cert_pem
        s_compares, s_puts = [], []
        if decision.role == "controller":
            try:
                s_compares, s_puts = self.secrets.grant_plan(secrets.CA_KEY,
                                                             {node.id: public_key})
            except secrets.SecretNotFound:
                LOG.warning("no sealed CA key in the cluster: controller %s will not serve "
                            "joins", node.name)
        return cert, [(keys.NODE_CERTS + node.id, cert)], s_compares, s_puts

    def _usage(self, decision):
        return ca_mod.CONTROLLER if decision.role == "controller" else ca_mod.NODE

    def _resume(self, node, request):
        """The same node again (its key proves it): the same answer, nothing spent."""
        decision = self.election.current(node.id)
        if decision is None:
            decision = self.election.decide(node.id, pin=request.role, storage=request.storage)
            roles.record_role(self.registry, node.id, decision)
        address = (node.boot.get("addresses") or [request.address])[0]
        cert = self.authority.issue(node.name, [address], request.csr,
                                    usage=self._usage(decision)).cert_pem
        LOG.info("node %s (%s) resumed its join from %s", node.name, node.id, request.address)
        return self._answer(node, decision, cert)

    def _admit_new(self, request, public_key, key_pin):
        """One transaction for a new node; None if it lost a race (the caller re-plans)."""
        self._check_address(request)
        _, t_compares, t_puts = self.tokens.plan_redeem(request.token, request.name)
        node = registry_mod.Node(name=request.name, macs=_macs(request.inventory),
                                 inventory=request.inventory, state="joining", key=key_pin,
                                 boot={"addresses": [request.address], "joined": True})
        decision, r_compares, r_puts = self.election.plan(node.id, pin=request.role,
                                                          storage=request.storage)
        node.role = ",".join(decision.roles)
        node, n_compares, n_puts = self.registry.plan_create(node, by=states.JOIN)
        cert, c_puts, s_compares, s_puts = self._certify(node, request, decision, public_key)
        c_compares = [Compare(keys.NODE_CERTS + node.id, 0)]
        if not self.registry.kv.txn(t_compares + n_compares + r_compares + c_compares
                                    + s_compares, t_puts + n_puts + r_puts + c_puts + s_puts):
            return None
        return self._answer(node, decision, cert)

    def _check_address(self, request):
        """A join endpoint's address is never a joining node's."""
        for url in self.join_endpoints():
            host = url.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
            if host == request.address:
                raise AddressIsEndpoint(address=request.address, url=url)

    # -- the seed and a controller's own record --------------------------------------------
    def admit_self(self, name, address, inventory, key_pem):
        """Register the node this service runs on (the seed, at creation): no token; its
        key is made here.  Idempotent for the same key.  Returns ``(node, cert_pem)``."""
        key = ca_mod.load_key(key_pem)
        key_pin = ca_mod.public_key_pin(key.public_key())
        for _ in range(TXN_ATTEMPTS):
            try:
                node = self.registry.find_node(name)
            except registry_mod.NodeNotFound:
                node = None
            if node is not None and node.key != key_pin:
                raise NodeTaken(what="the name %s" % name, node=node.name)
            if node is None:
                fresh = registry_mod.Node(name=name, macs=_macs(inventory), inventory=inventory,
                                          state="joining", key=key_pin,
                                          boot={"addresses": [address], "joined": True})
                try:
                    node = self.registry.create_node(fresh, by=states.JOIN)
                except registry_mod.NodeExists:
                    continue
            cert, _ = ca_mod.certify_here(self.authority, name, [address], ca_mod.CONTROLLER,
                                          key_pem=key_pem)
            self.registry.kv.txn([], [(keys.NODE_CERTS + node.id, cert)])
            return node, cert
        raise JoinBusy(detail="the registry changed under %d attempts" % TXN_ATTEMPTS)


def refusal_status(exc):
    """The HTTP status of a refusal: 4xx for the caller's fault, 503 to retry."""
    if isinstance(exc, tokens.TokenError):
        return 403
    if isinstance(exc, (RegistryUnavailable, JoinBusy)):
        return 503
    if isinstance(exc, (NodeTaken, roles.RoleError, registry_mod.NodeExists,
                        states.InvalidTransition)):
        return 409
    if isinstance(exc, errors.ConfigError):
        return 400
    return 500
