"""Key-value stores with compare-and-set transactions: etcd, and an in-memory twin.

The node registry (``rackforge.registry``) is written against the small
interface below, so that the in-memory store used by unit tests runs the very
same registry code as etcd does.  Only what the registry needs is here:
reads with revisions, prefix ranges, and one transaction shape ("if these
keys are at these revisions, apply these puts and deletes").

etcd is spoken to through its v3 JSON gateway with ``etcd3gw`` (the client
OpenStack's tooz uses); library errors are translated here, once.
"""

import threading
import urllib.parse
from dataclasses import dataclass

from rackforge import errors

DEFAULT_ENDPOINT = "http://127.0.0.1:2379"


class RegistryUnavailable(errors.RackforgeError):
    message = ("the node registry (etcd at {endpoint}) does not answer: {detail}; "
               "check that etcd runs there, or point --etcd / RACKFORGE_ETCD at it")
    retryable = True


@dataclass(frozen=True)
class Entry:
    """One key as read: its value and the revisions compare-and-set needs."""
    key: str
    value: bytes
    mod_revision: int
    create_revision: int


@dataclass(frozen=True)
class Compare:
    """The key must be at ``mod_revision`` (0: the key must not exist)."""
    key: str
    mod_revision: int


class KVStore:
    """Interface of the stores the registry runs on."""

    def get(self, key):
        """The :class:`Entry` at ``key``, or None."""
        raise NotImplementedError

    def get_prefix(self, prefix):
        """Every :class:`Entry` whose key starts with ``prefix``, sorted by key."""
        raise NotImplementedError

    def txn(self, compares, puts=(), deletes=()):
        """Apply ``puts`` ((key, bytes) pairs) and ``deletes`` (keys) atomically.

        :returns: True if every :class:`Compare` held and the writes were made,
            False (and nothing written) otherwise.
        """
        raise NotImplementedError


class MemoryKV(KVStore):
    """A store in memory with etcd's revision semantics; for tests and dry runs."""

    def __init__(self):
        self._data = {}
        self._revision = 0
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            return self._data.get(key)

    def get_prefix(self, prefix):
        with self._lock:
            return [self._data[k] for k in sorted(self._data) if k.startswith(prefix)]

    def txn(self, compares, puts=(), deletes=()):
        with self._lock:
            for c in compares:
                entry = self._data.get(c.key)
                if (entry.mod_revision if entry else 0) != c.mod_revision:
                    return False
            self._revision += 1
            for key, value in puts:
                old = self._data.get(key)
                created = old.create_revision if old else self._revision
                self._data[key] = Entry(key, bytes(value), self._revision, created)
            for key in deletes:
                self._data.pop(key, None)
            return True


class EtcdKV(KVStore):
    """etcd v3 through its JSON gateway."""

    def __init__(self, endpoint=None, timeout=10, ca_cert=None, cert=None, key=None):
        # keep `rackforge --help` free of requests' import time.  The class, not
        # etcd3gw.client(): Debian 12's etcd3gw 2.0 factory takes no api_path, and
        # its default (/v3alpha/) is gone from etcd 3.4.
        from etcd3gw import exceptions
        from etcd3gw.client import Etcd3Client

        self.endpoint = endpoint or DEFAULT_ENDPOINT
        url = urllib.parse.urlsplit(self.endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise errors.ConfigError(
                "etcd endpoint '%s' is not a URL like http://10.0.0.1:2379; "
                "fix --etcd or RACKFORGE_ETCD" % self.endpoint)
        self._exceptions = exceptions
        self._client = Etcd3Client(
            host=url.hostname, port=url.port or 2379, protocol=url.scheme,
            ca_cert=ca_cert, cert_cert=cert, cert_key=key, timeout=timeout,
            api_path="/v3/")

    def _call(self, func, *args, **kwargs):
        import requests

        try:
            return func(*args, **kwargs)
        except (self._exceptions.Etcd3Exception, requests.RequestException) as e:
            detail = " ".join(str(e).split())[:200] or e.__class__.__name__
            raise RegistryUnavailable(endpoint=self.endpoint, detail=detail) from e

    @staticmethod
    def _entry(value, meta):
        key = meta["key"]
        return Entry(key.decode() if isinstance(key, bytes) else key, value,
                     int(meta.get("mod_revision", 0)), int(meta.get("create_revision", 0)))

    def get(self, key):
        found = self._call(self._client.get, key, metadata=True)
        return self._entry(*found[0]) if found else None

    def get_prefix(self, prefix):
        found = self._call(self._client.get_prefix, prefix, sort_order="ascend",
                           sort_target="key")
        return [self._entry(value, meta) for value, meta in found]

    def txn(self, compares, puts=(), deletes=()):
        from etcd3gw.utils import _encode

        body = {
            "compare": [{"key": _encode(c.key), "result": "EQUAL", "target": "MOD",
                         "mod_revision": c.mod_revision} for c in compares],
            "success": ([{"request_put": {"key": _encode(k), "value": _encode(v)}}
                         for k, v in puts]
                        + [{"request_delete_range": {"key": _encode(k)}} for k in deletes]),
            "failure": [],
        }
        result = self._call(self._client.transaction, body)
        return bool(result.get("succeeded", False))
