"""The join service on the seed, and the client a joining node runs.

Server (on the seed): HTTPS (``ssl`` + ``http.server``) with a certificate the
cluster CA (:mod:`.ca`) issues for the seed's address.

- ``GET /ca`` -> the CA certificate (PEM, public: no secret involved);
- ``POST /join`` with ``{token, name, addresses, inventory, storage?, role?, csr?}``:
  redeems the token (:mod:`.tokens`, hint = the node's name), registers or
  updates the node in the registry (compare-and-set; found by name, else by
  one of its MACs), elects its role (:mod:`.roles`), issues its node
  certificate (``ca.issue``) and answers ``{node_id, name, role, roles,
  certificate, key, ca, etcd_endpoints}``.  A wrong, expired or used-up token
  is ``403 {"error": one line}`` and nothing is written.

The same node joining again (its join was cut by a power loss) gets the same
node id and role: the token does not spend a second use, the registry
record is updated in place and the role decision is sticky.

Client (:func:`join`), in the manner of kubeadm's discovery: fetch the CA over
an unverified TLS connection, check it against the pinned ``ca_sha256``
(:func:`ca.check_pin`), and only then open a connection *verified against
that CA* and send the token.  A wrong pin stops before the token leaves.
"""

import http.client
import http.server
import json
import logging
import socket
import ssl
import tempfile
import threading
import urllib.parse
from pathlib import Path

from rackforge import errors, states
from rackforge import registry as registry_mod
from rackforge.cluster import ca as ca_mod
from rackforge.cluster import roles, tokens
from rackforge.kvstore import RegistryUnavailable

LOG = logging.getLogger(__name__)
MAX_BODY = 4 * 1024 * 1024
DEFAULT_PORT = 9443
HANDSHAKE_TIMEOUT = 10


class JoinError(errors.RackforgeError):
    message = "join {endpoint} failed: {detail}"
    retryable = True


class JoinRefused(errors.RackforgeError):
    message = "the seed at {endpoint} refused the join: {detail}"


class BadJoinRequest(errors.ConfigError):
    message = "join request: {detail}"


def _macs(inventory):
    out = []
    for nic in (inventory or {}).get("interfaces") or []:
        mac = nic.get("mac") if isinstance(nic, dict) else None
        if mac and nic.get("kind", "physical") == "physical":
            try:
                out.append(registry_mod.normalize_mac(mac))
            except registry_mod.InvalidNode:
                continue
    return sorted(set(out))


class JoinService:
    """What ``POST /join`` does, without HTTP (unit-testable on the memory registry)."""

    def __init__(self, registry, authority, etcd_endpoints=(), policy=None, clock=None):
        self.registry = registry
        self.authority = authority
        # a list, or a callable giving the current one (the etcd members' client URLs)
        self.etcd_endpoints = (etcd_endpoints if callable(etcd_endpoints)
                               else list(etcd_endpoints))
        kw = {"clock": clock} if clock else {}
        self.tokens = tokens.TokenStore(registry.kv, **kw)
        self.election = roles.RoleElection(registry.kv, policy, **kw)

    def _request(self, body):
        if not isinstance(body, dict):
            raise BadJoinRequest(detail="the body must be a JSON object")
        name = body.get("name")
        if not isinstance(name, str) or not registry_mod._NAME_RE.match(name):
            raise BadJoinRequest(detail="'name' must be a node name (a-z, 0-9, '-')")
        addresses = body.get("addresses") or []
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise BadJoinRequest(detail="'addresses' must be a list of IP addresses")
        inventory = body.get("inventory") or {}
        if not isinstance(inventory, dict):
            raise BadJoinRequest(detail="'inventory' must be an object")
        return name, [a.split("/")[0] for a in addresses], inventory

    def join(self, body):
        """Handle one join; returns the answer dict.

        :raises tokens.TokenError: refused, nothing written.
        """
        name, addresses, inventory = self._request(body)
        for a in addresses:
            ca_mod._ip(a)                                 # bad address: before any write
        self.tokens.redeem(body.get("token"), name)      # refusal: nothing written
        node = self.admit(name, addresses, inventory)
        decision = self.election.decide(node.id, pin=body.get("role"),
                                        storage=bool(body.get("storage")))
        roles.record_role(self.registry, node.id, decision)
        issued = self.authority.issue(name, addresses, csr_pem=body.get("csr"))
        LOG.info("node %s (%s) joined as %s", name, node.id, ",".join(decision.roles))
        return {"node_id": node.id, "name": name, "role": decision.role,
                "roles": decision.roles, "certificate": issued.cert_pem.decode(),
                "key": issued.key_pem.decode() if issued.key_pem else None,
                "ca": self.authority.cert_pem.decode(),
                "etcd_endpoints": self.endpoints()}

    def endpoints(self):
        eps = self.etcd_endpoints
        return list(eps() if callable(eps) else eps)

    def _find(self, name, macs):
        try:
            return self.registry.find_node(name)
        except registry_mod.NodeNotFound:
            pass
        for mac in macs:
            node = self.registry.node_by_mac(mac)
            if node is not None:
                return node
        return None

    def admit(self, name, addresses, inventory):
        """Register or update node ``name`` (no token: the caller checked it, or is the seed)."""
        macs = _macs(inventory)

        def change(n):
            n.name = name
            n.macs = sorted(set(n.macs) | set(macs))
            n.inventory = inventory
            n.boot = dict(n.boot, addresses=addresses, joined=True)

        for _ in range(3):
            node = self._find(name, macs)
            if node is not None and node.state == "installed":
                return self.registry.transition(node.id, "joining", states.JOIN,
                                                frm="installed", change=change)
            if node is not None:
                return self.registry.update_node(node.id, change)
            fresh = registry_mod.Node(name=name, macs=macs, inventory=inventory,
                                      state="joining",
                                      boot={"addresses": addresses, "joined": True})
            try:
                return self.registry.create_node(fresh, by=states.JOIN)
            except registry_mod.NodeExists:
                continue            # a twin join of the same node won: update that one
        raise JoinError(endpoint="(server)", detail="node %s kept changing; retry" % name)


# -- HTTP server -----------------------------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "rackforge-join"
    protocol_version = "HTTP/1.1"
    timeout = 30                       # a silent client is dropped, not waited for
    disable_nagle_algorithm = True     # headers and body are two sends: no 40 ms stall

    def log_message(self, fmt, *args):
        LOG.debug("join %s: " + fmt, self.client_address[0], *args)

    def _send(self, status, data, ctype="application/json"):
        body = data if isinstance(data, bytes) else (json.dumps(data) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/ca":
            self._send(200, self.server.service.authority.cert_pem, "application/x-pem-file")
        else:
            self._send(404, {"error": "no such path; use GET /ca or POST /join"})

    def do_POST(self):
        self.server.posts += 1
        if self.path != "/join":
            self._send(404, {"error": "no such path; use POST /join"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                raise BadJoinRequest(detail="the body must be 1 byte to 4 MiB of JSON")
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError:
                raise BadJoinRequest(detail="the body is not JSON") from None
            answer = self.server.service.join(body)
        except tokens.TokenError as exc:
            LOG.warning("join refused from %s: %s", self.client_address[0], exc)
            self._send(403, {"error": str(exc)})
        except RegistryUnavailable as exc:
            self._send(503, {"error": str(exc)})
        except (errors.ConfigError, roles.RoleError, registry_mod.NodeExists) as exc:
            self._send(409 if not isinstance(exc, BadJoinRequest) else 400,
                       {"error": str(exc)})
        except errors.RackforgeError as exc:
            self._send(500, {"error": str(exc)})
        else:
            self._send(200, answer)


class _TLSServer(http.server.ThreadingHTTPServer):
    """HTTPS with the TLS handshake in each connection's own thread.

    Wrapping the listening socket would run every handshake inside
    ``accept()``, in the one serving thread: a client that connects and
    says nothing (or a node that lost power mid-handshake) would stop every
    other join.
    """
    daemon_threads = True
    request_queue_size = 128           # 48 nodes joining at once must not see SYN drops

    def __init__(self, address, handler, context):
        self.ssl_context = context
        super().__init__(address, handler)

    def finish_request(self, request, client_address):
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            LOG.debug("join: TLS handshake with %s failed: %s", client_address[0], exc)
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()


class JoinServer:
    """The join service over HTTPS on ``host:port`` (port 0: any free port)."""

    def __init__(self, service, host, port=DEFAULT_PORT, cert_dir=None):
        issued = service.authority.issue("rackforge-join", [host])
        self._tmp = None
        if cert_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="rackforge-join-")
            cert_dir = self._tmp.name
        cert_dir = Path(cert_dir)
        cert_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        from rackforge.fileutil import atomic_write
        atomic_write(cert_dir / "join.crt", issued.cert_pem + service.authority.cert_pem)
        atomic_write(cert_dir / "join.key", issued.key_pem, mode=0o600)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert_dir / "join.crt", cert_dir / "join.key")
        self.httpd = _TLSServer((host, port), _Handler, context)
        self.httpd.service = service
        self.httpd.posts = 0
        self.host, self.port = host, self.httpd.server_address[1]
        self._thread = None

    @property
    def endpoint(self):
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "https://%s:%d" % (host, self.port)

    @property
    def posts(self):
        return self.httpd.posts

    def start(self):
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="join-server",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(timeout=10)
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# -- client ----------------------------------------------------------------------------
def _split(endpoint):
    u = urllib.parse.urlsplit(endpoint)
    if u.scheme != "https" or not u.hostname:
        raise JoinError(endpoint=endpoint, detail="the endpoint must be https://HOST:PORT")
    return u.hostname, u.port or DEFAULT_PORT


def fetch_ca(endpoint, timeout=10):
    """The CA certificate the endpoint presents at ``GET /ca`` (not yet trusted)."""
    host, port = _split(endpoint)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE       # trust comes from the pin, checked next
    conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    try:
        conn.request("GET", "/ca")
        resp = conn.getresponse()
        data = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise JoinError(endpoint=endpoint, detail="cannot fetch its CA (%s)" % exc) from None
    finally:
        conn.close()
    if resp.status != 200:
        raise JoinError(endpoint=endpoint, detail="GET /ca answered %d" % resp.status)
    return data


def join(endpoint, token, pin, name, addresses=(), inventory=None, storage=False,
         role=None, csr=None, timeout=30):
    """Join the cluster at ``endpoint``; returns the seed's answer.

    :raises ca.CAPinMismatch: the endpoint's CA is not the pinned one (no token sent).
    :raises JoinRefused: the seed refused (bad token, role pin refused, ...).
    :raises JoinError: the seed could not be reached or answered garbage (retryable).
    """
    ca_pem = fetch_ca(endpoint, timeout=timeout)
    ca_mod.check_pin(ca_pem, pin, endpoint=endpoint)
    host, port = _split(endpoint)
    context = ssl.create_default_context(cadata=ca_pem.decode())
    body = json.dumps({"token": token, "name": name, "addresses": list(addresses),
                       "inventory": inventory or {}, "storage": bool(storage), "role": role,
                       "csr": csr.decode() if isinstance(csr, bytes) else csr}).encode()
    conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    try:
        conn.request("POST", "/join", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
    except ssl.SSLCertVerificationError as exc:
        raise JoinError(endpoint=endpoint, detail="its certificate is not from the pinned CA "
                        "(%s)" % exc.verify_message) from None
    except (OSError, http.client.HTTPException, socket.timeout) as exc:
        raise JoinError(endpoint=endpoint, detail=str(exc)) from None
    finally:
        conn.close()
    try:
        answer = json.loads(data)
    except ValueError:
        raise JoinError(endpoint=endpoint, detail="answer %d is not JSON" % resp.status) \
            from None
    if resp.status != 200:
        error = answer.get("error") if isinstance(answer, dict) else None
        cls = JoinError if resp.status >= 500 else JoinRefused
        raise cls(endpoint=endpoint, detail=error or "HTTP %d" % resp.status)
    return answer
