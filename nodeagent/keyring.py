"""The cluster's service secrets, as the node agent keeps them.

``nodeagent/secrets.yaml`` declares each secret (database and broker
passwords, the Erlang cookie, ...) with the roles that read it.  Secrets live
sealed in the cluster's secret store (:mod:`rackforge.cluster.secrets`):
generated once per cluster by the first reader that needs one, sealed for
every node of a reader role, granted to a node of a reader role that joins
later by any node that can read it, and written into configuration files
(0600/0640, owned by the service's user) and nowhere else: not etcd in
clear, not a log, not an error line, not a command line.

Rotating one (operator): ``rackforge cluster secret rotate NAME`` on any
node (:func:`rotate`): a new value, sealed for the nodes of its reader roles
now (a node that left loses it).  Every agent renders it on its next pass and
restarts what uses it (MariaDB one controller at a time); the cluster task
that sets it inside a service (``applied_by``) runs again, once.  A secret
marked ``fixed`` (the Erlang cookie) is refused with the reason.
"""

import base64
import json
import logging
import secrets as rand
import string
import struct
import time
import uuid

from rackforge import errors, keys
from rackforge.cluster import ca, roles, secrets as store_mod

LOG = logging.getLogger(__name__)
COOKIE_ALPHABET = string.ascii_uppercase


class UnknownSecret(errors.ConfigError):
    message = "no secret named {name}; the cluster's secrets are: {known}"


class CannotRotate(errors.RackforgeError):
    message = "secret {name} cannot be rotated on a running cluster: {why}"
    retryable = False


class NotCreated(errors.RackforgeError):
    message = ("secret {name} has not been created yet (no node runs a service that "
               "needs it); there is nothing to rotate")
    retryable = False


def generate(secret):
    """A new value for the catalogue's ``secret`` (bytes)."""
    if secret.kind == "password":
        return base64.urlsafe_b64encode(rand.token_bytes(secret.length)).rstrip(b"=")
    if secret.kind == "cookie":
        return "".join(rand.choice(COOKIE_ALPHABET) for _ in range(secret.length)).encode()
    if secret.kind == "hex":
        return rand.token_hex(secret.length).encode()
    if secret.kind == "cephx":
        return cephx_key()
    if secret.kind == "fernet":
        return fernet_keys(secret.length)
    return str(uuid.uuid4()).encode()


def fernet_key():
    """One Fernet key: urlsafe base64 of 32 random bytes, padded (what keystone-manage
    fernet_setup writes)."""
    return base64.urlsafe_b64encode(rand.token_bytes(32))


def fernet_keys(count):
    """A Fernet key repository as JSON ``{"0": staged, "1": ..., "N": primary}``: index 0
    is the staged key every node already holds before it becomes the primary."""
    return json.dumps({str(i): fernet_key().decode() for i in range(count)},
                      sort_keys=True).encode()


def fernet_rotated(value, max_keys):
    """The key set after one rotation, as keystone-manage fernet_rotate does it: the
    staged key 0 (every node holds it already) becomes the primary (the next index), a
    new staged key 0, and the oldest secondaries go beyond ``max_keys``."""
    keys = {int(k): v for k, v in json.loads(value).items()}
    keys[max(keys) + 1] = keys[0]
    keys[0] = fernet_key().decode()
    while len(keys) > max_keys:
        del keys[min(k for k in keys if k != 0)]
    return json.dumps({str(k): v for k, v in keys.items()}, sort_keys=True).encode()


def cephx_key(now=None):
    """A Ceph key as ``ceph-authtool --gen-print-key`` prints it: base64 of the key's
    type (1: AES), its creation time and its 16 random bytes."""
    now = time.time() if now is None else now
    head = struct.pack("<HIIH", 1, int(now), int((now % 1) * 1e9), 16)
    return base64.b64encode(head + rand.token_bytes(16))


def node_keys(kv):
    """{node id: public key} of every node with a certificate in the registry."""
    from cryptography import x509

    out = {}
    for entry in kv.get_prefix(keys.NODE_CERTS):
        try:
            cert = x509.load_pem_x509_certificate(entry.value)
        except ValueError:
            continue
        out[entry.key[len(keys.NODE_CERTS):]] = cert.public_key()
    return out


def node_roles(kv):
    """{node id: set of roles} from the role decisions."""
    return {d.node: set(d.roles) for d in roles.RoleElection(kv).decisions()}


def reader_keys(secret, public, role_of):
    """{node id: public key} of the nodes of ``secret``'s reader roles."""
    return {n: key for n, key in public.items()
            if "all" in secret.readers or role_of.get(n, set()) & set(secret.readers)}


class Keyring:
    """The secrets of catalogue ``secrets`` ({name: Secret}) for node ``node_id``."""

    def __init__(self, kv, node_id, private_key, secrets):
        self.kv = kv
        self.node_id = node_id
        self.secrets = secrets
        self.store = store_mod.SecretStore(kv, node_id, private_key)

    def reconcile(self, needed=None):
        """Create what this node may create and needs (``needed``: the secrets of its
        services; None: all), and grant what it can; returns action lines (names only,
        never a value)."""
        public, role_of = node_keys(self.kv), node_roles(self.kv)
        mine = role_of.get(self.node_id, set())
        actions, names = [], set(self.store.names())
        for secret in self.secrets.values():
            readers = reader_keys(secret, public, role_of)
            if self.node_id not in readers:
                continue
            if secret.name not in names:
                if needed is not None and secret.name not in needed:
                    continue
                if "controller" in mine and self.store.put(secret.name, generate(secret),
                                                           readers, only_if_absent=True):
                    actions.append("created secret %s for %d nodes" % (secret.name,
                                                                       len(readers)))
                continue
            has = set(self.store.readers(secret.name))
            missing = {n: k for n, k in readers.items() if n not in has}
            if missing and self.node_id in has:
                self.store.grant(secret.name, missing)
                actions.append("granted secret %s to %s" % (secret.name,
                                                            ", ".join(sorted(missing))))
        return actions

    def values(self, names):
        """{name: str} of the secrets ``names`` this node can read; the others are left
        out (the caller waits for them)."""
        return self.read(names)[0]

    def read(self, names):
        """({name: str}, {name: version}) of the secrets ``names`` this node can read, each
        version that of its value (a task records itself done for the versions it
        applied)."""
        values, versions = {}, {}
        for name in names:
            try:
                value, versions[name] = self.store.get_versioned(name)
            except (store_mod.SecretNotFound, store_mod.NotAReader):
                continue
            values[name] = value.decode()
        return values, versions


def rotate(kv, secrets, name, clock=None, value=None):
    """Give secret ``name`` (of ``secrets``: {name: Secret}) a new value, sealed for the
    nodes of its reader roles; returns its :meth:`SecretStore.info` after the change.
    ``value``: the next value of a secret that rotates by itself (Keystone's key set,
    derived from the last one), which no operator may replace at random."""
    secret = secrets.get(name)
    if secret is None:
        raise UnknownSecret(name=name, known=", ".join(sorted(secrets)))
    if secret.fixed and value is None:
        raise CannotRotate(name=name, why=secret.fixed)
    store = store_mod.SecretStore(kv, **({"clock": clock} if clock else {}))
    if store.info(name) is None:
        raise NotCreated(name=name)
    public, role_of = node_keys(kv), node_roles(kv)
    readers = reader_keys(secret, public, role_of)
    store.put(name, generate(secret) if value is None else value, readers)
    LOG.info("secret %s rotated for %d nodes", name, len(readers))
    return store.info(name)


def private_key(path):
    """This node's key (``state_dir()/pki/node.key``)."""
    with open(path, "rb") as f:
        return ca.load_key(f.read())
