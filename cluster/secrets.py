"""The cluster's secret store: sealed in etcd, readable only by the nodes named for each.

A secret (the cluster CA's key, later database and broker passwords, the
Erlang cookie, keystone's fernet keys, Ceph keys) is generated once per
cluster and kept under ``keys.SECRETS + name``, never in clear::

    {"name": ..., "version": n, "updated": t,
     "nonce": b64, "ciphertext": b64,          AES-256-GCM under a data key, the name as AAD
     "readers": {node_id: {"epk": b64, "nonce": b64, "wrapped": b64}}}

The data key is wrapped for each reader's public key (the key of the node's
certificate, made on that node and never sent): ECDH with a fresh ephemeral
P-256 key, HKDF-SHA256, AES-256-GCM (ECIES).  RSA node keys get RSA-OAEP.
A reader opens it with its own private key; etcd, its backups and every
other node see only ciphertext.  Granting a new reader (a new controller)
re-wraps the same data key, so the value itself is never re-encrypted or
shown; rotating (``put`` with a new value) makes a new data key.

Nothing here logs or returns a value except :meth:`SecretStore.get`.
"""

import base64
import json
import os
import time

from rackforge import errors, keys
from rackforge.kvstore import Compare

CAS_ATTEMPTS = 32
#: the secrets rackforge keeps, by name
CA_KEY = "cluster/ca-key"       # the cluster CA's private key: every controller serves joins
_INFO = b"rackforge secret store v1"


class SecretError(errors.RackforgeError):
    message = "secret {name}: {detail}"


class SecretNotFound(SecretError):
    message = "secret {name} is not in the cluster's secret store; {fix}"


class NotAReader(SecretError):
    message = ("secret {name} is not sealed for node {node}; a node that can read it "
               "grants it ('rackforge cluster secret grant') or it was never meant for it")


def _b64(data):
    return base64.b64encode(data).decode()


def _unb64(text):
    return base64.b64decode(text)


def _aes():
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    return AESGCM


def _hkdf(shared, salt):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_INFO).derive(shared)


def wrap(data_key, public_key, aad):
    """``data_key`` sealed for the holder of ``public_key`` (EC: ECIES; RSA: OAEP)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    if isinstance(public_key, ec.EllipticCurvePublicKey):
        ephemeral = ec.generate_private_key(public_key.curve)
        epk = ephemeral.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        kek = _hkdf(ephemeral.exchange(ec.ECDH(), public_key), epk)
        nonce = os.urandom(12)
        return {"alg": "ECDH-ES+A256GCM", "epk": _b64(epk), "nonce": _b64(nonce),
                "wrapped": _b64(_aes()(kek).encrypt(nonce, data_key, aad))}
    if isinstance(public_key, rsa.RSAPublicKey):
        pad = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
                           label=aad)
        return {"alg": "RSA-OAEP-256", "wrapped": _b64(public_key.encrypt(data_key, pad))}
    raise SecretError(name=aad.decode(), detail="a reader's key is neither EC nor RSA")


def unwrap(sealed, private_key, aad):
    """The data key from :func:`wrap`'s output, with the reader's ``private_key``."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding

    try:
        if sealed.get("alg") == "ECDH-ES+A256GCM":
            epk = _unb64(sealed["epk"])
            peer = ec.EllipticCurvePublicKey.from_encoded_point(private_key.curve, epk)
            kek = _hkdf(private_key.exchange(ec.ECDH(), peer), epk)
            return _aes()(kek).decrypt(_unb64(sealed["nonce"]), _unb64(sealed["wrapped"]), aad)
        if sealed.get("alg") == "RSA-OAEP-256":
            pad = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
                               label=aad)
            return private_key.decrypt(_unb64(sealed["wrapped"]), pad)
    except (InvalidTag, ValueError, KeyError, TypeError) as exc:
        raise SecretError(name=aad.decode(), detail="this node's key does not open it (%s)"
                          % (exc.__class__.__name__,)) from None
    raise SecretError(name=aad.decode(), detail="unknown wrapping %r" % sealed.get("alg"))


def seal(name, value, readers, version=1, clock=time.time):
    """The stored record of ``value`` (bytes) for ``readers`` ({node_id: public key})."""
    data_key = os.urandom(32)
    nonce = os.urandom(12)
    aad = name.encode()
    return {"name": name, "version": version, "updated": clock(), "nonce": _b64(nonce),
            "ciphertext": _b64(_aes()(data_key).encrypt(nonce, bytes(value), aad)),
            "readers": {node: wrap(data_key, key, aad) for node, key in sorted(readers.items())}}


def _data_key(record, node_id, private_key):
    sealed = (record.get("readers") or {}).get(node_id)
    if sealed is None:
        raise NotAReader(name=record.get("name"), node=node_id)
    return unwrap(sealed, private_key, record["name"].encode())


def open_record(record, node_id, private_key):
    """The value of a sealed ``record`` for reader ``node_id``."""
    from cryptography.exceptions import InvalidTag

    data_key = _data_key(record, node_id, private_key)
    try:
        return _aes()(data_key).decrypt(_unb64(record["nonce"]), _unb64(record["ciphertext"]),
                                        record["name"].encode())
    except (InvalidTag, KeyError, ValueError) as exc:
        raise SecretError(name=record.get("name"), detail="the stored value is damaged (%s)"
                          % exc.__class__.__name__) from None


class SecretStore:
    """Sealed secrets on a :class:`rackforge.kvstore.KVStore`, as node ``node_id``
    holding ``private_key`` (None: it can write and grant nothing it cannot read)."""

    def __init__(self, kv, node_id=None, private_key=None, clock=time.time):
        self.kv = kv
        self.node_id = node_id
        self.private_key = private_key
        self.clock = clock

    def _entry(self, name):
        entry = self.kv.get(keys.SECRETS + name)
        return entry, (json.loads(entry.value) if entry is not None else None)

    def names(self):
        return sorted(e.key[len(keys.SECRETS):] for e in self.kv.get_prefix(keys.SECRETS))

    def readers(self, name):
        _, record = self._entry(name)
        if record is None:
            raise SecretNotFound(name=name, fix="it was never created")
        return sorted(record.get("readers") or {})

    def info(self, name):
        """{version, updated, readers} of secret ``name`` (never its value); None if it
        does not exist."""
        _, record = self._entry(name)
        if record is None:
            return None
        return {"version": record.get("version", 1), "updated": record.get("updated"),
                "readers": sorted(record.get("readers") or {})}

    def get(self, name):
        """The value (bytes), opened with this node's key."""
        return self.get_versioned(name)[0]

    def get_versioned(self, name):
        """(value, version) from one read: the version (1 when made, +1 on every
        rotation) is that of this value, never of a rotation that came in between."""
        _, record = self._entry(name)
        if record is None:
            raise SecretNotFound(name=name, fix="the node that creates it has not run yet")
        return open_record(record, self.node_id, self.private_key), record.get("version", 1)

    def put(self, name, value, readers, only_if_absent=False):
        """Seal ``value`` for ``readers`` ({node_id: public key}), a new data key.

        :param only_if_absent: keep an existing secret (generate-once semantics);
            returns False then, True when written.
        """
        for _ in range(CAS_ATTEMPTS):
            entry, old = self._entry(name)
            if old is not None and only_if_absent:
                return False
            record = seal(name, value, readers, version=(old or {}).get("version", 0) + 1,
                          clock=self.clock)
            if self.kv.txn([Compare(keys.SECRETS + name, entry.mod_revision if entry else 0)],
                           [(keys.SECRETS + name, json.dumps(record).encode())]):
                return True
        raise SecretError(name=name, detail="it changed under %d attempts to write it"
                          % CAS_ATTEMPTS)

    def grant_plan(self, name, readers):
        """(compares, puts) adding ``readers`` ({node_id: public key}) to secret ``name``,
        for a caller that writes them in a transaction of its own; ([], []) if all
        of them can read it already."""
        entry, record = self._entry(name)
        if record is None:
            raise SecretNotFound(name=name, fix="it was never created")
        new = {n: k for n, k in readers.items() if n not in record["readers"]}
        if not new:
            return [], []
        data_key = _data_key(record, self.node_id, self.private_key)
        aad = name.encode()
        record = dict(record, readers=dict(record["readers"], **{
            n: wrap(data_key, k, aad) for n, k in sorted(new.items())}))
        return ([Compare(keys.SECRETS + name, entry.mod_revision)],
                [(keys.SECRETS + name, json.dumps(record).encode())])

    def grant(self, name, readers):
        """Let ``readers`` read secret ``name`` too (the same value, re-wrapped)."""
        for _ in range(CAS_ATTEMPTS):
            compares, puts = self.grant_plan(name, readers)
            if not puts or self.kv.txn(compares, puts):
                return bool(puts)
        raise SecretError(name=name, detail="it changed under %d attempts to grant it"
                          % CAS_ATTEMPTS)
